"""Change poller benchmark: emulated accounts polled by one worker; freshness, efficiency and cost.

Starts an embedded PostgreSQL, an embedded broker and the provider emulator (bench/poll_emulator.py,
a process of its own, every data-API request delayed by 50-200 ms drawn per request), registers
`--accounts` accounts (half QuickBooks realms, half Xero organisations; one connection and its tokens
each) and runs one `ledgerhook worker` process polling them every `--interval` seconds. Then:

1. **steady state**: records change in the emulated books at a steady rate (bench/poll_workload.py)
   while a reader notes when each change's event arrives on `ledgerhook.changes`. After the first
   pass over every account, over `--duration` seconds: freshness (change made -> its event read)
   p50/p99, requests made (the emulator's counters) per request needed (one CDC call per realm and
   one call per polled Xero endpoint per organisation, per interval), 429s, and whether the worker
   keeps up (polls made per poll due, accounts overdue).
2. **cost**: every account gets `--cost-records` new records; a bare aiohttp loop
   (bench/poll_bare.py) fetches the pages of one poll of every account (the same requests, built by
   the polling modules from the same watermarks) with the same concurrency and does nothing with
   them; then a fresh worker polls every account once and turns the same pages into events. Pages
   per second of each, same run, same emulator.
3. **backfill share**: a few accounts (`--backfill-accounts`; every other account's polling off)
   get books holding 29 days of history and a 30-day backfill each (`POST .../backfill`), at per-minute
   limits the worker can fill (Xero's documented 60, QuickBooks lowered: see `backfill_phase`), while
   their sweeps go on and records change. Over `--backfill-duration` seconds: requests granted
   against what the limits allowed, 429s, and the sweeps' freshness meanwhile.

Prints the tables and one summary line. Run: `python bench/poll.py` (full size, about 18 minutes),
`python bench/poll.py --quick` (100 accounts, 20 s interval, about 8 minutes), the backfill phase
alone with `--phases backfill` (about 7 minutes); bench/README.md.
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
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/poll.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import orjson  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench.fanout import Child, CpuSnapshot, CpuWatch, Pids, child_named, only, postmaster_pid, tree  # noqa: E402
from bench.ingest import cpu_model, percentile, run_migrate, wait_for_quiet  # noqa: E402
from bench.poll_workload import (  # noqa: E402
    QB,
    XERO,
    Account,
    ChangeMaker,
    EventLog,
    account_ids,
    add_history,
    control,
    history_gaps,
    most_in_window,
    read_changes,
    register,
)
from fanout.polling import quickbooks, xero  # noqa: E402
from fanout.polling.adapters import ADAPTERS, MAX_LOOKBACK  # noqa: E402
from fanout.polling.pages import PageRequest, PollTarget  # noqa: E402
from gateway.dev.embedded import EmbeddedBroker, EmbeddedPostgres, free_port  # noqa: E402
from gateway.dev.emulator.books import default_limits  # noqa: E402
from gateway.runtime.kafka import make_producer  # noqa: E402
from gateway.settings import Settings, load_settings  # noqa: E402
from provider_auth.providers import Provider  # noqa: E402
from provider_auth.vault import KeyRing  # noqa: E402

CLIENT = ("ledgerhook-bench", "ledgerhook-bench-secret")
ADMIN_TOKEN = "ledgerhook-bench-admin"
PARTITIONS = 6
TOKEN_LIFETIME = 86_400.0  # access tokens outlive the run: no refresh mixes into the figures
FRESHNESS_SLACK = 5.0  # target: p99 <= interval + this
RATIO_TARGET = 1.1
COST_TARGET = 0.5
BACKFILL_SHARE_TARGET = 0.9
PHASES = ("steady", "cost", "backfill")  # `--phases`, in the order they run
OVERDUE_SECONDS = 5.0  # an account due longer ago than this, and not being polled, is overdue
STRAGGLER_SECONDS = 30.0  # after the window, changes get two intervals and this long to be seen
BENCH_APPLICATION = "ledgerhook-bench"  # the benchmark's own PostgreSQL sessions, left out of samples
READER_FETCH_WAIT_MS = 100  # the event reader's fetch wait: at most this much of a freshness is its own
# The worker's limits in the cost phase: none that binds, on either side (see `cost_phase`).
UNLIMITED = "100000000"
# Calls one poll needs at the least: one CDC call per realm, one call per polled Xero endpoint.
CALLS_PER_POLL = {QB: 1, XERO: len(xero.ENTITIES)}
# Entities the cost phase's waiting records are spread over.
COST_ENTITIES = {QB: ("Invoice", "Customer", "Bill"), XERO: ("Invoice", "Contact", "Payment")}


# ---------------------------------------------------------------------------------------------
# The stack


@dataclass
class Stack:
    """What every phase shares: the servers, the accounts, the configuration, the CPU roles."""

    args: argparse.Namespace
    tmp: Path
    settings: Settings
    env: dict[str, str]
    emulator_url: str
    emulator: subprocess.Popen[bytes]
    roles: dict[str, Pids]
    accounts: list[Account] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, command: list[str], extra_env: dict[str, str]) -> Child:
        """A subprocess with the run's configuration; stopped when the run ends."""
        log = self.tmp / f"{name.replace(' ', '-')}.log"
        child = Child(name, [sys.executable, *command], self.env | extra_env, log)
        self.children.append(child)
        return child

    def tell_emulator(self, command: dict[str, Any]) -> None:
        """One control command to the emulator process (bench/poll_emulator.py)."""
        assert self.emulator.stdin is not None and self.emulator.stdout is not None
        self.emulator.stdin.write(orjson.dumps(command) + b"\n")
        self.emulator.stdin.flush()
        if self.emulator.stdout.readline().strip() != b"OK":
            raise RuntimeError("the emulator refused a control command")

    def count(self, provider: Provider) -> int:
        """Accounts of one provider."""
        return sum(a.provider is provider for a in self.accounts)


def bench_env(settings: Settings, emulator_url: str) -> dict[str, str]:
    """The `LEDGERHOOK_*` configuration every Ledgerhook process of the run shares."""
    assert settings.encryption_keys is not None
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERHOOK_")}
    env = base | {
        "LEDGERHOOK_DATABASE_URL": settings.database_url.get_secret_value(),
        "LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "LEDGERHOOK_KAFKA_IDEMPOTENT_PRODUCER": "false",  # the dev broker lacks it
        "LEDGERHOOK_TOPIC_PARTITIONS": str(PARTITIONS),
        "LEDGERHOOK_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
        "LEDGERHOOK_ADMIN_TOKENS": ADMIN_TOKEN,
        "LEDGERHOOK_LOG_LEVEL": "WARNING",
        "LEDGERHOOK_HOST": "127.0.0.1",
        "LEDGERHOOK_SHUTDOWN_DRAIN_SECONDS": "0",
    }
    for provider in (QB, XERO):
        prefix = f"LEDGERHOOK_{provider.env_name}"
        env[f"{prefix}_CLIENT_ID"] = CLIENT[0]
        env[f"{prefix}_CLIENT_SECRET"] = CLIENT[1]
        env[f"{prefix}_TOKEN_URL"] = f"{emulator_url}/{provider.value}/oauth/token"
        env[f"{prefix}_API_BASE_URL"] = f"{emulator_url}/{provider.value}"
    return env


def worker_env(port: int, interval: int, concurrency: int) -> dict[str, str]:
    """A worker polling (and sweeping: QuickBooks and Xero accounts are swept) every `interval` s."""
    return {
        "LEDGERHOOK_WORKER_PORT": str(port),
        "LEDGERHOOK_POLL_INTERVAL_SECONDS": str(interval),
        "LEDGERHOOK_SWEEP_INTERVAL_SECONDS": str(interval),
        "LEDGERHOOK_POLL_CONCURRENCY": str(concurrency),
    }


def start_emulator(tmp: Path, latency: Sequence[float]) -> tuple[subprocess.Popen[bytes], str]:
    """bench/poll_emulator.py on a free port; returns the process and its base URL once it serves."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.poll_emulator",
            "--port",
            str(port),
            "--client",
            ":".join(CLIENT),
            "--latency",
            str(latency[0]),
            str(latency[1]),
            "--access-ttl",
            str(TOKEN_LIFETIME),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=(tmp / "emulator.log").open("ab"),
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"READY":
        raise RuntimeError(f"the emulator did not start (exit {process.wait()}); see {tmp / 'emulator.log'}")
    return process, f"http://127.0.0.1:{port}"


def stop_emulator(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not stop."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------------
# Counters: the emulator's, the worker's, PostgreSQL's


@dataclass(frozen=True)
class Requests:
    """Data-API requests the emulator received, and the 429s it answered, per provider."""

    made: dict[Provider, int]
    throttled: dict[Provider, int]

    def since(self, before: "Requests") -> "Requests":
        """The difference between two readings."""
        return Requests(
            {p: n - before.made.get(p, 0) for p, n in self.made.items()},
            {p: n - before.throttled.get(p, 0) for p, n in self.throttled.items()},
        )


async def emulator_requests(http: aiohttp.ClientSession, emulator: str) -> Requests:
    """The emulator's counters: CDC calls, Xero list calls (token calls are left out)."""
    async with http.get(f"{emulator}/_emulator/counters") as response:
        counters: dict[str, Any] = orjson.loads(await response.read())
    qb = counters.get(QB.value, {"calls": {}, "events": {}})
    xr = counters.get(XERO.value, {"calls": {}, "events": {}})
    collections = {endpoint.collection for endpoint in xero.ENDPOINTS.values()}
    return Requests(
        {
            QB: int(qb["calls"].get("cdc", 0)),
            XERO: sum(int(n) for name, n in xr["calls"].items() if name in collections),
        },
        {QB: int(qb["events"].get("throttled", 0)), XERO: int(xr["events"].get("throttled", 0))},
    )


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples | None:
    """Every sample of the worker's /metrics (None while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: Samples | None, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    if not samples:
        return 0.0
    wanted = set(labels.items())
    return sum(value for (n, lab), value in samples.items() if n == name and wanted <= set(lab))


def delta(after: Samples | None, before: Samples | None, name: str, **labels: str) -> float:
    """How much a metric grew between two scrapes."""
    return total(after, name, **labels) - total(before, name, **labels)


@dataclass(frozen=True)
class Backlog:
    """The polled accounts at one moment, from `poll_accounts`."""

    accounts: int
    never_polled: int
    polling: int  # leased now
    overdue: int  # due more than OVERDUE_SECONDS ago and not leased
    most_late: float  # seconds the most overdue account is past its due time


async def backlog(pool: asyncpg.Pool) -> Backlog:
    """How far the polling is behind its schedule right now."""
    row = await pool.fetchrow(
        "SELECT count(*) AS accounts,"
        " count(*) FILTER (WHERE last_polled_at IS NULL) AS never,"
        " count(*) FILTER (WHERE lease_until > now()) AS polling,"
        " count(*) FILTER (WHERE (lease_until IS NULL OR lease_until <= now())"
        "   AND next_due_at < now() - make_interval(secs => $1)) AS overdue,"
        " coalesce(max(extract(epoch FROM now() - next_due_at))"
        "   FILTER (WHERE lease_until IS NULL OR lease_until <= now()), 0) AS late"
        " FROM poll_accounts WHERE enabled",
        OVERDUE_SECONDS,
    )
    assert row is not None
    return Backlog(
        row["accounts"], row["never"], row["polling"], row["overdue"], max(0.0, float(row["late"]))
    )


async def app_scope_cost(pool: asyncpg.Pool) -> tuple[int, float]:
    """The live entries of the Xero app's minute budget and how long counting them takes (ms, less a
    bare round trip): every Xero permit counts them, holding that scope's lock (migration 0004)."""
    key = "xero/app/minute"
    started = time.perf_counter()
    await pool.fetchval("SELECT 1")
    bare = time.perf_counter() - started
    started = time.perf_counter()
    live = await pool.fetchval(
        "SELECT count(*) FROM rate_budget_entries WHERE scope_key = $1 AND expires_at > clock_timestamp()",
        key,
    )
    return int(live), max(0.0, time.perf_counter() - started - bare) * 1000


@dataclass
class Sessions:
    """PostgreSQL client sessions of the run (the benchmark's own left out), sampled: how many were
    running a statement, waiting on a lock, idle inside a transaction, idle."""

    samples: int = 0
    running: int = 0
    on_lock: int = 0
    advisory: int = 0
    in_transaction: int = 0
    idle: int = 0

    def mean(self, count: int) -> float:
        """A sampled count's mean."""
        return count / self.samples if self.samples else 0.0

    def text(self) -> str:
        """Two lines for the report, indented."""
        busy = self.running + self.on_lock + self.in_transaction
        return (
            f"    {self.mean(busy):.1f} busy on average ({self.samples} samples): "
            f"{self.mean(self.running):.1f} running a statement, {self.mean(self.on_lock):.1f} waiting on a "
            f"lock ({self.mean(self.advisory):.1f} on an\n    advisory lock: the budget scopes), "
            f"{self.mean(self.in_transaction):.1f} idle in a transaction; {self.mean(self.idle):.1f} idle"
        )


async def sample_sessions(dsn: str, sessions: Sessions, stop: asyncio.Event, every: float = 0.2) -> None:
    """Count the worker's sessions by state until `stop` (the benchmark's own pool is named apart)."""
    connection = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            rows = await connection.fetch(
                "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                " AND datname = current_database() AND application_name <> $1",
                BENCH_APPLICATION,
            )
            sessions.samples += 1
            for row in rows:
                if row["state"] == "active" and row["wait_event_type"] == "Lock":
                    sessions.on_lock += 1
                    sessions.advisory += row["wait_event"] == "advisory"
                elif row["state"] == "active":
                    sessions.running += 1
                elif row["state"] in ("idle in transaction", "idle in transaction (aborted)"):
                    sessions.in_transaction += 1
                else:
                    sessions.idle += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def sampling_sessions(dsn: str) -> AsyncIterator[Sessions]:
    """`sample_sessions` for the block."""
    sessions, stop = Sessions(), asyncio.Event()
    task = asyncio.create_task(sample_sessions(dsn, sessions, stop))
    try:
        yield sessions
    finally:
        stop.set()
        await task


# ---------------------------------------------------------------------------------------------
# Phase 1: the steady state


@dataclass
class Steady:
    """What the steady-state phase measured."""

    interval: int
    initial_pass: float = math.nan  # seconds from the worker's start until every account was polled once
    initial_done: bool = False
    window: tuple[float, float] = (0.0, 0.0)  # wall clock
    requests: Requests = field(default_factory=lambda: Requests({}, {}))
    metrics: tuple[Samples | None, Samples | None] = (None, None)
    cpu: dict[str, float] = field(default_factory=dict)
    backlogs: list[Backlog] = field(default_factory=list)
    changes: int = 0  # made inside the window
    change_failures: int = 0
    freshness: list[float] = field(default_factory=list)  # seconds, changes made inside the window
    missing: int = 0
    most_per_entity: int = 0  # the most records one Xero endpoint of one account could answer in a poll
    most_per_realm: int = 0  # the same for one realm's CDC call
    app_scope: tuple[int, float] = (0, 0.0)  # live entries of the Xero app budget, ms to count them
    sessions: Sessions = field(default_factory=Sessions)
    send_lag_p99: float = 0.0

    @property
    def seconds(self) -> float:
        """The window's length."""
        return self.window[1] - self.window[0]

    def needed(self, provider: Provider, accounts: int) -> float:
        """Requests the window needs: each account polled once per interval, the least calls each."""
        return accounts * CALLS_PER_POLL[provider] * self.seconds / self.interval

    def polls(self, provider: Provider, outcome: str | None = None) -> float:
        """Polls the worker finished inside the window (of one outcome)."""
        labels = {"provider": provider.value} | ({"outcome": outcome} if outcome else {})
        return delta(self.metrics[1], self.metrics[0], "ledgerhook_poll_polls_total", **labels)

    def worker(self, name: str, **labels: str) -> float:
        """A worker counter's growth over the window."""
        return delta(self.metrics[1], self.metrics[0], name, **labels)


async def steady_phase(stack: Stack, http: aiohttp.ClientSession, pool: asyncpg.Pool) -> Steady:
    """One worker polling every account each interval while records change; see the module docstring."""
    args = stack.args
    result = Steady(args.interval)
    log = EventLog()
    ready, stop_reading, stop_changing = asyncio.Event(), asyncio.Event(), asyncio.Event()
    reader = asyncio.create_task(read_changes(stack.settings, log, ready, stop_reading, READER_FETCH_WAIT_MS))
    await ready.wait()
    await asyncio.to_thread(wait_for_quiet, args.wait_quiet)
    port = free_port()
    worker = stack.start(
        "worker", ["-m", "gateway.cli", "worker"], worker_env(port, args.interval, args.concurrency)
    )
    started = time.monotonic()
    maker = ChangeMaker(
        http, stack.emulator_url, stack.accounts, args.rate, 2.0 * args.interval, random.Random(args.seed)
    )
    making = asyncio.create_task(maker.run(stop_changing))
    try:
        # Warm-up: every account polled once (all were due at once), so the schedule is periodic.
        deadline = started + args.warmup_timeout
        print(f"steady state: first pass over {len(stack.accounts)} accounts ...")
        while time.monotonic() < deadline:
            worker.check()
            seen = await backlog(pool)
            if seen.accounts == len(stack.accounts) and seen.never_polled == 0:
                result.initial_done = True
                break
            await asyncio.sleep(1.0)
        result.initial_pass = time.monotonic() - started
        if not result.initial_done:
            print(
                f"  the first pass did not finish in {args.warmup_timeout:.0f}s "
                f"({seen.accounts - seen.never_polled} of {len(stack.accounts)} accounts polled): "
                "measuring anyway"
            )
        # Every account was due at once when the worker started, and a sweep is due again an
        # interval after it ends: left so, the accounts stay in one cluster, polled in bursts. Spread
        # over an interval, as accounts connected over time would be.
        await pool.execute(
            "UPDATE poll_accounts SET next_due_at = now() + random() * make_interval(secs => $1)"
            " WHERE enabled AND (lease_until IS NULL OR lease_until <= now())",
            float(args.interval),
        )
        print(
            f"  first pass: {result.initial_pass:.1f}s; due times spread over {args.interval}s; "
            f"measuring {args.duration:.0f}s ..."
        )

        cpu = CpuWatch(stack.roles | {"worker": only(worker.pid)})
        before_requests = await emulator_requests(http, stack.emulator_url)
        before_metrics = await asyncio.to_thread(scrape, port)
        before_cpu = cpu.snapshot()
        t0 = time.time()
        end = time.monotonic() + args.duration
        async with sampling_sessions(stack.settings.database_url.get_secret_value()) as sessions:
            while time.monotonic() < end:
                worker.check()
                result.backlogs.append(await backlog(pool))
                await asyncio.sleep(min(2.0, max(0.0, end - time.monotonic())))
        result.sessions = sessions
        t1 = time.time()
        result.cpu = CpuWatch.cores(before_cpu, cpu.snapshot())
        result.metrics = (before_metrics, await asyncio.to_thread(scrape, port))
        result.requests = (await emulator_requests(http, stack.emulator_url)).since(before_requests)
        result.window = (t0, t1)
        result.app_scope = await app_scope_cost(pool)
        stop_changing.set()
        await making

        # Changes made inside the window, each until its event is read: an interval after the window
        # when the worker keeps up; another interval and half a minute tell late from lost when not.
        inside = [c for c in maker.changes if t0 <= c.asked_at < t1]
        deadline = time.monotonic() + 2 * args.interval + STRAGGLER_SECONDS
        while time.monotonic() < deadline and any(log.seen_at(c) is None for c in inside):
            await asyncio.sleep(0.5)
        for change in inside:
            seen_at = log.seen_at(change)
            if seen_at is None:
                result.missing += 1
            else:
                result.freshness.append(seen_at - change.asked_at)
        result.changes = len(inside)
        result.change_failures = maker.failures
        result.send_lag_p99 = percentile(maker.send_lag, 0.99)
        xero_changes = [c for c in maker.changes if c.provider is XERO]
        realm_changes = [c for c in maker.changes if c.provider is QB]
        result.most_per_entity = most_in_window(
            xero_changes, args.interval + xero.OVERLAP.total_seconds(), by_entity=True
        )
        result.most_per_realm = most_in_window(
            realm_changes, args.interval + quickbooks.OVERLAP.total_seconds(), by_entity=False
        )
    finally:
        stop_changing.set()
        stop_reading.set()
        await asyncio.gather(making, reader, return_exceptions=True)
        worker.stop()
    return result


# ---------------------------------------------------------------------------------------------
# Phase 2: the cost of turning pages into events


@dataclass
class Pass:
    """One pass over every account's poll: by the bare loop or by the worker."""

    name: str
    pages: int = 0  # in all
    events: int = 0
    records: int = 0
    superseded: int = 0
    seconds: float = 0.0  # from the first page received to the last one done
    timed_pages: int = 0  # pages done after the first one received: the rates' numerators
    timed_events: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    sessions: Sessions | None = None
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def pages_per_second(self) -> float:
        """Pages fetched (and, for the worker, turned into events) per second."""
        return self.timed_pages / self.seconds if self.seconds > 0 else 0.0

    @property
    def events_per_second(self) -> float:
        """Events published per second."""
        return self.timed_events / self.seconds if self.seconds > 0 else 0.0


async def add_waiting_records(stack: Stack, http: aiohttp.ClientSession, per_account: int) -> int:
    """`per_account` new records in every account's book, spread over a few entities."""
    gate = asyncio.Semaphore(32)

    async def one(account: Account, entity: str, count: int) -> None:
        async with gate:
            url = (
                f"{stack.emulator_url}/_emulator/books/{account.provider.value}/{account.account_id}/changes"
            )
            await control(http, url, {"entity": entity, "operation": "create", "count": count})

    calls = []
    for account in stack.accounts:
        entities = COST_ENTITIES[account.provider]
        for i, entity in enumerate(entities):
            count = per_account // len(entities) + (i < per_account % len(entities))
            if count:
                calls.append(one(account, entity, count))
    await asyncio.gather(*calls)
    return per_account * len(stack.accounts)


async def poll_plan(stack: Stack, pool: asyncpg.Pool) -> dict[str, Any]:
    """The first requests of every account's next poll, as the poller builds them: each entity from
    its watermark less the provider's overlap, one call per distinct start (fanout/polling/poller.py)."""
    marks: dict[tuple[str, str], dict[str, datetime]] = {}
    for row in await pool.fetch(
        "SELECT provider, provider_account_id, entity, watermark FROM poll_watermarks"
    ):
        marks.setdefault((row["provider"], row["provider_account_id"]), {})[row["entity"]] = row["watermark"]
    created = {
        str(row["id"]): row["created_at"]
        for row in await pool.fetch("SELECT id, created_at FROM connections")
    }
    now = datetime.now(UTC)
    plan = []
    for account in stack.accounts:
        module = ADAPTERS[account.provider]
        watermarks = marks.get((account.provider.value, account.account_id), {})
        lookback = MAX_LOOKBACK.get(account.provider)
        floor = now - lookback + timedelta(minutes=1) if lookback is not None else None
        by_start: dict[datetime, list[str]] = {}
        for entity in module.ENTITIES:
            mark = watermarks.get(entity)
            since = mark - module.OVERLAP if mark is not None else created[account.connection_id]
            if floor is not None and since < floor:
                since = floor
            by_start.setdefault(since, []).append(entity)
        target = PollTarget(account.account_id)
        requests: list[PageRequest] = []
        for since, entities in sorted(by_start.items()):
            requests.extend(module.first_requests(target, since, entities))
        plan.append(
            {
                "base": f"{stack.emulator_url}/{account.provider.value}",
                "token": account.access_token,
                "requests": [
                    {
                        "method": r.method,
                        "path": r.path,
                        "params": [list(p) for p in r.params],
                        "headers": [list(h) for h in r.headers],
                    }
                    for r in requests
                ],
            }
        )
    return {"accounts": plan}


async def bare_pass(stack: Stack, plan: dict[str, Any]) -> Pass:
    """bench/poll_bare.py over the plan: the pages and nothing else."""
    path = stack.tmp / "poll-plan.json"
    path.write_bytes(orjson.dumps(plan))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.poll_bare",
        "--plan",
        str(path),
        "--concurrency",
        str(stack.args.concurrency),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    if (await process.stdout.readline()).strip() != b"READY":
        raise RuntimeError(f"the bare loop did not start (exit {await process.wait()})")
    cpu = CpuWatch(stack.roles | {"process": only(process.pid)})
    before = cpu.snapshot()
    process.stdin.write(b"go\n")
    await process.stdin.drain()
    line = await process.stdout.readline()
    after = cpu.snapshot()
    process.stdin.close()
    await process.wait()
    if not line.startswith(b"DONE "):
        raise RuntimeError(f"the bare loop failed (exit {process.returncode})")
    done = orjson.loads(line[5:])
    return Pass(
        "bare aiohttp loop",
        pages=done["pages"],
        seconds=done["seconds"],
        timed_pages=done["pages"] - 1,
        statuses=done["statuses"],
        cpu=CpuWatch.cores(before, after),
    )


async def worker_pass(stack: Stack, pool: asyncpg.Pool) -> Pass:
    """A fresh worker polls every account once: every account due now, the next poll an hour away."""
    args = stack.args
    await pool.execute("UPDATE poll_accounts SET next_due_at = now() WHERE enabled")
    port = free_port()
    env = worker_env(port, 3600, args.concurrency) | {
        f"LEDGERHOOK_{name}": UNLIMITED
        for name in (
            "QUICKBOOKS_REQUESTS_PER_MINUTE",
            "XERO_REQUESTS_PER_MINUTE",
            "XERO_REQUESTS_PER_DAY",
            "XERO_APP_REQUESTS_PER_MINUTE",
        )
    }
    worker = stack.start("cost worker", ["-m", "gateway.cli", "worker"], env)
    cpu = CpuWatch(stack.roles | {"process": only(worker.pid)})
    accounts = len(stack.accounts)
    # The first scrape that shows a page received starts the clock; pages counted by then are
    # left out of the rates, as the bare loop leaves its first page out.
    first: tuple[float, Samples | None, CpuSnapshot] | None = None
    deadline = time.monotonic() + 600.0
    try:
        async with sampling_sessions(stack.settings.database_url.get_secret_value()) as sessions:
            while time.monotonic() < deadline:
                worker.check()
                samples = await asyncio.to_thread(scrape, port)
                now = time.monotonic()
                if first is None and total(samples, "ledgerhook_poll_requests_total") > 0:
                    first = (now, samples, cpu.snapshot())
                if (
                    first is not None
                    and total(samples, "ledgerhook_poll_polls_total", outcome="ok") >= accounts
                ):
                    return Pass(
                        "ledgerhook worker",
                        pages=round(total(samples, "ledgerhook_poll_requests_total")),
                        events=round(total(samples, "ledgerhook_poll_events_published_total")),
                        records=round(total(samples, "ledgerhook_poll_records_read_total")),
                        superseded=round(total(samples, "ledgerhook_poll_events_superseded_total")),
                        seconds=now - first[0],
                        timed_pages=round(delta(samples, first[1], "ledgerhook_poll_requests_total")),
                        timed_events=round(
                            delta(samples, first[1], "ledgerhook_poll_events_published_total")
                        ),
                        statuses=outcomes(samples),
                        cpu=CpuWatch.cores(first[2], cpu.snapshot()),
                        sessions=sessions,
                    )
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the cost worker did not poll {accounts} accounts within 600s")
    finally:
        worker.stop()


def outcomes(samples: Samples | None) -> dict[str, int]:
    """The worker's requests by outcome, every provider together."""
    found: dict[str, int] = {}
    for (name, labels), value in (samples or {}).items():
        if name == "ledgerhook_poll_requests_total" and value:
            outcome = dict(labels).get("outcome", "?")
            found[outcome] = found.get(outcome, 0) + round(value)
    return found


async def cost_phase(stack: Stack, http: aiohttp.ClientSession, pool: asyncpg.Pool) -> tuple[Pass, Pass]:
    """The bare loop and a fresh worker over the same pages (see the module docstring).

    Rate limits are lifted for this phase, at the emulator and in the worker alike (concurrency
    limits stay): it measures what turning pages into events costs, not the budgets, and the bare
    loop has none; the two passes, a minute apart at most, would otherwise share the windows.
    """
    print(f"cost: {stack.args.cost_records} new records in each account's book ...")
    stack.tell_emulator(
        {
            "limits": {
                QB.value: {"per_minute": None},
                XERO.value: {"per_minute": None, "per_day": None, "app_per_minute": None},
            }
        }
    )
    await add_waiting_records(stack, http, stack.args.cost_records)
    plan = await poll_plan(stack, pool)
    print("  the bare loop fetches every account's pages ...")
    await asyncio.to_thread(wait_for_quiet, stack.args.wait_quiet)
    bare = await bare_pass(stack, plan)
    print("  a worker polls every account once ...")
    await asyncio.to_thread(wait_for_quiet, stack.args.wait_quiet)
    worker = await worker_pass(stack, pool)
    return bare, worker


# ---------------------------------------------------------------------------------------------
# Phase 3: the backfill share

# The most records one request reads: a CDC answer, a Xero page.
RECORDS_PER_REQUEST = {QB: quickbooks.PAGE_SIZE, XERO: xero.PAGE_SIZE}
# The books' history spans a little less than the 30 days CDC serves, so every record is still
# served when a job reaches it (the jobs ask for `--backfill-days`, 30: a realm's at CDC's edge).
HISTORY_SPAN = timedelta(days=29)
# Minutes of work each book holds beyond the measured window: the jobs' start and the stragglers.
HISTORY_MARGIN_MINUTES = 2.0
SYNC_EVERY = 5.0  # seconds between two readings of every backfilled connection's sync status
BACKFILL_WARMUP = 120.0  # the longest wait for every job's first page
# The window begins a minute after every job read its first page: a job's first minute is a burst (the
# budget is empty), its later minutes follow the expiry of their grants.
BACKFILL_SETTLE = 60.0
BUDGET_WAIT = 60.0  # stragglers also get a minute: a sweep may wait that long for its budget
# The cost phase's bare loop sent requests without a permit: they stay in the emulator's minute
# windows, unknown to the budgets, for a minute (then a second to spare).
UNBUDGETED_SECONDS = 61.0


@dataclass
class Backfill:
    """What the backfill phase measured."""

    accounts: list[Account]
    limits: dict[Provider, int]
    records: dict[Provider, int]  # history records per book
    interval: int
    rate: float  # changes a second in the backfilled books
    days: int  # how far back each job reads
    setup_seconds: float = 0.0
    warmup_seconds: float = 0.0
    window: tuple[float, float] = (0.0, 0.0)  # wall clock
    requests: Requests = field(default_factory=lambda: Requests({}, {}))  # emulator, the window
    phase_requests: Requests = field(default_factory=lambda: Requests({}, {}))  # emulator, the phase
    metrics: tuple[Samples | None, Samples | None] = (None, None)  # the worker's, the window
    # connection -> its job's progress (`GET .../sync`) when the window began and when it ended
    progress: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)
    use: dict[str, list[float]] = field(default_factory=dict)  # connection -> minute budget used / limit
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # connection -> its job at the end
    changes: int = 0
    change_failures: int = 0
    freshness: dict[Provider, list[float]] = field(default_factory=lambda: {QB: [], XERO: []})
    missing: int = 0
    first_by: dict[str, int] = field(default_factory=dict)  # origin of the event that showed a change
    gaps: int = 0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """The window's length."""
        return self.window[1] - self.window[0]

    @property
    def failed(self) -> dict[str, str]:
        """The jobs that failed, by connection: why."""
        return {c: str(job.get("last_error")) for c, job in self.jobs.items() if job.get("state") == "failed"}

    def of(self, provider: Provider) -> list[Account]:
        """The backfilled accounts of one provider."""
        return [a for a in self.accounts if a.provider is provider]

    def granted(self, provider: Provider) -> int:
        """Requests the emulator served (not 429) over the window."""
        return self.requests.made.get(provider, 0) - self.requests.throttled.get(provider, 0)

    def budget(self, provider: Provider) -> float:
        """Requests the per-minute limits allowed the provider's accounts over the window."""
        return len(self.of(provider)) * self.limits[provider] * self.seconds / 60.0

    def job_delta(self, provider: Provider, key: str) -> int:
        """How much a progress count (`pages_done`, `records_read`, `events_published`) of the
        provider's jobs grew over the window."""
        grew = 0
        for account in self.of(provider):
            before, after = self.progress.get(account.connection_id, ({}, {}))
            grew += int(after.get(key, 0)) - int(before.get(key, 0))
        return grew

    def account_share(self, account: Account) -> float:
        """The account's minute budget in use, per its sync status, on average over the window."""
        samples = self.use.get(account.connection_id, [])
        return sum(samples) / len(samples) if samples else math.nan


def history_records(provider: Provider, limit: int, seconds: float) -> int:
    """Records a book needs for its backfill to use `limit` requests a minute for `seconds`, and the
    margin: full answers throughout (1,000 changes a CDC answer, 100 a Xero page)."""
    minutes = (BACKFILL_SETTLE + seconds) / 60.0 + HISTORY_MARGIN_MINUTES
    return math.ceil(limit * minutes) * RECORDS_PER_REQUEST[provider]


async def admin_call(
    http: aiohttp.ClientSession, base: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    """One admin API call with the benchmark's token: its status and JSON answer."""
    async with http.request(
        method,
        f"{base}/admin/v1{path}",
        data=None if body is None else orjson.dumps(body),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    ) as response:
        text = await response.read()
        return response.status, orjson.loads(text) if text else None


async def start_gateway(
    stack: Stack, http: aiohttp.ClientSession, extra_env: dict[str, str]
) -> tuple[Child, str]:
    """`ledgerhook serve` for the admin API, once it is ready; returns it and its base URL."""
    port = free_port()
    gateway = stack.start(
        "gateway", ["-m", "gateway.cli", "serve"], {"LEDGERHOOK_PORT": str(port)} | extra_env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        gateway.check()
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{url}/readyz") as response:
                if response.status == 200:
                    return gateway, url
        await asyncio.sleep(0.2)
    raise RuntimeError("the gateway was not ready within 60s")


async def sync_statuses(
    http: aiohttp.ClientSession, base: str, accounts: Sequence[Account]
) -> dict[str, Any]:
    """`GET .../sync` of every account's connection, by connection id."""

    async def one(account: Account) -> tuple[str, Any]:
        status, body = await admin_call(http, base, "GET", f"/connections/{account.connection_id}/sync")
        if status != 200:
            raise RuntimeError(f"GET .../sync answered {status}: {body}")
        return account.connection_id, body

    return dict(await asyncio.gather(*(one(a) for a in accounts)))


def job_progress(status: dict[str, Any]) -> dict[str, Any]:
    """The progress of the connection's latest backfill (empty without one)."""
    job = status.get("backfill") or {}
    progress: dict[str, Any] = job.get("progress") or {}
    return progress


def minute_share(status: dict[str, Any]) -> float:
    """The account's minute budget in use (requests in the window ending now) over its limit."""
    minute = status["requests"]["minute"]
    return float(minute["used"]) / float(minute["limit"])


async def polling_off(http: aiohttp.ClientSession, base: str, accounts: Sequence[Account]) -> None:
    """`PATCH {"polling": {"mode": "off"}}` for each account's connection: the phase's worker polls
    the backfilled accounts only."""
    gate = asyncio.Semaphore(16)

    async def one(account: Account) -> None:
        async with gate:
            path = f"/connections/{account.connection_id}"
            status, body = await admin_call(http, base, "PATCH", path, {"polling": {"mode": "off"}})
            if status != 200:
                raise RuntimeError(f"PATCH {path} answered {status}: {body}")

    await asyncio.gather(*(one(a) for a in accounts))


def backfill_accounts(stack: Stack) -> list[Account]:
    """The phase's accounts: the first `--backfill-accounts` of the run's, half of each provider."""
    count = stack.args.backfill_accounts
    wanted = {QB: count - count // 2, XERO: count // 2}
    chosen = []
    for account in stack.accounts:
        if wanted[account.provider] > 0:
            wanted[account.provider] -= 1
            chosen.append(account)
    return chosen


async def backfill_phase(stack: Stack, http: aiohttp.ClientSession) -> Backfill:
    """A 30-day backfill of every account of the phase while their sweeps go on; the share of the
    per-minute budgets their requests use, and the sweeps' freshness meanwhile.

    The budget has to bind, not the worker: a CDC answer carries up to 1,000 changes and a Xero page
    100, so a backfill publishes 1,000 or 100 events per request it is granted. At QuickBooks's 500
    a minute a realm's backfill would be half a million events a minute: one worker would bind long
    before the budget. So the phase backfills a few accounts (`--backfill-accounts`) with Xero at its
    documented 60 a minute and QuickBooks lowered (`--backfill-quickbooks-limit`, 6 a minute by
    default: as many changes a minute as a Xero organisation's backfill), at the emulator and in the
    worker alike, every other account's polling turned off. Each book holds enough history (full
    answers only) to keep its job busy for the window and a margin.
    """
    args = stack.args
    accounts = backfill_accounts(stack)
    chosen = {a.connection_id for a in accounts}
    limits = {QB: args.backfill_quickbooks_limit, XERO: args.backfill_xero_limit}
    result = Backfill(
        accounts,
        limits,
        {p: history_records(p, limits[p], args.backfill_duration) for p in (QB, XERO)},
        args.interval,
        args.backfill_rate,
        args.backfill_days,
    )
    print(
        f"backfill share: {len(result.of(QB))} QuickBooks realms at {limits[QB]}/min and "
        f"{len(result.of(XERO))} Xero organisations at {limits[XERO]}/min; filling their books ..."
    )
    started = time.monotonic()
    # The emulator's limits: the documented ones (the cost phase lifted them), but the per-minute.
    documented = {p: default_limits(p) for p in (QB, XERO)}
    stack.tell_emulator(
        {
            "limits": {
                p.value: {
                    "per_minute": limits[p],
                    "concurrent": documented[p].concurrent,
                    "per_day": documented[p].per_day,
                    "app_per_minute": documented[p].app_per_minute,
                }
                for p in (QB, XERO)
            }
        }
    )
    span = HISTORY_SPAN.total_seconds()
    gate = asyncio.Semaphore(2)

    async def fill(account: Account) -> None:
        async with gate:
            await add_history(http, stack.emulator_url, account, result.records[account.provider], span)

    await asyncio.gather(*(fill(a) for a in accounts))
    limit_env = {
        "LEDGERHOOK_QUICKBOOKS_REQUESTS_PER_MINUTE": str(limits[QB]),
        "LEDGERHOOK_XERO_REQUESTS_PER_MINUTE": str(limits[XERO]),
    }
    log = EventLog()
    ready, stop_reading, stop_changing = asyncio.Event(), asyncio.Event(), asyncio.Event()
    reader = asyncio.create_task(read_changes(stack.settings, log, ready, stop_reading, READER_FETCH_WAIT_MS))
    making: asyncio.Task[None] | None = None
    gateway: Child | None = None
    worker: Child | None = None
    try:
        gateway, base = await start_gateway(stack, http, limit_env)
        others = [a for a in stack.accounts if a.connection_id not in chosen]
        await polling_off(http, base, others)
        since = (datetime.now(UTC) - timedelta(days=args.backfill_days)).isoformat()
        for account in accounts:
            path = f"/connections/{account.connection_id}/backfill"
            status, body = await admin_call(http, base, "POST", path, {"since": since})
            if status != 202:
                raise RuntimeError(f"POST {path} answered {status}: {body}")
        result.setup_seconds = time.monotonic() - started
        print(
            f"  {sum(result.records[a.provider] for a in accounts):,} records over {HISTORY_SPAN.days} days "
            f"in {len(accounts)} books, other accounts' polling off, {len(accounts)} backfills queued "
            f"({result.setup_seconds:.0f}s)"
        )
        await ready.wait()
        if "cost" in args.phases:
            print("  a minute for the bare loop's requests to leave the emulator's windows ...")
            await asyncio.sleep(max(0.0, started + UNBUDGETED_SECONDS - time.monotonic()))
        await asyncio.to_thread(wait_for_quiet, args.wait_quiet)
        phase_before = await emulator_requests(http, stack.emulator_url)
        port = free_port()
        worker = stack.start(
            "backfill worker",
            ["-m", "gateway.cli", "worker"],
            worker_env(port, args.interval, args.concurrency) | limit_env,
        )
        started = time.monotonic()
        maker = ChangeMaker(
            http,
            stack.emulator_url,
            accounts,
            args.backfill_rate,
            2.0 * args.interval,
            random.Random(args.seed),
        )
        making = asyncio.create_task(maker.run(stop_changing))
        print("  the worker started; waiting for every job's first page ...")
        deadline = started + BACKFILL_WARMUP
        while True:
            worker.check()
            statuses = await sync_statuses(http, base, accounts)
            if all(job_progress(s).get("pages_done", 0) > 0 for s in statuses.values()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every backfill read a page within {BACKFILL_WARMUP:.0f}s")
            await asyncio.sleep(1.0)
        result.warmup_seconds = time.monotonic() - started
        print(
            f"  every job reading ({result.warmup_seconds:.1f}s); a minute to settle, then measuring "
            f"{args.backfill_duration:.0f}s ..."
        )
        settled = time.monotonic() + BACKFILL_SETTLE
        while time.monotonic() < settled:
            worker.check()
            await asyncio.sleep(min(1.0, max(0.0, settled - time.monotonic())))

        cpu = CpuWatch(stack.roles | {"worker": only(worker.pid), "gateway": only(gateway.pid)})
        before_requests = await emulator_requests(http, stack.emulator_url)
        before_metrics = await asyncio.to_thread(scrape, port)
        before_cpu = cpu.snapshot()
        first = await sync_statuses(http, base, accounts)
        t0 = time.time()
        end = time.monotonic() + args.backfill_duration
        while time.monotonic() < end:
            worker.check()
            await asyncio.sleep(min(SYNC_EVERY, max(0.0, end - time.monotonic())))
            for connection, status in (await sync_statuses(http, base, accounts)).items():
                result.use.setdefault(connection, []).append(minute_share(status))
        t1 = time.time()
        result.cpu = CpuWatch.cores(before_cpu, cpu.snapshot())
        result.metrics = (before_metrics, await asyncio.to_thread(scrape, port))
        result.requests = (await emulator_requests(http, stack.emulator_url)).since(before_requests)
        result.window = (t0, t1)
        last = await sync_statuses(http, base, accounts)
        result.progress = {c: (job_progress(first[c]), job_progress(last[c])) for c in last}
        result.jobs = {c: s.get("backfill") or {} for c, s in last.items()}
        stop_changing.set()
        await making

        # Changes made inside the window until their event is read: a sweep is due an interval after
        # the last, and may wait for the budget a backfill holds.
        inside = [c for c in maker.changes if t0 <= c.asked_at < t1]
        deadline = time.monotonic() + 2 * args.interval + BUDGET_WAIT + STRAGGLER_SECONDS
        while time.monotonic() < deadline and any(log.seen_at(c) is None for c in inside):
            await asyncio.sleep(0.5)
        for change in inside:
            seen = log.first_seen(change)
            if seen is None:
                result.missing += 1
                continue
            result.freshness[change.provider].append(seen[0] - change.asked_at)
            result.first_by[seen[1]] = result.first_by.get(seen[1], 0) + 1
        result.changes = len(inside)
        result.change_failures = maker.failures
        result.phase_requests = (await emulator_requests(http, stack.emulator_url)).since(phase_before)
        result.gaps = await history_gaps(stack.settings, chosen, "backfill")
    finally:
        stop_changing.set()
        stop_reading.set()
        await asyncio.gather(*(t for t in (making, reader) if t is not None), return_exceptions=True)
        for child in (worker, gateway):
            if child is not None:
                child.stop()
    return result


# ---------------------------------------------------------------------------------------------
# Report


def seconds_text(values: list[float], q: float) -> str:
    """A percentile in seconds, or '-' without values."""
    return f"{percentile(values, q):.1f}" if values else "-"


def cpu_text(cpu: dict[str, float], roles: Sequence[str]) -> str:
    """CPU shares of one core, role by role."""
    return ", ".join(f"{role} {cpu.get(role, 0.0):.0%}" for role in roles)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    title = line(header)
    return "\n".join([title, "-" * len(title), *(line(row) for row in rows)])


def notes(*paragraphs: str) -> str:
    """Paragraphs of notes under a table, wrapped and indented."""
    return "\n".join(
        textwrap.fill(text, width=106, initial_indent="  ", subsequent_indent="  ") for text in paragraphs
    )


def ratio_text(made: float, needed: float) -> str:
    """made / needed to three places, '-' when nothing was needed."""
    return f"{made / needed:.3f}" if needed else "-"


def steady_report(stack: Stack, steady: Steady) -> tuple[float, int, float]:
    """Print the steady-state table and its notes; returns (made/needed, 429s, polls ok/due)."""
    args = stack.args
    interval = args.interval
    count = {QB: stack.count(QB), XERO: stack.count(XERO)}
    made = steady.requests.made
    needed = {p: steady.needed(p, count[p]) for p in (QB, XERO)}
    due = {p: count[p] * steady.seconds / interval for p in (QB, XERO)}
    polls_ok = {p: steady.polls(p, "ok") for p in (QB, XERO)}
    polls_all = {p: steady.polls(p) for p in (QB, XERO)}
    least = {p: polls_all[p] * CALLS_PER_POLL[p] for p in (QB, XERO)}
    throttled = sum(steady.requests.throttled.values())
    worker_throttled = steady.worker("ledgerhook_poll_requests_total", outcome="throttled")

    def per(name: str) -> dict[Provider, float]:
        return {p: steady.worker(name, provider=p.value) for p in (QB, XERO)}

    records = per("ledgerhook_poll_records_read_total")
    published = per("ledgerhook_poll_events_published_total")
    superseded = per("ledgerhook_poll_events_superseded_total")
    failed = {p: steady.polls(p) - polls_ok[p] for p in (QB, XERO)}
    fresh = steady.freshness

    def both(values: dict[Provider, float], fmt: str = ",.0f") -> list[str]:
        return [format(values[QB], fmt), format(values[XERO], fmt), format(sum(values.values()), fmt)]

    rows = [
        ["accounts", f"{count[QB]:,}", f"{count[XERO]:,}", f"{sum(count.values()):,}", ""],
        ["polls due in the window", *both(due)],
        ["polls finished ok", *both(polls_ok)],
        ["polls failed", *both(failed)],
        ["requests made (emulator)", *both({p: float(made.get(p, 0)) for p in (QB, XERO)})],
        ["requests needed", *both(needed)],
        [
            "made / needed",
            ratio_text(made.get(QB, 0), needed[QB]),
            ratio_text(made.get(XERO, 0), needed[XERO]),
            ratio_text(sum(made.values()), sum(needed.values())),
            f"<= {RATIO_TARGET}",
        ],
        [
            "requests per poll / least",
            ratio_text(made.get(QB, 0), least[QB]),
            ratio_text(made.get(XERO, 0), least[XERO]),
            ratio_text(sum(made.values()), sum(least.values())),
            "",
        ],
        [
            "429s (emulator)",
            *both({p: float(steady.requests.throttled.get(p, 0)) for p in (QB, XERO)}),
            "0",
        ],
        ["records read", *both(records)],
        ["events published", *both(published)],
        ["dropped by reconciliation", *both(superseded)],
        ["dropped as repeats", *both({p: records[p] - published[p] - superseded[p] for p in (QB, XERO)})],
        [
            "freshness p50/p90/p99/max s",
            "",
            "",
            "/".join(seconds_text(fresh, q) for q in (0.5, 0.9, 0.99, 1.0)),
            f"p99 <= {interval + FRESHNESS_SLACK:g}",
        ],
        [
            "changes made/seen/not seen",
            "",
            "",
            f"{steady.changes:,}/{len(fresh):,}/{steady.missing}",
            "0 not seen",
        ],
    ]
    for row in rows:
        row.extend([""] * (5 - len(row)))
    print()
    print(
        f"steady state: {sum(count.values()):,} accounts swept every {interval}s by one worker, "
        f"{steady.seconds:.0f}s measured after the first pass"
    )
    print(text_table(["", "QuickBooks", "Xero", "all", "target"], rows))
    most_overdue = max((b.overdue for b in steady.backlogs), default=0)
    most_late = max((b.most_late for b in steady.backlogs), default=0.0)
    most_polling = max((b.polling for b in steady.backlogs), default=0)
    print(
        f"  First pass over every account (all due at once): {steady.initial_pass:.1f}s"
        + ("" if steady.initial_done else " (not finished: the window began anyway)")
        + "; then due times spread over an\n"
        f"  interval. Polls in flight: up to {most_polling} of {args.concurrency}. Accounts overdue by more "
        f"than {OVERDUE_SECONDS:g}s: at most {most_overdue},\n"
        f"  the latest {most_late:.1f}s past due (sampled every 2s). Worker 429s: {worker_throttled:.0f}.\n"
        f"  Needed: one CDC call per realm and {CALLS_PER_POLL[XERO]} list calls per Xero organisation per "
        f"{interval}s (a sweep is due an\n"
        "  interval after the previous one ended, so a little fewer polls are made than are due); per poll\n"
        "  the least is one call per realm, one per Xero endpoint; no page beyond the\n"
        f"  first was needed: the most records one poll could find were {steady.most_per_entity} for one "
        f"Xero endpoint (page size {xero.PAGE_SIZE}),\n"
        f"  {steady.most_per_realm} for one realm's CDC call (limit {quickbooks.PAGE_SIZE}), overlaps "
        "included. Repeats: records read again\n"
        "  within the overlap, same version, same event id (deduplicated).\n"
        f"  Changes: {args.rate:g}/s, half creations, half updates of records made two intervals before or "
        f"more; freshness\n"
        f"  from the change asked of the emulator to its event read on {stack.settings.topic_changes} "
        f"(reader fetch wait {READER_FETCH_WAIT_MS} ms;\n"
        f"  change send lag p99 {steady.send_lag_p99 * 1000:.0f} ms; {steady.change_failures} changes "
        f"failed). Emulator latency {args.latency[0] * 1000:.0f}-{args.latency[1] * 1000:.0f} ms a "
        "request.\n"
        f"  Xero app budget at the window's end: {steady.app_scope[0]:,} live entries, counted in "
        f"{steady.app_scope[1]:.1f} ms (a take recounts them once a window, migration 0008).\n"
        f"  PostgreSQL sessions of the worker, sampled every 0.2 s:\n{steady.sessions.text()}.\n"
        f"  CPU over the window (share of one core): "
        f"{cpu_text(steady.cpu, ('worker', 'emulator', 'postgres', 'broker', 'bench', 'other'))}"
    )
    if steady.most_per_entity >= xero.PAGE_SIZE or steady.most_per_realm >= quickbooks.PAGE_SIZE:
        print("  note: a poll could need more than one page; the needed count leaves them out")
    total_needed = sum(needed.values())
    ratio = sum(made.values()) / total_needed if total_needed else math.nan
    kept_up = sum(polls_ok.values()) / sum(due.values()) if sum(due.values()) else math.nan
    return ratio, throttled, kept_up


def cost_report(args: argparse.Namespace, bare: Pass, worker: Pass) -> float:
    """Print the cost table and its notes; returns the pages/s ratio."""
    rows = []
    for one in (bare, worker):
        c = one.cpu
        rows.append(
            [
                one.name,
                f"{one.pages:,}",
                f"{one.events:,}" if one is worker else "-",
                f"{one.seconds:.2f}",
                f"{one.pages_per_second:,.0f}",
                f"{one.events_per_second:,.0f}" if one is worker else "-",
                *(
                    f"{c.get(role, 0.0):.0%}"
                    for role in ("process", "emulator", "postgres", "broker", "other")
                ),
            ]
        )
    header = ["cost", "pages", "events", "seconds", "pages/s", "events/s", "process", "emulator"]
    print()
    print(
        f"cost: one poll of every account, {args.cost_records} new records in each, "
        f"{args.concurrency} accounts at a time"
    )
    print(text_table([*header, "postgres", "broker", "other"], rows))
    print(
        "  Both send the same requests (the polling modules' first requests from the same watermarks, then\n"
        "  Xero's next pages while its pagination says so), one at a time per account; each is timed from\n"
        "  its first page received to its last page done (the worker's: events acknowledged, watermarks\n"
        "  moved). Rate limits lifted at the emulator and in the worker for this phase (concurrency kept).\n"
        f"  Bare statuses {bare.statuses}; worker requests by outcome {worker.statuses}; worker records\n"
        f"  read {worker.records:,}, dropped by reconciliation {worker.superseded:,}. CPU: share of one core."
    )
    if worker.sessions is not None:
        print(
            "  The worker's PostgreSQL sessions during its pass, sampled every 0.2 s:\n"
            f"{worker.sessions.text()}."
        )
    if bare.pages != worker.pages:
        print(f"  note: the two passes fetched different page counts ({bare.pages} vs {worker.pages})")
    return worker.pages_per_second / bare.pages_per_second if bare.pages_per_second else 0.0


def backfill_report(backfill: Backfill) -> tuple[bool, str]:
    """Print the backfill table and its notes; returns whether its targets were met and its part of
    the summary line."""
    interval, limits = backfill.interval, backfill.limits
    count = {p: float(len(backfill.of(p))) for p in (QB, XERO)}
    granted = {p: float(backfill.granted(p)) for p in (QB, XERO)}
    budget = {p: backfill.budget(p) for p in (QB, XERO)}
    least = {
        p: min((backfill.account_share(a) for a in backfill.of(p)), default=math.nan) for p in (QB, XERO)
    }
    throttled = {p: float(backfill.phase_requests.throttled.get(p, 0)) for p in (QB, XERO)}
    before, after = backfill.metrics
    worker_throttled = delta(after, before, "ledgerhook_poll_requests_total", outcome="throttled")
    share = sum(granted.values()) / sum(budget.values()) if sum(budget.values()) else math.nan
    fresh = {QB: backfill.freshness[QB], XERO: backfill.freshness[XERO]}
    every = fresh[QB] + fresh[XERO]

    def both(values: dict[Provider, float]) -> list[str]:
        return [f"{values[QB]:,.0f}", f"{values[XERO]:,.0f}", f"{sum(values.values()):,.0f}"]

    def job(key: str) -> list[str]:
        return both({p: float(backfill.job_delta(p, key)) for p in (QB, XERO)})

    def fraction(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.3f}"

    def seconds(values: list[float]) -> str:
        return "/".join(seconds_text(values, q) for q in (0.5, 0.99, 1.0))

    rows = [
        ["accounts", *both(count), ""],
        ["limit per account a minute", f"{limits[QB]}", f"{limits[XERO]}", "", ""],
        ["budget in the window", *both(budget), ""],
        ["requests granted (emulator)", *both(granted), ""],
        ["  backfill pages among them", *job("pages_done"), ""],
        [
            "share of the budget used",
            fraction(granted[QB] / budget[QB] if budget[QB] else math.nan),
            fraction(granted[XERO] / budget[XERO] if budget[XERO] else math.nan),
            fraction(share),
            f">= {BACKFILL_SHARE_TARGET}",
        ],
        [
            "least account's minute in use",
            fraction(least[QB]),
            fraction(least[XERO]),
            fraction(min(least.values())),
            "",
        ],
        ["429s (emulator, whole phase)", *both(throttled), "0"],
        ["backfill records read", *job("records_read"), ""],
        ["backfill events published", *job("events_published"), ""],
        [
            "backfills failed",
            *both(
                {
                    p: float(sum(a.connection_id in backfill.failed for a in backfill.of(p)))
                    for p in (QB, XERO)
                }
            ),
            "0",
        ],
        [
            "sweep freshness p50/p99/max s",
            seconds(fresh[QB]),
            seconds(fresh[XERO]),
            seconds(every),
            f"p99 <= {interval + FRESHNESS_SLACK:g}",
        ],
        [
            "changes made/seen/not seen",
            "",
            "",
            f"{backfill.changes:,}/{len(every):,}/{backfill.missing}",
            "0 not seen",
        ],
    ]
    states: dict[str, int] = {}
    for view in backfill.jobs.values():
        states[str(view.get("state"))] = states.get(str(view.get("state")), 0) + 1
    first_by = ", ".join(f"{origin or '?'} {n:,}" for origin, n in sorted(backfill.first_by.items()))
    roles = ("worker", "gateway", "emulator", "postgres", "broker", "bench", "other")
    print()
    print(
        f"backfill share: a {backfill.days}-day backfill of each of {len(backfill.accounts)} accounts, "
        f"swept every {interval}s meanwhile by one worker, {backfill.seconds:.0f}s measured"
    )
    print(text_table(["", "QuickBooks", "Xero", "all", "target"], rows))
    print(
        notes(
            f"Per-minute limits at the emulator and in the worker alike: Xero {limits[XERO]} (documented "
            f"60), QuickBooks {limits[QB]} (documented 500): a CDC answer carries up to 1,000 changes and a "
            "Xero page 100, so at 500 a minute one realm's backfill would be 500,000 events a minute and the "
            "worker, not the budget, would bind. Every other account's polling is off for the phase.",
            f"Books: {backfill.records[QB]:,} records a realm, {backfill.records[XERO]:,} an "
            f"organisation, over four entities, spread over the last {HISTORY_SPAN.days} days: full "
            f"answers for the window and {HISTORY_MARGIN_MINUTES:g} minutes more. Each job asks for "
            f"{backfill.days} days (POST .../backfill); QuickBooks CDC serves 30 days back: "
            f"{backfill.gaps} history_gap events of origin backfill. Set up in "
            f"{backfill.setup_seconds:.0f}s; every job had read a page {backfill.warmup_seconds:.1f}s "
            f"after the worker started; the window began {BACKFILL_SETTLE:g}s later (a job's first minute "
            "is a burst on an empty budget). Jobs at its end: "
            + ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
            + ".",
            "Granted: the emulator's data-API requests less its 429s; budget: accounts x limit x window / "
            "60 s; backfill pages: the jobs' progress (GET .../sync), the rest are sweeps; least account's "
            "minute in use: the budget's own count, requests.minute.used / limit (GET .../sync every "
            f"{SYNC_EVERY:g}s), averaged over the window. Worker 429s: {worker_throttled:.0f}.",
            f"Sweeps: changes at {backfill.rate:g}/s in the backfilled books, half creations, half updates; "
            "freshness from the change asked of the emulator to its first event read, which came from "
            f"{first_by or 'nothing'} ({backfill.change_failures} changes failed).",
            f"CPU over the window (share of one core): {cpu_text(backfill.cpu, roles)}",
        )
    )
    for connection, reason in sorted(backfill.failed.items()):
        print(notes(f"failed: the backfill of connection {connection}: {reason}"))
    running = sum(job.get("state") == "running" for job in backfill.jobs.values())
    if running < len(backfill.jobs) and not backfill.failed:
        print(
            notes(
                f"note: {len(backfill.jobs) - running} jobs were not running at the window's end, so the "
                "share understates the budget's use: give the books more history (HISTORY_MARGIN_MINUTES)"
            )
        )
    p99 = percentile(every, 0.99)
    total_throttled = sum(throttled.values())
    ok = (
        share >= BACKFILL_SHARE_TARGET
        and total_throttled == 0
        and not backfill.failed
        and backfill.missing == 0
        and bool(every)
        and p99 <= interval + FRESHNESS_SLACK
    )
    summary = (
        f"backfill share {share:.3f} of {len(backfill.accounts)} accounts' budgets (target >= "
        f"{BACKFILL_SHARE_TARGET}), 429s {total_throttled:.0f} (target 0), backfills failed "
        f"{len(backfill.failed)} (target 0), sweep freshness meanwhile p99 {p99:.1f} s (target <= "
        f"{interval + FRESHNESS_SLACK:g} s)"
    )
    return ok, summary


def report(
    stack: Stack, steady: Steady | None, bare: Pass | None, worker: Pass | None, backfill: Backfill | None
) -> bool:
    """Print the tables of the phases run, their notes and the summary line; False when a target
    was missed."""
    args = stack.args
    print()
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PostgreSQL (embedded), Tansu (embedded); load average {os.getloadavg()[0]:.2f}"
    )
    ok = True
    parts: list[str] = []
    others: list[float] = []
    if steady is not None:
        ratio, throttled, kept_up = steady_report(stack, steady)
        p50, p99 = percentile(steady.freshness, 0.5), percentile(steady.freshness, 0.99)
        ok = (
            steady.missing == 0
            and bool(steady.freshness)
            and p99 <= args.interval + FRESHNESS_SLACK
            and ratio <= RATIO_TARGET
            and throttled == 0
        )
        parts.append(
            f"freshness p50 {p50:.1f} s, p99 {p99:.1f} s (target <= {args.interval + FRESHNESS_SLACK:g} s); "
            f"requests made/needed {ratio:.3f} (target <= {RATIO_TARGET}), 429s {throttled} (target 0), "
            f"polls ok/due {kept_up:.2f}"
        )
        others.append(steady.cpu.get("other", 0.0))
    if bare is not None and worker is not None:
        cost_ratio = cost_report(args, bare, worker)
        ok = ok and cost_ratio >= COST_TARGET
        parts.append(
            f"worker {worker.pages_per_second:,.0f} pages/s vs bare loop "
            f"{bare.pages_per_second:,.0f} pages/s (ratio {cost_ratio:.2f}, target >= {COST_TARGET})"
        )
        others += [bare.cpu.get("other", 0.0), worker.cpu.get("other", 0.0)]
    if backfill is not None:
        backfill_ok, backfill_part = backfill_report(backfill)
        ok = ok and backfill_ok
        parts.append(backfill_part)
        others.append(backfill.cpu.get("other", 0.0))
    else:
        parts.append("backfill share skipped")
    busiest = max(others, default=0.0)
    if busiest > 0.25:
        print(
            f"  warning: other processes used up to {busiest:.0%} of a core during a window; "
            "the figures are disturbed, rerun on a quiet machine"
        )
    print(
        f"poll: {len(stack.accounts):,} accounts every {args.interval} s, "
        + "; ".join(parts)
        + ("" if ok else "; TARGET MISSED")
    )
    return ok


# ---------------------------------------------------------------------------------------------
# Main


async def run(args: argparse.Namespace, tmp: Path) -> bool:
    """The whole benchmark; prints as it goes and returns False when a target was missed."""
    print(
        f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, "
        f"load average before the run {os.getloadavg()[0]:.2f}"
    )
    data_dir = tmp / "postgres" / "data"
    postgres = EmbeddedPostgres(data_dir, cleanup="delete")
    broker = EmbeddedBroker(free_port(), log_path=tmp / "broker.log")
    emulator: subprocess.Popen[bytes] | None = None
    stack: Stack | None = None
    try:
        database_url = postgres.start()
        broker.start()
        emulator, emulator_url = start_emulator(tmp, args.latency)
        settings = load_settings(
            database_url=database_url,
            kafka_bootstrap_servers=broker.bootstrap,
            kafka_idempotent_producer=False,
            encryption_keys=f"bench:{KeyRing.generate_key()}",
            topic_partitions=PARTITIONS,
        )
        env = bench_env(settings, emulator_url)
        run_migrate(env)
        broker_pid = child_named("tansu")
        roles: dict[str, Pids] = {
            "emulator": only(emulator.pid),
            "broker": only(broker_pid) if broker_pid else set,
            "postgres": lambda: tree(postmaster_pid(data_dir)),
            "bench": only(os.getpid()),
        }
        stack = Stack(args, tmp, settings, env, emulator_url, emulator, roles)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            started = time.monotonic()
            producer = make_producer(settings)
            await producer.start()
            try:
                ids = account_ids(
                    random.Random(args.seed), args.accounts - args.accounts // 2, args.accounts // 2
                )
                stack.accounts = await register(
                    settings, producer, http, emulator_url, CLIENT, ids, TOKEN_LIFETIME
                )
            finally:
                await producer.stop()
            print(
                f"accounts: {stack.count(QB):,} QuickBooks realms and {stack.count(XERO):,} Xero "
                f"organisations, one connection each, tokens handed over; set up in "
                f"{time.monotonic() - started:.0f}s"
            )
            pool = await asyncpg.create_pool(
                database_url, min_size=1, max_size=4, server_settings={"application_name": BENCH_APPLICATION}
            )
            try:
                steady = await steady_phase(stack, http, pool) if "steady" in args.phases else None
                bare: Pass | None = None
                worker: Pass | None = None
                if "cost" in args.phases:
                    bare, worker = await cost_phase(stack, http, pool)
                backfill = await backfill_phase(stack, http) if "backfill" in args.phases else None
            finally:
                await pool.close()
        return report(stack, steady, bare, worker, backfill)
    finally:
        for child in reversed(stack.children if stack else []):
            child.stop()
        if emulator is not None:
            stop_emulator(emulator)
        broker.stop()
        postgres.stop()


def parse_args() -> argparse.Namespace:
    """Command-line options (`--quick` changes the defaults of the others)."""
    parser = argparse.ArgumentParser(description="Change poller benchmark: freshness, efficiency and cost.")
    parser.add_argument("--quick", action="store_true", help="100 accounts, a 20 s interval: about 2 minutes")
    parser.add_argument(
        "--accounts", type=int, default=None, help="accounts, half QuickBooks, half Xero (2,000)"
    )
    parser.add_argument("--interval", type=int, default=None, help="poll and sweep interval in seconds (60)")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds (three intervals)")
    parser.add_argument(
        "--rate", type=float, default=None, help="changes per second (accounts / 200, 2 at least)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="LEDGERHOOK_POLL_CONCURRENCY of the worker"
    )
    parser.add_argument(
        "--latency",
        type=float,
        nargs=2,
        default=(0.05, 0.2),
        metavar=("LOW", "HIGH"),
        help="emulator latency (s)",
    )
    parser.add_argument("--cost-records", type=int, default=30, help="cost phase: new records per account")
    parser.add_argument(
        "--warmup-timeout", type=float, default=None, help="longest wait for the first pass (s)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before the worker starts and before each cost pass, wait up to SECONDS for a quiet machine",
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="the phases to run, comma-separated: steady, cost, backfill (all three, in that order)",
    )
    parser.add_argument(
        "--backfill-accounts",
        type=int,
        default=None,
        help="backfill phase: accounts backfilled, half QuickBooks, half Xero (4; 2 with --quick)",
    )
    parser.add_argument(
        "--backfill-duration",
        type=float,
        default=None,
        help="backfill phase: measured seconds, whole minutes (180; 60 with --quick)",
    )
    parser.add_argument(
        "--backfill-quickbooks-limit",
        type=int,
        default=6,
        help="backfill phase: QuickBooks requests a minute per realm at the emulator and in the worker "
        "(6; documented: 500)",
    )
    parser.add_argument(
        "--backfill-xero-limit",
        type=int,
        default=60,
        help="backfill phase: Xero requests a minute per organisation, emulator and worker (60, documented)",
    )
    parser.add_argument(
        "--backfill-rate",
        type=float,
        default=1.0,
        help="backfill phase: changes per second in the backfilled books (1)",
    )
    parser.add_argument(
        "--backfill-days",
        type=int,
        default=30,
        help="backfill phase: how many days back each backfill reads (30)",
    )
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    args.phases = [phase.strip() for phase in args.phases.split(",") if phase.strip()]
    if not args.phases or any(phase not in PHASES for phase in args.phases):
        parser.error(f"--phases takes a comma-separated list of {', '.join(PHASES)}")
    if args.backfill_accounts is None:
        args.backfill_accounts = 2 if args.quick else 4
    if args.backfill_duration is None:
        args.backfill_duration = 60.0 if args.quick else 180.0
    if args.accounts is None:
        # The backfill phase alone registers only the accounts it backfills.
        measured = {"steady", "cost"} & set(args.phases)
        args.accounts = (100 if args.quick else 2000) if measured else args.backfill_accounts
    if args.interval is None:
        args.interval = 20 if args.quick else 60
    if args.duration is None:
        args.duration = 3.0 * args.interval
    if args.rate is None:
        args.rate = max(2.0, args.accounts / 200)
    if args.warmup_timeout is None:
        args.warmup_timeout = max(120.0, 3.0 * args.interval)
    if args.accounts < 2 or args.interval < 1 or args.rate <= 0:
        parser.error("--accounts must be 2 or more, --interval 1 or more, --rate positive")
    # One CDC answer holds at most 1,000 objects; the plan of the bare loop follows no truncation.
    if not 0 <= args.cost_records <= 600:
        parser.error("--cost-records must be between 0 and 600")
    # The share compares whole minutes of a per-minute limit.
    if args.backfill_duration < 60 or args.backfill_duration % 60:
        parser.error("--backfill-duration must be whole minutes, in seconds (60, 120, ...)")
    if not 2 <= args.backfill_accounts <= args.accounts:
        parser.error("--backfill-accounts must be 2 or more, and no more than --accounts")
    if not 1 <= args.backfill_days <= 30:
        parser.error("--backfill-days must be between 1 and 30")
    if args.backfill_quickbooks_limit < 1 or args.backfill_xero_limit < 1 or args.backfill_rate <= 0:
        parser.error(
            "--backfill-quickbooks-limit and --backfill-xero-limit must be 1 or more, "
            "--backfill-rate positive"
        )
    return args


def main() -> int:
    """Run the benchmark; exit 1 when a target was missed."""
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="ledgerhook-bench-poll-") as tmp_name:
        try:
            ok = asyncio.run(run(args, Path(tmp_name)))
        except KeyboardInterrupt:
            return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
