"""`ledgerhook dev`: embedded PostgreSQL and broker, migrations, topics, the gateway and the worker's
tasks, in one process.

`dev` owns its children: the broker and PostgreSQL run in sessions of their own
(gateway/dev/embedded.py), so the terminal's Ctrl-C reaches `dev` alone. The first Ctrl-C or SIGTERM,
at any moment of start-up or after, stops the gateway and the worker's tasks, then the broker, then
PostgreSQL, and `dev` exits 0; a second one forces: the broker and PostgreSQL are killed at once and
`dev` exits 130. The banner comes once `/readyz` answers 200 (the fan-out worker has its partitions,
the poller runs), and `/metrics` carries the gateway's and the worker's metrics alike. One `dev` runs
per data folder.
"""

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from gateway.app import InProcessWorker, create_app
from gateway.dev.banner import banner, emulator_banner_lines
from gateway.dev.embedded import (
    DevStackError,
    EmbeddedBroker,
    EmbeddedPostgres,
    missing_service_packages,
    port_in_use,
)
from gateway.dev.emulator_setup import emulator_defaults, running_emulator
from gateway.dev.jwt_key import dev_sage_intacct_settings
from gateway.dev.secrets import DEV_SECRETS
from gateway.runtime.health import Readiness
from gateway.runtime.infra import open_infrastructure
from gateway.runtime.kafka import ensure_topics
from gateway.runtime.lifecycle import Lifecycle
from gateway.runtime.logs import configure_logging
from gateway.runtime.migrate import migrate
from gateway.runtime.oauth import build_token_manager
from gateway.runtime.server import uvicorn_config
from gateway.runtime.tracing import TOKENS, tracing_from_environment
from gateway.runtime.worker import RunningTasks, running_worker_tasks
from gateway.settings import Settings, environment_values, load_settings
from provider_auth.vault import KeyRing

log = logging.getLogger("ledgerhook.dev")

# Where `dev` keeps the key ring it made for secrets at rest (when LEDGERHOOK_ENCRYPTION_KEYS is unset).
ENCRYPTION_KEYS_FILE = "encryption-keys"
# In the data folder: locked by the `dev` using it (the pid inside is for the message of a second one).
LOCK_FILE = "dev.lock"
# A forced stop (second Ctrl-C) exits as shells report an interrupted command: 128 + SIGINT.
FORCED_EXIT = 130


@dataclass(frozen=True)
class DevOptions:
    """The flags of `ledgerhook dev`."""

    host: str = "127.0.0.1"
    port: int = 8000
    kafka_port: int = 9092
    data_dir: Path = Path(".ledgerhook")
    # Run the provider emulator (gateway/dev/emulator) and point every provider's OAuth URLs at it.
    emulator: bool = False
    emulator_port: int = 8900
    # What `dev` logs on the terminal: quiet by default, so the banner stays in view.
    log_level: str = "WARNING"


def dev_settings(options: DevOptions, database_url: str, bootstrap: str) -> Settings:
    """Settings for the dev stack: embedded services, dev secrets, environment overrides on top."""
    configured = environment_values()
    # The dev secrets that are settings (the others are connections' secrets, for the banner).
    defaults: dict[str, Any] = {k: v for k, v in DEV_SECRETS.items() if k in Settings.model_fields}
    defaults |= {
        "kafka_idempotent_producer": False,
        "topic_partitions": 3,
        "shutdown_drain_seconds": 0,
        # The dev broker holds a new consumer group's first join for about half the session timeout:
        # the fan-out worker (and so /readyz) is ready 2 s after start rather than 5.
        "worker_session_timeout_ms": 3000,
        # The web console (docs/console.md), signed in with the dev admin token.
        "console_enabled": True,
    }
    # Webhook URLs of connections point at this stack; secrets survive restarts under its own key ring.
    defaults["public_base_url"] = f"http://{options.host}:{options.port}"
    # Sage Intacct deliveries carry a JWT: `send-sample sage-intacct` signs with this dev key.
    defaults |= dev_sage_intacct_settings(options.data_dir)
    if "encryption_keys" not in configured:
        defaults["encryption_keys"] = dev_encryption_keys(options.data_dir)
    if options.emulator:
        defaults |= emulator_defaults("127.0.0.1", options.emulator_port)
    chosen = {name: value for name, value in defaults.items() if name not in configured}
    # The embedded services and the flags are what `dev` is for: they always apply.
    chosen |= {
        "database_url": database_url,
        "kafka_bootstrap_servers": bootstrap,
        "host": options.host,
        "port": options.port,
        "log_level": options.log_level,
    }
    return load_settings(**chosen)


def dev_encryption_keys(data_dir: Path) -> str:
    """The dev stack's key ring, `dev:<base64 key>`: read from the data dir, made (mode 0600) if absent."""
    path = data_dir / ENCRYPTION_KEYS_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        ring = f"dev:{KeyRing.generate_key()}\n"
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another dev process made it first: use theirs
        else:
            with os.fdopen(descriptor, "w") as file:
                file.write(ring)
    return path.read_text().strip()


class DataDirLock:
    """One `dev` per data folder: an exclusive flock on its `dev.lock`, held as long as the process
    lives. The kernel releases it however the process ends (SIGKILL included), so the file a crash
    leaves behind never blocks the next start; the descriptor is not inherited by the children."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Take the lock (making the folder if needed); DevStackError, touching nothing, when another
        process holds it or the folder cannot be used."""
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DevStackError(f"cannot use the data folder {folder}: {exc.strerror}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise DevStackError(
                f"the data folder {folder} is in use by another ledgerhook dev (pid {self._holder()}); "
                "stop that one, or choose another folder with --data-dir."
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor

    def _holder(self) -> str:
        with contextlib.suppress(OSError):
            return self.path.read_text().strip() or "?"
        return "?"

    def release(self) -> None:
        """Let the folder go (closing the file releases the lock)."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


class StopSignals:
    """Ctrl-C and SIGTERM while `dev` runs: the first asks for an orderly stop, the second calls
    `force`, which must not return.

    A request is a flag, checked between start-up steps, and an event once the event loop runs
    (`attached`); nothing is raised into the code that was running."""

    def __init__(self, force: Callable[[], NoReturn]) -> None:
        self.requested = False
        self._force = force
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopSignals"]:
        """Handle SIGINT and SIGTERM for the block; the previous handlers come back after it."""
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def attached(self, event: asyncio.Event) -> Iterator[None]:
        """Set `event` on a stop request during the block (at once if one came already); call from
        the running event loop."""
        self._loop, self._event = asyncio.get_running_loop(), event
        if self.requested:
            event.set()
        try:
            yield
        finally:
            self._loop = self._event = None

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        if self.requested:
            self._force()
        self.requested = True
        loop, event = self._loop, self._event
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)


class _DevServer(uvicorn.Server):
    """uvicorn for the gateway; `dev`, not uvicorn, owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run_dev_stack(options: DevOptions) -> int:
    """Run the whole stack in the foreground until Ctrl-C or SIGTERM: 0 on a stop, 2 when it cannot
    start (a taken port or data folder, the embedded services not installed), 130 when a second
    signal forced the stop."""
    missing = missing_service_packages()
    if missing:
        print(
            f"ledgerhook dev: the embedded services are not installed ({', '.join(missing)}); they come"
            " with the dev extra: pip install 'ledgerhook[dev]' (in a checkout: pip install -e '.[dev]')",
            file=sys.stderr,
        )
        return 2
    # What a forced stop kills: only what this process started, once the data folder is its own.
    started: list[EmbeddedBroker | EmbeddedPostgres] = []

    def force() -> NoReturn:
        for service in started:
            service.kill()
        sys.stderr.flush()
        os._exit(FORCED_EXIT)  # now: nothing else (the gateway, the worker's tasks) is waited for

    with StopSignals(force).installed() as signals:
        lock = DataDirLock(options.data_dir)
        try:
            lock.acquire()
        except DevStackError as exc:
            print(f"ledgerhook dev: {exc}", file=sys.stderr)
            return 2
        try:
            return _run_holding(options, signals, started)
        finally:
            lock.release()


def _run_holding(
    options: DevOptions, signals: StopSignals, started: list[EmbeddedBroker | EmbeddedPostgres]
) -> int:
    """With the data folder held: check the ports, then run; the broker and PostgreSQL are stopped
    last, whatever happened."""
    problem = _taken_port(options)
    if problem is not None:
        print(f"ledgerhook dev: {problem}", file=sys.stderr)
        return 2
    configure_logging(options.log_level)
    broker = EmbeddedBroker(options.kafka_port, log_path=options.data_dir / "broker.log")
    postgres = EmbeddedPostgres(options.data_dir.resolve() / "postgres")
    started.extend([broker, postgres])
    try:
        return _run(options, postgres, broker, signals)
    finally:
        # Their clients are gone by now: the broker first, then PostgreSQL.
        broker.stop()
        log.info("broker stopped")
        postgres.stop()
        log.info("PostgreSQL stopped")


def _taken_port(options: DevOptions) -> str | None:
    """What is wrong when a port `dev` needs is taken, or None."""
    if port_in_use(options.host, options.port):
        return f"port {options.port} on {options.host} is already in use; choose another with --port."
    if port_in_use("127.0.0.1", options.kafka_port):
        return f"Kafka port {options.kafka_port} is already in use; choose another with --kafka-port."
    if options.emulator and port_in_use("127.0.0.1", options.emulator_port):
        return (
            f"emulator port {options.emulator_port} is already in use; choose another with --emulator-port."
        )
    return None


def _run(
    options: DevOptions, postgres: EmbeddedPostgres, broker: EmbeddedBroker, signals: StopSignals
) -> int:
    """Start PostgreSQL and the broker, then serve on them; a stop request is honoured after each
    step (each is short)."""
    if signals.requested:
        return 0
    try:
        database_url = postgres.start()
        if signals.requested:
            return 0
        broker.start()
        if signals.requested:
            return 0
        settings = dev_settings(options, database_url, broker.bootstrap)
        return asyncio.run(_serve(settings, options, signals))
    except DevStackError as exc:
        if signals.requested:
            return 0  # a start-up step cut short by the stop
        print(f"ledgerhook dev: {exc}", file=sys.stderr)
        return 2


async def _serve(settings: Settings, options: DevOptions, signals: StopSignals) -> int:
    stop = asyncio.Event()
    with signals.attached(stop):
        try:
            await _serve_until(stop, settings, options)
        except DevStackError:
            raise
        except Exception as exc:  # logged with its traceback at DEBUG; one line for the terminal
            log.debug("dev stopped on an error", exc_info=True)
            print(f"ledgerhook dev: stopped on an error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    return 0


async def _serve_until(stop: asyncio.Event, settings: Settings, options: DevOptions) -> None:
    """Migrations, topics, then the gateway and the worker's tasks until `stop` is set (or one of
    them ends early); then the gateway stops first, the tasks next, the infrastructure last."""
    await migrate(settings.database_url.get_secret_value())
    if stop.is_set():
        return
    await ensure_topics(settings)
    if stop.is_set():
        return
    lifecycle = Lifecycle()
    async with AsyncExitStack() as stack:
        infra = await stack.enter_async_context(open_infrastructure(settings))
        # OAuth tokens against the provider emulator, with --emulator.
        emulator_url = None
        if options.emulator:
            emulator = await stack.enter_async_context(running_emulator("127.0.0.1", options.emulator_port))
            emulator_url = emulator.base_url
        # The gateway and the worker's tasks share one metrics registry (one `/metrics` carries both)
        # and one token manager (its metrics registered once), closed after both.
        registry = CollectorRegistry()
        # Traces when OTEL_* asks for them (docs/architecture.md, "Tracing"), flushed last.
        tracing = tracing_from_environment()
        stack.callback(tracing.shutdown)
        tokens = build_token_manager(settings, infra, registry, tracing.tracer(TOKENS))
        if tokens is not None:
            stack.push_async_callback(tokens.close)
        tasks = await stack.enter_async_context(
            running_worker_tasks(settings, infra, registry, tokens=tokens, tracing=tracing)
        )
        app = create_app(
            settings,
            lifecycle,
            infra,
            worker=InProcessWorker(registry, tokens, tasks.checks),
            tracing=tracing,
        )
        server = _DevServer(uvicorn_config(settings, app, options.host, options.port))
        serving = asyncio.create_task(server.serve())
        try:
            if await _until_ready(app, server, serving, tasks, stop):
                urls = emulator_banner_lines(emulator_url, f"http://{options.host}:{options.port}", settings)
                print(banner(settings, options) + "\n".join(urls), file=sys.stderr, flush=True)
                # Until Ctrl-C, or the server or the tasks end early (a failed task's error is raised
                # as the tasks' block exits).
                stopping = asyncio.create_task(stop.wait())
                try:
                    await asyncio.wait({stopping, serving, tasks.done}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopping.cancel()
        finally:
            lifecycle.draining = True  # /readyz answers 503 from now on
            server.should_exit = True
            await serving


async def _until_ready(
    app: Starlette,
    server: uvicorn.Server,
    serving: "asyncio.Task[None]",
    tasks: RunningTasks,
    stop: asyncio.Event,
) -> bool:
    """Wait until `/readyz` would answer 200; False when `stop` comes first, or the server or the
    tasks ended."""
    while not (stop.is_set() or serving.done() or tasks.done.done()):
        if server.started:
            readiness: Readiness = app.state.readiness
            if all(state == "ok" for state in (await readiness.checks()).values()):
                return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    return False
