"""Dedupe state benchmark: what remembering published event ids costs PostgreSQL, per event, and
what expiring a day of them costs, for the unpartitioned table (baseline, the previous SQL) and the
daily partitions of `fanout.dedupe`, in the same run; then the whole publishing state per change
event, with the ids of versioned changes remembered (the previous design) and without them.

Starts an embedded PostgreSQL with two databases: `baseline` migrated up to the unpartitioned
table (every migration before 0012), `partitioned` migrated fully (ids go to `event_ids`; the old
table, empty as once the retention has passed after the upgrade, is probed too). Into each, `--events` ids
(random UUIDs, a `--repeat` share of each batch repeating ids of earlier batches, as provider
retries and redrives do) go in batches of `--batch` (the worker's 500), one transaction per batch
running that design's dedupe statement, as `fanout.dedupe.publish_once` does between the record
version claim and the produce (neither of which is measured: they are the same in both designs).

Prints, per design: rows and bytes per event (`pg_total_relation_size` of every table and index
holding ids, after VACUUM, over the events offered), statements per event (counted by the
connection's query logger, BEGIN and COMMIT included), time per 1,000 events; then the cost of
expiring a day: `--events` more ids dated 8 days ago, expired with a 7-day retention by the
baseline's batched DELETE and by dropping their partition (`maintain_partitions`): time, statements
and WAL written. One summary line with the ratios.

The publishing state: `--events` change events with versions over `--records` records of 200
connections (each event a record's next version, `--repeat` of each batch an earlier event again,
as a provider's retry or a poll's overlap brings it), published by `fanout.dedupe.publish_once`
itself, on a producer to an embedded broker, into two more databases: one with
`remember_reconciled=True` (every id remembered besides the record's version, as before this
design), one as the worker runs it (the record's version only). Prints rows and bytes per event
(`record_versions` and `event_ids` together) and statements per event, and a second summary line.
Run: `python bench/dedupe.py` (under a minute); bench/README.md.
"""

import argparse
import asyncio
import platform
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/dedupe.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from bench.ingest import cpu_model  # noqa: E402
from bench.ingest_path import bench_settings  # noqa: E402
from fanout.dedupe import Outgoing, maintain_partitions, publish_once, remember  # noqa: E402
from fanout.reconcile import RecordVersion  # noqa: E402
from gateway.dev.embedded import EmbeddedBroker, EmbeddedPostgres, free_port  # noqa: E402
from gateway.runtime.kafka import ensure_topics, make_producer  # noqa: E402
from gateway.runtime.migrate import migrate, migration_files  # noqa: E402

RETENTION = timedelta(days=7)

# The baseline: the statements of the unpartitioned table, as fanout/dedupe.py ran them before.
BASELINE_INSERT = (
    "INSERT INTO event_dedupe (event_id) SELECT unnest($1::uuid[])"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id::text"
)
BASELINE_PRUNE = (
    "DELETE FROM event_dedupe WHERE event_id IN ("
    " SELECT event_id FROM event_dedupe WHERE seen_at < now() - $1::interval"
    " ORDER BY seen_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
)
BASELINE_PRUNE_BATCH = 5000


@dataclass
class Load:
    """One design's figures for remembering ids."""

    events: int
    new: int
    rows: int
    bytes: int
    statements: int
    seconds: float


@dataclass
class Expiry:
    """One design's figures for expiring a day of ids."""

    rows: int
    seconds: float
    statements: int
    wal_bytes: int


class Counted:
    """Counts the statements a connection runs (asyncpg's query logger sees each one)."""

    def __init__(self) -> None:
        self.statements = 0

    def __call__(self, record: Any) -> None:
        self.statements += 1


def batches(events: int, size: int, repeat: float, seed: int = 14) -> list[list[str]]:
    """Sorted canonical ids per batch (as `publish_once` passes them); `repeat` of each batch are
    ids of earlier batches."""
    rng = random.Random(seed)
    earlier: list[str] = []
    out = []
    for start in range(0, events, size):
        count = min(size, events - start)
        repeats = int(count * repeat) if earlier else 0
        chosen = rng.sample(earlier, min(repeats, len(earlier))) + [
            str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count - repeats)
        ]
        earlier.extend(chosen[repeats:])
        out.append(sorted(set(chosen)))
    return out


async def load(
    url: str,
    work: Sequence[Sequence[str]],
    mark: Callable[[asyncpg.Connection, list[str]], Awaitable[int]],
    table_name: str,
) -> Load:
    """Offer every batch, one transaction each, on one connection (as one worker partition does)."""
    connection = await asyncpg.connect(url)
    counted = Counted()
    try:
        connection.add_query_logger(counted)
        new = 0
        started = time.perf_counter()
        for batch in work:
            async with connection.transaction():
                new += await mark(connection, list(batch))
        seconds = time.perf_counter() - started
        connection.remove_query_logger(counted)
        await connection.execute(f"VACUUM ANALYZE {table_name}")
        rows = await connection.fetchval(f"SELECT count(*) FROM {table_name}")
        size = await connection.fetchval(_SIZE, table_name)
    finally:
        await connection.close()
    return Load(sum(len(b) for b in work), new, rows, size, counted.statements, seconds)


# Every relation holding the design's ids: the table, or the partitioned table's partitions, with
# their indexes. (The partitioned design also probes the old table, empty here as after the upgrade.)
_SIZE = (
    "SELECT coalesce((SELECT sum(pg_total_relation_size(relid))::int8"
    " FROM pg_partition_tree($1::regclass) WHERE isleaf), pg_total_relation_size($1::regclass))"
)


async def baseline_mark(connection: asyncpg.Connection, ids: list[str]) -> int:
    return len(await connection.fetch(BASELINE_INSERT, ids))


async def partitioned_mark(connection: asyncpg.Connection, ids: list[str]) -> int:
    return len(await remember(connection, ids))


async def wal_position(connection: asyncpg.Connection) -> int:
    return int(await connection.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


async def expire_baseline(url: str, events: int) -> Expiry:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "INSERT INTO event_dedupe (event_id, seen_at)"
            " SELECT gen_random_uuid(), now() - interval '8 days' FROM generate_series(1, $1)",
            events,
        )
        await connection.execute("VACUUM ANALYZE event_dedupe")
        await connection.execute("CHECKPOINT")
        counted = Counted()
        connection.add_query_logger(counted)
        before = await wal_position(connection)
        started = time.perf_counter()
        removed = 0
        while True:
            status = await connection.execute(BASELINE_PRUNE, RETENTION, BASELINE_PRUNE_BATCH)
            removed += int(status.split()[-1])
            if int(status.split()[-1]) < BASELINE_PRUNE_BATCH:
                break
        seconds = time.perf_counter() - started
        connection.remove_query_logger(counted)
        wal = await wal_position(connection) - before
    finally:
        await connection.close()
    return Expiry(removed, seconds, counted.statements, wal)


async def expire_partitioned(url: str, events: int) -> Expiry:
    connection = await asyncpg.connect(url)
    try:
        day = await connection.fetchval("SELECT (statement_timestamp() AT TIME ZONE 'UTC')::date - 8")
        await connection.execute(
            f"CREATE TABLE event_ids_p{day:%Y%m%d} PARTITION OF event_ids"
            f" FOR VALUES FROM ('{day}') TO ('{day + timedelta(days=1)}')"
        )
        await connection.execute(
            "INSERT INTO event_ids (event_id, seen_on) SELECT gen_random_uuid(), $2::date"
            " FROM generate_series(1, $1)",
            events,
            day,
        )
        await connection.execute("VACUUM ANALYZE event_ids")
        await connection.execute("CHECKPOINT")
        before = await wal_position(connection)
    finally:
        await connection.close()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    counted = Counted()
    try:
        async with pool.acquire() as held:
            held.add_query_logger(counted)
        started = time.perf_counter()
        done = await maintain_partitions(pool, RETENTION)
        seconds = time.perf_counter() - started
        async with pool.acquire() as held:
            held.remove_query_logger(counted)
            wal = await wal_position(held) - before
    finally:
        await pool.close()
    if done.dropped != [f"event_ids_p{day:%Y%m%d}"]:
        raise SystemExit(f"expected the day's partition dropped, got {done}")
    return Expiry(events, seconds, counted.statements, wal)


# ---------------------------------------------------------------------------------------------
# The publishing state per change event

# The tables a publishing transaction writes: record versions and dedupe ids.
STATE_TABLES = ("record_versions", "event_ids")
CONNECTIONS = 200
START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class State:
    """One design's figures for publishing change events."""

    events: int
    produced: int
    superseded: int
    rows: dict[str, int]
    bytes: dict[str, int]
    statements: int
    seconds: float


def change_batches(
    events: int, records: int, size: int, repeat: float, seed: int = 15
) -> list[list[Outgoing]]:
    """Change events with versions: each a random record's next version, `repeat` of each batch an
    event of an earlier batch again."""
    rng = random.Random(seed)
    connections = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(CONNECTIONS)]
    keys = [(connections[n % CONNECTIONS], f"{100_000 + n}") for n in range(records)]
    versions = [0] * records
    earlier: list[Outgoing] = []
    out = []
    for start in range(0, events, size):
        count = min(size, events - start)
        repeats = int(count * repeat) if earlier else 0
        batch = rng.sample(earlier, min(repeats, len(earlier)))
        for _ in range(count - len(batch)):
            n = rng.randrange(records)
            versions[n] += 1
            connection_id, entity_id = keys[n]
            at = START + timedelta(seconds=versions[n])
            ident = str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"{connection_id}|invoice|{entity_id}|{at.isoformat()}")
            )
            batch.append(
                Outgoing(
                    topic="changes",
                    key=connection_id.encode(),
                    value=ident.encode(),
                    headers=[],
                    dedupe_id=ident,
                    version=RecordVersion(connection_id, "invoice", entity_id, "updated", at),
                )
            )
        earlier.extend(batch)
        out.append(batch)
    return out


async def publish_state(
    url: str, producer: Any, work: Sequence[Sequence[Outgoing]], *, remember_reconciled: bool
) -> State:
    """Publish every batch with `publish_once`, one at a time, on a pool of one connection."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    counted = Counted()
    produced = superseded = 0
    try:
        async with pool.acquire() as held:
            held.add_query_logger(counted)
        started = time.perf_counter()
        for batch in work:
            published = await publish_once(pool, producer, batch, remember_reconciled=remember_reconciled)
            produced += len(published.produced)
            superseded += len(published.superseded)
        seconds = time.perf_counter() - started
        async with pool.acquire() as held:
            held.remove_query_logger(counted)
            rows, sizes = {}, {}
            for name in STATE_TABLES:
                await held.execute(f"VACUUM ANALYZE {name}")
                rows[name] = await held.fetchval(f"SELECT count(*) FROM {name}")
                sizes[name] = await held.fetchval(_SIZE, name)
    finally:
        await pool.close()
    return State(sum(len(b) for b in work), produced, superseded, rows, sizes, counted.statements, seconds)


async def publishing_states(args: argparse.Namespace, admin_url: str, folder: Path) -> dict[str, State]:
    """Both designs on the same change events, each in a database of its own."""
    work = change_batches(args.events, args.records, args.batch, args.repeat)
    broker = EmbeddedBroker(free_port(), log_path=folder / "broker.log")
    broker.start()
    try:
        settings = bench_settings(broker.bootstrap)
        await ensure_topics(settings)
        producer = make_producer(settings)
        await producer.start()
        try:
            states = {}
            for name, every_id in (("every id", True), ("versions only", False)):
                url = await create_database(admin_url, name.replace(" ", "_"))
                await migrate(url)
                states[name] = await publish_state(url, producer, work, remember_reconciled=every_id)
        finally:
            await producer.stop()
    finally:
        broker.stop()
    return states


def report_states(args: argparse.Namespace, states: dict[str, State]) -> None:
    print(
        f"{args.events:,} change events with versions over {args.records:,} records of {CONNECTIONS}"
        f" connections, batches of {args.batch}, {args.repeat:.0%} of each batch repeats\n"
    )
    rows = [
        [
            "publish",
            "produced",
            "superseded",
            "rows/event",
            "bytes/event",
            "of which ids",
            "statements/event",
            "ms/1k events",
        ]
    ]
    for name, s in states.items():
        rows.append(
            [
                name,
                f"{s.produced:,}",
                f"{s.superseded:,}",
                f"{sum(s.rows.values()) / s.events:.3f}",
                f"{sum(s.bytes.values()) / s.events:.1f}",
                f"{s.bytes['event_ids'] / s.events:.1f}",
                f"{s.statements / s.events:.4f}",
                f"{s.seconds * 1000 / s.events * 1000:.1f}",
            ]
        )
    print(table(rows) + "\n")
    old, new = states["every id"], states["versions only"]
    if (old.produced, old.superseded) != (new.produced, new.superseded):
        raise SystemExit(f"the designs disagree: {old} vs {new}")
    old_bytes, new_bytes = sum(old.bytes.values()), sum(new.bytes.values())
    print(
        f"publishing state: bytes/event {new_bytes / new.events:.1f} vs every id {old_bytes / old.events:.1f}"
        f" (ratio {new_bytes / old_bytes:.2f}), rows/event {sum(new.rows.values()) / new.events:.3f}"
        f" vs {sum(old.rows.values()) / old.events:.3f}, statements/event ratio"
        f" {new.statements / old.statements:.2f}, time ratio {new.seconds / old.seconds:.2f}"
    )


async def migrate_before_partitions(url: str) -> None:
    """Every migration before 0012: the unpartitioned table."""
    connection = await asyncpg.connect(url)
    try:
        for name, sql in migration_files():
            if name < "0012":
                await connection.execute(sql)
    finally:
        await connection.close()


async def create_database(admin_url: str, name: str) -> str:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    )


async def run(args: argparse.Namespace) -> None:
    work = batches(args.events, args.batch, args.repeat)
    with tempfile.TemporaryDirectory(prefix="bench-dedupe-") as folder:
        postgres = EmbeddedPostgres(Path(folder) / "pg", cleanup="delete")
        admin_url = postgres.start()
        try:
            baseline_url = await create_database(admin_url, "baseline")
            partitioned_url = await create_database(admin_url, "partitioned")
            await migrate_before_partitions(baseline_url)
            await migrate(partitioned_url)
            loads = {
                "baseline": await load(baseline_url, work, baseline_mark, "event_dedupe"),
                "partitioned": await load(partitioned_url, work, partitioned_mark, "event_ids"),
            }
            expiries = {
                "baseline": await expire_baseline(baseline_url, args.events),
                "partitioned": await expire_partitioned(partitioned_url, args.events),
            }
            states = await publishing_states(args, admin_url, Path(folder))
        finally:
            postgres.stop()
    report(args, loads, expiries)
    report_states(args, states)


def report(args: argparse.Namespace, loads: dict[str, Load], expiries: dict[str, Expiry]) -> None:
    print(f"machine: {cpu_model()}, {platform.python_implementation()} {platform.python_version()}")
    print(
        f"{args.events:,} ids offered in batches of {args.batch}, {args.repeat:.0%} of each batch repeats\n"
    )
    rows = [["remember", "new ids", "rows/event", "bytes/event", "statements/event", "ms/1k events"]]
    for name, figures in loads.items():
        rows.append(
            [
                name,
                f"{figures.new:,}",
                f"{figures.rows / figures.events:.3f}",
                f"{figures.bytes / figures.events:.1f}",
                f"{figures.statements / figures.events:.4f}",
                f"{figures.seconds * 1000 / figures.events * 1000:.1f}",
            ]
        )
    print(table(rows) + "\n")
    rows = [["expire a day", "rows", "seconds", "statements", "WAL bytes/row"]]
    for name, cost in expiries.items():
        rows.append(
            [
                name,
                f"{cost.rows:,}",
                f"{cost.seconds:.3f}",
                str(cost.statements),
                f"{cost.wal_bytes / cost.rows:.1f}",
            ]
        )
    print(table(rows) + "\n")
    old, new = loads["baseline"], loads["partitioned"]
    if old.new != new.new:
        raise SystemExit(f"the designs disagree on new ids: {old.new} vs {new.new}")
    print(
        f"dedupe: bytes/event {new.bytes / new.events:.1f} vs baseline {old.bytes / old.events:.1f}"
        f" (ratio {new.bytes / old.bytes:.2f}), statements/event {new.statements / new.events:.4f}"
        f" vs {old.statements / old.events:.4f} (ratio {new.statements / old.statements:.2f}),"
        f" time ratio {new.seconds / old.seconds:.2f};"
        f" expiring a day: {expiries['partitioned'].seconds:.3f} s vs {expiries['baseline'].seconds:.3f} s"
        f" (ratio {expiries['partitioned'].seconds / expiries['baseline'].seconds:.3f}),"
        f" WAL ratio {expiries['partitioned'].wal_bytes / expiries['baseline'].wal_bytes:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000, help="ids offered (default 200,000)")
    parser.add_argument("--batch", type=int, default=500, help="ids per transaction (the worker's 500)")
    parser.add_argument("--repeat", type=float, default=0.05, help="share of each batch repeating ids")
    parser.add_argument(
        "--records",
        type=int,
        default=50_000,
        help="records the change events are versions of (default 50,000)",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
