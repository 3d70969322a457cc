"""Serving the app: a uvicorn server that drains before it stops, and a tiny supervisor of several
server processes (`LEDGERHOOK_WORKERS`).

Shutdown on SIGTERM (or Ctrl-C): `/readyz` turns 503 at once, the listener stays open for
`LEDGERHOOK_SHUTDOWN_DRAIN_SECONDS` so load balancers notice, then it closes, in-flight requests
finish (bounded by `LEDGERHOOK_SHUTDOWN_TIMEOUT_SECONDS`), the producer is flushed, exit 0.
A second signal skips the rest of the drain; a third forces the exit.

`ledgerhook serve` checks its settings and dependencies before it gets here
(gateway/runtime/preflight.py); a start-up that still fails is logged in one line, exit 3.
"""

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.app import create_app
from gateway.runtime.http_protocol import connection_limits, protocol_class
from gateway.runtime.lifecycle import Lifecycle
from gateway.runtime.logs import configure_logging
from gateway.runtime.loops import freeze_startup_heap
from gateway.runtime.preflight import one_line
from gateway.runtime.tracing import tracing_from_environment
from gateway.settings import Settings

log = logging.getLogger("ledgerhook.server")

STARTUP_FAILURE = 3


class BriefLifespanFailures:
    """The app, with a start-up or shutdown failure logged as one line naming the exception instead
    of a traceback (the traceback is logged at DEBUG)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection; a failed lifespan is reported from its exception."""
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        # Starlette sends the failure (with the formatted traceback) and then raises: hold the
        # message until the exception it stands for is known.
        held: Message | None = None

        async def hold_failure(message: Message) -> None:
            nonlocal held
            if message["type"] in ("lifespan.startup.failed", "lifespan.shutdown.failed"):
                held = message
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold_failure)
        except BaseException as exc:
            if held is None:
                raise
            log.debug("lifespan failed", exc_info=exc)
            what = "start" if held["type"] == "lifespan.startup.failed" else "stop cleanly"
            await send({**held, "message": f"the gateway could not {what}: {one_line(exc)}"})
            raise
        if held is not None:
            await send(held)


class GatewayServer(uvicorn.Server):
    """uvicorn's server with a readiness drain between the signal and closing the listener."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_seconds: float) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle
        self._drain_seconds = drain_seconds
        self._drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Unlike the base class, the signal is not re-raised after shutdown: a drained exit is 0.
        if self.should_exit:
            self.force_exit = True
        elif self._drain_deadline is None:
            self._lifecycle.draining = True
            self._drain_deadline = time.monotonic() + self._drain_seconds
            log.info("draining", extra={"signal": signal.Signals(sig).name, "seconds": self._drain_seconds})
        else:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_deadline is not None and time.monotonic() >= self._drain_deadline:
            self.should_exit = True
        return await super().on_tick(counter)


def uvicorn_config(settings: Settings, app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    """uvicorn settings for the gateway: our logging, no server header, bounded shutdown, and every
    connection held to the limits of the settings (gateway/runtime/http_protocol.py)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(connection_limits(settings)),
        ws="none",  # no WebSocket routes: an upgrade would leave the connection limits behind
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
        timeout_keep_alive=settings.keep_alive_seconds,
    )


def run_server_process(settings: Settings, sock: socket.socket | None = None) -> int:
    """Run one gateway server process until it is signalled; 0 on a clean stop, 3 if it could not start."""
    configure_logging(settings.log_level)
    lifecycle = Lifecycle()
    tracing = tracing_from_environment()  # once per process: each server process traces on its own
    app = BriefLifespanFailures(create_app(settings, lifecycle, tracing=tracing))
    server = GatewayServer(
        uvicorn_config(settings, app, settings.host, settings.port),
        lifecycle,
        settings.shutdown_drain_seconds,
    )
    freeze_startup_heap()
    try:
        server.run(sockets=[sock] if sock else None)
    finally:
        tracing.shutdown()  # the spans still buffered are exported
    return 0 if server.started else STARTUP_FAILURE


def _server_process_main(settings: Settings, sock: socket.socket) -> None:
    sys.exit(run_server_process(settings, sock))


def serve(settings: Settings) -> int:
    """`ledgerhook serve`: one process, or `LEDGERHOOK_WORKERS` processes sharing one listening socket."""
    if settings.workers == 1:
        return run_server_process(settings)
    configure_logging(settings.log_level)
    try:
        sock = socket.create_server((settings.host, settings.port), reuse_port=False, backlog=2048)
    except OSError as exc:
        log.error(
            "cannot listen on the gateway's address; check LEDGERHOOK_HOST and LEDGERHOOK_PORT",
            extra={"host": settings.host, "port": settings.port, "reason": exc.strerror or str(exc)},
        )
        return STARTUP_FAILURE
    sock.set_inheritable(True)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_server_process_main, args=(settings, sock), name=f"ledgerhook-worker-{i}")
        for i in range(settings.workers)
    ]
    stop = threading.Event()

    def forward(sig: int, frame: FrameType | None) -> None:
        stop.set()
        for process in processes:
            if process.is_alive():
                _signal(process.pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for process in processes:
        process.start()
    log.info("gateway started", extra={"workers": settings.workers, "port": settings.port})
    while not stop.is_set():
        dead = [p for p in processes if not p.is_alive()]
        if dead:
            # A process that dies on its own means something is wrong; let the orchestrator restart us.
            log.error("gateway worker exited unexpectedly", extra={"exit_code": dead[0].exitcode})
            for process in processes:
                if process.is_alive():
                    _signal(process.pid, signal.SIGTERM)
            for process in processes:
                process.join()
            # One that could not start (exit 3) says the configuration is wrong, not the process.
            return STARTUP_FAILURE if dead[0].exitcode == STARTUP_FAILURE else 1
        stop.wait(0.5)
    for process in processes:
        process.join()
    sock.close()
    # A process still starting when the signal came dies of it before serving anything: also clean.
    clean = {0, -signal.SIGTERM, -signal.SIGINT}
    return 0 if all(p.exitcode in clean for p in processes) else 1


def _signal(pid: int | None, sig: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
