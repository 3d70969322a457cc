"""Ingest benchmark: signed QuickBooks deliveries against `ledgerhook serve` and a bare baseline.

Starts an embedded PostgreSQL and an embedded broker in a temporary directory, runs
`ledgerhook migrate`, then measures two targets with the same load generator (bench/loadgen.py)
and the same uvicorn settings:

- `bare`: bench/bare_app.py, a Starlette endpoint that only reads the body and checks the HMAC;
- `ledgerhook`: `ledgerhook serve` (one worker), which also appends each delivery to the raw topic
  and waits for the broker's acknowledgement before its 200.

For each target: deliveries/s at saturation (closed loop, keep-alive connections, after a warm-up)
and ack latency at a fixed offered rate (open loop, measured from each request's scheduled time).
At the end the raw topic is read back: it must hold exactly one record per 200 the gateway gave,
each with a body that was sent, or the run fails.

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
RATIO_TARGET = 0.5
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


def run_phase(
    target: str,
    mode: str,
    port: int,
    pool: Pool,
    load: LoadSettings,
    offset: int,
    watch: dict[str, int | None],
    profile_to: Path | None = None,
) -> Phase:
    """Run the load generators once against `port` and merge what they report.

    With `profile_to`, py-spy samples the server over the measurement window into that file.
    """
    warmup = load.closed_warmup if mode == "closed" else load.open_warmup
    name = "saturation" if mode == "closed" else f"open {load.rate:g}/s"
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


def run_target(
    target: str,
    port: int,
    pool: Pool,
    load: LoadSettings,
    watch: dict[str, int | None],
    profile_dir: Path | None = None,
    quiet_wait: float = 0.0,
    busy_retries: int = 0,
) -> tuple[list[Phase], int]:
    """Saturation, then the fixed rate; returns the phases and how many pool entries were used.

    A phase during which other work took more than BUSY_OTHER_CPU of a core is run again, up to
    `busy_retries` times, and the quietest attempt is kept (its 200s still count for the check).
    """
    phases = []
    offset = 0
    for mode in ("closed", "open"):
        attempts: list[Phase] = []
        while not attempts or (attempts[-1].other_cpu > BUSY_OTHER_CPU and len(attempts) <= busy_retries):
            wait_for_quiet(quiet_wait)
            profile_to = profile_dir / f"{target}-{mode}.txt" if profile_dir else None
            attempt = run_phase(target, mode, port, pool, load, offset, watch, profile_to)
            offset += attempt.sent_max * load.processes
            attempts.append(attempt)
            time.sleep(1.0)  # let the server settle between phases
        kept = min(attempts, key=lambda a: a.other_cpu)
        kept.attempts = len(attempts)
        for attempt in attempts:
            if attempt is not kept:
                kept.discarded.update(attempt.status_total)
                kept.discarded["unanswered"] += attempt.unanswered
        phases.append(kept)
    return phases, offset


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
    """One row per target and phase."""
    header = (
        f"{'target':<11} {'phase':<12} {'200/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'non-200':>8} {'server':>7} {'broker':>7} {'client':>7} {'other':>7}"
    )
    lines = [header, "-" * len(header)]
    for p in phases:
        lines.append(
            f"{p.target:<11} {p.name:<12} {p.ok_per_second:>8.0f} {p.percentile(0.50):>8.2f} "
            f"{p.percentile(0.99):>8.2f} {p.percentile(1.0):>8.2f} {p.non_200:>8d} "
            f"{p.server_cpu:>7.0%} {p.broker_cpu:>7.0%} {p.client_cpu:>7.0%} {p.other_cpu:>7.0%}"
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
    phases: list[Phase], stored: Stored | None, pool: Pool, load: LoadSettings, gateway_pool_used: int
) -> bool:
    """Print the table, the notes, the storage check and the summary line; False on a mismatch."""
    print()
    print(format_table(phases))
    lags = ", ".join(f"{p.target} {percentile(p.send_lag_ms, 0.99):.2f} ms" for p in phases if p.send_lag_ms)
    print(
        "  200/s: 200 answers per second inside the window. Latency: saturation from send to answer;\n"
        "  open loop from each request's scheduled send time (client send lag p99, included: "
        f"{lags}).\n"
        f"  CPU: share of one core over the window ({os.cpu_count()} cores = {(os.cpu_count() or 1) * 100}%);"
        " other = the rest of the machine."
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

    by = {(p.target, p.name.split()[0]): p for p in phases}
    sat_gw, sat_bare = by.get(("ledgerhook", "saturation")), by.get(("bare", "saturation"))
    open_gw = by.get(("ledgerhook", "open"))
    if sat_gw and sat_bare and open_gw:
        ratio = sat_gw.ok_per_second / sat_bare.ok_per_second if sat_bare.ok_per_second else 0.0
        p99 = open_gw.percentile(0.99)
        print(
            f"ingest: ledgerhook {sat_gw.ok_per_second:.0f} deliveries/s "
            f"vs bare {sat_bare.ok_per_second:.0f}/s (ratio {ratio:.2f}, target >= {RATIO_TARGET}); "
            f"p99 at {load.rate:g}/s {p99:.1f} ms "
            f"(target <= {P99_TARGET_MS:g} ms)" + ("" if ok else "; STORED COUNT MISMATCH")
        )
    return ok


# ---------------------------------------------------------------------------------------------
# Main


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description="Ingest benchmark: ledgerhook serve vs a bare endpoint.")
    parser.add_argument("--duration", type=float, default=10.0, help="measurement window per phase (s)")
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
        help="sample each server with py-spy during every window; raw profiles and hot spots in DIR",
    )
    parser.add_argument(
        "--targets", default="bare,ledgerhook", help="comma-separated subset of bare,ledgerhook"
    )
    return parser.parse_args()


def main() -> int:
    """Run the benchmark; exit 1 when the stored count does not match the 200s."""
    args = parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
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
            f"{load.processes} uvloop process(es)"
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
            subprocess.run(
                [sys.executable, "-m", "gateway.cli", "migrate"],
                env=env,
                cwd=ROOT,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            watch: dict[str, int | None] = {"server": None, "broker": child_pid("tansu")}
            phases: list[Phase] = []
            used: dict[str, int] = {}
            for target in targets:
                port = free_port()
                target_env = env | {"LEDGERHOOK_PORT": str(port)}
                base = f"http://127.0.0.1:{port}"
                if target == "bare":
                    command = [sys.executable, "-m", "bench.bare_app"]
                    ready = base + "/livez"
                elif target == "ledgerhook":
                    command = [sys.executable, "-m", "gateway.cli", "serve"]
                    ready = base + "/readyz"  # broker and database reachable
                else:
                    raise SystemExit(f"unknown target {target!r}")
                with server_process(command, target_env, ready, tmp / f"{target}.log") as pid:
                    watch["server"] = pid
                    target_phases, used[target] = run_target(
                        target, port, pool, load, watch, args.profile, args.wait_quiet, args.busy_retries
                    )
                phases.extend(target_phases)

            stored = None
            if "ledgerhook" in targets:
                stored = asyncio.run(read_raw_topic(broker.bootstrap, RAW_TOPIC, pool.digests))
        finally:
            broker.stop()
            postgres.stop()

    ok = report(phases, stored, pool, load, used.get("ledgerhook", 0))
    if args.profile is not None:
        print("profiles (py-spy, 100 Hz, measurement windows; figures above are from a profiled run): ")
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
