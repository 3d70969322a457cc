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
3. **backfill share**: a 30-day backfill queued for every account; a placeholder that is skipped
   with a note (`backfill_phase`).

Prints the tables and one summary line. Run: `python bench/poll.py` (full size, about 10 minutes),
`python bench/poll.py --quick` (100 accounts, 20 s interval, about 2 minutes); bench/README.md.
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
from bench.ingest import cpu_model, percentile, wait_for_quiet  # noqa: E402
from bench.poll_workload import (  # noqa: E402
    QB,
    XERO,
    Account,
    ChangeMaker,
    EventLog,
    account_ids,
    control,
    most_in_window,
    read_changes,
    register,
)
from fanout.polling import quickbooks, xero  # noqa: E402
from fanout.polling.adapters import ADAPTERS, MAX_LOOKBACK  # noqa: E402
from fanout.polling.pages import PageRequest, PollTarget  # noqa: E402
from gateway.dev.embedded import EmbeddedBroker, EmbeddedPostgres, free_port  # noqa: E402
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
# Phase 3: the backfill share (to be written once backfills exist)


async def backfill_phase(stack: Stack, http: aiohttp.ClientSession) -> str:
    """TO FILL IN: the share of the rate budget a 30-day backfill of every account uses (target
    >= 0.9), once backfills are in (issue 9, requirement 7).

    The plan: 30 days of records in each book (`create_many(..., spacing=...)`), then
    `POST /admin/v1/connections/{id}/backfill {"since": <30 days ago>}` for every connection and one
    worker at the documented limits; over a few minutes, the requests the emulator served per
    account against what its budgets allow in that time (QuickBooks 500/min per realm, Xero
    60/min per organisation and 10,000/min per app), the regular polls' requests counted apart.
    Mind the scale: 1,000 realms allow 500,000 requests a minute, far more than one worker sends
    (about 10,000 a minute here), so at full size the figure would measure the worker, not the
    budgets; the share is only telling on accounts the worker can saturate (a few realms, or the
    Xero app limit).

    Until then this probes the endpoint on one connection (with an empty body, so nothing is
    queued) and returns why the phase was skipped.
    """
    port = free_port()
    gateway = stack.start("gateway", ["-m", "gateway.cli", "serve"], {"LEDGERHOOK_PORT": str(port)})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            gateway.check()
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        break
            await asyncio.sleep(0.2)
        # No `since`: an API that has backfills refuses the body (422) without queueing anything.
        connection = stack.accounts[0].connection_id
        async with http.post(
            f"{url}/admin/v1/connections/{connection}/backfill",
            json={},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response:
            status = response.status
    finally:
        gateway.stop()
    if status == 404:
        return (
            f"skipped: POST /admin/v1/connections/{{id}}/backfill answered 404 (no backfill yet); "
            f"target share >= {BACKFILL_SHARE_TARGET}"
        )
    return (
        f"skipped: POST /admin/v1/connections/{{id}}/backfill exists (an empty body answered {status}), "
        "but this phase is not written yet (bench/poll.py, backfill_phase)"
    )


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
        f"{steady.app_scope[1]:.1f} ms (each Xero permit counts them).\n"
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


def report(stack: Stack, steady: Steady, bare: Pass, worker: Pass, backfill: str) -> bool:
    """Print the tables, the notes and the summary line; False when a target was missed."""
    args = stack.args
    print()
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PostgreSQL (embedded), Tansu (embedded); load average {os.getloadavg()[0]:.2f}"
    )
    ratio, throttled, kept_up = steady_report(stack, steady)
    cost_ratio = cost_report(args, bare, worker)
    print()
    print(f"backfill share: {backfill}")
    busiest = max(steady.cpu.get("other", 0.0), bare.cpu.get("other", 0.0), worker.cpu.get("other", 0.0))
    if busiest > 0.25:
        print(
            f"  warning: other processes used up to {busiest:.0%} of a core during a window; "
            "the figures are disturbed, rerun on a quiet machine"
        )
    p50, p99 = percentile(steady.freshness, 0.5), percentile(steady.freshness, 0.99)
    ok = (
        steady.missing == 0
        and bool(steady.freshness)
        and p99 <= args.interval + FRESHNESS_SLACK
        and ratio <= RATIO_TARGET
        and throttled == 0
        and cost_ratio >= COST_TARGET
    )
    print(
        f"poll: {len(stack.accounts):,} accounts every {args.interval} s, freshness p50 {p50:.1f} s, p99 "
        f"{p99:.1f} s (target <= {args.interval + FRESHNESS_SLACK:g} s); requests made/needed {ratio:.3f} "
        f"(target <= {RATIO_TARGET}), 429s {throttled} (target 0), polls ok/due {kept_up:.2f}; worker "
        f"{worker.pages_per_second:,.0f} pages/s vs bare loop {bare.pages_per_second:,.0f} pages/s "
        f"(ratio {cost_ratio:.2f}, target >= {COST_TARGET}); backfill share skipped"
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
        # `migrate` also creates the topics with their partitions (the dev broker would pick its own).
        subprocess.run(
            [sys.executable, "-m", "gateway.cli", "migrate"],
            env=env,
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
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
                steady = await steady_phase(stack, http, pool)
                bare, worker = await cost_phase(stack, http, pool)
                backfill = await backfill_phase(stack, http)
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
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    if args.accounts is None:
        args.accounts = 100 if args.quick else 2000
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
