"""`/readyz` answers within its check timeout whatever its dependencies do: probes sent while the
test's own PostgreSQL or broker is frozen (SIGSTOP) get 503 naming it in time, every one of them,
and 200 again soon after the freeze ends, from the gateway and the worker alike, with no pooled
connection left behind."""

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from gateway.dev.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from gateway.runtime.health import CHECK_TIMEOUT
from gateway.runtime.infra import Infrastructure, open_infrastructure
from gateway.runtime.lifecycle import Lifecycle
from gateway.runtime.worker import health_app
from gateway.settings import Settings
from tests.support import make_settings, running_gateway

FREEZE_SECONDS = 8.0
PROBES_AT = (0.0, 3.0, 5.0)  # seconds into the freeze, as the issue measured them
# The check's timeout plus room for a busy test machine; a probe that waited for the frozen
# dependency would take the rest of the freeze (3 s or more).
ANSWER_WITHIN = CHECK_TIMEOUT + 1.0
READY_AGAIN_WITHIN = 10.0

Probe = tuple[float, int, dict[str, Any]]


@contextmanager
def frozen(root: int) -> Iterator[None]:
    """The process `root` and its children stopped (SIGSTOP) for the block, and resumed whatever
    happens. The root first, so it starts no child meanwhile (each PostgreSQL backend leads a process
    group of its own: a signal to the postmaster's group would miss them)."""
    stopped = [root]
    try:
        os.kill(root, signal.SIGSTOP)
        for child in _children(root):
            os.kill(child, signal.SIGSTOP)
            stopped.append(child)
        yield
    finally:
        for pid in reversed(stopped):
            os.kill(pid, signal.SIGCONT)


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:  # the field after the name: ppid
                found.append(int(entry.name))
    return found


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A PostgreSQL server of this test's own (freezing the session's would stall other tests): its
    URL and the postmaster's pid."""
    server = EmbeddedPostgres(tmp_path / "pg", cleanup="delete")
    url = server.start()
    postmaster = int((tmp_path / "pg" / "postmaster.pid").read_text().split()[0])
    try:
        yield url, postmaster
    finally:
        server.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A broker of this test's own: its bootstrap servers and pid."""
    port = free_port()
    broker = EmbeddedBroker(port, log_path=tmp_path / "broker.log")
    broker.start()
    try:
        yield broker.bootstrap, _listening_broker(port)
    finally:
        broker.stop()


def _listening_broker(port: int) -> int:
    """The pid of the broker started with a listener on `port`."""
    listener = f"tcp://127.0.0.1:{port}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                arguments = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"broker" in arguments and listener in arguments:
                return int(entry.name)
    raise AssertionError(f"no broker listens on {port}")


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """`app` on a loopback port for the block; its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the health server did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def gateway_and_worker(settings: Settings) -> AsyncIterator[tuple[list[str], Infrastructure]]:
    """The gateway's and a worker's health endpoints on `settings`: their base URLs, and the
    worker's infrastructure."""
    async with (
        running_gateway(settings) as gateway,
        open_infrastructure(settings) as infra,
        serving(health_app(Lifecycle(), infra, CollectorRegistry())) as worker,
    ):
        yield [gateway.base_url, worker], infra


async def probe(http: aiohttp.ClientSession, base_url: str, after: float = 0.0) -> Probe:
    """`GET /readyz` sent `after` seconds from now: how long it took, the status, the body."""
    await asyncio.sleep(after)
    started = time.monotonic()
    async with http.get(base_url + "/readyz", timeout=aiohttp.ClientTimeout(total=30)) as response:
        body = await response.json()
    return time.monotonic() - started, response.status, body


async def probes_during_freeze(
    http: aiohttp.ClientSession, targets: list[str], freeze: AbstractContextManager[None]
) -> list[Probe]:
    """Probes to each target at each of PROBES_AT into a freeze of FREEZE_SECONDS."""
    with freeze:
        started = time.monotonic()
        answers = await asyncio.gather(*(probe(http, base, at) for base in targets for at in PROBES_AT))
        await asyncio.sleep(max(0.0, FREEZE_SECONDS - (time.monotonic() - started)))
    return answers


async def ready_again(http: aiohttp.ClientSession, base_url: str) -> None:
    """200 within READY_AGAIN_WITHIN after a freeze, every probe on the way answered in time."""
    deadline = time.monotonic() + READY_AGAIN_WITHIN
    while True:
        elapsed, status, body = await probe(http, base_url)
        assert elapsed < ANSWER_WITHIN, (elapsed, body)
        if status == 200:
            return
        assert time.monotonic() < deadline, f"{base_url} still not ready: {body}"
        await asyncio.sleep(0.2)


def assert_named_in_time(answers: list[Probe], frozen_check: str, other_check: str) -> None:
    assert len(answers) == 2 * len(PROBES_AT)
    for elapsed, status, body in answers:
        assert elapsed < ANSWER_WITHIN, (elapsed, body)
        assert status == 503 and body["status"] == "not_ready", body
        assert body["checks"][frozen_check] == "unreachable" and body["checks"][other_check] == "ok", body


async def test_a_frozen_database_is_named_in_time(
    own_postgres: tuple[str, int], broker: EmbeddedBroker
) -> None:
    url, postmaster = own_postgres
    async with gateway_and_worker(make_settings(url, broker.bootstrap)) as (targets, infra):
        async with aiohttp.ClientSession() as http:
            for base in targets:
                assert (await probe(http, base))[1] == 200
            answers = await probes_during_freeze(http, targets, frozen(postmaster))
            assert_named_in_time(answers, "database", "broker")
            for base in targets:
                await ready_again(http, base)
        # Every connection a cut-short probe held was dropped, none is still checked out.
        assert infra.pool.get_size() == infra.pool.get_idle_size()
        assert await infra.pool.fetchval("SELECT 1") == 1


async def test_a_frozen_broker_is_named_in_time(own_broker: tuple[str, int], postgres_url: str) -> None:
    bootstrap, pid = own_broker
    async with gateway_and_worker(make_settings(postgres_url, bootstrap)) as (targets, infra):
        async with aiohttp.ClientSession() as http:
            for base in targets:
                assert (await probe(http, base))[1] == 200
            answers = await probes_during_freeze(http, targets, frozen(pid))
            assert_named_in_time(answers, "broker", "database")
            for base in targets:
                await ready_again(http, base)
        assert infra.pool.get_size() == infra.pool.get_idle_size()
