"""`/livez`, `/readyz` and `/metrics`, as both the gateway and the worker process serve them."""

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.runtime.lifecycle import Lifecycle

CHECK_TIMEOUT = 2.0
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

Endpoint = Callable[[Request], Awaitable[Response]]


async def livez(request: Request) -> Response:
    """The process is alive and its event loop answers."""
    return JSONResponse({"status": "ok"})


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
        self._producer = producer
        self._pool = pool
        self._tasks = tasks

    async def checks(self) -> dict[str, str]:
        """Each check's state, `ok` when ready: the broker, the database, then the tasks."""
        broker, database = await asyncio.gather(self._broker(), self._database())
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

    async def _broker(self) -> str:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                metadata = await self._producer.client.fetch_all_metadata()
            return "ok" if metadata.brokers() else "unreachable"
        except Exception:
            return "unreachable"

    async def _database(self) -> str:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self._pool.fetchval("SELECT 1")
            return "ok"
        except Exception:
            return "unreachable"


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
