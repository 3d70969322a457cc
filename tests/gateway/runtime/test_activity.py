"""Recent activity: per-minute totals of a few metrics in PostgreSQL, summed over processes, and read
back minute by minute for the console's charts."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from fanout.pipeline import WorkerMetrics
from fanout.polling.publishing import PollerMetrics
from gateway.runtime.activity import (
    EVENTS_PUBLISHED,
    POLL_WATERMARK_LAG,
    RECORDS_QUARANTINED,
    TOKEN_REFRESH_FAILURES,
    WEBHOOK_DELIVERIES,
    ActivityHistory,
    ActivityRecorder,
    minute_of,
)
from gateway.runtime.metrics import Metrics
from provider_auth.tokens.metrics import TokenMetrics
from tests.support import fresh_database

MINUTE = timedelta(minutes=1)


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A migrated database of the test's own: the reader reads the whole table."""
    async with fresh_database(postgres_url, "activity", migrated=True) as url:
        pool = await asyncpg.create_pool(url, min_size=0, max_size=4)
        try:
            yield pool
        finally:
            await pool.close()


async def rows(pool: asyncpg.Pool) -> dict[tuple[datetime, str], float]:
    return {
        (r["minute"], r["metric"]): r["value"] for r in await pool.fetch("SELECT * FROM activity_minutes")
    }


async def test_two_processes_add_up_and_gauges_keep_the_largest(pool: asyncpg.Pool) -> None:
    gateway_registry, worker_registry = CollectorRegistry(), CollectorRegistry()
    gateway, worker = Metrics(gateway_registry), WorkerMetrics(worker_registry)
    poller, tokens = PollerMetrics(worker_registry), TokenMetrics(worker_registry)
    other_registry = CollectorRegistry()
    other_gateway = Metrics(other_registry)
    other_poller = PollerMetrics(other_registry)
    recorders = [ActivityRecorder(pool, r) for r in (gateway_registry, worker_registry, other_registry)]
    minute = minute_of(datetime.now(UTC)) - 5 * MINUTE

    gateway.requests.labels("quickbooks", "stored").inc(3)
    gateway.requests.labels("xero", "stored").inc(1)
    gateway.requests.labels("xero", "unauthorized").inc(7)  # not a delivery accepted
    other_gateway.requests.labels("quickbooks", "stored").inc(2)
    worker.published.labels("quickbooks", "invoice").inc(4)
    poller.published.labels("xero").inc(6)
    worker.quarantined.labels("paused").inc(2)
    tokens.refreshes.labels("xero", "invalid_grant").inc(1)
    tokens.refreshes.labels("xero", "transient").inc(2)
    tokens.refreshes.labels("xero", "success").inc(9)
    poller.lag.labels("xero").set(30)
    poller.lag.labels("quickbooks").set(45)
    other_poller.lag.labels("xero").set(20)
    for recorder in recorders:
        await recorder.flush(minute)
    assert await rows(pool) == {
        (minute, WEBHOOK_DELIVERIES): 6,
        (minute, EVENTS_PUBLISHED): 10,
        (minute, RECORDS_QUARANTINED): 2,
        (minute, TOKEN_REFRESH_FAILURES): 3,
        (minute, POLL_WATERMARK_LAG): 45,
    }

    # The next flush adds only what happened since; a lower gauge does not lower the minute's value.
    gateway.requests.labels("quickbooks", "stored").inc(1)
    poller.lag.labels("quickbooks").set(5)
    poller.lag.labels("xero").set(5)
    await recorders[0].flush(minute)
    await recorders[1].flush(minute)
    await recorders[1].flush(minute + MINUTE)
    found = await rows(pool)
    assert found[(minute, WEBHOOK_DELIVERIES)] == 7
    assert found[(minute, EVENTS_PUBLISHED)] == 10
    assert found[(minute, POLL_WATERMARK_LAG)] == 45
    assert found[(minute + MINUTE, POLL_WATERMARK_LAG)] == 5
    assert (minute + MINUTE, EVENTS_PUBLISHED) not in found  # nothing new: no row


async def test_a_counter_reset_counts_its_new_value(pool: asyncpg.Pool) -> None:
    registry = CollectorRegistry()
    worker = WorkerMetrics(registry)
    recorder = ActivityRecorder(pool, registry)
    minute = minute_of(datetime.now(UTC)) - 3 * MINUTE
    worker.quarantined.labels("paused").inc(5)
    worker.quarantined.labels("unparseable").inc(1)
    await recorder.flush(minute)
    worker.quarantined.clear()  # every series restarts from 0
    worker.quarantined.labels("paused").inc(2)
    await recorder.flush(minute + MINUTE)
    worker.quarantined.labels("paused").inc(1)
    await recorder.flush(minute + 2 * MINUTE)
    found = await rows(pool)
    assert [found[(minute + i * MINUTE, RECORDS_QUARANTINED)] for i in range(3)] == [6, 2, 1]


async def test_a_flush_is_one_statement(postgres_url: str) -> None:
    statements: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda query: statements.append(query.query))

    async with fresh_database(postgres_url, "activity", migrated=True) as url:
        pool = await asyncpg.create_pool(url, min_size=0, max_size=2, init=log_queries)
        try:
            registry = CollectorRegistry()
            gateway, worker, poller = Metrics(registry), WorkerMetrics(registry), PollerMetrics(registry)
            gateway.requests.labels("quickbooks", "stored").inc()
            worker.published.labels("quickbooks", "bill").inc(2)
            worker.quarantined.labels("paused").inc()
            poller.lag.labels("xero").set(12)
            minute = minute_of(datetime.now(UTC))
            await ActivityRecorder(pool, registry).flush(minute)
            ours = [s for s in statements if "activity_minutes" in s]
            assert len(ours) == 1 and ours[0].startswith("INSERT")
            assert len(await rows(pool)) == 4  # four metrics in that one statement
        finally:
            await pool.close()


async def test_old_minutes_are_deleted(pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    old, kept = minute_of(now - timedelta(hours=49)), minute_of(now - timedelta(hours=47))
    await pool.executemany(
        "INSERT INTO activity_minutes (minute, metric, value) VALUES ($1, $2, 1)",
        [(old, WEBHOOK_DELIVERIES), (old, POLL_WATERMARK_LAG), (kept, WEBHOOK_DELIVERIES)],
    )
    await ActivityRecorder(pool, CollectorRegistry()).prune(now)
    assert await rows(pool) == {(kept, WEBHOOK_DELIVERIES): 1}


async def test_the_reader_fills_missing_minutes(pool: asyncpg.Pool) -> None:
    now = datetime(2026, 3, 4, 10, 30, 25, tzinfo=UTC)
    current = minute_of(now)
    await pool.executemany(
        "INSERT INTO activity_minutes (minute, metric, value) VALUES ($1, $2, $3)",
        [
            (current, WEBHOOK_DELIVERIES, 4),
            (current - 2 * MINUTE, WEBHOOK_DELIVERIES, 7),
            (current - 60 * MINUTE, WEBHOOK_DELIVERIES, 99),  # just before the hour asked for
            (current - MINUTE, POLL_WATERMARK_LAG, 12.5),
        ],
    )
    history = ActivityHistory(pool)
    deliveries = await history.series(WEBHOOK_DELIVERIES, 1, now=now)
    assert len(deliveries) == 60
    assert deliveries[0][0] == current - 59 * MINUTE and deliveries[-1][0] == current
    assert [minute for minute, _ in deliveries] == [current - (59 - i) * MINUTE for i in range(60)]
    assert deliveries[-3:] == [(current - 2 * MINUTE, 7), (current - MINUTE, 0), (current, 4)]
    assert sum(value or 0 for _, value in deliveries) == 11
    lag = await history.series(POLL_WATERMARK_LAG, 1, now=now)
    assert lag[-3:] == [(current - 2 * MINUTE, None), (current - MINUTE, 12.5), (current, None)]
    assert len(await history.series(EVENTS_PUBLISHED, 48, now=now)) == 48 * 60
    with pytest.raises(ValueError, match="unknown activity metric"):
        await history.series("requests", 1)
    with pytest.raises(ValueError, match="hours"):
        await history.series(WEBHOOK_DELIVERIES, 49)


async def test_the_loop_flushes_what_is_left_when_stopped(pool: asyncpg.Pool) -> None:
    registry = CollectorRegistry()
    Metrics(registry).requests.labels("xero", "stored").inc(3)
    stop = asyncio.Event()
    task = asyncio.create_task(ActivityRecorder(pool, registry).run(stop))
    await asyncio.sleep(0.1)
    before = datetime.now(UTC)
    stop.set()
    await asyncio.wait_for(task, 10)
    found: dict[Any, float] = await rows(pool)
    [(minute, metric)] = found
    assert metric == WEBHOOK_DELIVERIES and found[(minute, metric)] == 3
    assert minute_of(before) <= minute <= minute_of(datetime.now(UTC))


async def test_a_failed_flush_is_carried_into_the_next(pool: asyncpg.Pool) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    recorder = ActivityRecorder(pool, registry)
    minute = minute_of(datetime.now(UTC))
    metrics.requests.labels("xero", "stored").inc(2)
    await pool.execute("ALTER TABLE activity_minutes RENAME TO activity_minutes_away")
    with pytest.raises(asyncpg.UndefinedTableError):
        await recorder.flush(minute)
    await pool.execute("ALTER TABLE activity_minutes_away RENAME TO activity_minutes")  # back again
    metrics.requests.labels("xero", "stored").inc(1)
    await recorder.flush(minute)
    assert await rows(pool) == {(minute, WEBHOOK_DELIVERIES): 3}
