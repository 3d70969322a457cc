"""The worker process's `/readyz` waits for its tasks: 503 naming each one not ready yet, 200 once the
fan-out worker has its partitions and the poller runs, `stopped` once they returned."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from gateway.dev.embedded import free_port
from gateway.runtime.infra import open_infrastructure
from gateway.runtime.lifecycle import Lifecycle
from gateway.runtime.worker import TaskChecks, WorkerTask, health_app, run_tasks, worker_tasks
from provider_auth.vault import KeyRing
from tests.support import migrate_and_create_topics


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """`app` on a loopback port for the block; its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the health server did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def readyz(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url + "/readyz") as response:
        return response.status, await response.json()


async def test_worker_readyz_waits_for_the_fanout_partitions_and_the_poller(
    settings_factory: Any, database_url: str
) -> None:
    # A database of its own: the poller syncs every connection there is.
    settings = settings_factory(
        database_url=database_url,
        encryption_keys=f"k1:{KeyRing.generate_key()}",  # tokens, so the poller runs too
        worker_group_id=f"readiness-{uuid.uuid4().hex[:8]}",
        worker_session_timeout_ms=2000,
    )
    await migrate_and_create_topics(settings)
    registry = CollectorRegistry()
    async with open_infrastructure(settings) as infra, aiohttp.ClientSession() as http:
        tasks = worker_tasks(settings, infra, registry)
        checks = TaskChecks(tasks)
        async with serving(health_app(Lifecycle(), infra, registry, checks)) as url:
            # Not started yet: both tasks that gate readiness are named.
            assert await readyz(http, url) == (
                503,
                {
                    "status": "not_ready",
                    "checks": {
                        "broker": "ok",
                        "database": "ok",
                        "fanout": "starting",
                        "change-poller": "starting",
                    },
                },
            )
            stop = asyncio.Event()
            running = asyncio.create_task(run_tasks(tasks, stop, checks))
            seen: list[tuple[int, dict[str, Any]]] = []
            async with asyncio.timeout(60):
                while not seen or seen[-1][0] != 200:
                    seen.append(await readyz(http, url))
                    await asyncio.sleep(0.02)
            # The consumer group's first join takes a while (about half the session timeout with the
            # dev broker): /readyz said so meanwhile, naming the fan-out worker.
            assert any(body["checks"]["fanout"] == "starting" for status, body in seen if status == 503)
            for status, body in seen:
                ready = all(state == "ok" for state in body["checks"].values())
                assert (status == 200) == ready, body
            assert seen[-1][1]["checks"] == {
                "broker": "ok",
                "database": "ok",
                "fanout": "ok",
                "change-poller": "ok",
            }

            stop.set()
            await running
            assert await readyz(http, url) == (
                503,
                {
                    "status": "not_ready",
                    "checks": {
                        "broker": "ok",
                        "database": "ok",
                        "fanout": "stopped",
                        "change-poller": "stopped",
                    },
                },
            )


async def test_task_checks_name_only_the_tasks_that_gate_readiness() -> None:
    joined = asyncio.Event()

    async def joins_then_waits(stop: asyncio.Event) -> None:
        joined.set()
        await stop.wait()

    async def fails(stop: asyncio.Event) -> None:
        await stop.wait()
        raise RuntimeError("broken")

    async def periodic(stop: asyncio.Event) -> None:
        await stop.wait()

    tasks = [
        WorkerTask("fanout", joins_then_waits, ready=joined.is_set),
        WorkerTask("flaky", fails, ready=lambda: True),
        WorkerTask("dedupe-prune", periodic),  # no readiness of its own: never named
    ]
    checks = TaskChecks(tasks)
    assert checks() == {"fanout": "starting", "flaky": "ok"}
    stop = asyncio.Event()
    running = asyncio.create_task(run_tasks(tasks, stop, checks))
    await asyncio.wait_for(joined.wait(), 5)
    assert checks() == {"fanout": "ok", "flaky": "ok"}
    stop.set()
    with pytest.raises(RuntimeError, match="broken"):
        await running
    # A task that returned, failed or not, is no longer ready.
    assert checks() == {"fanout": "stopped", "flaky": "stopped"}
