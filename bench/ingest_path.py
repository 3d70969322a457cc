"""Ingest path benchmark: CPU per delivery of the gateway's ingress and of a bare endpoint, in process.

The companion of bench/ingest.py. That one measures `ledgerhook serve` and bench/bare_app.py as real
servers, over HTTP, with a load generator; on a small shared machine its ratio moves by tens of
percent between rounds, because the server, the broker and the load generator fight for the cores
and the CPU speed drifts. This one leaves out the HTTP server and the load generator and calls each
target's ASGI code directly, in this process, on uvloop, so that a change to the ingress path shows
as a change of microseconds per delivery rather than disappearing in the noise:

- `bare`: `create_bare_app(settings)` from bench/bare_app.py, the Starlette endpoint that reads the
  body and checks the HMAC, called as an ASGI app (it has no lifespan handlers, so none is run);
- `ledgerhook`: `Ingress.serve_shared`, the gateway's shared-endpoint path (`GatewayApp` hands
  `/webhooks/{provider}` straight to it), with `SharedSources`, `Metrics` and a `RawLog` on a real
  producer: each 200 means the broker acknowledged the record.

An embedded broker (Tansu, from a temporary directory) holds the raw topic; no PostgreSQL is
started (the settings model wants a database URL, nothing connects to it). The deliveries are the
ones bench/ingest.py sends: distinct QuickBooks CloudEvents batches of 1-3 KB, signed with the
second of two verifier tokens so that each check computes both HMACs. Each request gets a synthetic
ASGI scope with the headers bench/loadgen.py sends, a `receive` that returns the whole body once and
a `send` that records the status; `--concurrency` coroutines each send their next delivery as soon
as the previous one is answered.

The targets take turns (bare, ledgerhook, bare, ...) for `--rounds` rounds; each turn is a warm-up,
then exactly `--deliveries` deliveries over which the process CPU time (`time.process_time()`) and
the wall time are taken. The broker runs in its own process and is not counted; the driver's own
cost (scopes, channels, the event loop) is in both targets' figures and cancels in their difference.
The summary takes each target's minimum over the rounds (the least disturbed figure) and their ratio
(bare / ledgerhook: higher is better, as in bench/ingest.py). At the end the raw topic is read back:
it must hold exactly one record per 200 the ledgerhook target gave, or the run fails (exit 1), as it
does on any answer other than 200.

`--instructions` counts instructions instead of time: each target runs in a child process under
`valgrind --tool=callgrind`, once with a small and once with a large number of deliveries, and the
difference divided by the difference in deliveries is the count per delivery, with every fixed cost
(start-up, imports, connecting) gone. The counts are deterministic (the children run with a fixed
hash seed; the gateway's still moves by about 0.1 %, with how the broker's timing batches its records),
but valgrind's emulated CPU makes OpenSSL fall back to its generic SHA-256, so the HMAC weighs more
than on the real CPU.

Run: `python bench/ingest_path.py` (under a minute), `python bench/ingest_path.py --instructions`
(needs valgrind; several minutes), `python bench/ingest_path.py --help`.
"""

import argparse
import asyncio
import gc
import hashlib
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/ingest_path.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402
from starlette.types import Message, Receive, Scope, Send  # noqa: E402

from bench.bare_app import create_bare_app  # noqa: E402
from bench.ingest import VERIFIER_TOKENS, WEBHOOK_PATH, Stored, cpu_model, read_raw_topic  # noqa: E402
from bench.loadgen import read_pool, write_pool  # noqa: E402
from gateway.dev import samples  # noqa: E402
from gateway.dev.embedded import EmbeddedBroker, free_port  # noqa: E402
from gateway.ingress.endpoint import Ingress  # noqa: E402
from gateway.ingress.rawlog import RawLog  # noqa: E402
from gateway.ingress.verification import SharedSources  # noqa: E402
from gateway.runtime.kafka import ensure_topics, make_producer  # noqa: E402
from gateway.runtime.metrics import Metrics  # noqa: E402
from gateway.settings import Settings, load_settings  # noqa: E402

TARGETS = ("bare", "ledgerhook")
# Required by the settings model; nothing connects to it.
UNUSED_DATABASE_URL = "postgresql://bench@127.0.0.1:5432/unused"
# Under valgrind a delivery takes tens of times longer: an ack budget the emulated client can meet.
CHILD_ACK_TIMEOUT = 30.0

# An ASGI request handler: the bare app, or the ingress's shared-endpoint path.
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


# ---------------------------------------------------------------------------------------------
# Deliveries


@dataclass(frozen=True, slots=True)
class Delivery:
    """One signed delivery: its body and the raw headers of its request."""

    body: bytes
    headers: list[tuple[bytes, bytes]]


def request_headers(signature: bytes, body: bytes) -> list[tuple[bytes, bytes]]:
    """The raw ASGI headers of a delivery, those bench/loadgen.py sends (lower-case, as uvicorn)."""
    return [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"ledgerhook-bench"),
        (b"content-type", b"application/cloudevents+json"),
        (b"intuit-signature", signature),
        (b"content-length", str(len(body)).encode("ascii")),
    ]


def make_signed(size: int, seed: int) -> list[tuple[str, bytes]]:
    """`size` distinct QuickBooks CloudEvents batches of 1-3 KB, each with its `intuit-signature`.

    As bench/ingest.py's `make_pool`: 200 realms, 4 to 9 events, signed with the second verifier
    token so that the check computes both HMACs before it finds the match.
    """
    rng = random.Random(seed)
    realms = [str(rng.randint(10**9, 10**10 - 1)) for _ in range(200)]
    signed: list[tuple[str, bytes]] = []
    for _ in range(size):
        body = samples.quickbooks_cloudevents(rng.choice(realms), rng.randint(4, 9), rng)
        signed.append((samples.signed_quickbooks(body, VERIFIER_TOKENS[1]).headers["intuit-signature"], body))
    if len({body for _, body in signed}) != size:
        raise RuntimeError("sample bodies are not distinct")
    return signed


def digests_of(bodies: list[bytes]) -> set[bytes]:
    """The SHA-1 digests `read_raw_topic` recognises stored bodies by."""
    return {hashlib.sha1(body, usedforsecurity=False).digest() for body in bodies}


def bench_settings(bootstrap: str, **overrides: object) -> Settings:
    """The settings both targets use: the broker at `bootstrap`, the benchmark's verifier tokens."""
    return load_settings(
        database_url=UNUSED_DATABASE_URL,
        kafka_bootstrap_servers=bootstrap,
        kafka_idempotent_producer=False,  # the dev broker lacks it
        quickbooks_verifier_tokens=",".join(VERIFIER_TOKENS),
        **overrides,
    )


# ---------------------------------------------------------------------------------------------
# Driving a target


async def deliver(
    handler: Handler, pool: list[Delivery], start: int, count: int, concurrency: int
) -> Counter[int]:
    """Send `count` deliveries from `pool` (from index `start`, wrapping) through `handler`,
    `concurrency` at a time; returns how many got each status (0: no answer)."""
    statuses: Counter[int] = Counter()
    taken = 0

    async def client() -> None:
        nonlocal taken
        while taken < count:
            delivery = pool[(start + taken) % len(pool)]
            taken += 1
            await one(handler, delivery, statuses)

    await asyncio.gather(*(client() for _ in range(min(concurrency, count))))
    return statuses


async def one(handler: Handler, delivery: Delivery, statuses: Counter[int]) -> None:
    """One request: the scope uvicorn would build, the body received once, the status recorded."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": WEBHOOK_PATH,
        "raw_path": WEBHOOK_PATH.encode(),
        "query_string": b"",
        "headers": delivery.headers,
        "state": {},
    }
    received = False
    status = 0

    async def receive() -> Message:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": delivery.body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await handler(scope, receive, send)
    statuses[status] += 1


def make_handlers(settings: Settings, raw_log: RawLog) -> dict[str, Handler]:
    """Each target's ASGI entry point."""
    ingress = Ingress(
        SharedSources(settings), raw_log, Metrics(), settings.max_body_bytes, settings.retry_after_seconds
    )
    bare = create_bare_app(settings)

    def ledgerhook(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return ingress.serve_shared(scope, receive, send, "quickbooks")

    return {"bare": bare, "ledgerhook": ledgerhook}


# ---------------------------------------------------------------------------------------------
# Timing


@dataclass(frozen=True)
class Row:
    """One target's measured deliveries in one round."""

    target: str
    round: int
    deliveries: int
    cpu_seconds: float
    wall_seconds: float
    statuses: Counter[int]

    @property
    def cpu_us(self) -> float:
        """Process CPU microseconds per delivery."""
        return self.cpu_seconds / self.deliveries * 1e6

    @property
    def per_second(self) -> float:
        """Deliveries answered per second of wall time."""
        return self.deliveries / self.wall_seconds

    @property
    def non_200(self) -> int:
        """Answers other than 200 among the measured deliveries."""
        return sum(n for status, n in self.statuses.items() if status != 200)


@dataclass
class Timed:
    """Everything the timing run produced."""

    rows: list[Row]
    warmup_statuses: Counter[int]  # the warm-ups' answers, both targets
    ledgerhook_200: int  # every 200 the ledgerhook target gave, warm-ups included


async def time_targets(
    bootstrap: str, pool: list[Delivery], rounds: int, deliveries: int, warmup: int, concurrency: int
) -> Timed:
    """The rounds: in each, every target warms up and then runs `deliveries`, timed; targets in turn."""
    settings = bench_settings(bootstrap)
    await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        handlers = make_handlers(settings, RawLog(producer, settings.topic_raw, settings.ack_timeout_seconds))
        timed = Timed([], Counter(), 0)
        offsets = dict.fromkeys(TARGETS, 0)  # each target goes on through the pool where it stopped
        gc.collect()
        gc.freeze()  # the pool and the modules: not for the measured collections to walk through
        for number in range(1, rounds + 1):
            for target in TARGETS:
                handler = handlers[target]
                warm = await deliver(handler, pool, offsets[target], warmup, concurrency)
                offsets[target] += warmup
                gc.collect()
                cpu, wall = time.process_time(), time.perf_counter()
                statuses = await deliver(handler, pool, offsets[target], deliveries, concurrency)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                offsets[target] += deliveries
                timed.rows.append(Row(target, number, deliveries, cpu, wall, statuses))
                timed.warmup_statuses += warm
                if target == "ledgerhook":
                    timed.ledgerhook_200 += warm[200] + statuses[200]
        return timed
    finally:
        await producer.stop()


def format_table(rows: list[Row]) -> str:
    """One row per round and target, in the order they ran."""
    header = (
        f"{'target':<11} {'round':>6} {'deliveries':>11} {'CPU us/delivery':>16} {'deliveries/s':>13} "
        f"{'non-200':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.target:<11} {r.round:>6} {r.deliveries:>11} {r.cpu_us:>16.1f} {r.per_second:>13.0f} "
            f"{r.non_200:>8}"
        )
    return "\n".join(lines)


def summary_line(rows: list[Row]) -> str:
    """`ingest path: ...`: each target's minimum CPU per delivery over the rounds, their ratio
    (bare / ledgerhook), the median of the rounds' own ratios and the difference."""
    best = {t: min(r.cpu_us for r in rows if r.target == t) for t in TARGETS}
    by_round: dict[int, dict[str, float]] = {}
    for r in rows:
        by_round.setdefault(r.round, {})[r.target] = r.cpu_us
    ratios = [costs["bare"] / costs["ledgerhook"] for costs in by_round.values()]
    count = len(by_round)
    return (
        f"ingest path: ledgerhook {best['ledgerhook']:.1f} us vs bare {best['bare']:.1f} us CPU per delivery "
        f"in process (min of {count} round{'' if count == 1 else 's'}; ratio of the two "
        f"{best['bare'] / best['ledgerhook']:.2f}, median of the rounds' own ratios "
        f"{statistics.median(ratios):.2f}); the gateway's own work {best['ledgerhook'] - best['bare']:.1f} us"
    )


def stored_line(stored: Stored, answered: int) -> tuple[bool, str]:
    """Whether the raw topic holds one record per 200, each a body that was sent, and the line saying so."""
    ok = stored.records == answered == stored.known_bodies == stored.distinct_delivery_ids
    return ok, (
        f"stored: raw topic holds {stored.records} records for {answered} deliveries answered 200 "
        f"({stored.known_bodies} with a body that was sent, {stored.distinct_delivery_ids} distinct "
        f"delivery ids): {'OK' if ok else 'MISMATCH'}"
    )


def run_timing(args: argparse.Namespace) -> int:
    """The timed rounds, the table, the storage check and the summary; 1 on a non-200 or a mismatch."""
    started = time.monotonic()
    signed = make_signed(args.pool_size, args.seed)
    pool = [Delivery(body, request_headers(sig.encode("ascii"), body)) for sig, body in signed]
    digests = digests_of([d.body for d in pool])
    lengths = [len(d.body) for d in pool]
    print(
        f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, "
        f"load average before the run {os.getloadavg()[0]:.2f}"
    )
    print(
        f"in process, uvloop, no HTTP server: {args.concurrency} concurrent coroutines; "
        f"{args.rounds} round{'' if args.rounds == 1 else 's'}, targets in turn: {', '.join(TARGETS)}; "
        f"each turn {args.warmup} warm-up + {args.deliveries} measured deliveries"
    )
    print(
        f"deliveries: {len(pool)} distinct signed QuickBooks CloudEvents batches, "
        f"{min(lengths)}-{max(lengths)} bytes (generated in {time.monotonic() - started:.1f}s)"
    )
    with tempfile.TemporaryDirectory(prefix="ledgerhook-bench-") as tmp:
        broker = EmbeddedBroker(free_port(), log_path=Path(tmp) / "broker.log")
        broker.start()
        try:
            timed = uvloop.run(
                time_targets(
                    broker.bootstrap, pool, args.rounds, args.deliveries, args.warmup, args.concurrency
                )
            )
            stored = uvloop.run(
                read_raw_topic(broker.bootstrap, bench_settings(broker.bootstrap).topic_raw, digests)
            )
        finally:
            broker.stop()

    print()
    print(format_table(timed.rows))
    print(
        "  CPU us/delivery: process CPU time (user + system, all threads; the broker is another process)\n"
        "  over the measured deliveries, divided by their number. deliveries/s: over wall time."
    )
    warm_bad = sum(n for status, n in timed.warmup_statuses.items() if status != 200)
    non_200 = warm_bad + sum(r.non_200 for r in timed.rows)
    if non_200:
        answers = sum((r.statuses for r in timed.rows), timed.warmup_statuses.copy())
        statuses = ", ".join(f"{s or 'none'}: {n}" for s, n in sorted(answers.items()) if s != 200)
        print(f"  non-200 answers, warm-ups included: {statuses}")
    ok, line = stored_line(stored, timed.ledgerhook_200)
    print(line)
    problems = ("" if ok else "; STORED COUNT MISMATCH") + (f"; {non_200} NON-200 ANSWERS" if non_200 else "")
    print(summary_line(timed.rows) + problems)
    return 0 if ok and not non_200 else 1


# ---------------------------------------------------------------------------------------------
# Instruction counts (valgrind)


async def child_run(
    target: str, count: int, bootstrap: str, pool_file: Path, concurrency: int
) -> Counter[int]:
    """`count` deliveries against `target`, no warm-up, no timing: the child of `--instructions`."""
    pool = [Delivery(body, request_headers(sig, body)) for sig, body in read_pool(pool_file)]
    settings = bench_settings(bootstrap, ack_timeout_seconds=CHILD_ACK_TIMEOUT)
    producer = make_producer(settings)
    await producer.start()  # for both targets, so that the two differ only by their deliveries
    try:
        handlers = make_handlers(settings, RawLog(producer, settings.topic_raw, settings.ack_timeout_seconds))
        return await deliver(handlers[target], pool, 0, count, concurrency)
    finally:
        await producer.stop()


@dataclass(frozen=True)
class Counted:
    """One child run under callgrind."""

    deliveries: int
    instructions: int
    statuses: Counter[int]


def run_child_under_valgrind(
    valgrind: str, target: str, count: int, bootstrap: str, pool_file: Path, concurrency: int
) -> Counted:
    """Run `--child target count` under callgrind; its total instructions and its answers."""
    command = [
        valgrind,
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        target,
        str(count),
        "--bootstrap",
        bootstrap,
        "--pool-file",
        str(pool_file),
        "--concurrency",
        str(concurrency),
    ]
    # A fixed hash seed: the same dict and set layouts, run after run, for counts that repeat.
    env = os.environ | {"PYTHONHASHSEED": "0"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    collected = re.search(r"Collected : (\d+)", done.stderr)
    answers = re.search(r"^statuses: (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or collected is None or answers is None:
        tail = "\n".join(done.stderr.splitlines()[-20:])
        raise RuntimeError(f"{target} x{count} under valgrind failed (exit {done.returncode}):\n{tail}")
    statuses: Counter[int] = Counter()
    for item in answers.group(1).split():
        status, _, n = item.partition("=")
        statuses[int(status)] = int(n)
    return Counted(count, int(collected.group(1)), statuses)


def run_instructions(args: argparse.Namespace) -> int:
    """Instructions per delivery of each target under callgrind; 2 without valgrind, 1 on a failure."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print(
            "ingest path: --instructions needs valgrind; install it (apt-get install valgrind)",
            file=sys.stderr,
        )
        return 2
    small, large = args.instruction_deliveries
    if not 0 < small < large:
        raise SystemExit("--instruction-deliveries: expected SMALL LARGE with 0 < SMALL < LARGE")
    signed = make_signed(large, args.seed)  # one pool for every child: its loading cost cancels
    digests = digests_of([body for _, body in signed])
    version = subprocess.run([valgrind, "--version"], capture_output=True, text=True, check=False).stdout
    print(
        f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, "
        f"{version.strip()}"
    )
    print(
        f"instructions under callgrind, each target in a child process with {small} and then {large} "
        f"deliveries ({args.concurrency} concurrent coroutines, uvloop); per delivery = difference / "
        f"{large - small}"
    )
    counted: dict[str, list[Counted]] = {}
    with tempfile.TemporaryDirectory(prefix="ledgerhook-bench-") as tmp_name:
        tmp = Path(tmp_name)
        pool_file = tmp / "deliveries.bin"
        write_pool(pool_file, signed)
        broker = EmbeddedBroker(free_port(), log_path=tmp / "broker.log")
        broker.start()
        try:
            settings = bench_settings(broker.bootstrap)
            uvloop.run(ensure_topics(settings))
            for target in TARGETS:
                counted[target] = [
                    run_child_under_valgrind(
                        valgrind, target, n, broker.bootstrap, pool_file, args.concurrency
                    )
                    for n in (small, large)
                ]
            stored = uvloop.run(read_raw_topic(broker.bootstrap, settings.topic_raw, digests))
        finally:
            broker.stop()

    header = f"{'target':<11} {'deliveries':>10} {'instructions':>16} {'non-200':>8}"
    print()
    print(header)
    print("-" * len(header))
    for target, runs in counted.items():
        for run in runs:
            non_200 = sum(n for s, n in run.statuses.items() if s != 200)
            print(f"{target:<11} {run.deliveries:>10} {run.instructions:>16,} {non_200:>8}")
    print(
        "  instructions: the whole child (start-up, imports, pool, producer, deliveries); OpenSSL runs its\n"
        "  generic SHA-256 under valgrind, so the HMAC weighs more than on the real CPU"
    )
    per = {
        t: (runs[1].instructions - runs[0].instructions) / (runs[1].deliveries - runs[0].deliveries)
        for t, runs in counted.items()
    }
    non_200 = sum(n for runs in counted.values() for run in runs for s, n in run.statuses.items() if s != 200)
    ok, line = stored_line(stored, sum(run.statuses[200] for run in counted["ledgerhook"]))
    print(line)
    problems = ("" if ok else "; STORED COUNT MISMATCH") + (f"; {non_200} NON-200 ANSWERS" if non_200 else "")
    print(
        f"ingest path: ledgerhook {per['ledgerhook']:,.0f} vs bare {per['bare']:,.0f} instructions per "
        f"delivery under callgrind (ratio of the two {per['bare'] / per['ledgerhook']:.2f}); the gateway's "
        f"own work {per['ledgerhook'] - per['bare']:,.0f} instructions" + problems
    )
    return 0 if ok and not non_200 else 1


# ---------------------------------------------------------------------------------------------
# Main


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Ingest path benchmark: CPU per delivery of the gateway's ingress "
        "(Ingress.serve_shared, acknowledged by an embedded broker) and of the bare endpoint "
        "(bench/bare_app.py), both called in process through ASGI, without an HTTP server or a load "
        "generator. Targets take turns in rounds (bare, ledgerhook, bare, ...); the summary uses each "
        "target's minimum over the rounds."
    )
    parser.add_argument(
        "--rounds", type=int, default=5, metavar="N", help="rounds; each target once per round"
    )
    parser.add_argument(
        "--deliveries", type=int, default=20_000, metavar="N", help="measured deliveries per target and round"
    )
    parser.add_argument(
        "--warmup", type=int, default=2_000, metavar="N", help="warm-up deliveries before each measurement"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="coroutines sending deliveries back to back"
    )
    parser.add_argument(
        "--pool-size", type=int, default=20_000, help="distinct signed deliveries (then reused)"
    )
    parser.add_argument("--seed", type=int, default=20_26, help="seed for the sample deliveries")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="instead of timing, count instructions per delivery under valgrind's callgrind: each target "
        "in a child process with a small and a large number of deliveries, per delivery = difference / "
        "difference. Deterministic, but overstates the HMAC (OpenSSL's generic SHA-256 under valgrind). "
        "Needs valgrind; exits 2 without it",
    )
    parser.add_argument(
        "--instruction-deliveries",
        type=int,
        nargs=2,
        default=[1_000, 5_000],
        metavar=("SMALL", "LARGE"),
        help="deliveries of the two child runs of --instructions (default: 1000 5000)",
    )
    parser.add_argument(
        "--child",
        nargs=2,
        metavar=("TARGET", "N"),
        default=None,
        help="internal, for --instructions: run N deliveries against TARGET and print the answers",
    )
    parser.add_argument("--bootstrap", default=None, help="internal, with --child: the broker")
    parser.add_argument("--pool-file", type=Path, default=None, help="internal, with --child: the deliveries")
    args = parser.parse_args()
    if args.child is not None:
        if args.child[0] not in TARGETS or not args.child[1].isdigit():
            parser.error(f"--child: expected TARGET N with TARGET one of {', '.join(TARGETS)}")
        if args.bootstrap is None or args.pool_file is None:
            parser.error("--child needs --bootstrap and --pool-file")
    for name in ("rounds", "deliveries", "concurrency", "pool_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def main() -> int:
    """Run the benchmark (or one child of `--instructions`); exit 1 on a non-200 or a stored mismatch."""
    args = parse_args()
    # The settings are the benchmark's own, whatever the caller's environment says.
    for name in [name for name in os.environ if name.startswith("LEDGERHOOK_")]:
        del os.environ[name]
    if args.child is not None:
        target, count = args.child[0], int(args.child[1])
        statuses = uvloop.run(child_run(target, count, args.bootstrap, args.pool_file, args.concurrency))
        print("statuses: " + " ".join(f"{s}={n}" for s, n in sorted(statuses.items())))
        return 0
    if args.instructions:
        return run_instructions(args)
    return run_timing(args)


if __name__ == "__main__":
    sys.exit(main())
