"""Scale benchmark: per-process capacity and memory at 100,000 connections, and the sizing it implies.

Starts an embedded PostgreSQL (with `pg_stat_statements` preloaded), an embedded broker and the
provider emulator (bench/poll_emulator.py: every data-API request answered in 50-200 ms), and loads
`--connections` connections with COPY: half QuickBooks realms, half Xero organisations; half of
them `poll` (webhook-less: polled every `--poll-interval` s through the emulator's change APIs),
half `auto` (QuickBooks and Xero send webhooks: swept every `--sweep-interval` s). Emulator grants
of up to 10,000 accounts cover every account; each one's tokens are handed over for one connection
and the others join that grant, as a hand-over of an already known token set does. Then, twice in
one run:

1. **baseline**: the first `--baseline` connections only;
2. **scale**: all `--connections` (the rest COPY-loaded into the same database);

each time a fresh `ledgerhook serve` process and a fresh `ledgerhook worker` process (fan-out and
poller), `--warmup` s, then a steady `--rate` signed QuickBooks deliveries a second (open loop,
bench/loadgen.py, the same realms both times) for `--duration` s while the poller runs. Over the
window: deliveries/s and CPU of the gateway, raw records/s, events/s and poll requests/s of the
worker and its CPU, RSS of each process and the size of the tables that grow with the connections,
PostgreSQL statements (`pg_stat_statements`, and the most frequent ones), WAL bytes and database
growth per event. From those, per full core, the gateway pods and worker pods (and so
raw partitions) for `--target` deliveries/s. One summary line with the scale/baseline ratios.

Run: `python bench/scale.py` (about 4 minutes); bench/README.md.
"""

import argparse
import asyncio
import contextlib
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/scale.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402

from bench.fanout import Child, CpuSnapshot, CpuWatch, Pids, child_named, only, postmaster_pid, tree  # noqa: E402
from bench.ingest import (  # noqa: E402
    VERIFIER_TOKENS,
    LoadSettings,
    Phase,
    Pool,
    cpu_model,
    run_migrate,
    run_phase,
    wait_http_ok,
)
from bench.loadgen import write_pool  # noqa: E402
from bench.poll import (  # noqa: E402
    CLIENT,
    TOKEN_LIFETIME,
    Requests,
    Samples,
    bench_env,
    delta,
    emulator_requests,
    scrape,
    start_emulator,
    stop_emulator,
    worker_env,
)
from bench.poll_workload import QB, XERO, account_ids, control, emulator_tokens  # noqa: E402
from gateway.dev import samples  # noqa: E402
from gateway.dev.embedded import EmbeddedBroker, EmbeddedPostgres, free_port  # noqa: E402
from gateway.runtime.kafka import make_producer  # noqa: E402
from gateway.settings import Settings, load_settings  # noqa: E402
from provider_auth.providers import Provider  # noqa: E402
from provider_auth.tokens import ConnectionRef, Credentials  # noqa: E402
from provider_auth.vault import KeyRing  # noqa: E402

BENCH_APPLICATION = "ledgerhook-bench"
WEBHOOK_PATH = "/webhooks/quickbooks"
LOAD_CONNECTIONS = 32  # keep-alive connections of the load generator
GRANT_ACCOUNTS = 10_000
HEADROOM = 0.7  # size pods to run at this share of a core (the chart's HPA target)
# The benchmark's own statements, left out of the PostgreSQL counts.
# Tables whose size grows with the connections, not with the traffic.
CONNECTION_TABLES = ("connections", "oauth_connection_grants", "poll_accounts", "poll_watermarks")
OWN_STATEMENTS = ("pg_stat_statements", "pg_stat_database", "pg_current_wal_lsn", "pg_database_size")


@dataclass(frozen=True)
class Connection:
    """One connection to load: its account and whether it is polled or webhook-backed."""

    id: uuid.UUID
    provider: Provider
    account_id: str
    mode: str  # "poll" or "auto"


@dataclass(frozen=True)
class PgCounters:
    """PostgreSQL at one moment: statements so far (since the reset), WAL position, database size."""

    statements: int
    resets: int  # releases to the pool: asyncpg resets a session with 4 statements in one round trip
    wal: int
    size: int


@dataclass
class Window:
    """What one measured window saw."""

    name: str
    connections: int
    phase: Phase
    seconds: float
    cores: dict[str, float]
    raw: float
    events: float
    poll_requests: Requests
    throttled: int
    statements: int
    resets: int
    wal_bytes: int
    db_bytes: int
    rss: dict[str, int]  # bytes, at the end of the window
    connection_tables: int  # bytes of CONNECTION_TABLES with their indexes, at the end of the window
    top: list[tuple[int, str]]  # the most frequent statements of the window: (calls, text)

    def per_second(self, count: float) -> float:
        """A count over the window, per second."""
        return count / self.seconds

    @property
    def deliveries(self) -> float:
        """200s per second inside the load generator's window."""
        return self.phase.ok_per_second

    @property
    def polls(self) -> float:
        """Data-API requests per second the emulator received."""
        return self.per_second(sum(self.poll_requests.made.values()))

    @property
    def other_statements(self) -> int:
        """Statements other than asyncpg's reset of a session released to its pool (4 each)."""
        return self.statements - 4 * self.resets

    @property
    def gateway_rate(self) -> float:
        """Deliveries/s per full core of the gateway process."""
        return self.per_core(self.deliveries, "gateway")

    @property
    def raw_rate(self) -> float:
        """Raw records/s per full core of the worker process."""
        return self.per_core(self.per_second(self.raw), "worker")

    @property
    def events_rate(self) -> float:
        """Events/s per full core of the worker process."""
        return self.per_core(self.per_second(self.events), "worker")

    def per_core(self, rate: float, role: str) -> float:
        """`rate` per full core of `role`."""
        return rate / max(1e-9, self.cores.get(role, 0.0))


# ---------------------------------------------------------------------------------------------
# Setup


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The sizes, the load and the sizing target."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=100_000, help="connections at scale (100,000)")
    parser.add_argument("--baseline", type=int, default=1_000, help="connections of the baseline (1,000)")
    parser.add_argument("--rate", type=float, default=400.0, help="webhook deliveries a second (400)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured window, s (60)")
    parser.add_argument("--warmup", type=float, default=15.0, help="before the window, s (15)")
    parser.add_argument("--changes", type=int, nargs=2, default=(1, 5), metavar=("LOW", "HIGH"))
    parser.add_argument("--poll-interval", type=int, default=300, help="polled accounts' interval, s (300)")
    parser.add_argument("--sweep-interval", type=int, default=3600, help="swept accounts' interval, s (3600)")
    parser.add_argument("--poll-concurrency", type=int, default=64, help="LEDGERHOOK_POLL_CONCURRENCY (64)")
    parser.add_argument("--latency", type=float, nargs=2, default=(0.05, 0.2), metavar=("LOW", "HIGH"))
    parser.add_argument("--target", type=float, default=10_000.0, help="deliveries/s to size for (10,000)")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args(argv)
    if not 0 < args.baseline < args.connections:
        parser.error("--baseline must be between 0 and --connections")
    return args


def make_connections(rng: random.Random, count: int) -> list[Connection]:
    """Half QuickBooks, half Xero, interleaved; every other one polled, the rest webhook-backed."""
    ids = account_ids(rng, count - count // 2, count // 2)
    return [
        Connection(
            uuid.UUID(int=rng.getrandbits(128), version=4), provider, account, "poll" if i % 2 else "auto"
        )
        for i, (provider, account) in enumerate(ids)
    ]


async def start_postgres(data_dir: Path) -> tuple[EmbeddedPostgres, str]:
    """An embedded PostgreSQL with `pg_stat_statements` preloaded (one restart after initdb)."""
    first = EmbeddedPostgres(data_dir, cleanup="stop")
    connection = await asyncpg.connect(first.start())
    try:
        await connection.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        await connection.execute("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
    finally:
        await connection.close()
    first.stop()
    postgres = EmbeddedPostgres(data_dir, cleanup="delete")
    return postgres, postgres.start()


@dataclass
class Grants:
    """The emulator grants of the run (at most GRANT_ACCOUNTS accounts each: the emulator takes a
    body of at most 1 MiB) and, once tokens are handed over, each one's grant row id."""

    tokens: dict[tuple[Provider, int], dict[str, str]]
    of_account: dict[str, tuple[Provider, int]]
    rows: dict[tuple[Provider, int], uuid.UUID]


async def issue_grants(http: aiohttp.ClientSession, emulator: str, connections: list[Connection]) -> Grants:
    """Emulator grants covering every account of the run."""
    grants = Grants({}, {}, {})
    for provider in (QB, XERO):
        accounts = [c.account_id for c in connections if c.provider is provider]
        for index, start in enumerate(range(0, len(accounts), GRANT_ACCOUNTS)):
            chunk = accounts[start : start + GRANT_ACCOUNTS]
            body = {"provider": provider.value, "client_id": CLIENT[0], "accounts": chunk}
            grants.tokens[(provider, index)] = await control(http, f"{emulator}/_emulator/grants", body)
            grants.of_account.update(dict.fromkeys(chunk, (provider, index)))
    return grants


async def load(
    settings: Settings,
    http: aiohttp.ClientSession,
    emulator: str,
    connections: list[Connection],
    grants: Grants,
) -> float:
    """COPY `connections` in, each joined to its account's grant (the grant row made by handing the
    emulator grant's tokens over for the first of its connections); seconds taken."""
    started = time.perf_counter()
    dsn = settings.database_url.get_secret_value()
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=2, server_settings={"application_name": BENCH_APPLICATION}
    )
    try:
        await pool.copy_records_to_table(
            "connections",
            records=[
                (c.id, f"tenant-{c.id.hex[:12]}", c.provider.value, c.account_id, c.mode) for c in connections
            ],
            columns=["id", "tenant_id", "provider", "provider_account_id", "polling_mode"],
        )
        linked: set[uuid.UUID] = set()  # linked by the hand-over itself
        for connection in connections:
            key = grants.of_account[connection.account_id]
            if key not in grants.rows:
                await hand_over(settings, pool, http, emulator, connection, grants.tokens[key])
                grants.rows[key] = await pool.fetchval(
                    "SELECT grant_id FROM oauth_connection_grants WHERE connection_id = $1", connection.id
                )
                linked.add(connection.id)
        await pool.copy_records_to_table(
            "oauth_connection_grants",
            records=[
                (c.id, grants.rows[grants.of_account[c.account_id]], c.account_id)
                for c in connections
                if c.id not in linked
            ],
            columns=["connection_id", "grant_id", "provider_account_id"],
        )
        await pool.execute("ANALYZE connections")
        await pool.execute("ANALYZE oauth_connection_grants")
    finally:
        await pool.close()
    return time.perf_counter() - started


async def hand_over(
    settings: Settings,
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    emulator: str,
    connection: Connection,
    grant: dict[str, str],
) -> None:
    """The grant's tokens handed over for one connection, as `PUT .../credentials` does."""
    producer = make_producer(settings)
    await producer.start()
    try:
        tokens = emulator_tokens(settings, pool, http, producer, emulator, CLIENT)
        await tokens.put_credentials(
            ConnectionRef(str(connection.id), connection.provider, connection.account_id),
            Credentials(
                access_token=grant["access_token"],
                refresh_token=grant["refresh_token"],
                expires_at=time.time() + TOKEN_LIFETIME,
            ),
        )
        await tokens.close()
    finally:
        await producer.stop()


def make_pool(path: Path, realms: list[str], size: int, changes: tuple[int, int], seed: int) -> Pool:
    """`size` distinct signed QuickBooks CloudEvents batches naming `realms`."""
    rng = random.Random(seed)
    deliveries = []
    lengths = []
    for _ in range(size):
        body = samples.quickbooks_cloudevents(rng.choice(realms), rng.randint(*changes), rng)
        deliveries.append(
            (samples.signed_quickbooks(body, VERIFIER_TOKENS[1]).headers["intuit-signature"], body)
        )
        lengths.append(len(body))
    write_pool(path, deliveries)
    return Pool(path, size, set(), min(lengths), max(lengths))


# ---------------------------------------------------------------------------------------------
# Measuring


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (0 once gone)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def pg_counters(connection: asyncpg.Connection) -> PgCounters:
    """Statements of the run's processes since the last reset, the WAL position, the database size."""
    own = " AND ".join(f"query NOT LIKE '%{name}%'" for name in OWN_STATEMENTS)
    statements = await connection.fetchval(
        f"SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements WHERE toplevel AND {own}"
    )
    resets = await connection.fetchval(
        "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements WHERE toplevel AND query = 'RESET ALL'"
    )
    wal = await connection.fetchval("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8")
    size = await connection.fetchval("SELECT pg_database_size(current_database())")
    return PgCounters(int(statements), int(resets), int(wal), int(size))


async def top_statements(connection: asyncpg.Connection, count: int = 6) -> list[tuple[int, str]]:
    """The run's most frequent statements since the last reset: (calls, text, shortened)."""
    own = " AND ".join(f"query NOT LIKE '%{name}%'" for name in OWN_STATEMENTS)
    rows = await connection.fetch(
        f"SELECT calls, query FROM pg_stat_statements WHERE toplevel AND {own} ORDER BY calls DESC LIMIT $1",
        count,
    )
    return [(int(row["calls"]), " ".join(row["query"].split())[:90]) for row in rows]


async def connection_tables(connection: asyncpg.Connection) -> int:
    """Bytes of the tables that grow with the connections, indexes included."""
    size = await connection.fetchval(
        "SELECT coalesce(sum(pg_total_relation_size(oid)), 0)::int8 FROM pg_class"
        " WHERE relkind = 'r' AND relname = ANY($1::text[])",
        list(CONNECTION_TABLES),
    )
    return int(size)


async def measure(
    name: str,
    connections: int,
    args: argparse.Namespace,
    env: dict[str, str],
    tmp: Path,
    pool: Pool,
    offset: int,
    roles: dict[str, Pids],
    http: aiohttp.ClientSession,
    emulator_url: str,
    pg: asyncpg.Connection,
) -> Window:
    """Fresh gateway and worker, the warm-up, then the load window with every counter around it."""
    port, worker_port = free_port(), free_port()
    gateway = Child(
        f"gateway-{name}",
        [sys.executable, "-m", "gateway.cli", "serve"],
        env | {"LEDGERHOOK_PORT": str(port)},
        tmp / f"gateway-{name}.log",
    )
    worker = Child(
        f"worker-{name}",
        [sys.executable, "-m", "gateway.cli", "worker"],
        env
        | worker_env(worker_port, args.poll_interval, args.poll_concurrency)
        | {"LEDGERHOOK_SWEEP_INTERVAL_SECONDS": str(args.sweep_interval)},
        tmp / f"worker-{name}.log",
    )
    try:
        await asyncio.to_thread(wait_http_ok, f"http://127.0.0.1:{port}/readyz", gateway.process)
        deadline = time.monotonic() + 60
        while scrape(worker_port) is None:
            worker.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not serve its metrics; see {worker.log_path}")
            await asyncio.sleep(0.2)
        watch = CpuWatch(roles | {"gateway": only(gateway.pid), "worker": only(worker.pid)})
        plan = LoadSettings(LOAD_CONNECTIONS, 1, args.rate, 0.0, args.warmup, args.duration)
        result: list[Phase] = []
        thread = threading.Thread(
            target=lambda: result.append(
                run_phase(
                    name,
                    "open",
                    f"open {plan.rate:g}/s",
                    port,
                    pool,
                    plan,
                    offset,
                    {"server": gateway.pid, "broker": None},
                )
            )
        )
        thread.start()
        # The loadgen's window starts about a second after its processes load the pool: start ours
        # after the warm-up and end it before theirs, so both see the same steady load.
        await asyncio.sleep(args.warmup + 1.0)
        await pg.execute("SELECT pg_stat_statements_reset()")
        before_pg = await pg_counters(pg)
        before_cpu: CpuSnapshot = watch.snapshot()
        before_metrics: Samples | None = scrape(worker_port)
        before_polls = await emulator_requests(http, emulator_url)
        await asyncio.sleep(args.duration - 1.5)
        after_metrics = scrape(worker_port)
        after_polls = await emulator_requests(http, emulator_url)
        after_cpu = watch.snapshot()
        after_pg = await pg_counters(pg)
        rss = {"gateway": rss_bytes(gateway.pid), "worker": rss_bytes(worker.pid)}
        top = await top_statements(pg)
        tables = await connection_tables(pg)
        await asyncio.to_thread(thread.join)
        gateway.check()
        worker.check()
        if not result:
            raise RuntimeError("the load generator failed; see the logs above")
        seconds = after_cpu.at - before_cpu.at
        polls = after_polls.since(before_polls)
        return Window(
            name=name,
            connections=connections,
            phase=result[0],
            seconds=seconds,
            cores=CpuWatch.cores(before_cpu, after_cpu),
            raw=delta(after_metrics, before_metrics, "ledgerhook_fanout_records_consumed_total"),
            events=delta(after_metrics, before_metrics, "ledgerhook_fanout_events_published_total"),
            poll_requests=polls,
            throttled=sum(polls.throttled.values()),
            statements=after_pg.statements - before_pg.statements,
            resets=after_pg.resets - before_pg.resets,
            wal_bytes=after_pg.wal - before_pg.wal,
            db_bytes=after_pg.size - before_pg.size,
            rss=rss,
            connection_tables=tables,
            top=top,
        )
    finally:
        worker.stop()
        gateway.stop()


# ---------------------------------------------------------------------------------------------
# Report


def table(rows: list[list[str]]) -> str:
    """A plain table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    )


def report(args: argparse.Namespace, base: Window, scale: Window) -> None:
    """The table, memory per 10,000 connections, the most frequent statements, the sizing and the
    summary line."""
    for window in (base, scale):
        if window.raw == 0 or window.deliveries == 0:
            raise SystemExit(f"{window.name}: nothing went through in the window; lengthen --warmup")
    print()
    print(
        f"{args.rate:g} QuickBooks deliveries/s offered ({args.changes[0]}-{args.changes[1]} changes each)"
        f" for {args.duration:g} s after {args.warmup:g} s; polled every {args.poll_interval} s,"
        f" swept every {args.sweep_interval} s, poll concurrency {args.poll_concurrency}"
    )
    rows = [["", f"baseline {base.connections:,}", f"scale {scale.connections:,}", "ratio"]]

    def add(label: str, old: float, new: float, fmt: str = "{:,.0f}") -> None:
        rows.append([label, fmt.format(old), fmt.format(new), f"{new / old:.2f}" if old else "-"])

    add("gateway deliveries/s (200s)", base.deliveries, scale.deliveries)
    add("  p99 ms", base.phase.percentile(0.99), scale.phase.percentile(0.99), "{:,.1f}")
    add("  gateway cores", base.cores["gateway"], scale.cores["gateway"], "{:.2f}")
    add("  deliveries/s per gateway core", base.gateway_rate, scale.gateway_rate)
    add("worker raw records/s", base.per_second(base.raw), scale.per_second(scale.raw))
    add("worker events/s", base.per_second(base.events), scale.per_second(scale.events))
    add("worker poll requests/s", base.polls, scale.polls)
    add("  429s in the window", base.throttled, scale.throttled)
    add("  worker cores", base.cores["worker"], scale.cores["worker"], "{:.2f}")
    add("  raw records/s per worker core", base.raw_rate, scale.raw_rate)
    add("  events/s per worker core", base.events_rate, scale.events_rate)
    add("gateway RSS MB", base.rss["gateway"] / 2**20, scale.rss["gateway"] / 2**20, "{:,.1f}")
    add("worker RSS MB", base.rss["worker"] / 2**20, scale.rss["worker"] / 2**20, "{:,.1f}")
    add("postgres cores", base.cores["postgres"], scale.cores["postgres"], "{:.2f}")
    add("broker cores", base.cores["broker"], scale.cores["broker"], "{:.2f}")
    add("emulator cores", base.cores["emulator"], scale.cores["emulator"], "{:.2f}")
    add("other cores", base.cores["other"], scale.cores["other"], "{:.2f}")
    for label, attr in (
        ("postgres statements/event", "statements"),
        ("  less the pool's release resets", "other_statements"),
        ("postgres WAL bytes/event", "wal_bytes"),
        ("postgres database bytes/event", "db_bytes"),
    ):
        add(
            label,
            getattr(base, attr) / max(1.0, base.events),
            getattr(scale, attr) / max(1.0, scale.events),
            "{:,.2f}",
        )
    print(table(rows))

    tens = (scale.connections - base.connections) / 10_000
    memory = {role: (scale.rss[role] - base.rss[role]) / tens / 2**20 for role in ("gateway", "worker")}
    stored = (scale.connection_tables - base.connection_tables) / tens / 2**20
    print(
        f"memory per 10k connections (RSS at {scale.connections:,} less at {base.connections:,}):"
        f" gateway {memory['gateway']:.1f} MB, worker {memory['worker']:.1f} MB;"
        f" PostgreSQL {stored:.1f} MB of {', '.join(CONNECTION_TABLES)} with their indexes"
    )
    for window in (base, scale):
        print(f"most frequent statements, {window.name} (calls/s):")
        for calls, text in window.top:
            print(f"  {window.per_second(calls):8,.0f}  {text}")

    # Sizing from the scale run, per full core at HEADROOM of it.
    gateway_rate, raw_rate = scale.gateway_rate, scale.raw_rate
    events_per_delivery = scale.events / max(1.0, scale.raw)
    gateways = max(2, math.ceil(args.target / (gateway_rate * HEADROOM)))
    workers = max(2, math.ceil(args.target / (raw_rate * HEADROOM)))
    partitions = 6 * math.ceil(workers / 6)
    print(
        f"sizing for {args.target:,.0f} deliveries/s ({events_per_delivery:.1f} events each here):"
        f" gateway pods = ceil({args.target:,.0f} / ({gateway_rate:,.0f} x {HEADROOM})) = {gateways};"
        f" worker pods = ceil({args.target:,.0f} / ({raw_rate:,.0f} raw/s x {HEADROOM})) = {workers};"
        f" raw partitions >= worker pods, rounded up to a multiple of 6: {partitions}"
    )
    print()
    print(
        f"scale: at {scale.connections:,} connections vs {base.connections:,}, per core: gateway"
        f" {gateway_rate:,.0f} deliveries/s (ratio {gateway_rate / base.gateway_rate:.2f}),"
        f" worker {raw_rate:,.0f} raw/s (ratio {raw_rate / base.raw_rate:.2f}),"
        f" {scale.polls:,.0f} poll requests/s (baseline {base.polls:,.0f});"
        f" memory per 10k: gateway {memory['gateway']:.1f} MB, worker {memory['worker']:.1f} MB,"
        f" PostgreSQL {stored:.1f} MB;"
        f" {scale.statements / max(1.0, scale.events):.2f} statements/event"
        f" (baseline {base.statements / max(1.0, base.events):.2f});"
        f" for {args.target:,.0f}/s: {gateways} gateway pods, {workers} worker pods, {partitions} partitions"
    )


# ---------------------------------------------------------------------------------------------
# The run


async def run(args: argparse.Namespace, tmp: Path) -> None:
    """The whole benchmark in `tmp`: setup, the two windows, the report."""
    print(
        f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, "
        f"load average before the run {os.getloadavg()[0]:.2f}"
    )
    rng = random.Random(args.seed)
    connections = make_connections(rng, args.connections)
    first, rest = connections[: args.baseline], connections[args.baseline :]
    realms = [c.account_id for c in first if c.provider is QB and c.mode == "auto"]
    size = math.ceil(args.rate * (args.warmup + args.duration + 5)) * 2
    started = time.monotonic()
    pool = make_pool(tmp / "pool.bin", realms, size, tuple(args.changes), args.seed)
    print(
        f"deliveries: {size:,} signed QuickBooks batches over {len(realms)} webhook-backed realms,"
        f" {pool.min_bytes}-{pool.max_bytes} bytes ({time.monotonic() - started:.1f} s)"
    )

    data_dir = tmp / "postgres" / "data"
    postgres, database_url = await start_postgres(data_dir)
    broker = EmbeddedBroker(free_port(), log_path=tmp / "broker.log")
    emulator: subprocess.Popen[bytes] | None = None
    try:
        broker.start()
        emulator, emulator_url = start_emulator(tmp, args.latency)
        settings = load_settings(
            database_url=database_url,
            kafka_bootstrap_servers=broker.bootstrap,
            kafka_idempotent_producer=False,
            encryption_keys=f"bench:{KeyRing.generate_key()}",
        )
        env = bench_env(settings, emulator_url) | {
            "LEDGERHOOK_QUICKBOOKS_VERIFIER_TOKENS": ",".join(VERIFIER_TOKENS),
            "LEDGERHOOK_WORKERS": "1",
        }
        run_migrate(env)
        broker_pid = child_named("tansu")
        roles: dict[str, Pids] = {
            "emulator": only(emulator.pid),
            "broker": only(broker_pid) if broker_pid else set,
            "postgres": lambda: tree(postmaster_pid(data_dir)),
        }
        pg = await asyncpg.connect(database_url, server_settings={"application_name": BENCH_APPLICATION})
        try:
            await pg.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
                grants = await issue_grants(http, emulator_url, connections)
                seconds = await load(settings, http, emulator_url, first, grants)
                print(f"baseline: {len(first):,} connections loaded in {seconds:.1f} s")
                base = await measure(
                    "baseline", len(first), args, env, tmp, pool, 0, roles, http, emulator_url, pg
                )
                print(f"  {base.deliveries:,.0f} deliveries/s, {base.per_second(base.events):,.0f} events/s")
                seconds = await load(settings, http, emulator_url, rest, grants)
                print(f"scale: {len(rest):,} more connections loaded in {seconds:.1f} s")
                offset = base.phase.sent_max + 1
                scale = await measure(
                    "scale", len(connections), args, env, tmp, pool, offset, roles, http, emulator_url, pg
                )
        finally:
            await pg.close()
        report(args, base, scale)
    finally:
        if emulator is not None:
            stop_emulator(emulator)
        broker.stop()
        postgres.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; Ctrl-C exits quietly."""
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="ledgerhook-scale-") as folder:
            asyncio.run(run(args, Path(folder)))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
