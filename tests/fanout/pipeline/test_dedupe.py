"""The dedupe transaction: new ids only, nothing marked seen on a failed produce, concurrent batches
sharing ids, and pruning by age."""

import asyncio
import random
import uuid
from datetime import timedelta

import pytest
from aiokafka.errors import KafkaError

from fanout.dedupe import DedupePruner, Outgoing, prune, publish_once
from tests.fanout.pipeline.pipeline_support import PipelineStack, read_events


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
        "SELECT event_id FROM event_dedupe WHERE event_id = ANY($1::uuid[])", [uuid.UUID(i) for i in ids]
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


async def test_pruning_forgets_old_ids_in_batches(stack: PipelineStack) -> None:
    pool = stack.infra.pool
    old = [str(uuid.uuid4()) for _ in range(12)]
    recent = [str(uuid.uuid4()) for _ in range(3)]
    await pool.executemany(
        "INSERT INTO event_dedupe (event_id, seen_at) VALUES ($1, now() - $2::interval)",
        [(uuid.UUID(i), timedelta(days=8)) for i in old]
        + [(uuid.UUID(i), timedelta(days=6)) for i in recent],
    )
    assert await prune(pool, timedelta(days=7), batch_size=5) == 12  # three statements: 5, 5, 2
    assert await seen(stack, old + recent) == set(recent)
    # Outside the window a repeat is published again; inside it is still dropped.
    again = await publish_once(
        pool, stack.infra.producer, [outgoing(stack, old[0]), outgoing(stack, recent[0])]
    )
    assert [o.dedupe_id for o in again.produced] == [old[0]]


async def test_pruner_task_runs_until_stopped(stack: PipelineStack) -> None:
    """One pruner, one retention, for both tables: event ids and record versions."""
    pool = stack.infra.pool
    stale = str(uuid.uuid4())
    await pool.execute(
        "INSERT INTO event_dedupe (event_id, seen_at) VALUES ($1, now() - interval '2 days')",
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
        while await seen(stack, [stale]) or await versions_kept() != {"recent"}:
            await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
