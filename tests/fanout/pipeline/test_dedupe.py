"""The dedupe transaction: new ids only, nothing marked seen on a failed produce, concurrent batches
sharing ids; the daily partitions: repeats refused across days (and across midnight while both
transactions are open), expired days dropped and days ahead created by any number of workers at
once, the default partition; the upgrade beside the old table, which older workers keep using and
new ones only read and prune; and the pruner task."""

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta

import asyncpg
import pytest
from aiokafka.errors import KafkaError

from fanout.dedupe import (
    DAYS_AHEAD,
    DedupePruner,
    Outgoing,
    maintain_partitions,
    prune_old_table,
    publish_once,
    remember,
)
from gateway.runtime.migrate import migrate, migration_files
from tests.fanout.pipeline.pipeline_support import PipelineStack, read_events
from tests.support import fresh_database

WEEK = timedelta(days=7)


def outgoing(stack: PipelineStack, dedupe_id: str, value: bytes = b"{}") -> Outgoing:
    return Outgoing(
        topic=stack.settings.topic_changes,
        key=b"connection",
        value=value,
        headers=[("ce_id", dedupe_id.encode())],
        dedupe_id=dedupe_id,
    )


async def seen(stack: PipelineStack, ids: list[str]) -> set[str]:
    rows = await stack.infra.pool.fetch(
        "SELECT event_id FROM event_ids WHERE event_id = ANY($1::uuid[])", [uuid.UUID(i) for i in ids]
    )
    return {str(row["event_id"]) for row in rows}


async def test_only_new_ids_are_produced_in_order(stack: PipelineStack) -> None:
    ids = [str(uuid.uuid4()) for _ in range(4)]
    first = await publish_once(stack.infra.pool, stack.infra.producer, [outgoing(stack, i) for i in ids[:2]])
    assert [o.dedupe_id for o in first.produced] == ids[:2]
    # A batch repeating an old id, and one new id twice: the new one once, in batch order.
    batch = [outgoing(stack, i) for i in (ids[3], ids[0], ids[2], ids[3])]
    second = await publish_once(stack.infra.pool, stack.infra.producer, batch)
    assert [o.dedupe_id for o in second.produced] == [ids[3], ids[2]]
    records = sorted(await read_events(stack.settings), key=lambda r: r.offset)
    assert [r.header("ce_id") for r in records] == [ids[0], ids[1], ids[3], ids[2]]
    assert await seen(stack, ids) == set(ids)


async def test_a_failed_produce_marks_nothing_seen(stack: PipelineStack) -> None:
    good, too_big = str(uuid.uuid4()), str(uuid.uuid4())
    oversized = b"x" * (stack.settings.max_body_bytes + 200_000)  # beyond the producer's max request size
    with pytest.raises(KafkaError):
        await publish_once(
            stack.infra.pool,
            stack.infra.producer,
            [outgoing(stack, good), outgoing(stack, too_big, oversized)],
        )
    assert await seen(stack, [good, too_big]) == set()  # rolled back
    # So the retry publishes it (a record written before the failure may then appear twice).
    retried = await publish_once(stack.infra.pool, stack.infra.producer, [outgoing(stack, good)])
    assert [o.dedupe_id for o in retried.produced] == [good]
    assert await seen(stack, [good]) == {good}


async def test_concurrent_batches_sharing_ids_publish_each_once(stack: PipelineStack) -> None:
    """Partitions processed at once, with overlapping ids in different orders: no deadlock, no repeat."""
    rng = random.Random(11)
    pool_ids = [str(uuid.uuid4()) for _ in range(60)]
    batches = [[outgoing(stack, i) for i in rng.sample(pool_ids, 25)] for _ in range(8)]
    results = await asyncio.gather(
        *(publish_once(stack.infra.pool, stack.infra.producer, batch) for batch in batches)
    )
    published = [o.dedupe_id for result in results for o in result.produced]
    offered = {o.dedupe_id for batch in batches for o in batch}
    assert sorted(published) == sorted(offered)  # each offered id exactly once
    records = await read_events(stack.settings)
    assert sorted(r.header("ce_id") or "" for r in records) == sorted(offered)


@pytest.fixture
async def own_database(postgres_url: str) -> AsyncIterator[str]:
    """A migrated database of the test's own: these tests create and drop whole partitions."""
    async with fresh_database(postgres_url, "dedupe", migrated=True) as url:
        yield url


@pytest.fixture
async def own_pool(own_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(own_database, min_size=1, max_size=6)
    try:
        yield pool
    finally:
        await pool.close()


async def today(pool: asyncpg.Pool) -> date:
    """The database's UTC day, the one publishing dates its rows by."""
    return await pool.fetchval("SELECT (statement_timestamp() AT TIME ZONE 'UTC')::date")  # type: ignore[no-any-return]


async def add_partition(pool: asyncpg.Pool, day: date) -> None:
    """A day's partition as the pruner creates one (here for days gone by)."""
    await pool.execute(
        f"CREATE TABLE event_ids_p{day:%Y%m%d} PARTITION OF event_ids"
        f" FOR VALUES FROM ('{day}') TO ('{day + timedelta(days=1)}')"
    )


async def mark_seen(pool: asyncpg.Pool, ids: list[str], day: date) -> None:
    await pool.executemany(
        "INSERT INTO event_ids (event_id, seen_on) VALUES ($1, $2)", [(uuid.UUID(i), day) for i in ids]
    )


async def partitions(pool: asyncpg.Pool) -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'event_ids'::regclass"
    )
    return {row[0]: row[1] for row in rows}


async def seen_in(pool: asyncpg.Pool, ids: list[str]) -> set[str]:
    rows = await pool.fetch(
        "SELECT event_id::text FROM event_ids WHERE event_id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in ids],
    )
    return {row[0] for row in rows}


def ahead(first: date) -> set[str]:
    return {f"event_ids_p{first + timedelta(days=n):%Y%m%d}" for n in range(DAYS_AHEAD + 1)}


async def test_repeats_are_refused_whichever_day_they_were_seen(
    stack: PipelineStack, own_pool: asyncpg.Pool
) -> None:
    """Ids seen six days ago, yesterday, today, and on a day without a partition (the default one)
    are all refused within the retention; a new id is published once."""
    day = await today(own_pool)
    await add_partition(own_pool, day - timedelta(days=6))
    await add_partition(own_pool, day - timedelta(days=1))
    by_day = {day - timedelta(days=n): str(uuid.uuid4()) for n in (6, 1, 0)}
    no_partition = str(uuid.uuid4())
    for seen_on, ident in by_day.items():
        await mark_seen(own_pool, [ident], seen_on)
    await mark_seen(own_pool, [no_partition], day - timedelta(days=3))
    assert await own_pool.fetchval("SELECT count(*) FROM event_ids_default") == 1
    new = str(uuid.uuid4())
    offered = [*by_day.values(), no_partition, new, new]
    result = await publish_once(own_pool, stack.infra.producer, [outgoing(stack, i) for i in offered])
    assert [o.dedupe_id for o in result.produced] == [new]
    again = await publish_once(own_pool, stack.infra.producer, [outgoing(stack, new)])
    assert again.produced == []


async def test_a_repeat_racing_across_midnight_waits_for_the_other_day_and_is_refused(
    own_pool: asyncpg.Pool,
) -> None:
    """Yesterday's transaction has marked an id and not committed; today's, within the grace of
    midnight, writes the id under yesterday too, so it waits on that row: refused if the other
    commits, new if it rolls back. Grace is stretched to reach back to yesterday at any hour."""
    day = await today(own_pool)
    await add_partition(own_pool, day - timedelta(days=1))
    since_midnight = datetime.now(UTC) - datetime.combine(day, time(), UTC)
    grace = since_midnight + timedelta(minutes=5)
    for outcome in ("commit", "rollback"):
        ident = str(uuid.uuid4())
        async with own_pool.acquire() as yesterday:
            transaction = yesterday.transaction()
            await transaction.start()
            await mark_seen_on(yesterday, ident, day - timedelta(days=1))

            racing = asyncio.create_task(marked_today(own_pool, ident, grace))
            await asyncio.sleep(0.3)
            assert not racing.done()  # waiting on yesterday's uncommitted row
            await (transaction.commit() if outcome == "commit" else transaction.rollback())
            assert await asyncio.wait_for(racing, 5) == (set() if outcome == "commit" else {ident})
        assert await seen_in(own_pool, [ident]) == {ident}


async def marked_today(pool: asyncpg.Pool, ident: str, grace: timedelta) -> set[str]:
    async with pool.acquire() as connection, connection.transaction():
        return await remember(connection, [ident], grace)


async def test_without_the_grace_the_race_across_midnight_is_not_seen(own_pool: asyncpg.Pool) -> None:
    """What the grace is for: far from midnight, today's transaction neither sees nor waits for an
    uncommitted row of yesterday's partition."""
    day = await today(own_pool)
    await add_partition(own_pool, day - timedelta(days=1))
    ident = str(uuid.uuid4())
    async with own_pool.acquire() as yesterday, yesterday.transaction():
        await mark_seen_on(yesterday, ident, day - timedelta(days=1))
        async with own_pool.acquire() as connection, connection.transaction():
            assert await asyncio.wait_for(remember(connection, [ident], timedelta(0)), 5) == {ident}


async def mark_seen_on(connection: asyncpg.Connection, ident: str, day: date) -> None:
    await connection.execute(
        "INSERT INTO event_ids (event_id, seen_on) VALUES ($1, $2)", uuid.UUID(ident), day
    )


async def test_expired_days_are_dropped_and_days_ahead_created(
    stack: PipelineStack, own_pool: asyncpg.Pool
) -> None:
    day = await today(own_pool)
    # The migration made today's partition and three ahead.
    assert ahead(day) <= set(await partitions(own_pool))
    for back in (9, 8, 7, 6):
        await add_partition(own_pool, day - timedelta(days=back))
    old = {back: [str(uuid.uuid4()) for _ in range(4)] for back in (9, 8)}
    kept = {back: [str(uuid.uuid4()) for _ in range(2)] for back in (7, 6)}
    for back, ids in (old | kept).items():
        await mark_seen(own_pool, ids, day - timedelta(days=back))
    stray_old, stray_recent = str(uuid.uuid4()), str(uuid.uuid4())  # days without a partition
    await mark_seen(own_pool, [stray_old], day - timedelta(days=30))
    await mark_seen(own_pool, [stray_recent], day - timedelta(days=2))
    await own_pool.execute(f"DROP TABLE event_ids_p{day + timedelta(days=DAYS_AHEAD):%Y%m%d}")

    done = await maintain_partitions(own_pool, WEEK)
    # A day's partition goes once its end is older than the retention: day -7 ends 6 days ago.
    assert sorted(done.dropped) == [f"event_ids_p{day - timedelta(days=b):%Y%m%d}" for b in (9, 8)]
    assert done.created == [f"event_ids_p{day + timedelta(days=DAYS_AHEAD):%Y%m%d}"]
    assert (done.expired_default_rows, done.failed, done.skipped) == (1, [], False)
    names = set(await partitions(own_pool))
    assert ahead(day) <= names and not {n for n in done.dropped} & names
    everything = [i for ids in (old | kept).values() for i in ids] + [stray_old, stray_recent]
    assert await seen_in(own_pool, everything) == {*kept[7], *kept[6], stray_recent}
    # Outside the window a repeat is published again; inside it is still dropped.
    again = await publish_once(
        own_pool, stack.infra.producer, [outgoing(stack, old[9][0]), outgoing(stack, kept[7][0])]
    )
    assert [o.dedupe_id for o in again.produced] == [old[9][0]]
    # A second round has nothing left to do.
    assert await maintain_partitions(own_pool, WEEK) == type(done)()


async def test_several_workers_maintain_at_once_while_publishing(
    stack: PipelineStack, own_pool: asyncpg.Pool, own_database: str
) -> None:
    """Pruners of several workers at once (pools of their own) with batches being published: one
    round does the work, the others skip it, nothing fails, every id is published once."""
    day = await today(own_pool)
    await add_partition(own_pool, day - timedelta(days=10))
    for name in ahead(day) - {f"event_ids_p{day:%Y%m%d}"}:
        await own_pool.execute(f"DROP TABLE {name}")
    workers = [await asyncpg.create_pool(own_database, min_size=1, max_size=2) for _ in range(4)]
    ids = [str(uuid.uuid4()) for _ in range(200)]
    batches = [[outgoing(stack, i) for i in random.Random(n).sample(ids, 60)] for n in range(6)]
    try:
        rounds, results = await asyncio.gather(
            asyncio.gather(*(maintain_partitions(pool, WEEK) for pool in workers)),
            asyncio.gather(*(publish_once(own_pool, stack.infra.producer, batch) for batch in batches)),
        )
    finally:
        for pool in workers:
            await pool.close()
    done = [r for r in rounds if not r.skipped]
    assert sum(len(r.created) for r in done) == DAYS_AHEAD
    assert sum(len(r.dropped) for r in done) == 1
    assert all(not r.failed for r in done)
    assert ahead(day) <= set(await partitions(own_pool))
    published = [o.dedupe_id for r in results for o in r.produced]
    assert sorted(published) == sorted({o.dedupe_id for batch in batches for o in batch})
    again = await maintain_partitions(own_pool, WEEK)
    assert (again.created, again.dropped, again.failed) == ([], [], [])


async def test_publishing_goes_on_without_dated_partitions(
    stack: PipelineStack, own_pool: asyncpg.Pool
) -> None:
    """No partition for today (the pruner never ran): ids land in the default partition and are still
    deduplicated; the next round creates the days ahead, and reports today's, whose rows are in the
    default partition already, as failed instead of moving them."""
    day = await today(own_pool)
    for name in ahead(day):
        await own_pool.execute(f"DROP TABLE {name}")
    ident = str(uuid.uuid4())
    first = await publish_once(own_pool, stack.infra.producer, [outgoing(stack, ident)])
    assert [o.dedupe_id for o in first.produced] == [ident]
    assert await own_pool.fetchval("SELECT count(*) FROM event_ids_default") >= 1
    done = await maintain_partitions(own_pool, WEEK)
    assert done.failed == [f"event_ids_p{day:%Y%m%d}"]
    assert set(done.created) == ahead(day) - set(done.failed)
    repeat = await publish_once(own_pool, stack.infra.producer, [outgoing(stack, ident)])
    assert repeat.produced == []


async def test_the_upgrade_leaves_the_old_table_to_older_workers_and_refuses_its_ids(
    stack: PipelineStack, postgres_url: str
) -> None:
    """The migration leaves `event_dedupe` and its ids as they were and creates `event_ids` empty. New
    code refuses repeats of the old ids and writes only to the new table; an older worker's insert
    still works on the old table (a rollout, or a rollback), and what it commits is refused too; the
    pruner empties the old table with the retention."""
    async with fresh_database(postgres_url, "upgrade") as url:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(
                "CREATE TABLE schema_migrations"
                " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for name, sql in migration_files():
                if name < "0012":
                    await connection.execute(sql)
                    await connection.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            old = [str(uuid.uuid4()) for _ in range(50)]
            await connection.executemany(
                "INSERT INTO event_dedupe (event_id, seen_at) VALUES ($1, now() - interval '3 days')",
                [(uuid.UUID(i),) for i in old],
            )
            before = await connection.fetch(OLD_TABLE_SHAPE)
        finally:
            await connection.close()
        assert "0012_dedupe_partitions" in await migrate(url)
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            assert await pool.fetch(OLD_TABLE_SHAPE) == before  # columns, keys and indexes untouched
            day = await today(pool)
            assert set(await partitions(pool)) == {"event_ids_default"} | ahead(day)
            assert await pool.fetchval("SELECT count(*) FROM event_ids") == 0
            assert await in_old_table(pool, old) == set(old)

            new = str(uuid.uuid4())
            result = await publish_once(
                pool, stack.infra.producer, [outgoing(stack, old[0]), outgoing(stack, new)]
            )
            assert [o.dedupe_id for o in result.produced] == [new]
            assert (await seen_in(pool, [old[0], new]), await in_old_table(pool, [new])) == ({new}, set())

            # An older worker, with the new table in place: its statement as it was, on its table.
            from_old_worker = str(uuid.uuid4())
            inserted = await pool.fetch(OLD_INSERT, [from_old_worker, old[1]])
            assert [row[0] for row in inserted] == [from_old_worker]
            # What a mixed rollout cannot catch: an id a newer worker published, repeated at an older one.
            assert [row[0] for row in await pool.fetch(OLD_INSERT, [new])] == [new]
            again = await publish_once(pool, stack.infra.producer, [outgoing(stack, from_old_worker)])
            assert again.produced == []

            # The retention passed for the old ids but not for the old worker's: only those go.
            assert await prune_old_table(pool, timedelta(days=2), batch_size=20) == len(old)
            assert await in_old_table(pool, [*old, from_old_worker]) == {from_old_worker}
            assert await seen_in(pool, [new]) == {new}
            assert await prune_old_table(pool, timedelta(0)) == 2
            assert await pool.fetchval("SELECT count(*) FROM event_dedupe") == 0
        finally:
            await pool.close()


# The old table's columns, constraints and indexes, to compare across the migration.
OLD_TABLE_SHAPE = (
    "SELECT 'column', attname || ' ' || format_type(atttypid, atttypmod) FROM pg_attribute"
    " WHERE attrelid = 'event_dedupe'::regclass AND attnum > 0 AND NOT attisdropped"
    " UNION ALL SELECT 'index', indexdef FROM pg_indexes WHERE tablename = 'event_dedupe'"
    " ORDER BY 1, 2"
)
# What workers of earlier releases run to mark ids seen (fanout/dedupe.py before migration 0012).
OLD_INSERT = (
    "INSERT INTO event_dedupe (event_id) SELECT unnest($1::uuid[])"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id::text"
)


async def in_old_table(pool: asyncpg.Pool, ids: list[str]) -> set[str]:
    rows = await pool.fetch(
        "SELECT event_id::text FROM event_dedupe WHERE event_id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in ids],
    )
    return {row[0] for row in rows}


async def test_pruner_task_runs_until_stopped(stack: PipelineStack) -> None:
    """One pruner, one retention, for every table: event ids, the old table's, record versions."""
    pool = stack.infra.pool
    stale, stale_old, recent_old = (str(uuid.uuid4()) for _ in range(3))
    await pool.executemany(
        "INSERT INTO event_dedupe (event_id, seen_at) VALUES ($1, now() - $2::interval)",
        [(uuid.UUID(stale_old), timedelta(days=2)), (uuid.UUID(recent_old), timedelta(hours=12))],
    )
    # Two days ago, a day without a partition in this database: the default partition's rows expire too.
    await pool.execute(
        "INSERT INTO event_ids (event_id, seen_on)"
        " VALUES ($1, (statement_timestamp() AT TIME ZONE 'UTC')::date - 2)",
        uuid.UUID(stale),
    )
    connection_id = uuid.uuid4()
    await pool.executemany(
        "INSERT INTO record_versions (connection_id, entity, entity_id, version, operation_rank, seen_at)"
        " VALUES ($1, 'invoice', $2, now(), 0, now() - $3::interval)",
        [(connection_id, "stale", timedelta(days=2)), (connection_id, "recent", timedelta(hours=12))],
    )

    async def versions_kept() -> set[str]:
        rows = await pool.fetch(
            "SELECT entity_id FROM record_versions WHERE connection_id = $1", connection_id
        )
        return {row[0] for row in rows}

    stop = asyncio.Event()
    task = asyncio.create_task(DedupePruner(pool, timedelta(days=1), timedelta(milliseconds=50)).run(stop))
    async with asyncio.timeout(10):
        while (
            await seen(stack, [stale])
            or await in_old_table(pool, [stale_old, recent_old]) != {recent_old}
            or await versions_kept() != {"recent"}
        ):
            await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
