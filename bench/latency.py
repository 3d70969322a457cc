"""Webhook -> event latency, broken down: how much is the dev broker, how much the rest of the path.

Starts an embedded PostgreSQL and an embedded broker in a temporary directory, runs `ledgerhook
migrate` (topics with 6 partitions) and registers the fan-out benchmark's accounts
(bench/fanout_workload.py). Then, in one run:

1. **broker trip** (the floor): a producer built by `gateway.runtime.kafka.make_producer` sends
   records the size of the webhook bodies at the offered rate to a topic of its own, and a consumer
   with the worker's settings (group, fetch wait, poll timeout, batch size) receives them; each
   record's time from `send` to the consumer's poll returning it. Once per fetch wait asked for.
2. **end to end**: `ledgerhook worker` and `ledgerhook serve`; bench/fanout_poster.py posts signed
   deliveries at the same rate (open loop) and a reader on the raw and the changes topics notes when
   each record arrives and the time its producer gave it, which splits every event's latency into the
   gateway before its produce, the raw record's trip, and the worker up to the event being read.

Run: `python bench/latency.py` (see `--help` and bench/README.md).
"""

import argparse
import asyncio
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/latency.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer  # noqa: E402

from bench.fanout import (  # noqa: E402
    READER_FETCH_WAIT_MS,
    Batches,
    CpuWatch,
    Stack,
    bench_env,
    create_topic,
    latency_pool,
    migrated,
    only,
    partitions_of,
    scrape_batches,
)
from bench.fanout_poster import write_pool  # noqa: E402
from bench.fanout_workload import make_accounts, register  # noqa: E402
from bench.ingest import cpu_model, percentile, wait_for_quiet, wait_http_ok  # noqa: E402
from fanout.pipeline import FETCH_MAX_WAIT_MS, POLL_TIMEOUT_MS  # noqa: E402
from fanout.raw import H_DELIVERY_ID, header  # noqa: E402
from gateway.dev.embedded import EmbeddedBroker, EmbeddedPostgres, free_port  # noqa: E402
from gateway.runtime.kafka import connection_options, make_producer  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from provider_auth.accounts.store import ConnectionStore  # noqa: E402

TRIP_TOPIC = "ledgerhook.bench.trip"
REST_P99_TARGET_MS = 50.0
H_SEQ = "x-bench-seq"


# ---------------------------------------------------------------------------------------------
# Phase 1: the raw record's trip alone


@dataclass
class Trip:
    """One round of the broker trip: send -> acknowledged, send -> received by the worker-like consumer."""

    fetch_wait_ms: int
    sent: int = 0
    ack_ms: list[float] = field(default_factory=list)
    trip_ms: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)


async def broker_trip(
    settings: Settings,
    bodies: list[bytes],
    fetch_wait_ms: int,
    args: argparse.Namespace,
    index: int,
    cpu: CpuWatch,
) -> Trip:
    """Produce `bodies` at `args.rate` to a topic of their own; time each to its consumer with the
    worker's settings (group, `fetch_wait_ms`, poll timeout, batch size)."""
    topic, group = f"{TRIP_TOPIC}.{index}", f"ledgerhook-bench-trip-{index}"
    await create_topic(settings, topic)
    result = Trip(fetch_wait_ms)
    consumer = AIOKafkaConsumer(
        **connection_options(settings),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.worker_session_timeout_ms,
        heartbeat_interval_ms=max(100, settings.worker_session_timeout_ms // 3),
        fetch_max_wait_ms=fetch_wait_ms,
    )
    consumer.subscribe([topic])
    producer = make_producer(settings)
    await producer.start()
    await consumer.start()
    sent_at: dict[int, float] = {}
    received: dict[int, float] = {}
    acked: dict[int, float] = {}
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=settings.worker_batch_size)
            now = time.monotonic()
            for records in batch.values():
                for record in records:
                    received[int(header(record.headers, H_SEQ) or "-1")] = now
            if batch:
                await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})

    try:
        while not consumer.assignment():  # the group join is left out of the timing
            await consumer.getmany(timeout_ms=100)
        reader = asyncio.create_task(consume())
        count = round(args.rate * (args.warmup + args.trip_duration))
        interval = 1.0 / args.rate
        rng = random.Random(index)
        begin = time.monotonic() + 0.1
        window = (begin + args.warmup, begin + args.warmup + args.trip_duration)
        before = None
        for seq in range(count):
            due = begin + seq * interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if before is None and due >= window[0]:
                before = cpu.snapshot()
            sent_at[seq] = time.monotonic()
            key = rng.randbytes(8)
            future = await producer.send(
                topic, bodies[seq % len(bodies)], key=key, headers=[(H_SEQ, b"%d" % seq)]
            )
            future.add_done_callback(lambda _, seq=seq: acked.__setitem__(seq, time.monotonic()))
        if before is not None:
            result.cpu = CpuWatch.cores(before, cpu.snapshot())
        deadline = time.monotonic() + 10.0
        while len(received) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await reader
    finally:
        await consumer.stop()
        await producer.stop()
    for seq, at in sent_at.items():
        if window[0] <= at < window[1]:
            result.sent += 1
            if seq in received:
                result.trip_ms.append((received[seq] - at) * 1000.0)
            if seq in acked:
                result.ack_ms.append((acked[seq] - at) * 1000.0)
    return result


# ---------------------------------------------------------------------------------------------
# Phase 2: webhook -> event, split by the records' own timestamps


@dataclass
class Seen:
    """A record as the reader saw it: when it arrived, and when its producer sent it (monotonic s)."""

    read: float
    created: float


@dataclass
class Sightings:
    """The raw record and the events of each delivery id."""

    raw: dict[str, Seen] = field(default_factory=dict)
    events: dict[str, list[Seen]] = field(default_factory=dict)


@dataclass
class Breakdown:
    """Per event of the deliveries due inside the window, each stretch of its path in ms."""

    posted: int = 0
    non_200: int = 0
    missing: int = 0
    total: list[float] = field(default_factory=list)  # POST due -> event read
    gateway: list[float] = field(default_factory=list)  # POST due -> raw record sent (the gateway's produce)
    ack: list[float] = field(default_factory=list)  # POST due -> 200 (per delivery)
    raw_trip: list[float] = field(default_factory=list)  # raw record sent -> read
    worker_take: list[float] = field(default_factory=list)  # raw record read -> its event sent by the worker
    event_trip: list[float] = field(default_factory=list)  # event sent -> read
    rest: list[float] = field(default_factory=list)  # total minus the raw record's trip
    cpu: dict[str, float] = field(default_factory=dict)
    batches: Batches = field(default_factory=Batches)


async def read_path(settings: Settings, ready: asyncio.Event, stop: asyncio.Event, seen: Sightings) -> None:
    """Note every raw record and event by delivery id, with its arrival and its producer's timestamp."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=READER_FETCH_WAIT_MS,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    wall_to_mono = time.monotonic() - time.time()  # record timestamps are epoch ms
    try:
        partitions = [
            *await partitions_of(consumer, settings.topic_raw),
            *await partitions_of(consumer, settings.topic_changes),
        ]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)
        ready.set()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.monotonic()
            for tp, part in batch.items():
                for record in part:
                    sighting = Seen(now, record.timestamp / 1000.0 + wall_to_mono)
                    if tp.topic == settings.topic_raw:
                        seen.raw[header(record.headers, H_DELIVERY_ID) or ""] = sighting
                    else:
                        delivery_id = orjson.loads(record.value or b"{}").get("delivery_id")
                        seen.events.setdefault(delivery_id, []).append(sighting)
    finally:
        await consumer.stop()


async def end_to_end(
    args: argparse.Namespace,
    tmp: Path,
    settings: Settings,
    gateway_port: int,
    pool: list[tuple[str, dict[str, str], bytes]],
    events_per_delivery: list[int],
    cpu: CpuWatch,
    batches: Callable[[], Batches],
) -> Breakdown:
    """Post the pool at `args.rate` (open loop) and split every event's latency along its path."""
    result = Breakdown()
    pool_path = tmp / "latency-pool.json"
    write_pool(pool_path, pool)
    seen = Sightings()
    ready, stop = asyncio.Event(), asyncio.Event()
    reader = asyncio.create_task(read_path(settings, ready, stop, seen))
    await ready.wait()
    result_path = tmp / "poster-result.json"
    poster = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fanout_poster",
        *("--pool", str(pool_path), "--port", str(gateway_port), "--rate", str(args.rate)),
        *("--connections", str(args.post_connections), "--result", str(result_path)),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert poster.stdin is not None and poster.stdout is not None
    if (await poster.stdout.readline()).strip() != b"READY":
        raise RuntimeError(f"poster failed to start (exit {await poster.wait()})")
    begin = time.monotonic() + 0.3
    poster.stdin.write(f"{begin!r}\n".encode())
    await poster.stdin.drain()
    poster.stdin.close()
    cpu.roles["poster"] = only(poster.pid)
    window = (begin + args.warmup, begin + args.warmup + args.duration)
    await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
    before, batches_before = cpu.snapshot(), await asyncio.to_thread(batches)
    await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
    result.cpu = CpuWatch.cores(before, cpu.snapshot())
    result.batches = (await asyncio.to_thread(batches)).since(batches_before)
    if await poster.wait() != 0:
        raise RuntimeError(f"poster exited with {poster.returncode}")
    del cpu.roles["poster"]

    posted = orjson.loads(result_path.read_bytes())
    interval = posted["interval"]
    answered = {
        index: delivery_id
        for index, (status, delivery_id) in enumerate(
            zip(posted["status"], posted["delivery_ids"], strict=True)
        )
        if status == 200 and delivery_id
    }
    expected = sum(events_per_delivery[index] for index in answered)

    def read_so_far() -> int:
        return sum(len(seen.events.get(delivery_id, ())) for delivery_id in answered.values())

    deadline = time.monotonic() + 30.0
    while read_so_far() < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    await reader
    result.posted = len(pool)
    result.non_200 = len(pool) - len(answered)
    result.missing = expected - read_so_far()
    for index, delivery_id in answered.items():
        due = begin + index * interval
        raw = seen.raw.get(delivery_id)
        if not window[0] <= due < window[1] or raw is None:
            continue
        result.ack.append(posted["ack_ms"][index])
        for event in seen.events.get(delivery_id, ()):
            total = (event.read - due) * 1000.0
            trip = (raw.read - raw.created) * 1000.0
            result.total.append(total)
            result.gateway.append((raw.created - due) * 1000.0)
            result.raw_trip.append(trip)
            result.worker_take.append((event.created - raw.read) * 1000.0)
            result.event_trip.append((event.read - event.created) * 1000.0)
            result.rest.append(total - trip)
    return result


# ---------------------------------------------------------------------------------------------
# Report


def row(name: str, values: list[float], note: str) -> str:
    """One stretch: samples, p50, p95, p99, max."""
    q = [percentile(values, p) for p in (0.5, 0.95, 0.99, 1.0)]
    return f"{name:<34} {len(values):>7} {q[0]:>7.1f} {q[1]:>7.1f} {q[2]:>7.1f} {q[3]:>7.1f}  {note}"


def title() -> str:
    """The table's header."""
    head = f"{'stretch':<34} {'samples':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    return f"{head}\n{'-' * len(head)}"


def report(trips: list[Trip], path: Breakdown, worker_wait_ms: int, rate: float, duration: float) -> bool:
    """Print both tables and the summary line; False when a delivery failed or an event is missing."""
    print(
        f"\nbroker trip alone at {rate:g}/s (the gateway's producer, acks=all, linger 0 -> a consumer "
        "with the worker's settings)"
    )
    print(title())
    for trip in trips:
        cpu = ", ".join(f"{role} {share:.0%}" for role, share in trip.cpu.items())
        print(row(f"send -> acknowledged (wait {trip.fetch_wait_ms} ms)", trip.ack_ms, ""))
        print(
            row(
                f"send -> received (wait {trip.fetch_wait_ms} ms)",
                trip.trip_ms,
                f"lost {trip.sent - len(trip.trip_ms)}; CPU {cpu}",
            )
        )
    print(f"\nwebhook -> event at {rate:g}/s (per event; the worker's fetch wait {worker_wait_ms} ms)")
    print(title())
    print(row("POST due -> 200", path.ack, "per delivery"))
    print(row("gateway: POST due -> raw produced", path.gateway, "record timestamp, 1 ms"))
    print(row("raw trip: produced -> read", path.raw_trip, f"reader waits up to {READER_FETCH_WAIT_MS} ms"))
    print(row("worker: raw read -> event produced", path.worker_take, "its fetch, routing, the batch before"))
    print(row("event: produced -> read", path.event_trip, "its produce, the reader's fetch"))
    print(row("rest: total minus raw trip", path.rest, ""))
    print(row("webhook -> event", path.total, f"non-200 {path.non_200}, missing {path.missing}"))
    cpu = ", ".join(f"{role} {share:.0%}" for role, share in path.cpu.items())
    print(f"  CPU over the window: {cpu}")
    print(
        f"  Worker batches over the window: {path.batches.count / duration:.1f}/s, mean "
        f"{path.batches.mean_ms:.1f} ms from poll to offset commit."
    )
    floor = next((t for t in trips if t.fetch_wait_ms == worker_wait_ms), trips[0])
    floor_p99 = percentile(floor.trip_ms, 0.99)
    total_p99, rest_p99 = percentile(path.total, 0.99), percentile(path.rest, 0.99)
    print(
        f"latency: webhook -> event p50 {percentile(path.total, 0.5):.0f} ms, "
        f"p95 {percentile(path.total, 0.95):.0f} ms, p99 {total_p99:.0f} ms at {rate:g}/s vs raw broker "
        f"trip alone p99 {floor_p99:.0f} ms (fetch wait {floor.fetch_wait_ms} ms; ratio "
        f"{total_p99 / floor_p99:.2f}); rest of the path p99 {rest_p99:.0f} ms "
        f"(target <= {REST_P99_TARGET_MS:.0f} ms: {'met' if rest_p99 <= REST_P99_TARGET_MS else 'NOT met'})"
    )
    return path.non_200 == 0 and path.missing == 0


# ---------------------------------------------------------------------------------------------
# Main


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description="Webhook -> event latency, broken down along its path.")
    parser.add_argument("--rate", type=float, default=500.0, help="deliveries (and trip records) per second")
    parser.add_argument("--duration", type=float, default=15.0, help="end to end: measured seconds")
    parser.add_argument(
        "--trip-duration", type=float, default=10.0, help="broker trip: measured seconds per round"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each window")
    parser.add_argument(
        "--trip-fetch-waits",
        type=int,
        nargs="+",
        default=[FETCH_MAX_WAIT_MS, 10],
        metavar="MS",
        help="broker trip: the consumer's fetch_max_wait_ms, one round each (default: the worker's, and 10)",
    )
    parser.add_argument("--post-connections", type=int, default=32, help="end to end: keep-alive connections")
    parser.add_argument("--seed", type=int, default=20_26, help="seed of the accounts and deliveries")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each phase, wait up to SECONDS for other work on the machine to stop",
    )
    parser.add_argument("--skip-end-to-end", action="store_true", help="only the broker trip")
    return parser.parse_args()


async def run(args: argparse.Namespace, tmp: Path) -> bool:
    """The whole benchmark; prints as it goes and returns False when a delivery failed."""
    rng = random.Random(args.seed)
    print(
        f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, "
        f"load average before the run {os.getloadavg()[0]:.2f}"
    )
    data_dir = tmp / "postgres" / "data"
    postgres = EmbeddedPostgres(data_dir, cleanup="delete")
    broker = EmbeddedBroker(free_port(), log_path=tmp / "broker.log")
    database_url = postgres.start()
    stack: Stack | None = None
    try:
        broker.start()
        env = bench_env(database_url, broker.bootstrap)
        settings, common = migrated(database_url, broker.bootstrap, env, data_dir)
        stack = Stack(args, tmp, env, settings, common)
        accounts = make_accounts(rng, 180, 120, 0.2)
        db = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2)
        try:
            connections = await register(ConnectionStore(db, keyring=None), accounts)
        finally:
            await db.close()
        count = round(args.rate * (args.warmup + args.duration))
        pool, events_per_delivery = latency_pool(rng, accounts, connections, count, (1, 3))
        bodies = [body for _, _, body in pool]
        trips = []
        for index, wait in enumerate(args.trip_fetch_waits):
            wait_for_quiet(args.wait_quiet)
            trips.append(await broker_trip(settings, bodies, wait, args, index, CpuWatch(dict(common))))
        if args.skip_end_to_end:
            path = Breakdown()
        else:
            worker_port, gateway_port = free_port(), free_port()
            worker = stack.start(
                "ledgerhook worker",
                ["-m", "gateway.cli", "worker"],
                {"LEDGERHOOK_WORKER_PORT": str(worker_port)},
            )
            await asyncio.to_thread(wait_http_ok, f"http://127.0.0.1:{worker_port}/readyz", worker.process)
            gateway = stack.start(
                "ledgerhook serve", ["-m", "gateway.cli", "serve"], {"LEDGERHOOK_PORT": str(gateway_port)}
            )
            await asyncio.to_thread(wait_http_ok, f"http://127.0.0.1:{gateway_port}/readyz", gateway.process)
            wait_for_quiet(args.wait_quiet)
            cpu = CpuWatch(common | {"gateway": only(gateway.pid), "worker": only(worker.pid)})
            path = await end_to_end(
                args,
                tmp,
                settings,
                gateway_port,
                pool,
                events_per_delivery,
                cpu,
                lambda: scrape_batches(worker_port),
            )
    finally:
        for child in reversed(stack.children if stack else []):
            child.stop()
        broker.stop()
        postgres.stop()
    return report(trips, path, FETCH_MAX_WAIT_MS, args.rate, args.duration)


def main() -> int:
    """Run in a temporary directory; exit status 1 when a delivery failed or an event went missing."""
    args = parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="ledgerhook-latency-") as tmp:
            return 0 if asyncio.run(run(args, Path(tmp))) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
