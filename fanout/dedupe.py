"""Publish each event once: reconciliation by record version, then a PostgreSQL table of the ids
already published.

`publish_once` drops a batch's changes whose record version was already published
(`fanout.reconcile`), inserts the ids of the rest, produces only the new ones and commits the
transaction only after the broker acknowledged them, so the caller may then commit its offsets;
`DedupePruner` keeps both tables to the retention window. The transaction, and where a crash can
still repeat an event: docs/architecture.md, "The fan-out worker" and "Reconciliation".
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from fanout import reconcile
from fanout.reconcile import RecordVersion, publishable

log = logging.getLogger("ledgerhook.fanout.dedupe")

# Ids travel as text both ways: asyncpg encodes and decodes them in C, no uuid.UUID per event.
_INSERT = (
    "INSERT INTO event_dedupe (event_id) SELECT unnest($1::uuid[])"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id::text"
)
# Which ids of the changes reconciliation refused were published already, to count them as duplicates.
_PUBLISHED = "SELECT event_id::text FROM event_dedupe WHERE event_id = ANY($1::uuid[])"
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
    # The version of a record this change event publishes; None (quarantine records): not reconciled.
    version: RecordVersion | None = field(default=None, compare=False)


@dataclass(slots=True)
class Published:
    """What `publish_once` did with a batch; the records of each list in batch order."""

    produced: list[Outgoing]
    # Refused by reconciliation (not later than what was published of their record to their
    # connection) and under an id never published: a repeat of a published id counts as a duplicate.
    superseded: list[Outgoing]


async def publish_once(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, records: Sequence[Outgoing]
) -> Published:
    """Produce, in order, the records that reconciliation passes and whose id was never seen.

    Returns only once every produced record is acknowledged and the versions and ids are committed
    as published; raises (with nothing committed) if any produce fails.
    """
    if not records:
        return Published([], [])
    # Canonical (lower-case) text sorts like the UUIDs' bytes, PostgreSQL's order for uuid.
    canonical = [_canonical(record.dedupe_id) for record in records]
    async with pool.acquire() as connection, connection.transaction():
        # Record versions before dedupe ids, in every publishing transaction: no lock cycle.
        verdicts = await publishable(connection, [record.version for record in records])
        passed = sorted({ident for ident, passes in zip(canonical, verdicts, strict=True) if passes})
        rows = await connection.fetch(_INSERT, passed) if passed else []
        new = {row[0] for row in rows}
        fresh: list[Outgoing] = []
        produced: set[str] = set()
        refused: list[tuple[Outgoing, str]] = []
        for record, ident, passes in zip(records, canonical, verdicts, strict=True):
            if not passes:
                refused.append((record, ident))
            # The same id twice in one batch (a provider repeating a change): publish the first only.
            elif ident in new:
                new.discard(ident)
                produced.add(ident)
                fresh.append(record)
        superseded = await _superseded(connection, refused, produced) if refused else []
        # send() only queues; queued in order, the records of one key keep their order.
        pending = [
            await producer.send(record.topic, record.value, key=record.key, headers=record.headers)
            for record in fresh
        ]
        await wait_for_acks(pending)
    return Published(fresh, superseded)


async def _superseded(
    connection: asyncpg.Connection, refused: Sequence[tuple[Outgoing, str]], produced: set[str]
) -> list[Outgoing]:
    """The refused records whose id was neither published before nor by this batch."""
    unknown = sorted({ident for _, ident in refused} - produced)
    published = {row[0] for row in await connection.fetch(_PUBLISHED, unknown)} if unknown else set()
    return [record for record, ident in refused if ident not in produced and ident not in published]


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
    """Periodic task: prune the dedupe table and the record versions every `interval`, until `stop`
    is set; both keep the same retention, the window in which a repeat is dropped."""

    def __init__(self, pool: asyncpg.Pool, retention: timedelta, interval: timedelta) -> None:
        self._pool = pool
        self._retention = retention
        self._interval = interval.total_seconds()

    async def run(self, stop: asyncio.Event) -> None:
        """Prune now, then every interval; a failed round is logged and retried next time."""
        while not stop.is_set():
            await self._prune(prune, "dedupe ids pruned", "dedupe prune failed")
            await self._prune(reconcile.prune, "record versions pruned", "record versions prune failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def _prune(
        self, prune_table: Callable[[asyncpg.Pool, timedelta], Awaitable[int]], pruned: str, failed: str
    ) -> None:
        # Each table on its own: one failing does not keep the other from being pruned.
        try:
            removed = await prune_table(self._pool, self._retention)
            if removed:
                log.info(pruned, extra={"removed": removed})
        except Exception as exc:  # best effort: the next round tries again
            log.warning(failed, extra={"error": type(exc).__name__})
