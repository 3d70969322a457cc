"""Ingest benchmark: signed QuickBooks deliveries against `ledgerhook serve` and a bare baseline.

Starts an embedded PostgreSQL and an embedded broker in a temporary directory, runs
`ledgerhook migrate`, then measures two targets with the same load generator (bench/loadgen.py)
and the same uvicorn settings:

- `bare`: bench/bare_app.py, a Starlette endpoint that only reads the body and checks the HMAC;
- `ledgerhook`: `ledgerhook serve` (one worker), which also appends each delivery to the raw topic
  and waits for the broker's acknowledgement before its 200.

Both servers run side by side, each on its own port (the idle one costs no CPU), and are measured
in turns close in time, because on a shared machine the CPU speed drifts within minutes and two
figures taken a minute apart are mostly noise:

- saturation (closed loop, keep-alive connections, after a warm-up), in `--rounds` rounds: in each
  round every target runs one phase, targets alternating (bare, ledgerhook, bare, ledgerhook, ...);
- then, once per target, ack latency at a fixed offered rate (open loop, measured from each
  request's scheduled time).

The summary gives each target's median deliveries/s over the rounds and the median of the
per-round ratios (ledgerhook / bare in the same round), with the ratio of every round.
At the end the raw topic is read back: it must hold exactly one record per 200 the gateway gave
over all its phases, each with a body that was sent, or the run fails.

Run: `python bench/ingest.py` (see `--help` and bench/README.md).
"""

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/ingest.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402

from bench.loadgen import write_pool  # noqa: E402
from gateway.dev import samples  # noqa: E402
from gateway.dev.embedded import EmbeddedBroker, EmbeddedPostgres, free_port  # noqa: E402
from gateway.ingress.delivery import H_DELIVERY_ID  # noqa: E402

VERIFIER_TOKENS = ("bench-previous-verifier-token", "bench-current-verifier-token")
RAW_TOPIC = "ledgerhook.webhooks.raw"
WEBHOOK_PATH = "/webhooks/quickbooks"
RATIO_TARGET = 0.6
BUSY_OTHER_CPU = 0.25  # other work above this share of a core during a window disturbs the figures
P99_TARGET_MS = 25.0


# ---------------------------------------------------------------------------------------------
# Deliveries


@dataclass
class Pool:
    """Pre-signed deliveries on disk for the load generators, and their digests for verification."""

    path: Path
    size: int
    digests: set[bytes]
    min_bytes: int
    max_bytes: int


def make_pool(path: Path, size: int, seed: int) -> Pool:
    """`size` distinct QuickBooks CloudEvents batches of 1-3 KB, each signed like Intuit would."""
    rng = random.Random(seed)
    realms = [str(rng.randint(10**9, 10**10 - 1)) for _ in range(200)]
    deliveries: list[tuple[str, bytes]] = []
    digests: set[bytes] = set()
    for _ in range(size):
        # 4 to 9 events make 1.2 to 2.8 KB, the range of real QuickBooks batches.
        body = samples.quickbooks_cloudevents(rng.choice(realms), rng.randint(4, 9), rng)
        signed = samples.signed_quickbooks(body, VERIFIER_TOKENS[1])
        deliveries.append((signed.headers["intuit-signature"], body))
        digests.add(hashlib.sha1(body, usedforsecurity=False).digest())
    if len(digests) != size:
        raise RuntimeError("sample bodies are not distinct")
    write_pool(path, deliveries)
    lengths = [len(body) for _, body in deliveries]
    return Pool(path, size, digests, min(lengths), max(lengths))


# ---------------------------------------------------------------------------------------------
# Processes and CPU accounting


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by all cores so far (from /proc/stat; 0 when unavailable)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait: float, threshold: float = 0.2) -> None:
    """Wait (at most `max_wait` s) until the machine is busy less than `threshold` cores over 1 s.

    For shared machines: other work during a window skews every figure, so start when it is quiet.
    """
    deadline = time.monotonic() + max_wait
    while max_wait > 0:
        before = machine_busy_seconds()
        time.sleep(1.0)
        busy = machine_busy_seconds() - before
        if busy < threshold:
            return
        if time.monotonic() >= deadline:
            print(f"  (the machine is still busy, {busy:.0%} of a core, after {max_wait:.0f}s; measuring)")
            return


def child_pid(name_prefix: str) -> int | None:
    """The pid of this process's child whose command name starts with `name_prefix`."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            if stat[stat.rindex(")") + 2 :].split()[1] == me and comm.startswith(name_prefix):
                return int(entry.name)
    return None


def wait_http_ok(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until `url` answers 200, failing early if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered 200")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=2) as response,  # noqa: S310 (a loopback URL we built)
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f}s")


def run_migrate(env: dict[str, str]) -> None:
    """`ledgerhook migrate` with `env`: the schema, and the topics with their partitions (the dev
    broker would pick its own count)."""
    command = [sys.executable, "-m", "gateway.cli", "migrate"]
    subprocess.run(command, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


@contextlib.contextmanager
def server_process(command: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[int]:
    """Run a server subprocess until the block ends; yields its pid once `ready_url` answers 200."""
    with log.open("ab") as err:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stderr=err)
        try:
            wait_http_ok(ready_url, process)
            yield process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ---------------------------------------------------------------------------------------------
# Load phases


@dataclass
class Phase:
    """The merged results of one load phase against one target."""

    target: str
    name: str
    duration: float
    ok_window: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    send_lag_ms: list[float] = field(default_factory=list)
    status_total: Counter[str] = field(default_factory=Counter)
    status_window: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0
    reconnects: int = 0
    sent_max: int = 0
    server_cpu: float = 0.0
    broker_cpu: float = 0.0
    client_cpu: float = 0.0
    machine_cpu: float = 0.0
    attempts: int = 1  # more when a busy machine made the phase run again
    discarded: Counter[str] = field(default_factory=Counter)  # answers during attempts not kept

    @property
    def ok_per_second(self) -> float:
        """200s answered inside the window, per second."""
        return self.ok_window / self.duration

    @property
    def server_us_per_ok(self) -> float:
        """Server CPU microseconds per 200 inside the window (NaN without 200s)."""
        if not self.ok_window:
            return float("nan")
        return self.server_cpu / self.ok_per_second * 1e6

    @property
    def non_200(self) -> int:
        """Answers other than 200 (and requests never answered) over the whole phase."""
        answers = self.status_total + self.discarded
        return sum(n for status, n in answers.items() if status != "200") + self.unanswered

    @property
    def other_cpu(self) -> float:
        """Machine CPU not used by the server, the broker or the load generator (other work)."""
        return max(0.0, self.machine_cpu - self.server_cpu - self.broker_cpu - self.client_cpu)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the 200s' latencies, in ms (NaN without samples)."""
        return percentile(self.latencies_ms, q)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile `q` (0-1) of `values` (NaN when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


@dataclass(frozen=True)
class LoadSettings:
    """How hard and how long to push."""

    connections: int
    processes: int
    rate: float
    closed_warmup: float
    open_warmup: float
    duration: float


@dataclass(frozen=True)
class Server:
    """A running target: its name, the port it listens on and its pid."""

    target: str
    port: int
    pid: int


def run_phase(
    target: str,
    mode: str,
    name: str,
    port: int,
    pool: Pool,
    load: LoadSettings,
    offset: int,
    watch: dict[str, int | None],
    profile_to: Path | None = None,
) -> Phase:
    """Run the load generators once against `port` and merge what they report.

    `watch` maps roles ("server", "broker") to the pids whose CPU is measured over the window.
    With `profile_to`, py-spy samples the server over the measurement window into that file.
    """
    warmup = load.closed_warmup if mode == "closed" else load.open_warmup
    phase = Phase(target, name, load.duration)
    per_process = max(1, load.connections // load.processes)
    procs = []
    for index in range(load.processes):
        command = [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--pool",
            str(pool.path),
            "--port",
            str(port),
            "--path",
            WEBHOOK_PATH,
            "--mode",
            mode,
            "--connections",
            str(per_process),
            "--rate",
            str(load.rate / load.processes),
            "--warmup",
            str(warmup),
            "--duration",
            str(load.duration),
            "--offset",
            str(offset + index),
            "--stride",
            str(load.processes),
            "--result",
            str(pool.path.with_name(f"result-{index}.json")),
        ]
        procs.append(subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"READY":
            raise RuntimeError(f"load generator failed to start (exit {proc.wait()})")
    start = time.time() + 0.2
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{start!r}\n".encode())
        proc.stdin.close()

    # CPU of the server, the broker and the whole machine over the same window the clients measure.
    time.sleep(max(0.0, start + warmup - time.time()))
    before = {role: cpu_seconds(pid) for role, pid in watch.items()}
    busy_before = machine_busy_seconds()
    profiler = None
    if profile_to is not None:
        profiler = subprocess.Popen(
            [
                py_spy(),
                "record",
                "--pid",
                str(watch["server"]),
                "--duration",
                str(math.ceil(load.duration)),
                "--rate",
                "100",
                "--format",
                "raw",
                "--nonblocking",  # do not pause the server to sample it
                "--output",
                str(profile_to),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    time.sleep(max(0.0, start + warmup + load.duration - time.time()))
    after = {role: cpu_seconds(pid) for role, pid in watch.items()}
    phase.machine_cpu = (machine_busy_seconds() - busy_before) / load.duration
    phase.server_cpu = (after["server"] - before["server"]) / load.duration
    phase.broker_cpu = (after["broker"] - before["broker"]) / load.duration
    if profiler is not None:
        profiler.wait(60)

    for index, proc in enumerate(procs):
        if proc.wait() != 0:
            raise RuntimeError(f"load generator exited with {proc.returncode}")
        result = json.loads(pool.path.with_name(f"result-{index}.json").read_text())
        phase.status_total.update(result["status_total"])
        phase.status_window.update(result["status_window"])
        phase.latencies_ms.extend(result["latencies_ms"])
        phase.send_lag_ms.extend(result["send_lag_ms"])
        phase.unanswered += result["unanswered"]
        phase.reconnects += result["reconnects"]
        phase.sent_max = max(phase.sent_max, result["sent"])
        phase.client_cpu += result["cpu_seconds"] / load.duration
    phase.ok_window = phase.status_window.get("200", 0)
    return phase


@dataclass
class Runner:
    """What every phase shares: the deliveries, the load, the processes watched and the retry policy.

    `offsets` holds, per target, the next pool index to send, so that a target is not sent the
    same delivery twice across its phases (as far as the pool lasts).
    """

    pool: Pool
    load: LoadSettings
    watch: dict[str, int | None]
    quiet_wait: float = 0.0
    busy_retries: int = 0
    profile_dir: Path | None = None
    offsets: dict[str, int] = field(default_factory=dict)

    def measure(self, server: Server, mode: str, name: str, profile: bool = False) -> Phase:
        """One phase against `server`, run again while other work disturbs it; the quietest is kept.

        A phase during which other work took more than BUSY_OTHER_CPU of a core is run again, up to
        `busy_retries` times; the answers of the attempts not kept still count for the check.
        With `profile` (and a profile directory), py-spy samples every attempt's window.
        """
        self.watch["server"] = server.pid
        profile_to = None
        if profile and self.profile_dir is not None:
            profile_to = self.profile_dir / f"{server.target}-{mode}.txt"
        attempts: list[Phase] = []
        while not attempts or (
            attempts[-1].other_cpu > BUSY_OTHER_CPU and len(attempts) <= self.busy_retries
        ):
            wait_for_quiet(self.quiet_wait)
            offset = self.offsets.get(server.target, 0)
            attempt = run_phase(
                server.target, mode, name, server.port, self.pool, self.load, offset, self.watch, profile_to
            )
            self.offsets[server.target] = offset + attempt.sent_max * self.load.processes
            attempts.append(attempt)
            time.sleep(1.0)  # let the server settle between phases
        return keep_quietest(attempts)


def keep_quietest(attempts: list[Phase]) -> Phase:
    """The attempt with the least other work, carrying the answers of the others as discarded."""
    kept = min(attempts, key=lambda a: a.other_cpu)
    kept.attempts = len(attempts)
    for attempt in attempts:
        if attempt is not kept:
            kept.discarded.update(attempt.status_total)
            kept.discarded["unanswered"] += attempt.unanswered
    return kept


@dataclass
class Results:
    """The kept phases: one saturation phase per target in each round, then each open-loop phase."""

    rounds: list[dict[str, Phase]]
    open_loop: dict[str, Phase]

    @property
    def phases(self) -> list[Phase]:
        """Every kept phase in the order it ran."""
        return [p for r in self.rounds for p in r.values()] + list(self.open_loop.values())


def run_rounds(runner: Runner, servers: list[Server], rounds: int) -> Results:
    """`rounds` rounds of saturation, the targets taking turns in each, then each target's open loop.

    py-spy (with a profile directory) samples the first round's saturation phases and the open loop.
    """
    results = Results([], {})
    for number in range(1, rounds + 1):
        this_round: dict[str, Phase] = {}
        for server in servers:
            this_round[server.target] = runner.measure(
                server, "closed", f"saturation {number}", profile=number == 1
            )
        results.rounds.append(this_round)
    for server in servers:
        name = f"open {runner.load.rate:g}/s"
        results.open_loop[server.target] = runner.measure(server, "open", name, profile=True)
    return results


def py_spy() -> str:
    """The py-spy executable (next to this Python first, then on PATH)."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


NATIVE_LOOP = "Runner.run (asyncio/runners.py)"
# Inclusive times are listed for these packages only: the framework frames above them (Starlette's
# middleware chain, uvicorn's request cycle) are on nearly every stack and say little.
FOCUS = ("gateway/", "fanout/", "provider_auth/", "bench/", "aiokafka/", "prometheus_client/")


def profile_hot_spots(path: Path, top: int) -> list[str]:
    """Where a py-spy raw profile spends its samples: by package, by function, and inclusive.

    Time in C code (uvloop, socket syscalls, hashing) is charged to the Python frame that called
    it: own time in `Runner.run` is the event loop itself, in `...send`/`...write` it is mostly
    the socket write.
    """
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    entry: set[str] = set()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        # "function (pkg/file.py:123)" -> "function (pkg/file.py)", so a function's lines add up.
        frames = [frame.rsplit(":", 1)[0] + ")" for frame in stack.split(";") if " (" in frame]
        if not frames:
            continue
        if NATIVE_LOOP in frames:  # the start-up chain down to the event loop: on every such stack
            entry.update(frames[: frames.index(NATIVE_LOOP) + 1])
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return [f"  {path.name}: no samples"]
    lines = [f"  {path.name}: {total} samples (busy only)", "  own time by package:"]
    lines += [f"    {n / total:6.1%}  {name}" for name, n in packages.most_common(top)]
    lines.append("  own time by function:")
    lines += [f"    {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines.append(f"  inclusive time by function ({', '.join(p.rstrip('/') for p in FOCUS)}):")
    shown = [
        (name, n)
        for name, n in inclusive.most_common()
        if name not in entry and name.rpartition(" (")[2].startswith(FOCUS)
    ][:top]
    lines += [f"    {n / total:6.1%}  {name}" for name, n in shown]
    return lines


def _package(frame: str) -> str:
    where = frame.rpartition(" (")[2].rstrip(")")
    if frame == NATIVE_LOOP:
        return "event loop (uvloop, native)"
    head = where.split("/", 1)[0]
    return head if "/" in where else "stdlib/other"


# ---------------------------------------------------------------------------------------------
# Verification


@dataclass(frozen=True)
class Stored:
    """What the raw topic holds after the run."""

    records: int
    known_bodies: int
    distinct_delivery_ids: int


async def read_raw_topic(bootstrap: str, topic: str, digests: set[bytes]) -> Stored:
    """Read every record of `topic` once, up to the end offsets, without keeping the bodies."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return Stored(0, 0, 0)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records = known = 0
        ids: set[bytes] = set()
        async with asyncio.timeout(300):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for part in batch.values():
                    for record in part:
                        records += 1
                        value = record.value or b""
                        known += hashlib.sha1(value, usedforsecurity=False).digest() in digests
                        ids.update(v for k, v in record.headers if k == H_DELIVERY_ID)
        return Stored(records, known, len(ids))
    finally:
        await consumer.stop()


# ---------------------------------------------------------------------------------------------
# Report


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def server_stack() -> str:
    """The event loop and HTTP parser uvicorn's `auto` settings pick on this machine."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"uvicorn 1 worker, loop=auto ({loop}), http=auto ({http})"


def format_table(phases: list[Phase]) -> str:
    """One row per phase, in the order they ran."""
    width = max([12, *(len(p.name) for p in phases)])
    header = (
        f"{'target':<11} {'phase':<{width}} {'200/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'non-200':>8} {'server':>7} {'us/200':>7} {'broker':>7} {'client':>7} {'other':>7}"
    )
    lines = [header, "-" * len(header)]
    for p in phases:
        lines.append(
            f"{p.target:<11} {p.name:<{width}} {p.ok_per_second:>8.0f} {p.percentile(0.50):>8.2f} "
            f"{p.percentile(0.99):>8.2f} {p.percentile(1.0):>8.2f} {p.non_200:>8d} "
            f"{p.server_cpu:>7.0%} {p.server_us_per_ok:>7.0f} {p.broker_cpu:>7.0%} {p.client_cpu:>7.0%} "
            f"{p.other_cpu:>7.0%}"
        )
    return "\n".join(lines)


def describe_failures(phases: list[Phase]) -> list[str]:
    """A line for every phase that had non-200 answers, naming the statuses."""
    notes = []
    for p in phases:
        if p.non_200:
            answers = p.status_total + p.discarded
            answers["unanswered"] += p.unanswered
            statuses = ", ".join(f"{s}: {n}" for s, n in sorted(answers.items()) if s != "200" and n)
            notes.append(f"  {p.target} {p.name}: non-200 answers ({statuses})")
        if p.attempts > 1:
            notes.append(
                f"  {p.target} {p.name}: run {p.attempts} times because other work was busy; "
                "the quietest attempt is shown"
            )
        if p.reconnects:
            notes.append(f"  {p.target} {p.name}: {p.reconnects} connections closed by the server")
    return notes


def report(
    results: Results, stored: Stored | None, pool: Pool, load: LoadSettings, gateway_pool_used: int
) -> bool:
    """Print the table, the notes, the storage check and the summary line; False on a mismatch."""
    phases = results.phases
    print()
    print(format_table(phases))
    lags = ", ".join(f"{p.target} {percentile(p.send_lag_ms, 0.99):.2f} ms" for p in phases if p.send_lag_ms)
    print(
        "  200/s: 200 answers per second inside the window. Latency: saturation from send to answer;\n"
        "  open loop from each request's scheduled send time (client send lag p99, included: "
        f"{lags}).\n"
        f"  CPU: share of one core over the window ({os.cpu_count()} cores = {(os.cpu_count() or 1) * 100}%);"
        " other = the rest of the machine.\n"
        "  us/200: server CPU microseconds per 200 answer in the window."
    )
    busiest = max(phases, key=lambda p: p.other_cpu, default=None)
    if busiest is not None and busiest.other_cpu > BUSY_OTHER_CPU:
        print(
            f"  warning: other processes used up to {busiest.other_cpu:.0%} of a core during the run "
            f"({busiest.target} {busiest.name}); the figures are disturbed, rerun on a quiet machine"
        )
    for note in describe_failures(phases):
        print(note)

    ok = True
    if stored is not None:
        gateway = [p for p in phases if p.target == "ledgerhook"]
        answered = sum(p.status_total.get("200", 0) + p.discarded.get("200", 0) for p in gateway)
        ok = stored.records == answered == stored.known_bodies == stored.distinct_delivery_ids
        print(
            f"stored: raw topic holds {stored.records} records for {answered} deliveries answered 200 "
            f"({stored.known_bodies} with a body that was sent, {stored.distinct_delivery_ids} distinct "
            f"delivery ids): {'OK' if ok else 'MISMATCH'}"
        )
        if gateway_pool_used > pool.size:
            print(f"  note: the gateway was sent more than the {pool.size} pool deliveries; bodies repeated")

    if results.rounds:
        print(summary_line(results, load) + ("" if ok else "; STORED COUNT MISMATCH"))
    return ok


def median(values: list[float]) -> float:
    """The median of the finite `values` (NaN when there are none)."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else float("nan")


def rounds_text(count: int) -> str:
    """`1 round`, `3 rounds`."""
    return f"{count} round" + ("" if count == 1 else "s")


def summary_line(results: Results, load: LoadSettings) -> str:
    """`ingest: ...`: medians over the rounds, the per-round ratios, CPU per delivery, open-loop p99.

    With both targets, the ratio is the median of the rounds' own ratios (ledgerhook / bare in the
    same round); with one target, its rounds' deliveries/s are listed instead.
    """
    targets = list(results.rounds[0])
    per_target = {t: [r[t] for r in results.rounds] for t in targets}
    rate = {t: median([p.ok_per_second for p in ps]) for t, ps in per_target.items()}
    cost = {t: median([p.server_us_per_ok for p in ps]) for t, ps in per_target.items()}
    if "ledgerhook" in rate and "bare" in rate:
        ratios = [
            r["ledgerhook"].ok_per_second / r["bare"].ok_per_second if r["bare"].ok_per_second else 0.0
            for r in results.rounds
        ]
        each = ", ".join(f"{x:.2f}" for x in ratios)
        parts = [
            f"ingest: ledgerhook {rate['ledgerhook']:.0f} deliveries/s vs bare {rate['bare']:.0f}/s "
            f"(median ratio of {rounds_text(len(ratios))} {median(ratios):.2f}: {each}; "
            f"target >= {RATIO_TARGET})",
            f"server CPU per delivery {cost['ledgerhook']:.0f} us vs {cost['bare']:.0f} us",
        ]
    else:
        (target,) = targets
        each = ", ".join(f"{p.ok_per_second:.0f}" for p in per_target[target])
        parts = [
            f"ingest: {target} {rate[target]:.0f} deliveries/s "
            f"(median of {rounds_text(len(per_target[target]))}: {each})",
            f"server CPU per delivery {cost[target]:.0f} us",
        ]
    open_phase = results.open_loop.get("ledgerhook") or next(iter(results.open_loop.values()), None)
    if open_phase is not None:
        p99 = f"p99 at {load.rate:g}/s {open_phase.percentile(0.99):.1f} ms"
        if open_phase.target == "ledgerhook":
            parts.append(f"{p99} (target <= {P99_TARGET_MS:g} ms)")
        else:
            parts.append(f"{open_phase.target} {p99}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Main


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Ingest benchmark: ledgerhook serve vs a bare endpoint. Both servers run at once; "
        "saturation is measured in rounds, the targets taking turns in each (bare, ledgerhook, bare, ...), "
        "then each target's open loop once. The ratio is the median of the rounds' ratios."
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measurement window per phase (s)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        metavar="N",
        help="saturation rounds; in each, every target runs one closed-loop phase, in turn",
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="closed-loop warm-up (s)")
    parser.add_argument("--open-warmup", type=float, default=2.0, help="open-loop warm-up (s)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop offered rate (req/s)")
    parser.add_argument("--client-processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--pool-size", type=int, default=80_000, help="distinct signed deliveries")
    parser.add_argument("--seed", type=int, default=20_26, help="seed for the sample deliveries")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each phase, wait up to SECONDS for other work on the machine to stop",
    )
    parser.add_argument(
        "--busy-retries",
        type=int,
        default=2,
        metavar="N",
        help=f"run a phase again (up to N times) when other work took > {BUSY_OTHER_CPU * 100:.0f}%% "
        "of a core",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample the measured server with py-spy during the first round's saturation windows and "
        "the open-loop windows; raw profiles and hot spots in DIR",
    )
    parser.add_argument(
        "--targets", default="bare,ledgerhook", help="comma-separated subset of bare,ledgerhook"
    )
    return parser.parse_args()


def server_command(target: str, port: int) -> tuple[list[str], str]:
    """The command that serves `target` and the URL that answers 200 once it is ready."""
    base = f"http://127.0.0.1:{port}"
    if target == "bare":
        return [sys.executable, "-m", "bench.bare_app"], base + "/livez"
    if target == "ledgerhook":  # ready once the broker and the database are reachable
        return [sys.executable, "-m", "gateway.cli", "serve"], base + "/readyz"
    raise SystemExit(f"unknown target {target!r}")


def start_servers(
    stack: contextlib.ExitStack, targets: list[str], env: dict[str, str], log_dir: Path
) -> list[Server]:
    """Start every target on its own port with its own log; they stop when `stack` closes."""
    servers = []
    for target in targets:
        port = free_port()
        command, ready = server_command(target, port)
        target_env = env | {"LEDGERHOOK_PORT": str(port)}
        pid = stack.enter_context(server_process(command, target_env, ready, log_dir / f"{target}.log"))
        servers.append(Server(target, port, pid))
    return servers


def parse_targets(text: str) -> list[str]:
    """The targets named in `--targets`, in order, each once; exits on an unknown or missing one."""
    targets = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [t for t in targets if t not in ("bare", "ledgerhook")]
    if unknown or not targets:
        raise SystemExit(f"--targets: expected a subset of bare,ledgerhook, got {text!r}")
    return targets


def main() -> int:
    """Run the benchmark; exit 1 when the stored count does not match the 200s."""
    args = parse_args()
    targets = parse_targets(args.targets)
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    if args.profile is not None:
        py_spy()  # fail before the run, not after it
        args.profile.mkdir(parents=True, exist_ok=True)
    load = LoadSettings(
        connections=args.connections,
        processes=args.client_processes,
        rate=args.rate,
        closed_warmup=args.warmup,
        open_warmup=args.open_warmup,
        duration=args.duration,
    )
    with tempfile.TemporaryDirectory(prefix="ledgerhook-bench-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.monotonic()
        pool = make_pool(tmp / "deliveries.bin", args.pool_size, args.seed)
        print(
            f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, "
            f"load average before the run {os.getloadavg()[0]:.2f}"
        )
        print(
            f"servers: {server_stack()}; load: {load.connections} keep-alive connections from "
            f"{load.processes} uvloop process(es); {rounds_text(args.rounds)} of saturation, "
            f"targets in turn: {', '.join(targets)}"
        )
        print(
            f"deliveries: {pool.size} distinct signed QuickBooks CloudEvents batches, "
            f"{pool.min_bytes}-{pool.max_bytes} bytes (generated in {time.monotonic() - started:.1f}s)"
        )

        postgres = EmbeddedPostgres(tmp / "postgres" / "data", cleanup="delete")
        broker = EmbeddedBroker(free_port(), log_path=tmp / "broker.log")
        database_url = postgres.start()
        try:
            broker.start()
            base_env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERHOOK_")}
            env = base_env | {
                "LEDGERHOOK_DATABASE_URL": database_url,
                "LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "LEDGERHOOK_KAFKA_IDEMPOTENT_PRODUCER": "false",  # the dev broker lacks it
                "LEDGERHOOK_LOG_LEVEL": "WARNING",
                "LEDGERHOOK_QUICKBOOKS_VERIFIER_TOKENS": ",".join(VERIFIER_TOKENS),
                "LEDGERHOOK_HOST": "127.0.0.1",
                "LEDGERHOOK_WORKERS": "1",
                "LEDGERHOOK_SHUTDOWN_DRAIN_SECONDS": "0",
                "LEDGERHOOK_TOPIC_RAW": RAW_TOPIC,
            }
            run_migrate(env)
            runner = Runner(
                pool,
                load,
                watch={"server": None, "broker": child_pid("tansu")},
                quiet_wait=args.wait_quiet,
                busy_retries=args.busy_retries,
                profile_dir=args.profile,
            )
            with contextlib.ExitStack() as servers_running:
                servers = start_servers(servers_running, targets, env, tmp)
                results = run_rounds(runner, servers, args.rounds)

            stored = None
            if "ledgerhook" in targets:
                stored = asyncio.run(read_raw_topic(broker.bootstrap, RAW_TOPIC, pool.digests))
        finally:
            broker.stop()
            postgres.stop()

    ok = report(results, stored, pool, load, runner.offsets.get("ledgerhook", 0))
    if args.profile is not None:
        print(
            "profiles (py-spy, 100 Hz, first round's saturation and open-loop windows; "
            "figures above are from a profiled run): "
        )
        for target in targets:
            for mode in ("closed", "open"):
                path = args.profile / f"{target}-{mode}.txt"
                if path.exists():
                    lines = profile_hot_spots(path, 15)
                    (args.profile / f"{target}-{mode}-hot-spots.txt").write_text("\n".join(lines) + "\n")
                    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
