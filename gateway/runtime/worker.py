"""`ledgerhook worker`: the worker process, running the fan-out worker and the periodic tasks.

It opens the infrastructure once, runs its tasks on it (each an `async run(stop)`) and serves the
health endpoints on `LEDGERHOOK_WORKER_PORT`. On SIGTERM (or Ctrl-C) every task finishes what it is
doing, the fan-out worker committing its current batch; a task that fails stops the others and the
process exits 1, so the orchestrator restarts it. `ledgerhook dev` runs the same tasks in its own
process (`running_worker_tasks`).
"""

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from fanout.dedupe import DedupePruner
from fanout.pipeline import FanoutWorker, WorkerConfig, WorkerMetrics
from gateway.runtime.health import Readiness, health_routes
from gateway.runtime.infra import Infrastructure, open_infrastructure
from gateway.runtime.kafka import connection_options
from gateway.runtime.lifecycle import Lifecycle
from gateway.runtime.logs import configure_logging
from gateway.runtime.loops import freeze_startup_heap, run_event_loop
from gateway.runtime.oauth import build_refresher, build_token_manager
from gateway.runtime.polling import build_poller
from gateway.settings import Settings
from provider_auth.accounts.store import ConnectionStore

log = logging.getLogger("ledgerhook.worker")

PRUNE_INTERVAL = timedelta(minutes=5)


@dataclass(frozen=True)
class WorkerTask:
    """One long-running job of the worker process: runs until `stop` is set, then returns."""

    name: str
    run: Callable[[asyncio.Event], Awaitable[None]]


def worker_tasks(settings: Settings, infra: Infrastructure, registry: CollectorRegistry) -> list[WorkerTask]:
    """Every task of the worker process, on the given infrastructure (add new periodic tasks here)."""
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
    )
    pruner = DedupePruner(infra.pool, timedelta(days=settings.dedupe_retention_days), PRUNE_INTERVAL)
    tasks = [WorkerTask("fanout", fanout.run), WorkerTask("dedupe-prune", pruner.run)]
    # OAuth tokens renewed ahead of expiry (needs LEDGERHOOK_ENCRYPTION_KEYS: tokens are stored encrypted).
    tokens = build_token_manager(settings, infra, registry)
    if tokens is not None:
        tasks.append(WorkerTask("token-refresher", build_refresher(settings, tokens).run))
        # Change polling reads the providers' APIs with those tokens.
        tasks.append(WorkerTask("change-poller", build_poller(settings, infra, tokens, registry).run))
    return tasks


async def run_tasks(tasks: list[WorkerTask], stop: asyncio.Event) -> None:
    """Run every task until `stop` is set; the first failure stops the others and is re-raised."""

    async def guarded(task: WorkerTask) -> None:
        try:
            await task.run(stop)
        except Exception:
            log.exception("worker task failed", extra={"task": task.name})
            stop.set()
            raise

    results = await asyncio.gather(*(guarded(task) for task in tasks), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


@contextlib.asynccontextmanager
async def running_worker_tasks(
    settings: Settings,
    infra: Infrastructure,
    registry: CollectorRegistry,
) -> AsyncIterator[None]:
    """The worker's tasks in the current event loop for the block (`ledgerhook dev` runs them so).

    On exit they finish what they are doing (the fan-out batch in progress is committed); a task
    that failed is re-raised there.
    """
    stop = asyncio.Event()
    tasks = asyncio.create_task(run_tasks(worker_tasks(settings, infra, registry), stop))
    try:
        yield
    finally:
        stop.set()
        await tasks


class _HealthServer(uvicorn.Server):
    """uvicorn for the health endpoints; the worker, not uvicorn, owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def health_app(lifecycle: Lifecycle, infra: Infrastructure, registry: CollectorRegistry) -> Starlette:
    """The worker's health endpoints: `/readyz` checks the broker and the database (503 while stopping)."""
    return Starlette(routes=health_routes(Readiness(lifecycle, infra.producer, infra.pool).readyz, registry))


async def serve_worker(settings: Settings, stop: asyncio.Event) -> None:
    """The worker process's body: infrastructure, health server and tasks, until `stop` is set."""
    lifecycle = Lifecycle()
    registry = CollectorRegistry()
    async with open_infrastructure(settings) as infra:
        health = _HealthServer(
            uvicorn.Config(
                health_app(lifecycle, infra, registry),
                host=settings.host,
                port=settings.worker_port,
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
            await run_tasks(worker_tasks(settings, infra, registry), stop)
        finally:
            stop.set()
            await drain_task
            health.should_exit = True
            await health_task


def run_worker_process(settings: Settings) -> int:
    """`ledgerhook worker`: run until SIGTERM or Ctrl-C; 0 on a clean stop, 1 when a task failed."""
    configure_logging(settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, sig, stop)
        await serve_worker(settings, stop)

    freeze_startup_heap()
    try:
        run_event_loop(main())
    except Exception:
        log.exception("worker stopped on an error")
        return 1
    return 0


def _on_signal(sig: int, stop: asyncio.Event) -> None:
    log.info("stopping", extra={"signal": signal.Signals(sig).name})
    stop.set()
