"""`/livez`, `/readyz` and `/metrics`."""

import asyncio

import asyncpg
from aiokafka import AIOKafkaProducer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.runtime.lifecycle import Lifecycle
from gateway.runtime.metrics import Metrics

CHECK_TIMEOUT = 2.0


async def livez(request: Request) -> Response:
    """The process is alive and its event loop answers."""
    return JSONResponse({"status": "ok"})


class Readiness:
    """Ready when not draining and both the broker and the database answer."""

    def __init__(self, lifecycle: Lifecycle, producer: AIOKafkaProducer, pool: asyncpg.Pool) -> None:
        self._lifecycle = lifecycle
        self._producer = producer
        self._pool = pool

    async def __call__(self, request: Request) -> Response:
        """200 with each check's state, or 503 naming what is not ready."""
        if self._lifecycle.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        broker, database = await asyncio.gather(self._broker(), self._database())
        checks = {"broker": broker, "database": database}
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


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text exposition of the app's registry."""
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
