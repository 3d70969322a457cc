"""Publish each event once: reconciliation by record version, then a PostgreSQL table of the ids
already published, in daily partitions.

`publish_once` drops a batch's changes whose record version was already published
(`fanout.reconcile`: one row per record, which is all a change with a version needs), marks the ids
of the records reconciliation does not judge seen in `event_ids` (changes without a version,
webhook-only operations, quarantine records), produces only the new ones and commits the
transaction only after the broker acknowledged them, so the caller may then commit its offsets.
An id in the table of earlier releases, `event_dedupe`, counts as seen too; it is only read and
pruned until a later release drops it. `maintain_partitions` creates the days ahead and drops the
expired ones; `DedupePruner` runs it and prunes the old table and the record versions, all to the
retention window. The transaction, the partitions and where a crash can still repeat an event:
docs/architecture.md, "The fan-out worker", "Dedupe state" and "Reconciliation".
"""

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from fanout import reconcile
from fanout.reconcile import RecordVersion, publishable

log = logging.getLogger("ledgerhook.fanout.dedupe")

# How long after a UTC midnight a publishing transaction also writes its ids under the previous
# day. Longer than any publishing transaction lasts from its insert to its commit (the broker's
# acknowledgements, at most LEDGERHOOK_ACK_TIMEOUT_SECONDS per request): a transaction of the new day
# racing one of the old day on an id then meets its uncommitted row in the old day's unique index,
# waits for it and is refused. It costs one more row per id for this long each day.
BOUNDARY_GRACE = timedelta(minutes=15)
# Partitions kept ready ahead of today, so a pruner stopped for a while leaves no day without one.
DAYS_AHEAD = 3

# Ids travel as text both ways: asyncpg encodes and decodes them in C, no uuid.UUID per event.
# `known`: ids in any partition (one index probe per partition) or in the old table. The rest are
# written under the statement's UTC day and, within BOUNDARY_GRACE of midnight, the previous day too,
# in key order; an id is new only if every row of it was written (a row in conflict was written by
# another transaction first, which this one waited for).
_INSERT = (
    "WITH days AS (SELECT DISTINCT (at AT TIME ZONE 'UTC')::date AS seen_on"
    " FROM (VALUES (statement_timestamp()), (statement_timestamp() - $2::interval)) AS key (at)),"
    " known AS (SELECT event_id FROM event_ids WHERE event_id = ANY($1::uuid[])"
    " UNION ALL SELECT event_id FROM event_dedupe WHERE event_id = ANY($1::uuid[])),"
    " inserted AS (INSERT INTO event_ids (event_id, seen_on)"
    " SELECT event_id, seen_on FROM unnest($1::uuid[]) AS offered (event_id), days"
    " WHERE event_id NOT IN (SELECT event_id FROM known) ORDER BY seen_on, event_id"
    " ON CONFLICT (event_id, seen_on) DO NOTHING RETURNING event_id)"
    " SELECT event_id::text FROM inserted GROUP BY event_id HAVING count(*) = (SELECT count(*) FROM days)"
)
# The table of earlier releases (migration 0001), pruned as they pruned it until it is empty; SKIP
# LOCKED: several workers may prune at once without waiting on each other.
_PRUNE_OLD = (
    "DELETE FROM event_dedupe WHERE event_id IN ("
    " SELECT event_id FROM event_dedupe WHERE seen_at < now() - $1::interval"
    " ORDER BY seen_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
)

# The partitions and their bounds, e.g. "FOR VALUES FROM ('2026-03-04') TO ('2026-03-05')", "DEFAULT".
_PARTITIONS = (
    "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
    " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'event_ids'::regclass"
)
_BOUND = re.compile(r"FROM \((?:'(?P<start>[0-9-]+)'|MINVALUE)\) TO \((?:'(?P<end>[0-9-]+)'|MAXVALUE)\)")
# The database's clock, the one the insert dates its rows by.
_CLOCK = "SELECT statement_timestamp(), (statement_timestamp() AT TIME ZONE 'UTC')::date"
# One pruner at a time across every worker; the others skip the round.
_MAINTENANCE_LOCK = 0x4C6564676501
# DDL on a partition locks the whole table: wait briefly for the publishing transactions in flight,
# else give up and try again next round, rather than hold every new one back behind the lock.
_DDL_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '1s'"
_DEFAULT_PARTITION = "event_ids_default"


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
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    records: Sequence[Outgoing],
    *,
    remember_reconciled: bool = False,
) -> Published:
    """Produce, in order, the records that reconciliation passes and that are not repeats.

    A change event with a version is judged by its record's row alone (`fanout.reconcile`): its
    id is not remembered, since a repeat of it repeats the record's version too. The ids of the
    rest (no version, an operation reconciliation lets through, quarantine records) are, and a
    repeated id is dropped. `remember_reconciled`: remember every id, when another path publishes
    the same records without versions (`LEDGERHOOK_RECONCILE_WEBHOOKS=false`), so the two paths
    still meet on ids.

    Returns only once every produced record is acknowledged and the versions and ids are committed
    as published; raises (with nothing committed) if any produce fails.
    """
    if not records:
        return Published([], [])
    # Canonical (lower-case) text sorts like the UUIDs' bytes, PostgreSQL's order for uuid.
    canonical = [_canonical(record.dedupe_id) for record in records]
    keeps_id = [remember_reconciled or not _reconciled(record) for record in records]
    async with pool.acquire() as connection, connection.transaction():
        # Record versions before dedupe ids, in every publishing transaction: no lock cycle.
        verdicts = await publishable(connection, [record.version for record in records])
        kept = zip(canonical, verdicts, keeps_id, strict=True)
        offered = sorted({ident for ident, passes, keep_id in kept if passes and keep_id})
        new = await remember(connection, offered) if offered else set()
        fresh: list[Outgoing] = []
        refused: list[Outgoing] = []
        for record, ident, passes, keep_id in zip(records, canonical, verdicts, keeps_id, strict=True):
            if not passes:
                refused.append(record)
            elif not keep_id:
                fresh.append(record)  # reconciliation passes one claim per record version and batch
            # The same id twice in one batch (a provider repeating a change): publish the first only.
            elif ident in new:
                new.discard(ident)
                fresh.append(record)
        superseded = await _superseded(connection, refused) if refused else []
        # send() only queues; queued in order, the records of one key keep their order.
        pending = [
            await producer.send(record.topic, record.value, key=record.key, headers=record.headers)
            for record in fresh
        ]
        await wait_for_acks(pending)
    return Published(fresh, superseded)


async def remember(
    connection: asyncpg.Connection, ids: Sequence[str], grace: timedelta = BOUNDARY_GRACE
) -> set[str]:
    """Mark `ids` (canonical, sorted) seen in the caller's transaction; returns those never seen before.

    An id some other open transaction is marking waits for it, then counts as seen if it committed.
    `grace`: how long after midnight ids are also written under the previous day (`BOUNDARY_GRACE`).
    """
    return {row[0] for row in await connection.fetch(_INSERT, ids, grace)}


def _reconciled(record: Outgoing) -> bool:
    """Whether reconciliation judges the record by its version (and so its id need not be kept)."""
    return record.version is not None and record.version.mark() is not None


async def _superseded(connection: asyncpg.Connection, refused: Sequence[Outgoing]) -> list[Outgoing]:
    """The refused records older than the latest state published of their record; the others
    repeat it (the same version and rank) and count as duplicates."""
    claims = [record.version for record in refused if record.version is not None]
    repeated = await reconcile.repeats(connection, claims)  # only changes with a version are refused
    return [record for record, again in zip(refused, repeated, strict=True) if not again]


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


@dataclass(frozen=True, slots=True)
class Maintenance:
    """What one round of `maintain_partitions` did (nothing if another worker held the round)."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    # Expired rows deleted from the default partition (rows of a day that had no partition).
    expired_default_rows: int = 0
    # Partitions it could not create or drop this round (a lock not granted in time, rows of the day
    # already in the default partition); the next round tries again.
    failed: list[str] = field(default_factory=list)
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class _Partition:
    name: str
    start: date  # date.min: from MINVALUE
    end: date  # date.max: to MAXVALUE


async def maintain_partitions(
    pool: asyncpg.Pool, retention: timedelta, days_ahead: int = DAYS_AHEAD
) -> Maintenance:
    """Create the partitions of today and the next `days_ahead` days that are missing, drop those
    whose every id is older than `retention` (a day's partition goes once its end is), and delete
    the default partition's expired rows. Safe from several workers at once: one does the round,
    the others skip it."""
    async with pool.acquire() as connection:
        if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", _MAINTENANCE_LOCK):
            return Maintenance(skipped=True)
        try:
            return await _maintain(connection, retention, days_ahead)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _MAINTENANCE_LOCK)


async def _maintain(connection: asyncpg.Connection, retention: timedelta, days_ahead: int) -> Maintenance:
    now, today = await connection.fetchrow(_CLOCK)
    # A day's rows expire when its end does; as a date, every day before the cutoff's.
    cutoff = (now - retention).astimezone(UTC).date()
    partitions = await _partitions(connection)
    created: list[str] = []
    dropped: list[str] = []
    failed: list[str] = []
    for day in (today + timedelta(days=n) for n in range(days_ahead + 1)):
        if any(p.start <= day < p.end for p in partitions):
            continue
        name = f"event_ids_p{day:%Y%m%d}"
        statement = (
            f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF event_ids'
            f" FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')"
        )
        (created if await _ddl(connection, statement, name) else failed).append(name)
    for partition in partitions:
        if partition.end <= cutoff:
            statement = f'DROP TABLE IF EXISTS "{partition.name}"'
            (dropped if await _ddl(connection, statement, partition.name) else failed).append(partition.name)
    status = await connection.execute(f"DELETE FROM {_DEFAULT_PARTITION} WHERE seen_on < $1", cutoff)
    return Maintenance(created, dropped, int(status.split()[-1]), failed)


async def _partitions(connection: asyncpg.Connection) -> list[_Partition]:
    """Every dated partition (not the default one)."""
    found = []
    for name, bound in await connection.fetch(_PARTITIONS):
        if (match := _BOUND.search(bound)) is None:
            continue
        start, end = match["start"], match["end"]
        found.append(
            _Partition(
                name,
                date.fromisoformat(start) if start else date.min,
                date.fromisoformat(end) if end else date.max,
            )
        )
    return found


async def _ddl(connection: asyncpg.Connection, statement: str, partition: str) -> bool:
    """Run one partition's DDL in a transaction of its own; False (logged) if it failed."""
    try:
        async with connection.transaction():
            await connection.execute(_DDL_LOCK_TIMEOUT)
            await connection.execute(statement)
    except asyncpg.PostgresError as exc:
        log.warning(
            "dedupe partition change failed",
            extra={"partition": partition, "error": type(exc).__name__, "detail": str(exc)},
        )
        return False
    return True


async def prune_old_table(pool: asyncpg.Pool, retention: timedelta, batch_size: int = 5000) -> int:
    """Delete the ids of `event_dedupe` (the table of earlier releases) older than `retention`,
    `batch_size` rows per statement; returns how many went. Once the retention has passed since the
    last older worker stopped writing it, it stays empty and each call is one index probe."""
    removed = 0
    while True:
        status = await pool.execute(_PRUNE_OLD, retention, batch_size)
        count = int(status.split()[-1])
        removed += count
        if count < batch_size:
            return removed


class DedupePruner:
    """Periodic task: keep the dedupe partitions (`maintain_partitions`), prune the old dedupe table
    (`prune_old_table`) and the record versions every `interval`, until `stop` is set; all keep the
    same retention, the window in which a repeat is dropped."""

    def __init__(self, pool: asyncpg.Pool, retention: timedelta, interval: timedelta) -> None:
        self._pool = pool
        self._retention = retention
        self._interval = interval.total_seconds()

    async def run(self, stop: asyncio.Event) -> None:
        """Maintain and prune now, then every interval; a failed round is logged and retried next time."""
        while not stop.is_set():
            await self._maintain()
            await self._prune(prune_old_table, "old dedupe ids pruned", "old dedupe ids prune failed")
            await self._prune(reconcile.prune, "record versions pruned", "record versions prune failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    # Each table on its own: one failing does not keep the others from being kept.
    async def _maintain(self) -> None:
        try:
            done = await maintain_partitions(self._pool, self._retention)
        except Exception as exc:  # best effort: the next round tries again
            log.warning("dedupe partitions upkeep failed", extra={"error": type(exc).__name__})
            return
        if done.created or done.dropped or done.expired_default_rows:
            log.info(
                "dedupe partitions kept",
                extra={
                    "created": done.created,
                    "dropped": done.dropped,
                    "expired_default_rows": done.expired_default_rows,
                },
            )

    async def _prune(
        self, prune_table: Callable[[asyncpg.Pool, timedelta], Awaitable[int]], pruned: str, failed: str
    ) -> None:
        try:
            removed = await prune_table(self._pool, self._retention)
        except Exception as exc:  # best effort: the next round tries again
            log.warning(failed, extra={"error": type(exc).__name__})
            return
        if removed:
            log.info(pruned, extra={"removed": removed})
