"""Publish each event once: a PostgreSQL table of the ids already published.

`publish_once` inserts a batch's ids, produces only the new ones and commits the transaction only
after the broker acknowledged them, so the caller may then commit its offsets; `prune` keeps the
table to the retention window. The transaction, and where a crash can still repeat an event:
docs/architecture.md, "The fan-out worker".
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


# Not frozen, for speed (see `fanout.changes.ProviderChange`).
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
