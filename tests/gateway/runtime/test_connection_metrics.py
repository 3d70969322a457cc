"""The worker's `ledgerhook_connections{provider,status}` gauge on real PostgreSQL: every provider and
status has a series, a status that empties reads 0, the worker samples it periodically and serves
it on its `/metrics`."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.runtime.connection_metrics import ConnectionStatusSampler
from gateway.runtime.infra import open_infrastructure
from gateway.runtime.lifecycle import Lifecycle
from gateway.runtime.worker import health_app, run_tasks, worker_tasks
from provider_auth.accounts.store import ConnectionStatus, ConnectionStore
from provider_auth.providers import Provider
from tests.gateway.runtime.test_worker_readiness import serving
from tests.support import fresh_database

QB, XERO, ZOHO = Provider.QUICKBOOKS, Provider.XERO, Provider.ZOHO_BOOKS
ACTIVE, PAUSED = ConnectionStatus.ACTIVE, ConnectionStatus.PAUSED
NEEDS_REAUTH, DISCONNECTED = ConnectionStatus.NEEDS_REAUTH, ConnectionStatus.DISCONNECTED
EVERY_PAIR = {(p.value, s.value) for p in Provider for s in ConnectionStatus}

Series = dict[tuple[str, str], float]


@pytest.fixture
async def migrated_url(postgres_url: str) -> AsyncIterator[str]:
    """A migrated database of the test's own: the gauge counts the whole connections table."""
    async with fresh_database(postgres_url, "connection_metrics", migrated=True) as url:
        yield url


@pytest.fixture
async def store(migrated_url: str) -> AsyncIterator[ConnectionStore]:
    pool = await asyncpg.create_pool(migrated_url, min_size=1, max_size=2)
    yield ConnectionStore(pool, keyring=None)
    await pool.close()


async def connect(store: ConnectionStore, provider: Provider, status: ConnectionStatus = ACTIVE) -> str:
    created = await store.create(f"tenant-{uuid.uuid4().hex[:8]}", provider, uuid.uuid4().hex[:12])
    if status is not ACTIVE:
        assert await store.update(created.id, status=status) is not None
    return created.id


def connections_gauge(exposition: str) -> Series:
    """The `ledgerhook_connections` series of a Prometheus text exposition, by (provider, status)."""
    series: Series = {}
    for family in text_string_to_metric_families(exposition):
        if family.name == "ledgerhook_connections":
            assert family.type == "gauge"
            for sample in family.samples:
                series[(sample.labels["provider"], sample.labels["status"])] = sample.value
    return series


def scraped(registry: CollectorRegistry) -> Series:
    return connections_gauge(generate_latest(registry).decode())


def nonzero(series: Series) -> Series:
    return {pair: value for pair, value in series.items() if value}


async def test_sample_sets_every_provider_and_status_and_emptied_ones_read_zero(
    store: ConnectionStore,
) -> None:
    registry = CollectorRegistry()
    sampler = ConnectionStatusSampler(store, registry)
    assert scraped(registry) == {}  # nothing before the first sample

    await sampler.sample()
    # No connection yet: every pair reads 0, none is missing.
    assert scraped(registry) == dict.fromkeys(EVERY_PAIR, 0.0)

    await connect(store, QB)
    await connect(store, QB)
    paused = await connect(store, QB, PAUSED)
    broken = await connect(store, XERO, NEEDS_REAUTH)
    await connect(store, ZOHO, DISCONNECTED)
    await sampler.sample()
    first = scraped(registry)
    assert first.keys() == EVERY_PAIR
    assert nonzero(first) == {
        ("quickbooks", "active"): 2.0,
        ("quickbooks", "paused"): 1.0,
        ("xero", "needs_reauth"): 1.0,
        ("zoho-books", "disconnected"): 1.0,
    }

    # The paused one resumed, the broken one reconnected: their old statuses read 0, still there.
    await store.update(paused, status=ACTIVE)
    await store.update(broken, status=ACTIVE)
    await sampler.sample()
    second = scraped(registry)
    assert second.keys() == EVERY_PAIR
    assert second[("quickbooks", "paused")] == 0.0
    assert second[("xero", "needs_reauth")] == 0.0
    assert nonzero(second) == {
        ("quickbooks", "active"): 3.0,
        ("xero", "active"): 1.0,
        ("zoho-books", "disconnected"): 1.0,
    }


async def test_run_samples_at_once_then_every_interval_until_stopped(store: ConnectionStore) -> None:
    registry = CollectorRegistry()
    sampler = ConnectionStatusSampler(store, registry, interval=timedelta(seconds=0.05))
    await connect(store, XERO)
    stop = asyncio.Event()
    running = asyncio.create_task(sampler.run(stop))
    try:
        async with asyncio.timeout(10):
            while scraped(registry).get(("xero", "active")) != 1.0:
                await asyncio.sleep(0.01)
            # A later change shows up without another call: the task samples again.
            await connect(store, XERO, PAUSED)
            while scraped(registry).get(("xero", "paused")) != 1.0:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await running  # returns promptly once stopped


async def test_a_failed_sample_keeps_the_last_values_and_the_task_running(migrated_url: str) -> None:
    pool = await asyncpg.create_pool(migrated_url, min_size=1, max_size=2)
    store = ConnectionStore(pool, keyring=None)
    registry = CollectorRegistry()
    sampler = ConnectionStatusSampler(store, registry, interval=timedelta(seconds=0.05))
    await connect(store, QB)
    await sampler.sample()
    await pool.close()  # every sample from now on fails
    stop = asyncio.Event()
    running = asyncio.create_task(sampler.run(stop))
    await asyncio.sleep(0.3)  # several failed rounds
    assert not running.done()
    stop.set()
    async with asyncio.timeout(5):
        await running
    assert nonzero(scraped(registry)) == {("quickbooks", "active"): 1.0}


async def test_the_worker_samples_the_gauge_and_serves_it_on_its_metrics(
    settings_factory: Any, migrated_url: str, store: ConnectionStore
) -> None:
    settings = settings_factory(
        database_url=migrated_url, worker_group_id=f"connections-{uuid.uuid4().hex[:8]}"
    )
    await connect(store, QB)
    await connect(store, XERO, NEEDS_REAUTH)
    registry = CollectorRegistry()
    async with open_infrastructure(settings) as infra, aiohttp.ClientSession() as http:
        (task,) = [
            task for task in worker_tasks(settings, infra, registry) if task.name == "connection-metrics"
        ]
        assert task.ready is None  # never holds readiness back
        stop = asyncio.Event()
        running = asyncio.create_task(run_tasks([task], stop))
        try:
            async with serving(health_app(Lifecycle(), infra, registry)) as url, asyncio.timeout(30):
                while True:
                    async with http.get(url + "/metrics") as answer:
                        series = connections_gauge(await answer.text())
                    if series:
                        break
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await running
    assert series.keys() == EVERY_PAIR
    assert nonzero(series) == {("quickbooks", "active"): 1.0, ("xero", "needs_reauth"): 1.0}
