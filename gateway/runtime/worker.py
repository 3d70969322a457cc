"""`ledgerhook worker`: the worker process, running the fan-out worker and the periodic tasks.

It opens the infrastructure once, runs its tasks on it (each an `async run(stop)`) and serves the
health endpoints on `LEDGERHOOK_WORKER_PORT`: `/readyz` answers 200 once the tasks that say when
they are ready are (the fan-out worker has its partitions, the poller runs). On SIGTERM (or Ctrl-C)
every task finishes what it is doing, the fan-out worker committing its current batch; a task that
fails stops the others and the process exits 1, so the orchestrator restarts it. `ledgerhook dev`
runs the same tasks in its own process (`running_worker_tasks`).
"""

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from fanout.dedupe import DedupePruner
from fanout.pipeline import FanoutWorker, WorkerConfig, WorkerMetrics
from gateway.runtime.activity import ActivityRecorder
from gateway.runtime.connection_metrics import ConnectionStatusSampler
from gateway.runtime.health import Readiness, health_routes
from gateway.runtime.http_protocol import connection_limits, protocol_class
from gateway.runtime.infra import Infrastructure, open_infrastructure
from gateway.runtime.kafka import connection_options
from gateway.runtime.lifecycle import Lifecycle
from gateway.runtime.logs import configure_logging
from gateway.runtime.loops import freeze_startup_heap, run_event_loop
from gateway.runtime.oauth import build_refresher, build_token_manager
from gateway.runtime.polling import build_poller
from gateway.runtime.tracing import FANOUT, POLLER, TOKENS, Tracing, tracing_from_environment
from gateway.settings import Settings
from provider_auth.accounts.store import ConnectionStore
from provider_auth.audit import AuditPruner
from provider_auth.tokens import TokenManager

log = logging.getLogger("ledgerhook.worker")

PRUNE_INTERVAL = timedelta(minutes=5)


@dataclass(frozen=True)
class WorkerTask:
    """One long-running job of the worker process: runs until `stop` is set, then returns."""

    name: str
    run: Callable[[asyncio.Event], Awaitable[None]]
    # Whether the task does its job yet (the fan-out worker has its partitions), for `/readyz`; None
    # for a task that never holds readiness back.
    ready: Callable[[], bool] | None = None


class TaskChecks:
    """The `/readyz` checks of the tasks that say when they are ready: `starting`, then `ok`, then
    `stopped` once the task returned."""

    def __init__(self, tasks: Sequence[WorkerTask]) -> None:
        self._tasks = [task for task in tasks if task.ready is not None]
        self._stopped: set[str] = set()

    def stopped(self, name: str) -> None:
        """The task `name` has returned."""
        self._stopped.add(name)

    def __call__(self) -> dict[str, str]:
        """Each task's state, by task name."""
        return {task.name: self._state(task) for task in self._tasks}

    def _state(self, task: WorkerTask) -> str:
        if task.name in self._stopped:
            return "stopped"
        return "ok" if task.ready is not None and task.ready() else "starting"


def audit_pruner(settings: Settings, infra: Infrastructure) -> AuditPruner:
    """The audit trail's pruning task: entries older than LEDGERHOOK_AUDIT_RETENTION_DAYS go."""
    return AuditPruner(infra.pool, timedelta(days=settings.audit_retention_days), PRUNE_INTERVAL)


def worker_tasks(
    settings: Settings,
    infra: Infrastructure,
    registry: CollectorRegistry,
    tokens: TokenManager | None = None,
    tracing: Tracing | None = None,
) -> list[WorkerTask]:
    """Every task of the worker process, on the given infrastructure (add new periodic tasks here).

    `tokens` is the process's token manager when the caller has one (`dev` shares the gateway's);
    else one is made here, with its metrics in `registry`. `tracing` is the process's (none: off).
    """
    tracing = tracing if tracing is not None else Tracing()
    fanout = FanoutWorker(
        WorkerConfig(
            raw_topic=settings.topic_raw,
            changes_topic=settings.topic_changes,
            quarantine_topic=settings.topic_quarantine,
            group_id=settings.worker_group_id,
            batch_size=settings.worker_batch_size,
            session_timeout_ms=settings.worker_session_timeout_ms,
            connection_cache_seconds=settings.connection_cache_seconds,
            reconcile_webhooks=settings.reconcile_webhooks,
        ),
        connection_options(settings),
        infra.producer,
        infra.pool,
        ConnectionStore(infra.pool, keyring=None),  # routing reads no secrets
        WorkerMetrics(registry),
        tracing.tracer(FANOUT),
    )
    pruner = DedupePruner(infra.pool, timedelta(days=settings.dedupe_retention_days), PRUNE_INTERVAL)
    # The ledgerhook_connections gauge (connections by provider and status).
    sampler = ConnectionStatusSampler(ConnectionStore(infra.pool, keyring=None), registry)
    tasks = [
        WorkerTask("fanout", fanout.run, ready=lambda: fanout.ready),
        WorkerTask("dedupe-prune", pruner.run),
        WorkerTask("audit-prune", audit_pruner(settings, infra).run),
        WorkerTask("connection-metrics", sampler.run),
        # The console's recent activity, from this registry (with `dev`, the gateway's too).
        WorkerTask("activity", ActivityRecorder(infra.pool, registry).run),
    ]
    # OAuth tokens renewed ahead of expiry (needs LEDGERHOOK_ENCRYPTION_KEYS: tokens are stored encrypted).
    if tokens is None:
        tokens = build_token_manager(settings, infra, registry, tracing.tracer(TOKENS))
    if tokens is not None:
        tasks.append(WorkerTask("token-refresher", build_refresher(settings, tokens).run))
        # Change polling reads the providers' APIs with those tokens.
        poller = build_poller(settings, infra, tokens, registry, tracing.tracer(POLLER))
        tasks.append(WorkerTask("change-poller", poller.run, ready=lambda: poller.ready))
    return tasks


async def run_tasks(
    tasks: Sequence[WorkerTask], stop: asyncio.Event, checks: TaskChecks | None = None
) -> None:
    """Run every task until `stop` is set; the first failure stops the others and is re-raised.
    `checks` learns of each task that returned."""

    async def guarded(task: WorkerTask) -> None:
        try:
            await task.run(stop)
        except Exception:
            log.exception("worker task failed", extra={"task": task.name})
            stop.set()
            raise
        finally:
            if checks is not None:
                checks.stopped(task.name)

    results = await asyncio.gather(*(guarded(task) for task in tasks), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


@dataclass(frozen=True)
class RunningTasks:
    """The worker's tasks running in this process: their `/readyz` checks, and the asyncio task that
    is done once they all returned (early when one failed)."""

    checks: TaskChecks
    done: "asyncio.Task[None]"


@contextlib.asynccontextmanager
async def running_worker_tasks(
    settings: Settings,
    infra: Infrastructure,
    registry: CollectorRegistry,
    tokens: TokenManager | None = None,
    tracing: Tracing | None = None,
) -> AsyncIterator[RunningTasks]:
    """The worker's tasks in the current event loop for the block (`ledgerhook dev` runs them so;
    `tokens` and `tracing` as for `worker_tasks`).

    On exit they finish what they are doing (the fan-out batch in progress is committed); a task
    that failed is re-raised there.
    """
    stop = asyncio.Event()
    tasks = worker_tasks(settings, infra, registry, tokens, tracing)
    checks = TaskChecks(tasks)
    done = asyncio.create_task(run_tasks(tasks, stop, checks))
    try:
        yield RunningTasks(checks, done)
    finally:
        stop.set()
        await done


class _HealthServer(uvicorn.Server):
    """uvicorn for the health endpoints; the worker, not uvicorn, owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def health_app(
    lifecycle: Lifecycle,
    infra: Infrastructure,
    registry: CollectorRegistry,
    checks: Callable[[], Mapping[str, str]] | None = None,
) -> Starlette:
    """The worker's health endpoints: `/readyz` checks the broker, the database and the tasks'
    `checks` (503 while stopping)."""
    readiness = Readiness(lifecycle, infra.producer, infra.pool, checks)
    app = Starlette(routes=health_routes(readiness.readyz, registry))
    app.router.redirect_slashes = False  # a redirect would be built from the Host header
    return app


async def serve_worker(settings: Settings, stop: asyncio.Event, tracing: Tracing | None = None) -> None:
    """The worker process's body: infrastructure, health server and tasks, until `stop` is set."""
    lifecycle = Lifecycle()
    registry = CollectorRegistry()
    async with open_infrastructure(settings) as infra:
        tasks = worker_tasks(settings, infra, registry, tracing=tracing)
        checks = TaskChecks(tasks)
        health = _HealthServer(
            uvicorn.Config(
                health_app(lifecycle, infra, registry, checks),
                host=settings.host,
                port=settings.worker_port,
                # The limits of the gateway's connections (docs/architecture.md, "Connection limits").
                http=protocol_class(connection_limits(settings)),
                ws="none",
                timeout_keep_alive=settings.keep_alive_seconds,
                log_config=None,
                access_log=False,
                server_header=False,
                lifespan="off",
            )
        )
        health_task = asyncio.create_task(health.serve())

        async def drain_on_stop() -> None:
            await stop.wait()
            lifecycle.draining = True  # /readyz answers 503 while the tasks finish

        drain_task = asyncio.create_task(drain_on_stop())
        log.info("worker started", extra={"port": settings.worker_port})
        try:
            await run_tasks(tasks, stop, checks)
        finally:
            stop.set()
            await drain_task
            health.should_exit = True
            await health_task


def run_worker_process(settings: Settings) -> int:
    """`ledgerhook worker`: run until SIGTERM or Ctrl-C; 0 on a clean stop, 1 when a task failed."""
    configure_logging(settings.log_level)
    tracing = tracing_from_environment()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, sig, stop)
        await serve_worker(settings, stop, tracing)

    freeze_startup_heap()
    try:
        run_event_loop(main())
    except Exception:
        log.exception("worker stopped on an error")
        return 1
    finally:
        tracing.shutdown()  # the spans still buffered are exported
    return 0


def _on_signal(sig: int, stop: asyncio.Event) -> None:
    log.info("stopping", extra={"signal": signal.Signals(sig).name})
    stop.set()
