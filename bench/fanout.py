"""Fan-out benchmark: the worker draining a pre-loaded raw topic vs a pass-through, and end-to-end latency.

Starts an embedded PostgreSQL and an embedded broker in a temporary directory, runs
`ledgerhook migrate` (which creates the topics, 6 partitions each), registers a few hundred provider
accounts as connections (some connected by two tenants), and pre-loads the raw topic with realistic
QuickBooks and Xero deliveries, produced directly with the headers and keys the gateway gives them
(bench/fanout_workload.py). Then, in one run:

1. **pass-through**: bench/fanout_passthrough.py copies the raw topic to another topic with the
   worker's aiokafka settings (consumer group, batch size, acks=all producer, commit after acks) and
   nothing else: the baseline.
2. **worker**: `ledgerhook worker` (the real FanoutWorker, PostgreSQL routing and dedupe) drains
   the same records into `ledgerhook.changes`; done when the topic holds the expected number of
   events, which are then read back and checked id by id (exactly the expected ids, no repeats,
   nothing quarantined; with webhook reconciliation on, the default, the expected ids leave out
   what it must drop, and the worker must count as many drops), or the run fails.
3. **latency**: `ledgerhook serve` joins the still-running worker; bench/fanout_poster.py posts
   signed deliveries at a fixed rate (open loop) and a consumer on `ledgerhook.changes` takes, for
   every event, the time from its POST's due time to the moment it is read, matching the event's
   `delivery_id` with the `x-ledgerhook-delivery-id` the gateway answered.

Throughput is taken over the drain proper (from the first output record to the last), so process
start-up and the consumer group join are left out of both. Run: `python bench/fanout.py` (see
`--help` and bench/README.md).
"""

import argparse
import asyncio
import contextlib
import itertools
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/fanout.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from bench.fanout_poster import write_pool  # noqa: E402
from bench.fanout_workload import (  # noqa: E402
    WEBHOOK_PATHS,
    Account,
    Delivery,
    Expected,
    activity_weights,
    expected_events,
    make_accounts,
    make_deliveries,
    make_delivery,
    raw_delivery,
    register,
    with_fresh_records,
)
from bench.ingest import (  # noqa: E402
    cpu_model,
    machine_busy_seconds,
    percentile,
    profile_hot_spots,
    py_spy,
    run_migrate,
    wait_for_quiet,
    wait_http_ok,
)
from fanout.raw import H_DELIVERY_ID, header  # noqa: E402
from gateway.dev import samples  # noqa: E402
from gateway.dev.embedded import EmbeddedBroker, EmbeddedPostgres, free_port  # noqa: E402
from gateway.runtime.kafka import make_producer  # noqa: E402
from gateway.settings import Settings, load_settings  # noqa: E402
from provider_auth.accounts.store import Connection, ConnectionStore  # noqa: E402
from provider_auth.providers import Provider  # noqa: E402

QUICKBOOKS_TOKENS = ("bench-previous-verifier-token", "bench-current-verifier-token")
XERO_KEYS = ("bench-xero-webhook-key",)
COPY_TOPIC = "ledgerhook.bench.passthrough"
PARTITIONS = 6
RATIO_TARGET = 0.5
P99_TARGET_MS = 250.0
POLL_SECONDS = 0.02  # how often the drain watcher reads the end offsets of the output topic
READER_FETCH_WAIT_MS = 10  # the latency reader's own fetch wait: up to this much of a latency is its own
STALL_SECONDS = 60.0
FRESH_RECORD_IDS = 1_000_000  # the latency phase's QuickBooks record ids start here

Pids = Callable[[], set[int]]


# ---------------------------------------------------------------------------------------------
# Processes and CPU accounting


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command name) of every process right now."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            table[int(entry.name)] = (int(stat[stat.rindex(")") + 2 :].split()[1]), comm)
    return table


def tree(root: int | None) -> set[int]:
    """`root` and all its descendants (empty when `root` is None)."""
    if root is None:
        return set()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in process_table().items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def child_named(prefix: str) -> int | None:
    """The pid of this process's child whose command name starts with `prefix`."""
    me = os.getpid()
    for pid, (parent, comm) in process_table().items():
        if parent == me and comm.startswith(prefix):
            return pid
    return None


def only(pid: int) -> Pids:
    """A role of one process."""
    return lambda: {pid}


def postmaster_pid(data_dir: Path) -> int | None:
    """The PostgreSQL server's pid, from its `postmaster.pid` (its backends are its children)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    return None


def cpu_of(pids: set[int]) -> dict[int, float]:
    """User + system CPU seconds of each live process in `pids`."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            seconds[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


@dataclass
class CpuSnapshot:
    """CPU seconds per role and of the whole machine at one moment."""

    at: float
    machine: float
    roles: dict[str, dict[int, float]]


class CpuWatch:
    """Takes CPU snapshots of named roles (each a set of pids found at snapshot time)."""

    def __init__(self, roles: dict[str, Pids]) -> None:
        self.roles = roles

    def snapshot(self) -> CpuSnapshot:
        """CPU so far of every role's processes."""
        return CpuSnapshot(
            time.monotonic(),
            machine_busy_seconds(),
            {role: cpu_of(pids()) for role, pids in self.roles.items()},
        )

    @staticmethod
    def cores(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
        """Cores used by each role between two snapshots, plus `other` (the rest of the machine)."""
        elapsed = max(1e-9, after.at - before.at)
        used = {
            role: sum(cpu - before.roles[role].get(pid, 0.0) for pid, cpu in pids.items()) / elapsed
            for role, pids in after.roles.items()
        }
        used["other"] = max(0.0, (after.machine - before.machine) / elapsed - sum(used.values()))
        return used


class Child:
    """A subprocess of the benchmark, logging to a file; stopped with SIGTERM (SIGKILL after 30 s)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self._log: IO[bytes] = log.open("ab")
        self.log_path = log
        self.process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log
        )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def check(self) -> None:
        """Raise if the process has exited."""
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM, wait; SIGKILL if it does not stop."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class Profiler:
    """py-spy sampling one process until stopped (SIGINT makes it write its raw stacks)."""

    def __init__(self, pid: int, output: Path) -> None:
        self.output = output
        self._process = subprocess.Popen(
            [
                py_spy(),
                "record",
                "--pid",
                str(pid),
                "--rate",
                "100",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Stop sampling and wait for the output file."""
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@dataclass(frozen=True)
class Batches:
    """The worker's `ledgerhook_fanout_batch_seconds` histogram: batches so far and their total time."""

    count: float = 0.0
    seconds: float = 0.0

    def since(self, before: "Batches") -> "Batches":
        """The batches between two scrapes."""
        return Batches(self.count - before.count, self.seconds - before.seconds)

    @property
    def mean_ms(self) -> float:
        """Mean time of a batch, from poll to offset commit (NaN without batches)."""
        return self.seconds / self.count * 1000.0 if self.count else float("nan")


def scrape_metrics(port: int, prefixes: tuple[str, ...]) -> dict[str, float]:
    """Samples of the worker's /metrics whose name starts with one of `prefixes`, summed over their
    labels (empty when it does not answer)."""
    values: dict[str, float] = {}
    with (
        contextlib.suppress(OSError, ValueError),
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response,
    ):
        for line in response.read().decode().splitlines():
            sample, _, value = line.rpartition(" ")
            name = sample.partition("{")[0]
            if name.startswith(prefixes):
                values[name] = values.get(name, 0.0) + float(value)
    return values


def scrape_batches(port: int) -> Batches:
    """Read the worker's batch histogram from its /metrics (empty when it does not answer)."""
    values = scrape_metrics(port, ("ledgerhook_fanout_batch_seconds_",))
    return Batches(
        values.get("ledgerhook_fanout_batch_seconds_count", 0.0),
        values.get("ledgerhook_fanout_batch_seconds_sum", 0.0),
    )


def scrape_superseded(port: int) -> int:
    """Change events the worker dropped by reconciliation so far (`..._events_superseded_total`)."""
    total = "ledgerhook_fanout_events_superseded_total"
    return round(scrape_metrics(port, (total,)).get(total, 0.0))


# ---------------------------------------------------------------------------------------------
# Kafka helpers


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions, from fresh metadata."""
    await consumer.topics()
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


async def create_topic(settings: Settings, name: str) -> None:
    """Create `name` with the benchmark's partition count (the dev broker would pick its own)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, settings.topic_replication_factor)])
    finally:
        await admin.close()


async def preload(settings: Settings, deliveries: list[Delivery]) -> tuple[dict[int, int], float]:
    """Append every delivery to the raw topic as the gateway would.

    Returns the end offset of every partition, from the acknowledgements (the dev broker's
    ListOffsets answers the last batch's first offset + 1, not its end), and the seconds it took.
    """
    started = time.monotonic()
    producer = make_producer(settings)
    await producer.start()
    try:
        pending = []
        for delivery in deliveries:
            raw = raw_delivery(delivery)
            pending.append(
                await producer.send(settings.topic_raw, raw.body, key=raw.key, headers=raw.headers())
            )
        ends: dict[int, int] = {}
        for metadata in await asyncio.gather(*pending):
            ends[metadata.partition] = max(ends.get(metadata.partition, 0), metadata.offset + 1)
    finally:
        await producer.stop()
    return ends, time.monotonic() - started


async def read_topic(
    bootstrap: str,
    topic: str,
    at_least: int,
    on_record: Callable[[ConsumerRecord[bytes, bytes]], None] | None = None,
    settle: float = 1.5,
) -> int:
    """Read `topic` from the beginning: at least `at_least` records, then until nothing new for `settle` s.

    Counts by reading, not by end offsets (see `preload`); returns how many records it read.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024
    )
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records = 0
        quiet_since = time.monotonic()
        deadline = quiet_since + 300.0
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for part in batch.values():
                records += len(part)
                if on_record is not None:
                    for record in part:
                        on_record(record)
            now = time.monotonic()
            if batch:
                quiet_since = now
            elif records >= at_least and now - quiet_since >= settle:
                break
        return records
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class TopicCheck:
    """What the changes topic holds, compared with the expected event ids."""

    records: int
    distinct: int
    missing: int
    unexpected: int
    # Events the worker dropped by reconciliation (its own counter), and how many it must drop.
    superseded: int = 0
    expected_superseded: int = 0

    @property
    def ok(self) -> bool:
        """Exactly the expected events, each once, and exactly the expected drops."""
        return (
            self.records == self.distinct
            and not self.missing
            and not self.unexpected
            and self.superseded == self.expected_superseded
        )


async def check_events(
    bootstrap: str, topic: str, expected: set[str], superseded: int = 0, expected_superseded: int = 0
) -> TopicCheck:
    """Read the whole topic and compare its `ce_id`s with `expected` (and the drops with theirs)."""
    ids: set[str] = set()

    def note(record: ConsumerRecord[bytes, bytes]) -> None:
        ids.update(value.decode() for key, value in record.headers if key == "ce_id")

    records = await read_topic(bootstrap, topic, len(expected), note)
    return TopicCheck(
        records, len(ids), len(expected - ids), len(ids - expected), superseded, expected_superseded
    )


# ---------------------------------------------------------------------------------------------
# Drain phases


@dataclass
class Drain:
    """One target draining the pre-loaded raw topic (its consumer group's commits tell the progress)."""

    target: str
    records_in: int
    changes_in: int
    records_out: int  # the output the whole raw topic makes: copies, or expected events
    first_at: float = 0.0
    first_committed: int = 0
    done_at: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    batches: Batches | None = None  # the worker's own batch histogram over the whole drain

    @property
    def seconds(self) -> float:
        """From the first commit seen to the last."""
        return self.done_at - self.first_at

    @property
    def raw_per_second(self) -> float:
        """Raw records consumed (their output acknowledged, their offsets committed) per second."""
        return (self.records_in - self.first_committed) / self.seconds if self.seconds > 0 else 0.0

    @property
    def out_per_second(self) -> float:
        """Output records per second: copies, or change events."""
        return self.raw_per_second * self.records_out / self.records_in

    @property
    def changes_per_second(self) -> float:
        """Changes carried per second."""
        return self.raw_per_second * self.changes_in / self.records_in


async def watch_drain(
    drain: Drain,
    bootstrap: str,
    topic: str,
    group_id: str,
    ends: dict[int, int],
    child: Child,
    cpu: CpuWatch,
    on_first: Callable[[], None] | None = None,
) -> None:
    """Poll the group's committed offsets on `topic` until they reach `ends`; fill in timings and CPU.

    Both the worker and the pass-through commit a batch only after its output is acknowledged, so
    when the commits reach the end, every output record is on its topic.
    """
    # A consumer of the group that never subscribes: it only fetches the group's committed offsets.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(ends)]
        before: CpuSnapshot | None = None
        progress_at, last = time.monotonic(), -1
        while True:
            committed = sum([(await consumer.committed(tp)) or 0 for tp in partitions])
            now = time.monotonic()
            if committed and before is None:
                before = cpu.snapshot()
                drain.first_at, drain.first_committed = now, committed
                if on_first is not None:
                    on_first()
            if committed >= drain.records_in:
                assert before is not None
                drain.done_at = now
                drain.cpu = CpuWatch.cores(before, cpu.snapshot())
                return
            if committed != last:
                progress_at, last = now, committed
            elif now - progress_at > STALL_SECONDS:
                raise RuntimeError(f"{drain.target}: stuck at {committed} of {drain.records_in} raw records")
            child.check()
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await consumer.stop()


# ---------------------------------------------------------------------------------------------
# Latency phase


@dataclass
class Latency:
    """End-to-end latency at a fixed offered rate."""

    rate: float
    duration: float
    reader_wait_ms: int
    posted: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    events_expected: int = 0
    events_read: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # events of deliveries due inside the window
    ack_ms: list[float] = field(default_factory=list)
    raw_ms: list[float] = field(default_factory=list)  # due time -> raw record read
    send_lag_ms: list[float] = field(default_factory=list)
    reconnects: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    batches: Batches = field(default_factory=Batches)  # the worker's batches over the window

    @property
    def non_200(self) -> int:
        """Deliveries not answered 200 (other statuses, unanswered, cut connections)."""
        return sum(n for status, n in self.statuses.items() if status != "200")


def latency_pool(
    rng: random.Random,
    accounts: list[Account],
    connections: dict[tuple[Provider, str], list[Connection]],
    count: int,
    changes: tuple[int, int],
) -> tuple[list[tuple[str, dict[str, str], bytes]], list[int]]:
    """`count` signed deliveries (one account each) and the number of events each must produce.

    Each change names a record of its own (the drain's QuickBooks ids stop at 99,999): the POSTs
    reach the worker in no fixed order, so which of two changes of one record reconciliation keeps
    could not be known; on records of their own, every change yields its events.
    """
    weights = activity_weights(len(accounts))
    fresh_ids = itertools.count(FRESH_RECORD_IDS)
    pool = []
    events = []
    for _ in range(count):
        delivery = with_fresh_records(make_delivery(rng, accounts, weights, changes, changes), fresh_ids)
        if delivery.provider is Provider.QUICKBOOKS:
            signed = samples.signed_quickbooks(delivery.body, QUICKBOOKS_TOKENS[1])
        else:
            signed = samples.signed_xero(delivery.body, XERO_KEYS[0])
        pool.append((WEBHOOK_PATHS[delivery.provider], signed.headers, signed.body))
        events.append(delivery.changes * len(connections[(delivery.provider, delivery.accounts[0])]))
    return pool, events


@dataclass
class Sightings:
    """When the latency reader saw each delivery: its raw record, and each of its events."""

    raw: dict[str, float] = field(default_factory=dict)
    events: dict[str, list[float]] = field(default_factory=dict)


async def read_latencies(
    settings: Settings, ready: asyncio.Event, stop: asyncio.Event, seen: Sightings, fetch_wait_ms: int
) -> None:
    """Read what arrives on the raw and the changes topics until `stop`, by delivery id.

    The raw record's time splits the latency in two: gateway and broker up to it, the worker after.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_wait_ms,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = [
            *await partitions_of(consumer, settings.topic_raw),
            *await partitions_of(consumer, settings.topic_changes),
        ]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # resolve the end offsets before the first POST
        ready.set()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.monotonic()
            for tp, part in batch.items():
                for record in part:
                    if tp.topic == settings.topic_raw:
                        seen.raw[header(record.headers, H_DELIVERY_ID) or ""] = now
                    else:
                        delivery_id = orjson.loads(record.value or b"{}").get("delivery_id")
                        seen.events.setdefault(delivery_id, []).append(now)
    finally:
        await consumer.stop()


async def measure_latency(
    args: argparse.Namespace,
    tmp: Path,
    settings: Settings,
    gateway_port: int,
    pool: list[tuple[str, dict[str, str], bytes]],
    events_per_delivery: list[int],
    cpu: CpuWatch,
    profilers: Callable[[], list[Profiler]],
    batches: Callable[[], Batches],
) -> Latency:
    """Post the pool at `args.rate` (open loop) and time every event from its POST's due time."""
    result = Latency(args.rate, args.duration, args.reader_fetch_wait_ms)
    pool_path = tmp / "latency-pool.json"
    write_pool(pool_path, pool)
    seen = Sightings()
    ready, stop = asyncio.Event(), asyncio.Event()
    reader = asyncio.create_task(read_latencies(settings, ready, stop, seen, args.reader_fetch_wait_ms))
    await ready.wait()
    result_path = tmp / "poster-result.json"
    poster = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fanout_poster",
        "--pool",
        str(pool_path),
        "--port",
        str(gateway_port),
        "--rate",
        str(args.rate),
        "--connections",
        str(args.post_connections),
        "--result",
        str(result_path),
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

    window = (begin + args.latency_warmup, begin + args.latency_warmup + args.duration)
    await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
    before = cpu.snapshot()
    batches_before = await asyncio.to_thread(batches)
    running = profilers()
    await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
    result.cpu = CpuWatch.cores(before, cpu.snapshot())
    result.batches = (await asyncio.to_thread(batches)).since(batches_before)
    for profiler in running:
        profiler.stop()
    if await poster.wait() != 0:
        raise RuntimeError(f"poster exited with {poster.returncode}")
    del cpu.roles["poster"]

    posted = orjson.loads(result_path.read_bytes())
    interval = posted["interval"]
    result.posted = len(pool)
    result.reconnects = posted["reconnects"]
    result.statuses = {}
    for status in posted["status"]:
        result.statuses[str(status)] = result.statuses.get(str(status), 0) + 1
    answered = {
        index: delivery_id
        for index, (status, delivery_id) in enumerate(
            zip(posted["status"], posted["delivery_ids"], strict=True)
        )
        if status == 200 and delivery_id
    }
    result.events_expected = sum(events_per_delivery[index] for index in answered)

    def read_so_far() -> int:
        return sum(len(seen.events.get(delivery_id, ())) for delivery_id in answered.values())

    deadline = time.monotonic() + 30.0
    while read_so_far() < result.events_expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    await reader
    result.events_read = read_so_far()
    for index, delivery_id in answered.items():
        due = begin + index * interval
        if window[0] <= due < window[1]:
            result.latencies_ms.extend((at - due) * 1000.0 for at in seen.events.get(delivery_id, ()))
            if delivery_id in seen.raw:
                result.raw_ms.append((seen.raw[delivery_id] - due) * 1000.0)
            result.ack_ms.append(posted["ack_ms"][index])
            result.send_lag_ms.append(posted["send_lag_ms"][index])
    return result


# ---------------------------------------------------------------------------------------------
# Report


def fmt(value: float) -> str:
    """A count or rate with thousands separators."""
    return f"{value:,.0f}"


def format_drains(drains: list[Drain]) -> str:
    """One row per drain target."""
    title = (
        f"{'target':<13} {'records out':>11} {'seconds':>8} {'raw rec/s':>10} {'changes/s':>10} "
        f"{'out rec/s':>10} {'process':>8} {'broker':>7} {'postgres':>8} {'bench':>6} {'other':>6}"
    )
    lines = [title, "-" * len(title)]
    for d in drains:
        c = d.cpu
        lines.append(
            f"{d.target:<13} {fmt(d.records_out):>11} {d.seconds:>8.2f} {fmt(d.raw_per_second):>10} "
            f"{fmt(d.changes_per_second):>10} {fmt(d.out_per_second):>10} {c['process']:>8.0%} "
            f"{c['broker']:>7.0%} {c['postgres']:>8.0%} {c['bench']:>6.0%} {c['other']:>6.0%}"
        )
    return "\n".join(lines)


def format_latency(lat: Latency) -> str:
    """The latency row and its CPU."""
    q = lat.latencies_ms
    title = (
        f"{'latency':<13} {'events':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'ack p50':>7} {'ack p99':>7} {'raw p50':>7} {'raw p99':>7} {'non-200':>7} {'missing':>7}"
    )
    row = (
        f"{f'{lat.rate:g}/s':<13} {len(q):>7} {percentile(q, 0.5):>7.1f} {percentile(q, 0.9):>7.1f} "
        f"{percentile(q, 0.99):>7.1f} {percentile(q, 1.0):>7.1f} {percentile(lat.ack_ms, 0.5):>7.1f} "
        f"{percentile(lat.ack_ms, 0.99):>7.1f} {percentile(lat.raw_ms, 0.5):>7.1f} "
        f"{percentile(lat.raw_ms, 0.99):>7.1f} {lat.non_200:>7} {lat.events_expected - lat.events_read:>7}"
    )
    cpu = ", ".join(f"{role} {share:.0%}" for role, share in lat.cpu.items())
    return "\n".join([title, "-" * len(title), row, f"  CPU over the window: {cpu}"])


# ---------------------------------------------------------------------------------------------
# Main


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Fan-out benchmark: worker vs pass-through, end-to-end latency."
    )
    parser.add_argument(
        "--changes", type=int, default=60_000, help="changes pre-loaded on the raw topic (>= 50,000)"
    )
    parser.add_argument("--quickbooks-accounts", type=int, default=180, help="QuickBooks realms")
    parser.add_argument("--xero-accounts", type=int, default=120, help="Xero organisations")
    parser.add_argument(
        "--shared", type=float, default=0.2, help="share of accounts connected by a second tenant"
    )
    parser.add_argument("--rate", type=float, default=500.0, help="latency phase: deliveries per second")
    parser.add_argument("--duration", type=float, default=15.0, help="latency phase: measured seconds")
    parser.add_argument(
        "--latency-warmup", type=float, default=3.0, help="latency phase: seconds before the window"
    )
    parser.add_argument(
        "--post-changes",
        type=int,
        nargs=2,
        default=(1, 3),
        metavar=("MIN", "MAX"),
        help="latency phase: changes per delivery",
    )
    parser.add_argument(
        "--post-connections", type=int, default=32, help="latency phase: keep-alive connections"
    )
    parser.add_argument(
        "--reader-fetch-wait-ms",
        type=int,
        default=READER_FETCH_WAIT_MS,
        help="latency phase: fetch_max_wait_ms of the reader that timestamps events",
    )
    parser.add_argument("--seed", type=int, default=20_26, help="seed of the workload")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each phase, wait up to SECONDS for other work on the machine to stop",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample the worker (and the gateway) with py-spy; raw stacks and hot spots in DIR",
    )
    parser.add_argument(
        "--passthrough-rounds", type=int, default=3, help="pass-through drains (the median is the baseline)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="LEDGERHOOK_WORKER_BATCH_SIZE for the worker and the pass-through (default: the setting's)",
    )
    parser.add_argument(
        "--reconcile-webhooks",
        choices=("on", "off"),
        default="on",
        help="LEDGERHOOK_RECONCILE_WEBHOOKS for the worker (default: on, the setting's default)",
    )
    parser.add_argument("--skip-latency", action="store_true", help="only the drain phases")
    return parser.parse_args()


def migrated(
    database_url: str, bootstrap: str, env: dict[str, str], data_dir: Path
) -> tuple[Settings, dict[str, Pids]]:
    """The run's settings once `ledgerhook migrate` has run (it also creates the topics with
    PARTITIONS partitions; the dev broker would pick its own count), and how to find the broker's,
    PostgreSQL's and this process's pids for the CPU watch."""
    settings = load_settings(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        kafka_idempotent_producer=False,
        topic_partitions=PARTITIONS,
    )
    run_migrate(env)
    broker_pid = child_named("tansu")
    common: dict[str, Pids] = {
        "broker": only(broker_pid) if broker_pid else set,
        "postgres": lambda: tree(postmaster_pid(data_dir)),
        "bench": only(os.getpid()),
    }
    return settings, common


def bench_env(database_url: str, bootstrap: str) -> dict[str, str]:
    """The `LEDGERHOOK_*` configuration every process of the run shares."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERHOOK_")}
    return base | {
        "LEDGERHOOK_DATABASE_URL": database_url,
        "LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LEDGERHOOK_KAFKA_IDEMPOTENT_PRODUCER": "false",  # the dev broker lacks it
        "LEDGERHOOK_TOPIC_PARTITIONS": str(PARTITIONS),
        "LEDGERHOOK_LOG_LEVEL": "WARNING",
        "LEDGERHOOK_QUICKBOOKS_VERIFIER_TOKENS": ",".join(QUICKBOOKS_TOKENS),
        "LEDGERHOOK_XERO_WEBHOOK_KEYS": ",".join(XERO_KEYS),
        "LEDGERHOOK_HOST": "127.0.0.1",
        "LEDGERHOOK_WORKERS": "1",
        "LEDGERHOOK_SHUTDOWN_DRAIN_SECONDS": "0",
    }


@dataclass
class Stack:
    """What every phase of one run shares: the servers, the configuration, the CPU roles."""

    args: argparse.Namespace
    tmp: Path
    env: dict[str, str]
    settings: Settings
    common: dict[str, Pids]  # CPU roles watched in every phase
    children: list[Child] = field(default_factory=list)
    profiles: list[Path] = field(default_factory=list)

    def start(self, name: str, command: list[str], extra_env: dict[str, str] | None = None) -> Child:
        """Start a subprocess with the run's configuration; it is stopped when the run ends."""
        log = self.tmp / f"{name.replace(' ', '-')}.log"
        child = Child(name, [sys.executable, *command], self.env | (extra_env or {}), log)
        self.children.append(child)
        return child

    def profiler(self, pid: int, name: str) -> Profiler | None:
        """A py-spy sampler on `pid` when --profile is set."""
        if self.args.profile is None:
            return None
        output = self.args.profile / f"{name}.txt"
        self.profiles.append(output)
        return Profiler(pid, output)


@dataclass
class Workload:
    """The pre-loaded raw topic and what the run expects of it."""

    accounts: list[Account]
    connections: dict[tuple[Provider, str], list[Connection]]
    deliveries: list[Delivery]
    expected: Expected
    ends: dict[int, int]  # end offset of every raw partition


async def prepare_workload(stack: Stack, rng: random.Random) -> Workload:
    """Register the connections, pre-load the raw topic, and say what it holds."""
    args, settings = stack.args, stack.settings
    started = time.monotonic()
    accounts = make_accounts(rng, args.quickbooks_accounts, args.xero_accounts, args.shared)
    pool = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2)
    try:
        connections = await register(ConnectionStore(pool, keyring=None), accounts)
    finally:
        await pool.close()
    deliveries = make_deliveries(rng, accounts, args.changes)
    expected = expected_events(deliveries, connections, reconcile=args.reconcile_webhooks == "on")
    ends, preload_seconds = await preload(settings, deliveries)
    if sum(ends.values()) != len(deliveries):
        raise RuntimeError(f"raw topic: {sum(ends.values())} records for {len(deliveries)} deliveries")
    sizes = sorted(len(d.body) for d in deliveries)
    print(
        f"workload: {len(accounts)} accounts ({args.quickbooks_accounts} QuickBooks realms, "
        f"{args.xero_accounts} Xero organisations), {sum(len(a.tenants) > 1 for a in accounts)} of them "
        f"also connected by a practice: {sum(map(len, connections.values()))} connections"
    )
    print(
        f"raw topic: {fmt(len(deliveries))} deliveries (QuickBooks CloudEvents batches of 1-10 changes, "
        f"Xero batches of 1-5, {sum(len(d.accounts) > 1 for d in deliveries)} Xero batches mixing two "
        f"organisations), {sizes[0]}-{sizes[-1]} bytes, {fmt(expected.changes)} changes -> "
        f"{fmt(len(expected.event_ids))} events expected; {PARTITIONS} partitions; prepared in "
        f"{time.monotonic() - started:.1f}s (pre-load {preload_seconds:.1f}s)"
    )
    print(
        f"  webhook reconciliation {args.reconcile_webhooks} (LEDGERHOOK_RECONCILE_WEBHOOKS): "
        f"{expected.superseded} events it must drop (an older or equal version of their record)"
    )
    if expected.repeats:
        print(f"  note: {expected.repeats} changes repeat an earlier event id (dedupe drops them)")
    return Workload(accounts, connections, deliveries, expected, ends)


async def drain_passthrough(stack: Stack, work: Workload) -> list[tuple[Drain, int]]:
    """The baseline, `--passthrough-rounds` times (each a group and a copy topic of its own, as its
    drain is short); returns every round's drain and how many copies its topic holds."""
    settings = stack.settings
    rounds = []
    for index in range(stack.args.passthrough_rounds):
        topic, group = f"{COPY_TOPIC}.{index}", f"ledgerhook-bench-passthrough-{index}"
        await create_topic(settings, topic)
        wait_for_quiet(stack.args.wait_quiet)
        copier = stack.start(
            f"pass-through {index}", ["-m", "bench.fanout_passthrough", "--to", topic, "--group", group]
        )
        drain = Drain("pass-through", len(work.deliveries), work.expected.changes, len(work.deliveries))
        cpu = CpuWatch(stack.common | {"process": only(copier.pid)})
        await watch_drain(
            drain, settings.kafka_bootstrap_servers, settings.topic_raw, group, work.ends, copier, cpu
        )
        copier.stop()
        rounds.append(
            (drain, await read_topic(settings.kafka_bootstrap_servers, topic, len(work.deliveries)))
        )
    return rounds


async def drain_worker(stack: Stack, work: Workload) -> tuple[Child, int, Drain, TopicCheck, int]:
    """`ledgerhook worker` on the same records, checked event by event; it is left running.

    Returns the worker, its metrics port, its drain, the check of the changes topic (with the
    worker's count of events dropped by reconciliation) and how many records the quarantine topic
    holds.
    """
    wait_for_quiet(stack.args.wait_quiet)
    settings = stack.settings
    port = free_port()
    worker = stack.start(
        "ledgerhook worker", ["-m", "gateway.cli", "worker"], {"LEDGERHOOK_WORKER_PORT": str(port)}
    )
    drain = Drain("worker", len(work.deliveries), work.expected.changes, len(work.expected.event_ids))
    sampling: list[Profiler] = []

    def start_profile() -> None:
        profiler = stack.profiler(worker.pid, "worker-drain")
        if profiler is not None:
            sampling.append(profiler)

    cpu = CpuWatch(stack.common | {"process": only(worker.pid)})
    await watch_drain(
        drain,
        settings.kafka_bootstrap_servers,
        settings.topic_raw,
        settings.worker_group_id,
        work.ends,
        worker,
        cpu,
        start_profile,
    )
    for profiler in sampling:
        profiler.stop()
    drain.batches = await asyncio.to_thread(scrape_batches, port)
    superseded = await asyncio.to_thread(scrape_superseded, port)
    check = await check_events(
        settings.kafka_bootstrap_servers,
        settings.topic_changes,
        work.expected.event_ids,
        superseded,
        work.expected.superseded,
    )
    quarantined = await read_topic(settings.kafka_bootstrap_servers, settings.topic_quarantine, 0)
    return worker, port, drain, check, quarantined


async def latency_phase(
    stack: Stack, work: Workload, worker: Child, worker_port: int, rng: random.Random
) -> Latency:
    """`ledgerhook serve` next to the running worker, signed deliveries at a fixed rate."""
    args = stack.args
    gateway_port = free_port()
    gateway = stack.start(
        "ledgerhook serve", ["-m", "gateway.cli", "serve"], {"LEDGERHOOK_PORT": str(gateway_port)}
    )
    await asyncio.to_thread(wait_http_ok, f"http://127.0.0.1:{gateway_port}/readyz", gateway.process)
    count = round(args.rate * (args.latency_warmup + args.duration))
    changes = (args.post_changes[0], args.post_changes[1])
    pool, events_per_delivery = latency_pool(rng, work.accounts, work.connections, count, changes)
    wait_for_quiet(args.wait_quiet)

    def profilers() -> list[Profiler]:
        found = [stack.profiler(worker.pid, "worker-latency"), stack.profiler(gateway.pid, "gateway-latency")]
        return [p for p in found if p is not None]

    cpu = CpuWatch(stack.common | {"gateway": only(gateway.pid), "worker": only(worker.pid)})
    return await measure_latency(
        args,
        stack.tmp,
        stack.settings,
        gateway_port,
        pool,
        events_per_delivery,
        cpu,
        profilers,
        lambda: scrape_batches(worker_port),
    )


async def run(args: argparse.Namespace, tmp: Path) -> bool:
    """The whole benchmark; prints as it goes and returns False when a check failed."""
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
        env["LEDGERHOOK_RECONCILE_WEBHOOKS"] = "true" if args.reconcile_webhooks == "on" else "false"
        if args.batch_size is not None:
            env["LEDGERHOOK_WORKER_BATCH_SIZE"] = str(args.batch_size)
        settings, common = migrated(database_url, broker.bootstrap, env, data_dir)
        stack = Stack(args, tmp, env, settings, common)
        work = await prepare_workload(stack, rng)
        copies = await drain_passthrough(stack, work)
        worker, worker_port, drain, check, quarantined = await drain_worker(stack, work)
        latency = None if args.skip_latency else await latency_phase(stack, work, worker, worker_port, rng)
    finally:
        for child in reversed(stack.children if stack else []):
            child.stop()
        broker.stop()
        postgres.stop()
    return report(copies, drain, check, quarantined, latency, stack.profiles, args.reconcile_webhooks)


def report(
    copies: list[tuple[Drain, int]],
    worker: Drain,
    check: TopicCheck,
    quarantined: int,
    latency: Latency | None,
    profiles: list[Path],
    reconcile_webhooks: str,
) -> bool:
    """Print the tables, the checks and the summary line; False when a check failed."""
    rounds = [drain for drain, _ in copies]
    for number, drain in enumerate(rounds, 1):
        drain.target = f"pass-through{'' if len(rounds) == 1 else f' {number}'}"
    passthrough = sorted(rounds, key=lambda d: d.raw_per_second)[len(rounds) // 2]
    print()
    print(format_drains([*rounds, worker]))
    print(
        "  Each target drains the same pre-loaded raw records, timed from its consumer group's first\n"
        "  offset commit to its last (a batch is committed once its output is acknowledged).\n"
        "  raw rec/s, changes/s: input drained per second; out rec/s: copies (pass-through) or change\n"
        f"  events (worker). CPU: share of one core ({os.cpu_count()} cores); process = the pass-through\n"
        "  or `ledgerhook worker`; other = the rest of the machine.\n"
        f"  Baseline: {passthrough.target}{' (the median round)' if len(rounds) > 1 else ''}."
        " Ratio: out rec/s, the records each target publishes per second\n"
        "  (an event for the worker, a copy for the pass-through); the drain ratio compares raw rec/s,\n"
        f"  where the worker publishes {worker.records_out / worker.records_in:.2f} events per raw record"
        " and the pass-through one copy."
    )
    if worker.batches is not None and worker.batches.count:
        print(
            f"  worker batches (its own histogram, whole drain): {worker.batches.count:.0f}, "
            f"mean {worker.batches.mean_ms:.1f} ms from poll to offset commit."
        )
    copies_ok = all(copied == drain.records_in for drain, copied in copies)
    ok = check.ok and quarantined == 0 and copies_ok
    print(
        f"exact: changes topic holds {fmt(check.records)} events for {fmt(worker.records_out)} expected "
        f"({fmt(check.distinct)} distinct ids, {check.missing} missing, {check.unexpected} unexpected, "
        f"{check.records - check.distinct} repeated); superseded {check.superseded} for "
        f"{check.expected_superseded} expected; quarantine {quarantined}; pass-through copies "
        f"{' '.join(fmt(copied) for _, copied in copies)} of {fmt(worker.records_in)}: "
        f"{'OK' if ok else 'MISMATCH'}"
    )
    if latency is not None:
        print()
        print(format_latency(latency))
        print(
            f"  From each POST's due time (open loop, {latency.rate:g} deliveries/s, {latency.duration:g}s"
            " window) to the moment the event is\n"
            "  read on ledgerhook.changes, matched by delivery id; ack = the POST's 200; raw = its raw\n"
            f"  record read (gateway and broker; the rest is the worker). Client send lag p99 "
            f"{percentile(latency.send_lag_ms, 0.99):.1f} ms; reader fetch wait {latency.reader_wait_ms} ms."
            "\n"
            f"  Worker batches over the window: {latency.batches.count / latency.duration:.1f}/s, mean "
            f"{latency.batches.mean_ms:.1f} ms from poll to offset commit."
        )
        if latency.non_200 or latency.events_read != latency.events_expected:
            ok = False
            print(
                f"  {latency.non_200} deliveries not answered 200 ({latency.statuses}); "
                f"{latency.events_read} of {latency.events_expected} events read"
            )
    busiest = max((d.cpu.get("other", 0.0) for d in [*rounds, worker]), default=0.0)
    if latency is not None:
        busiest = max(busiest, latency.cpu.get("other", 0.0))
    if busiest > 0.25:
        print(
            f"  warning: other processes used up to {busiest:.0%} of a core during a window; "
            "the figures are disturbed, rerun on a quiet machine"
        )
    if profiles:
        print("profiles (py-spy, 100 Hz; figures above are from a profiled run):")
        for path in profiles:
            if path.exists():
                lines = profile_hot_spots(path, 15)
                path.with_name(path.stem + "-hot-spots.txt").write_text("\n".join(lines) + "\n")
                print("\n".join(lines))

    ratio = worker.out_per_second / passthrough.out_per_second if passthrough.out_per_second else 0.0
    drain_ratio = worker.raw_per_second / passthrough.raw_per_second if passthrough.raw_per_second else 0.0
    line = (
        f"fanout: worker {fmt(worker.out_per_second)} events/s vs pass-through "
        f"{fmt(passthrough.out_per_second)} records/s (ratio {ratio:.2f}, target >= {RATIO_TARGET}; "
        f"raw records drained: ratio {drain_ratio:.2f})"
    )
    if latency is not None:
        line += (
            f"; end-to-end p50 {percentile(latency.latencies_ms, 0.5):.0f} ms, "
            f"p99 {percentile(latency.latencies_ms, 0.99):.0f} ms at {latency.rate:g}/s "
            f"(target <= {P99_TARGET_MS:g} ms)"
        )
    line += f"; webhook reconciliation {reconcile_webhooks}"
    print(line + ("" if ok else "; CHECK FAILED"))
    return ok


def main() -> int:
    """Run the benchmark; exit 1 when a check failed."""
    args = parse_args()
    if args.profile is not None:
        py_spy()  # fail before the run, not after it
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ledgerhook-bench-fanout-") as tmp_name:
        ok = asyncio.run(run(args, Path(tmp_name)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
