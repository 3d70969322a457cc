"""A lean HTTP/1.1 keep-alive load generator for the benchmarks (one process; run several for more).

Why not aiohttp or httpx: at a few thousand requests per second on a 2-core machine a full client
costs as much CPU as the server under test. Here the requests are pre-built bytes, each connection
is a raw asyncio protocol on uvloop, and a response is read only as far as its status line and
Content-Length. The servers under test answer with empty bodies, so that is all there is to parse.

Two drivers:
- closed loop (`--mode closed`): every connection sends its next request as soon as the previous
  one is answered; throughput is the count of answers inside the measurement window.
- open loop (`--mode open`): requests are scheduled at a constant rate whatever the server does;
  latency is measured from the scheduled send time, so a stalled server shows up as latency
  instead of silently lowering the offered load (no coordinated omission).

Protocol with the parent (see bench/ingest.py): the process loads the pool, opens its connections,
prints `READY` on stdout, reads the start time (wall clock, `time.time()`) from stdin, runs, and
writes its results as one JSON object to the `--result` file.
"""

import argparse
import asyncio
import json
import math
import struct
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import cast

from gateway.runtime.loops import run_event_loop

# uvloop's loop.time() has millisecond resolution: latencies are taken from this clock instead.
clock = time.perf_counter

POOL_MAGIC = b"LHBENCH1"
_RECORD = struct.Struct("<HI")  # signature length, body length
DISCONNECTED = "disconnected"


def write_pool(path: Path, deliveries: list[tuple[str, bytes]]) -> None:
    """Store signed deliveries (`intuit-signature` value, body) for loadgen processes to read."""
    with path.open("wb") as out:
        out.write(POOL_MAGIC)
        for signature, body in deliveries:
            encoded = signature.encode("ascii")
            out.write(_RECORD.pack(len(encoded), len(body)))
            out.write(encoded)
            out.write(body)


def read_pool(path: Path) -> list[tuple[bytes, bytes]]:
    """The (signature, body) pairs written by `write_pool`."""
    data = path.read_bytes()
    if not data.startswith(POOL_MAGIC):
        raise ValueError(f"{path} is not a benchmark pool file")
    records: list[tuple[bytes, bytes]] = []
    at = len(POOL_MAGIC)
    while at < len(data):
        sig_len, body_len = _RECORD.unpack_from(data, at)
        at += _RECORD.size
        signature = data[at : at + sig_len]
        at += sig_len
        records.append((signature, data[at : at + body_len]))
        at += body_len
    return records


def build_request(host: str, port: int, path: str, signature: bytes, body: bytes) -> bytes:
    """The exact bytes of one signed QuickBooks CloudEvents delivery."""
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"host: {host}:{port}\r\n"
        "user-agent: ledgerhook-bench\r\n"
        "content-type: application/cloudevents+json\r\n"
        f"intuit-signature: {signature.decode('ascii')}\r\n"
        f"content-length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, on_answer: Callable[["Connection", int | str, float], None]) -> None:
        self._on_answer = on_answer
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.in_flight = False
        self._buffer = b""
        self._scheduled = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, request: bytes, scheduled: float) -> None:
        """Write `request`; its latency will be counted from `scheduled` (a `clock()` value)."""
        assert self.transport is not None and not self.in_flight
        self.in_flight = True
        self._scheduled = scheduled
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end]
            length = 0
            at = head.lower().find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            status = int(head[9:12])
            self._buffer = self._buffer[total:]
            self.in_flight = False
            self._on_answer(self, status, self._scheduled)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.in_flight:
            self.in_flight = False
            self._on_answer(self, DISCONNECTED, self._scheduled)
        if not self.closed.done():
            self.closed.set_result(None)


class Run:
    """One driver run: counts answers over the whole run and latencies inside the window."""

    def __init__(self, requests: list[bytes], offset: int, stride: int, window: tuple[float, float]) -> None:
        self._requests = requests
        self._next = offset
        self._stride = stride
        self.window = window
        self.sent = 0
        self.status_total: Counter[str] = Counter()
        self.status_window: Counter[str] = Counter()
        self.latencies_ms: list[float] = []
        self.send_lag_ms: list[float] = []  # open loop: how late the client sent, part of the latency
        self.reconnects = 0
        self.tasks: set[asyncio.Task[None]] = set()  # reconnections in progress (kept referenced)

    def spawn(self, coroutine: Coroutine[None, None, None]) -> None:
        """Run `coroutine` in the background, holding a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def next_request(self) -> bytes:
        """The next pre-built request of this process's share of the pool."""
        request = self._requests[self._next % len(self._requests)]
        self._next += self._stride
        self.sent += 1
        return request

    def send(self, conn: Connection, scheduled: float) -> None:
        """Send the next request on `conn`, due at `scheduled`; note how late it leaves."""
        if self.window[0] <= scheduled < self.window[1]:
            self.send_lag_ms.append((clock() - scheduled) * 1000.0)
        conn.send(self.next_request(), scheduled)

    def record(self, status: int | str, scheduled: float, now: float, counted: bool) -> None:
        """Count one answer; `counted` says whether it belongs to the measurement window."""
        key = str(status)
        self.status_total[key] += 1
        if counted:
            self.status_window[key] += 1
            if status == 200:
                self.latencies_ms.append((now - scheduled) * 1000.0)


async def _connect(
    host: str, port: int, count: int, on_answer: Callable[[Connection, int | str, float], None]
) -> list[Connection]:
    loop = asyncio.get_running_loop()
    connections = []
    for _ in range(count):
        _, protocol = await loop.create_connection(lambda: Connection(on_answer), host, port)
        connections.append(protocol)
    return connections


async def _drain(connections: list[Connection], timeout: float) -> int:
    """Wait for in-flight requests to be answered; returns how many never were."""
    deadline = time.monotonic() + timeout
    while any(c.in_flight for c in connections) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return sum(1 for c in connections if c.in_flight)


async def _wait_for_start() -> float:
    """Print READY, then read the shared start time from the parent; returns it on `clock()`."""
    loop = asyncio.get_running_loop()
    print("READY", flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    start_wall = float(line)
    return clock() + (start_wall - time.time())


async def _sleep_until(when: float) -> None:
    await asyncio.sleep(max(0.0, when - clock()))


def _timer_delay(seconds: float) -> float:
    # Round up to whole milliseconds: libuv timers have that resolution, and a timer rounded
    # down to 0 ms would fire before the request is due and spin the CPU until it is.
    return max(0.001, math.ceil(seconds * 1000.0) / 1000.0)


async def closed_loop(args: argparse.Namespace, requests: list[bytes]) -> dict[str, object]:
    """Saturation: every connection keeps exactly one request in flight until the window ends."""
    run: Run | None = None
    running = False

    def on_answer(conn: Connection, status: int | str, scheduled: float) -> None:
        assert run is not None
        now = clock()
        start, end = run.window
        run.record(status, scheduled, now, start <= now < end)
        if running and conn.transport is not None:
            conn.send(run.next_request(), now)
        elif running:
            run.reconnects += 1
            run.spawn(reconnect(conn))

    async def reconnect(old: Connection) -> None:
        # The server closed the connection: replace it so the concurrency stays constant.
        assert run is not None
        fresh = (await _connect(args.host, args.port, 1, on_answer))[0]
        connections[connections.index(old)] = fresh
        if running:
            fresh.send(run.next_request(), clock())

    connections = await _connect(args.host, args.port, args.connections, on_answer)
    begin = await _wait_for_start()
    window = (begin + args.warmup, begin + args.warmup + args.duration)
    run = Run(requests, args.offset, args.stride, window)
    await _sleep_until(begin)
    running = True
    for conn in connections:
        conn.send(run.next_request(), clock())
    await _sleep_until(window[0])
    cpu_start = time.process_time()
    await _sleep_until(window[1])
    cpu = time.process_time() - cpu_start
    running = False
    unanswered = await _drain(connections, args.drain_timeout)
    return _result(run, connections, cpu, unanswered)


async def open_loop(args: argparse.Namespace, requests: list[bytes]) -> dict[str, object]:
    """Fixed offered rate: request i is due at start + i / rate, answered or not."""
    loop = asyncio.get_running_loop()
    run: Run | None = None
    idle: deque[Connection] = deque()
    due: deque[float] = deque()  # scheduled times waiting for a free connection

    def on_answer(conn: Connection, status: int | str, scheduled: float) -> None:
        assert run is not None
        now = clock()
        start, end = run.window
        run.record(status, scheduled, now, start <= scheduled < end)
        if conn.transport is None:
            run.reconnects += 1
            run.spawn(reconnect(conn))
            return
        _dispatch(conn)

    def _dispatch(conn: Connection) -> None:
        assert run is not None
        if due:
            run.send(conn, due.popleft())
        else:
            idle.append(conn)

    async def reconnect(old: Connection) -> None:
        fresh = (await _connect(args.host, args.port, 1, on_answer))[0]
        connections[connections.index(old)] = fresh
        _dispatch(fresh)

    connections = await _connect(args.host, args.port, args.connections, on_answer)
    idle.extend(connections)
    begin = await _wait_for_start()
    end_of_schedule = begin + args.warmup + args.duration
    run = Run(requests, args.offset, args.stride, (begin + args.warmup, end_of_schedule))
    interval = 1.0 / args.rate
    scheduled = 0
    finished = loop.create_future()

    def tick() -> None:
        nonlocal scheduled
        assert run is not None
        now = clock()
        while True:
            when = begin + scheduled * interval
            if when > now or when >= end_of_schedule:
                break
            scheduled += 1
            while idle and idle[0].transport is None:
                # Closed by the server while idle: replace it and use the next idle one.
                run.reconnects += 1
                run.spawn(reconnect(idle.popleft()))
            if idle:
                run.send(idle.popleft(), when)
            else:
                due.append(when)
        when = begin + scheduled * interval
        if when < end_of_schedule:
            loop.call_later(_timer_delay(when - clock()), tick)
        elif not finished.done():
            finished.set_result(None)

    loop.call_later(_timer_delay(begin - clock()), tick)
    await _sleep_until(run.window[0])
    cpu_start = time.process_time()
    await finished
    cpu = time.process_time() - cpu_start
    deadline = time.monotonic() + args.drain_timeout
    while due and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    unanswered = await _drain(connections, max(0.0, deadline - time.monotonic())) + len(due)
    return _result(run, connections, cpu, unanswered)


def _result(run: Run, connections: list[Connection], cpu: float, unanswered: int) -> dict[str, object]:
    for conn in connections:
        if conn.transport is not None:
            conn.transport.close()
    return {
        "sent": run.sent,
        "status_total": dict(run.status_total),
        "status_window": dict(run.status_window),
        "latencies_ms": [round(x, 3) for x in run.latencies_ms],
        "send_lag_ms": [round(x, 3) for x in run.send_lag_ms],
        "unanswered": unanswered,
        "reconnects": run.reconnects,
        "cpu_seconds": cpu,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; bench/ingest.py passes all of them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pool", type=Path, required=True, help="file written by write_pool")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/webhooks/quickbooks")
    parser.add_argument("--mode", choices=["closed", "open"], required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000.0, help="open loop: requests per second")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the window")
    parser.add_argument("--duration", type=float, default=10.0, help="measurement window, seconds")
    parser.add_argument("--offset", type=int, default=0, help="first pool index this process sends")
    parser.add_argument("--stride", type=int, default=1, help="pool index step (number of processes)")
    parser.add_argument("--result", type=Path, required=True, help="where to write the JSON results")
    parser.add_argument("--drain-timeout", type=float, default=15.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Load the pool, run one driver, print its results as JSON."""
    args = parse_args(argv)
    pool = read_pool(args.pool)
    requests = [build_request(args.host, args.port, args.path, sig, body) for sig, body in pool]
    del pool
    driver = closed_loop if args.mode == "closed" else open_loop
    result = run_event_loop(driver(args, requests))
    # A file, not stdout: the results can be large and stdout is only for the READY handshake.
    args.result.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
