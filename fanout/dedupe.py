"""Publish each event once: a PostgreSQL table of ids already published, checked in the same
transaction that is committed only after the broker acknowledged the produced records.

`publish_once` does, for one partition's batch of outgoing records, in ONE transaction:

    INSERT INTO event_dedupe (event_id) ... ON CONFLICT DO NOTHING RETURNING event_id
    produce only the returned (new) records, await every acknowledgement
    COMMIT

and the caller commits the consumer offsets only after that. A produce failure raises inside the
transaction, which rolls back: nothing is marked seen, the offsets stay where they were, the batch is
processed again. Two workers that meet the same id (a webhook and a CDC page, or two partitions) are
serialised by the primary key: the second INSERT waits for the first transaction, then skips the id
if it committed, or takes it over if it rolled back. Ids are inserted in sorted order so that two
batches sharing several ids always lock them in the same order (no deadlock).

Where a crash can still duplicate an event (consumers must tolerate repeats of the same `ce_id`):

1. After the broker acknowledged the records and before the transaction's COMMIT reached PostgreSQL
   (process killed, connection lost, COMMIT failed): the records are on the topic but their ids are
   not marked seen and the offsets are not committed, so the batch is processed again and the same
   events (same ids) are published a second time.
2. Records acknowledged by the broker when a later record of the same batch fails: the whole batch
   rolls back and is retried, so the ones already written are written again.
3. Without the idempotent producer (the dev broker), a produce retried by the client after a lost
   acknowledgement may be written twice by the broker itself.
4. A repeat that arrives after `LEDGERHOOK_DEDUPE_RETENTION_DAYS` (its row was pruned) is published
   again.

A crash after COMMIT and before the offset commit does NOT duplicate: the batch is processed again,
but every id is already in the table, so nothing is produced. Quarantine records go through the same
table (under an id derived from their source topic, partition and offset), so they are not repeated
either.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

log = logging.getLogger("ledgerhook.fanout.dedupe")

# Ids travel as text both ways: asyncpg encodes and decodes them in C, no uuid.UUID per event.
_INSERT = (
    "INSERT INTO event_dedupe (event_id) SELECT unnest($1::uuid[])"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id::text"
)
# SKIP LOCKED: several workers may prune at once without waiting on each other.
_PRUNE = (
    "DELETE FROM event_dedupe WHERE event_id IN ("
    " SELECT event_id FROM event_dedupe WHERE seen_at < now() - $1::interval"
    " ORDER BY seen_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
)


# Values, never mutated; not `frozen` because a frozen dataclass's __init__ costs about three times
# as much, and the fan-out worker builds several of these per change.
@dataclass(slots=True)
class Outgoing:
    """A record to produce at most once, identified by `dedupe_id` (a UUID)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    dedupe_id: str
    # Metric labels of the record (provider and entity of an event, reason of a quarantine).
    labels: dict[str, str] = field(default_factory=dict, compare=False)


async def publish_once(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, records: Sequence[Outgoing]
) -> list[Outgoing]:
    """Produce the records whose id was never seen, in order; returns the ones produced.

    Returns only once every produced record is acknowledged and the ids are committed as seen;
    raises (with nothing marked seen) if any produce fails.
    """
    if not records:
        return []
    # Canonical (lower-case) text sorts like the UUIDs' bytes, PostgreSQL's order for uuid.
    canonical = [_canonical(record.dedupe_id) for record in records]
    async with pool.acquire() as connection, connection.transaction():
        rows = await connection.fetch(_INSERT, sorted(set(canonical)))
        new = {row[0] for row in rows}
        fresh: list[Outgoing] = []
        for record, ident in zip(records, canonical, strict=True):
            # The same id twice in one batch (a provider repeating a change): publish the first only.
            if ident in new:
                new.discard(ident)
                fresh.append(record)
        # send() only queues; queued in order, the records of one key keep their order.
        pending = [
            await producer.send(record.topic, record.value, key=record.key, headers=record.headers)
            for record in fresh
        ]
        await wait_for_acks(pending)
    return fresh


async def wait_for_acks(pending: Sequence["asyncio.Future[Any]"]) -> None:
    """Return once every produced record is acknowledged; raise the first failure, if any.

    The producer completes one partition's batches in the order they were sent, so waiting on the
    last futures first usually leaves nothing to wait for after them: a few awaits instead of a
    callback per record, as `asyncio.gather` would schedule.
    """
    for future in reversed(pending):
        if not future.done():
            with contextlib.suppress(Exception):  # every failure is raised below, in send order
                await future
    failures = [failure for future in pending if (failure := future.exception()) is not None]
    if failures:
        raise failures[0]


def _canonical(ident: str) -> str:
    # Our ids are already canonical (change event ids, uuid7); anything else is normalised once.
    if len(ident) == 36 and ident == ident.lower():
        return ident
    return str(uuid.UUID(ident))


async def prune(pool: asyncpg.Pool, retention: timedelta, batch_size: int = 5000) -> int:
    """Delete ids older than `retention`, `batch_size` rows per statement; returns how many went."""
    removed = 0
    while True:
        status = await pool.execute(_PRUNE, retention, batch_size)
        count = int(status.split()[-1])
        removed += count
        if count < batch_size:
            return removed


class DedupePruner:
    """Periodic task: prune the dedupe table every `interval`, until `stop` is set."""

    def __init__(self, pool: asyncpg.Pool, retention: timedelta, interval: timedelta) -> None:
        self._pool = pool
        self._retention = retention
        self._interval = interval.total_seconds()

    async def run(self, stop: asyncio.Event) -> None:
        """Prune now, then every interval; a failed round is logged and retried next time."""
        while not stop.is_set():
            try:
                removed = await prune(self._pool, self._retention)
                if removed:
                    log.info("dedupe ids pruned", extra={"removed": removed})
            except Exception as exc:  # best effort: the next round tries again
                log.warning("dedupe prune failed", extra={"error": type(exc).__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
