"""`/livez`, `/readyz` and `/metrics`, as both the gateway and the worker process serve them.

`/readyz` answers within CHECK_TIMEOUT (plus a few milliseconds) whatever its dependencies do: a
frozen database or broker is reported `unreachable`, never waited for.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.runtime.lifecycle import Lifecycle

CHECK_TIMEOUT = 2.0
# Probes given up on that are still unwinding; past this many the dependency is reported unreachable
# without starting another, so a stuck dependency cannot pile up connections and tasks.
MAX_UNWINDING = 4
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

Endpoint = Callable[[Request], Awaitable[Response]]


async def livez(request: Request) -> Response:
    """The process is alive and its event loop answers."""
    return JSONResponse({"status": "ok"})


class BoundedCheck:
    """One dependency's check, whose answer never waits longer than CHECK_TIMEOUT.

    The probe runs in a task of its own, and the answer waits for that task, not for the probe to
    unwind: a client library may wait for a frozen server even once cancelled (asyncpg hands a
    connection back to its pool under `asyncio.shield`, after asking the server to cancel the query).
    A probe given up on is cancelled and left to finish on its own.
    """

    def __init__(
        self, probe: Callable[[], Coroutine[Any, Any, bool]], timeout: float = CHECK_TIMEOUT
    ) -> None:
        self._probe = probe
        self._timeout = timeout
        self._unwinding: set[asyncio.Task[bool]] = set()

    async def state(self) -> str:
        """`ok` when the probe says so in time; `unreachable` when it says no, fails or is late."""
        if len(self._unwinding) >= MAX_UNWINDING:
            return "unreachable"
        task = asyncio.create_task(self._probe())
        try:
            done, _ = await asyncio.wait({task}, timeout=self._timeout)
        except asyncio.CancelledError:
            self._give_up(task)
            raise
        if not done:
            self._give_up(task)
            return "unreachable"
        if task.cancelled() or task.exception() is not None:
            return "unreachable"
        return "ok" if task.result() else "unreachable"

    def _give_up(self, task: "asyncio.Task[bool]") -> None:
        task.cancel()
        self._unwinding.add(task)
        task.add_done_callback(self._unwound)

    def _unwound(self, task: "asyncio.Task[bool]") -> None:
        self._unwinding.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a late failure is expected, not worth asyncio's warning


async def database_answers(pool: asyncpg.Pool) -> bool:
    """True once a pooled connection ran `SELECT 1`."""
    connection = await pool.acquire()
    try:
        await connection.fetchval("SELECT 1")
    except BaseException:
        # Cut short (timed out) or failed: drop the connection rather than hand it back. Handing it
        # back waits, shielded, for the server to confirm the query's cancellation, and a frozen
        # server never does; a dropped connection is replaced on the next acquire.
        connection.terminate()
        raise
    finally:
        with contextlib.suppress(asyncpg.InterfaceError):
            await pool.release(connection)  # does nothing once terminated
    return True


async def broker_answers(producer: AIOKafkaProducer) -> bool:
    """True when the cluster's metadata names at least one broker."""
    metadata = await producer.client.fetch_all_metadata()
    return bool(metadata.brokers())


class Readiness:
    """Ready when not draining, both the broker and the database answer, and each of `tasks` (the
    worker's tasks, by name: `starting`, `ok`, `stopped`) is `ok`."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        producer: AIOKafkaProducer,
        pool: asyncpg.Pool,
        tasks: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self._lifecycle = lifecycle
        self._broker = BoundedCheck(lambda: broker_answers(producer))
        self._database = BoundedCheck(lambda: database_answers(pool))
        self._tasks = tasks

    async def checks(self) -> dict[str, str]:
        """Each check's state, `ok` when ready: the broker, the database, then the tasks."""
        broker, database = await asyncio.gather(self._broker.state(), self._database.state())
        return {"broker": broker, "database": database, **(self._tasks() if self._tasks else {})}

    async def readyz(self, request: Request) -> Response:
        """200 with each check's state, or 503 naming what is not ready."""
        if self._lifecycle.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        checks = await self.checks()
        ready = all(state == "ok" for state in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
        )


def metrics_endpoint(registry: CollectorRegistry) -> Endpoint:
    """`/metrics`: Prometheus text exposition of `registry`."""

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=PROMETHEUS_TEXT)

    return metrics


def health_routes(readyz: Endpoint, registry: CollectorRegistry) -> list[Route]:
    """`/livez`, `/readyz` (answered by `readyz`) and `/metrics` (from `registry`)."""
    return [
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint(registry), methods=["GET"]),
    ]
