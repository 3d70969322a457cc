"""Token benchmark: 10,000 connections with staggered expiries, several refresher processes.

Starts an embedded PostgreSQL, an embedded broker and the provider emulator (`python -m
gateway.dev.emulator`, its own process, with a token endpoint latency like a real provider's), hands over
credentials for N Xero connections whose access tokens expire one after the other over `--span`
seconds, then runs `--refreshers` refresher processes (`provider_auth.tokens.refresher.Refresher`, as in
`ledgerhook worker`) until every one of them has been renewed. Each needs exactly one refresh
(the new tokens outlive the run), so the emulator's count of token calls against N is the
refresh ratio: duplicates, retries and lost races all show as a ratio above 1.

Meanwhile the bench process measures `get_access_token` on QuickBooks connections of its own:
fresh tokens (served from the in-process cache; and the first read of a connection, from
PostgreSQL) and tokens that must be refreshed, each against a baseline in the same run: a bare
`SELECT 1` round trip, and a bare token call to the emulator (no lock, no database).

Run: `python bench/tokens.py` (about 2 minutes; `--help` for the knobs).
"""

import argparse
import asyncio
import base64
import contextlib
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/tokens.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import orjson  # noqa: E402

from bench.ingest import cpu_model  # noqa: E402
from fanout.account_events import AccountEventPublisher  # noqa: E402
from gateway.dev.embedded import EmbeddedBroker, EmbeddedPostgres, free_port  # noqa: E402
from gateway.runtime.kafka import ensure_topics, make_producer  # noqa: E402
from gateway.runtime.migrate import migrate  # noqa: E402
from gateway.settings import Settings, load_settings  # noqa: E402
from provider_auth.accounts.status import StatusTransitions  # noqa: E402
from provider_auth.oauth.apps import OAuthApp  # noqa: E402
from provider_auth.oauth.client import TokenClient  # noqa: E402
from provider_auth.providers import Provider  # noqa: E402
from provider_auth.tokens import (  # noqa: E402
    ConnectionRef,
    Credentials,
    CredentialStore,
    TokenManager,
    TokenPolicy,
)
from provider_auth.tokens.refresher import Refresher  # noqa: E402
from provider_auth.vault import KeyRing  # noqa: E402

CLIENT_ID, CLIENT_SECRET = "ledgerhook-bench", "ledgerhook-bench-secret"
RATIO_TARGET = 1.05
FRESH_P99_TARGET_MS = 2.0
# Compressed time: the refresher acts `WINDOW` seconds (plus up to `JITTER`) before expiry.
SKEW, WINDOW, JITTER = 5.0, 20.0, 5.0


# ---------------------------------------------------------------------------------------------
# Pieces shared by the bench and its refresher processes


def apps(emulator: str) -> dict[Provider, OAuthApp]:
    """Ledgerhook's app at the emulated Xero and QuickBooks."""
    return {
        p: OAuthApp(
            provider=p,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            token_url=f"{emulator}/{p.value}/oauth/token",
            api_base_url=f"{emulator}/{p.value}",
            revoke_url=f"{emulator}/{p.value}/oauth/revoke",
        )
        for p in (Provider.XERO, Provider.QUICKBOOKS)
    }


def manager(
    pool: asyncpg.Pool, http: aiohttp.ClientSession, config: dict[str, Any], events: Any
) -> TokenManager:
    """A token manager as a Ledgerhook process builds it."""
    return TokenManager(
        CredentialStore(pool, KeyRing.parse(config["keys"])),
        TokenClient(http, timeout=10.0),
        apps(config["emulator"]),
        events,
        policy=TokenPolicy(skew=SKEW, window=WINDOW, jitter=JITTER, lock_timeout=30.0),
    )


async def refresher_process(config: dict[str, Any]) -> None:
    """`--role refresher`: run a Refresher until a line arrives on stdin, then print its counts."""
    sent = [0]

    def count(record: Any) -> None:
        sent[0] += 1

    async def logged(conn: asyncpg.Connection) -> None:
        # Every statement this process sends (BEGIN, SET, SELECT, UPDATE, INSERT, COMMIT, ...).
        conn.add_query_logger(count)

    pool = await asyncpg.create_pool(
        config["dsn"], min_size=2, max_size=config["concurrency"] + 2, init=logged
    )
    settings = load_settings(**config["settings"])
    producer = make_producer(settings)
    await producer.start()
    http = aiohttp.ClientSession()
    try:
        events = StatusTransitions(AccountEventPublisher(producer, settings.topic_account_events))
        tokens = manager(pool, http, config, events)
        refresher = Refresher(
            tokens,
            interval=config["interval"],
            batch_size=config["batch"],
            concurrency=config["concurrency"],
            status_every=3600,
        )
        stop = asyncio.Event()
        print("ready", flush=True)
        waiter = asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        waiter.add_done_callback(lambda _: stop.set())
        await refresher.run(stop)
        await tokens.close()
        outcomes: dict[str, float] = {}
        for metric in tokens.metrics.refreshes.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    outcome = sample.labels["outcome"]
                    outcomes[outcome] = outcomes.get(outcome, 0) + sample.value
        report = {"queries": sent[0], "store_queries": tokens.store.queries, "outcomes": outcomes}
        print(orjson.dumps(report).decode(), flush=True)
    finally:
        await http.close()
        await producer.stop()
        await pool.close()


# ---------------------------------------------------------------------------------------------
# Measurements


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of `values`, 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@dataclass
class Row:
    """One line of the latency table (milliseconds)."""

    name: str
    samples: list[float]

    def cells(self) -> str:
        s = self.samples
        return (
            f"{self.name:<50} {len(s):>7d} {percentile(s, 0.5):>9.4f} {percentile(s, 0.99):>9.4f} "
            f"{max(s) if s else 0:>9.4f}"
        )


async def timed(call: Any) -> float:
    started = time.perf_counter()
    await call
    return (time.perf_counter() - started) * 1000


async def emulator_call(http: aiohttp.ClientSession, url: str, body: Any = None) -> Any:
    async with http.post(url, data=orjson.dumps(body)) as response:
        text = await response.read()
        assert response.status < 300, (url, response.status, text[:200])
        return orjson.loads(text) if text else None


async def seed(http: aiohttp.ClientSession, emulator: str, provider: str, count: int) -> list[dict[str, Any]]:
    """`count` grants at the emulator, one account each."""
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> dict[str, Any]:
        async with gate:
            grant: dict[str, Any] = await emulator_call(
                http, f"{emulator}/_emulator/grants", {"provider": provider, "accounts": [f"{provider}-{i}"]}
            )
            grant["account"] = f"{provider}-{i}"
            return grant

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def hand_over(
    tokens: TokenManager,
    pool: asyncpg.Pool,
    provider: Provider,
    grants: list[dict[str, Any]],
    expires: list[float],
) -> list[str]:
    """Connections for the grants, and their credentials handed over (as the admin API does)."""
    ids = [str(uuid.uuid4()) for _ in grants]
    await pool.executemany(
        "INSERT INTO connections (id, tenant_id, provider, provider_account_id) VALUES ($1, $2, $3, $4)",
        [
            (c, f"tenant-{i % 500}", provider.value, g["account"])
            for i, (c, g) in enumerate(zip(ids, grants, strict=True))
        ],
    )
    gate = asyncio.Semaphore(16)

    async def one(connection_id: str, grant: dict[str, Any], expires_at: float) -> None:
        async with gate:
            await tokens.put_credentials(
                ConnectionRef(connection_id, provider, grant["account"]),
                Credentials(grant["access_token"], grant["refresh_token"], expires_at=expires_at),
            )

    await asyncio.gather(*(one(c, g, e) for c, g, e in zip(ids, grants, expires, strict=True)))
    return ids


# ---------------------------------------------------------------------------------------------
# The run


def http_ok(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


async def run(args: argparse.Namespace, settings: Settings, emulator: str) -> int:
    dsn = settings.database_url.get_secret_value()
    keys = settings.encryption_keys.get_secret_value()  # type: ignore[union-attr]
    config = {"dsn": dsn, "keys": keys, "emulator": emulator}
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=10)
    producer = make_producer(settings)
    await producer.start()
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        events = StatusTransitions(AccountEventPublisher(producer, settings.topic_account_events))
        tokens = manager(pool, http, config, events)
        await emulator_call(
            http,
            f"{emulator}/_emulator/config",
            {"provider": "xero", "access_ttl": 3600, "latency": args.latency},
        )
        await emulator_call(
            http,
            f"{emulator}/_emulator/config",
            {"provider": "quickbooks", "access_ttl": 3600, "latency": args.latency},
        )

        print(
            f"seeding {args.connections} Xero grants and {2 * args.samples} QuickBooks grants ...", flush=True
        )
        started = time.monotonic()
        xero = await seed(http, emulator, "xero", args.connections)
        qbo = await seed(http, emulator, "quickbooks", 3 * args.samples)
        now = time.time()
        rng = random.Random(7)
        # Staggered: the i-th token expires lead + span * u seconds from now, u uniform in [0, 1).
        xero_expiries = [now + 3600 + args.span * rng.random() for _ in xero]
        xero_ids = await hand_over(tokens, pool, Provider.XERO, xero, xero_expiries)
        stable_ids = await hand_over(
            tokens, pool, Provider.QUICKBOOKS, qbo[: args.samples], [now + 86_400] * args.samples
        )
        expired_ids = await hand_over(
            tokens, pool, Provider.QUICKBOOKS, qbo[args.samples : 2 * args.samples], [now - 1] * args.samples
        )
        bare_grants = qbo[2 * args.samples :]
        # Keep the latency groups out of the refreshers' way; move the staggered expiries so the first
        # comes due a few seconds from now (one shift for all: the stagger and the jitter stay).
        await pool.execute("UPDATE oauth_grants SET refresh_due_at = NULL WHERE provider = 'quickbooks'")
        first_due = await pool.fetchval(
            "SELECT min(refresh_due_at) FROM oauth_grants WHERE provider = 'xero'"
        )
        shift = first_due.timestamp() - (time.time() + 5)
        await pool.execute(
            "UPDATE oauth_grants SET access_expires_at = access_expires_at - make_interval(secs => $1),"
            " refresh_due_at = refresh_due_at - make_interval(secs => $1) WHERE provider = 'xero'",
            shift,
        )
        last_due = (
            await pool.fetchval("SELECT max(refresh_due_at) FROM oauth_grants WHERE provider = 'xero'")
        ).timestamp()
        window = last_due - time.time()
        print(f"  set up in {time.monotonic() - started:.0f}s; refreshes due over the next {window:.0f}s")
        counters_before = await emulator_counters(http, emulator)

        # Refresher processes.
        child_config = config | {
            "interval": args.interval,
            "batch": args.batch,
            "concurrency": args.concurrency,
            "settings": {
                "database_url": dsn,
                "kafka_bootstrap_servers": settings.kafka_bootstrap_servers,
                "kafka_idempotent_producer": False,
                "topic_account_events": settings.topic_account_events,
            },
        }
        children = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(Path(__file__).resolve()),
                "--role",
                "refresher",
                "--config",
                orjson.dumps(child_config).decode(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
            )
            for _ in range(args.refreshers)
        ]
        for child in children:
            assert child.stdout is not None
            assert (await child.stdout.readline()).strip() == b"ready"
        stat_before = await database_activity(pool)
        run_started = time.monotonic()

        # Latency, measured while the refreshers work.
        select_one = [await timed(pool.fetchval("SELECT 1")) for _ in range(args.samples)]
        first_read = [await timed(tokens.get_access_token(c)) for c in stable_ids]
        cached = [
            await timed(tokens.get_access_token(rng.choice(stable_ids))) for _ in range(20 * args.samples)
        ]
        must_refresh = [await timed(tokens.get_access_token(c)) for c in expired_ids]
        bare_refresh = [await timed(bare_token_call(http, emulator, g["refresh_token"])) for g in bare_grants]

        # Until every staggered token was renewed (or the deadline).
        deadline = last_due + args.interval * 4 + 30
        while time.time() < deadline:
            left = await pool.fetchval(
                "SELECT count(*) FROM oauth_grants WHERE provider = 'xero' AND refreshed_at IS NULL"
            )
            if not left:
                break
            await asyncio.sleep(0.5)
        elapsed = time.monotonic() - run_started
        stat_after = await database_activity(pool)
        reports = []
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"stop\n")
            await child.stdin.drain()
            out, _ = await child.communicate()
            reports.append(orjson.loads(out.splitlines()[-1]))
        counters = await emulator_counters(http, emulator)
        missed = await pool.fetchval(
            "SELECT count(*) FROM oauth_grants WHERE provider = 'xero' AND refreshed_at IS NULL"
        )
        xero_calls = counters["xero"]["calls"].get("token", 0) - counters_before["xero"]["calls"].get(
            "token", 0
        )
        invalid = counters["xero"]["events"].get("invalid_grant", 0)
        valid = await check_tokens(tokens, xero_ids, rng)
        await tokens.close()
    finally:
        await http.close()
        await producer.stop()
        await pool.close()

    refresher_queries = sum(r["queries"] for r in reports)
    minutes = elapsed / 60
    ratio = xero_calls / args.connections
    rows = [
        Row("baseline: SELECT 1 round trip", select_one),
        Row("get_access_token, fresh (in-process cache)", cached),
        Row("get_access_token, fresh (first read, PostgreSQL)", first_read),
        Row("baseline: bare token call to the emulator", bare_refresh),
        Row("get_access_token, must refresh", must_refresh),
    ]
    header = f"{'latency (ms)':<50} {'calls':>7} {'p50':>9} {'p99':>9} {'max':>9}"
    print()
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PostgreSQL (embedded), emulator latency {args.latency * 1000:.0f} ms"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(row.cells())
    print()
    lines = [
        ("connections (Xero, staggered expiries)", f"{args.connections}"),
        ("refresher processes x concurrency", f"{args.refreshers} x {args.concurrency}"),
        ("refreshes needed (one per connection)", f"{args.connections}"),
        ("token calls made", f"{xero_calls}"),
        ("invalid_grant answers (lost races)", f"{invalid}"),
        ("connections not renewed in time", f"{missed}"),
        ("tokens usable afterwards", f"{valid}/{min(1000, args.connections)} sampled"),
        ("run time", f"{elapsed:.0f} s"),
        ("refresher queries/min, all statements", f"{refresher_queries / minutes:,.0f}"),
        ("  per refresh", f"{refresher_queries / max(1, xero_calls):.1f}"),
        ("PostgreSQL transactions/min (whole database)", f"{(stat_after - stat_before) / minutes:,.0f}"),
    ]
    for name, value in lines:
        print(f"{name:<46} {value:>14}")
    fresh_p99 = percentile(cached, 0.99)
    ok = ratio <= RATIO_TARGET and missed == 0 and fresh_p99 <= FRESH_P99_TARGET_MS
    print(
        f"tokens: {xero_calls} refresh calls for {args.connections} needed (ratio {ratio:.3f}, "
        f"target <= {RATIO_TARGET}); get_access_token p99 fresh {fresh_p99:.4f} ms "
        f"(target <= {FRESH_P99_TARGET_MS:g} ms; first read {percentile(first_read, 0.99):.2f} ms "
        f"vs SELECT 1 {percentile(select_one, 0.99):.2f} ms), must refresh "
        f"{percentile(must_refresh, 0.99):.1f} ms vs bare token call "
        f"{percentile(bare_refresh, 0.99):.1f} ms; "
        f"{refresher_queries / minutes:,.0f} refresher queries/min" + ("" if ok else "; TARGET MISSED")
    )
    return 0 if ok else 1


async def bare_token_call(http: aiohttp.ClientSession, emulator: str, refresh_token: str) -> None:
    async with http.post(
        f"{emulator}/quickbooks/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        headers={
            "Authorization": "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        },
    ) as response:
        await response.read()
        assert response.status == 200


async def emulator_counters(http: aiohttp.ClientSession, emulator: str) -> dict[str, Any]:
    async with http.get(f"{emulator}/_emulator/counters") as response:
        counters: dict[str, Any] = orjson.loads(await response.read())
    for provider in ("xero", "quickbooks"):
        counters.setdefault(provider, {"calls": {}, "events": {}})
    return counters


async def database_activity(pool: asyncpg.Pool) -> int:
    value = await pool.fetchval(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
    )
    return int(value)


async def check_tokens(tokens: TokenManager, ids: list[str], rng: random.Random) -> int:
    """How many of a sample of connections get a token without refreshing (all should)."""
    sample = rng.sample(ids, min(1000, len(ids)))
    ok = 0
    for connection_id in sample:
        token = await tokens.get_access_token(connection_id)
        ok += token.expires_at - time.time() > 3000
    return ok


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Token refresh benchmark.")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--refreshers", type=int, default=4, help="refresher processes")
    parser.add_argument("--concurrency", type=int, default=8, help="refreshes at once per process")
    parser.add_argument("--batch", type=int, default=100, help="grants leased per claim")
    parser.add_argument("--interval", type=float, default=1.0, help="pause between refresher passes (s)")
    parser.add_argument("--span", type=float, default=60.0, help="seconds over which expiries are spread")
    parser.add_argument("--latency", type=float, default=0.05, help="emulator token endpoint latency (s)")
    parser.add_argument("--samples", type=int, default=500, help="latency samples per measurement")
    parser.add_argument("--role", default="bench", choices=["bench", "refresher"], help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.role == "refresher":
        asyncio.run(refresher_process(orjson.loads(args.config)))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="ledgerhook-bench-tokens-"))
    postgres = EmbeddedPostgres(workdir / "postgres", cleanup="delete")
    broker = EmbeddedBroker(free_port(), log_path=workdir / "broker.log")
    emulator_port = free_port()
    emulator: subprocess.Popen[bytes] | None = None
    try:
        dsn = postgres.start()
        broker.start()
        settings = load_settings(
            database_url=dsn,
            kafka_bootstrap_servers=broker.bootstrap,
            kafka_idempotent_producer=False,
            encryption_keys=f"bench:{KeyRing.generate_key()}",
            topic_partitions=3,
        )
        asyncio.run(migrate(dsn))
        asyncio.run(ensure_topics(settings))
        emulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.dev.emulator",
                "--port",
                str(emulator_port),
                "--client",
                f"xero={CLIENT_ID}:{CLIENT_SECRET}",
                "--client",
                f"quickbooks={CLIENT_ID}:{CLIENT_SECRET}",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{emulator_port}"
        http_ok(f"{base}/_emulator/health")
        return asyncio.run(run(args, settings, base))
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait(10)
        broker.stop()
        postgres.stop()


if __name__ == "__main__":
    sys.exit(main())
