"""Open-loop poster of the fan-out benchmark: signed deliveries at a fixed rate, delivery ids kept.

Delivery i of the pool is due at `begin + i / rate` (time.monotonic(), the clock every process on
the machine shares), sent on a free keep-alive connection, or as soon as one frees up (it stays
late: latency is counted from the due time, so a stalled server shows as latency, not as a lower
offered load). For each delivery it keeps the status, the `x-ledgerhook-delivery-id` the gateway
answered with, and the time of the answer, so bench/fanout.py can match the change events to the
POST they came from.

Like bench/loadgen.py (whose design this follows): uvloop, raw asyncio protocols, pre-built request
bytes, only the status line and two headers of an answer parsed, so it costs little next to the
gateway. Protocol with the parent: print `READY`, read `begin` from stdin, run, write the results
as one JSON object to `--result`.
"""

import argparse
import asyncio
import contextlib
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, cast

import orjson

from gateway.runtime.loops import run_event_loop

clock = time.monotonic
DISCONNECTED = "disconnected"
_DELIVERY_ID = b"\r\nx-ledgerhook-delivery-id:"
_CONTENT_LENGTH = b"\r\ncontent-length:"


def write_pool(path: Path, deliveries: list[tuple[str, dict[str, str], bytes]]) -> None:
    """Store (path, headers, body) triples for the poster; bodies are JSON, so they travel as text."""
    path.write_bytes(orjson.dumps([[url, headers, body.decode()] for url, headers, body in deliveries]))


def build_request(host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """The exact bytes of one signed delivery."""
    head = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", "user-agent: ledgerhook-bench"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head.append(f"content-length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


def _header(head: bytes, name: bytes) -> bytes | None:
    at = head.lower().find(name)
    if at < 0:
        return None
    stop = head.find(b"\r\n", at + 2)
    return head[at + len(name) : stop if stop >= 0 else len(head)].strip()


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, on_answer: Callable[["Connection", int, int | str, bytes | None], None]) -> None:
        self._on_answer = on_answer
        self.transport: asyncio.Transport | None = None
        self.index = -1  # the pool index in flight, -1 when idle
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def send(self, index: int, request: bytes) -> None:
        """Write the request of pool entry `index`."""
        assert self.transport is not None and self.index < 0
        self.index = index
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end]
            length = int(_header(head, _CONTENT_LENGTH) or b"0")
            if len(self._buffer) < end + 4 + length:
                return
            self._buffer = self._buffer[end + 4 + length :]
            index, self.index = self.index, -1
            self._on_answer(self, index, int(head[9:12]), _header(head, _DELIVERY_ID))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.index >= 0:
            index, self.index = self.index, -1
            self._on_answer(self, index, DISCONNECTED, None)


async def post_all(args: argparse.Namespace, requests: list[bytes]) -> dict[str, Any]:
    """Send every request at its due time; return per-request status, delivery id and timings."""
    loop = asyncio.get_running_loop()
    count = len(requests)
    status: list[int | str] = ["unanswered"] * count
    delivery_ids: list[str | None] = [None] * count
    ack_ms: list[float | None] = [None] * count
    lag_ms: list[float | None] = [None] * count
    idle: deque[Connection] = deque()
    due: deque[int] = deque()  # due requests waiting for a free connection
    answered = 0
    done = loop.create_future()
    begin = 0.0
    interval = 1.0 / args.rate
    reconnects = 0
    tasks: set[asyncio.Task[None]] = set()

    def send(conn: Connection, index: int) -> None:
        lag_ms[index] = (clock() - (begin + index * interval)) * 1000.0
        conn.send(index, requests[index])

    def dispatch(conn: Connection) -> None:
        if due:
            send(conn, due.popleft())
        else:
            idle.append(conn)

    def on_answer(conn: Connection, index: int, code: int | str, delivery_id: bytes | None) -> None:
        nonlocal answered
        status[index] = code
        ack_ms[index] = (clock() - (begin + index * interval)) * 1000.0
        delivery_ids[index] = delivery_id.decode("ascii") if delivery_id else None
        answered += 1
        if answered == count and not done.done():
            done.set_result(None)
        if conn.transport is None or code == DISCONNECTED:
            spawn(reconnect(conn))
        else:
            dispatch(conn)

    def spawn(coroutine: Coroutine[None, None, None]) -> None:
        task = loop.create_task(coroutine)
        tasks.add(task)  # referenced until done
        task.add_done_callback(tasks.discard)

    async def reconnect(old: Connection) -> None:
        nonlocal reconnects
        reconnects += 1
        _, fresh = await loop.create_connection(lambda: Connection(on_answer), args.host, args.port)
        connections[connections.index(old)] = fresh
        dispatch(fresh)

    connections: list[Connection] = []
    for _ in range(args.connections):
        _, protocol = await loop.create_connection(lambda: Connection(on_answer), args.host, args.port)
        connections.append(protocol)
    idle.extend(connections)

    print("READY", flush=True)
    begin = float(await loop.run_in_executor(None, sys.stdin.readline))
    scheduled = 0

    def tick() -> None:
        nonlocal scheduled
        now = clock()
        while scheduled < count and begin + scheduled * interval <= now:
            while idle and idle[0].transport is None:
                # Closed by the server while idle: replace it and use the next idle one.
                spawn(reconnect(idle.popleft()))
            if idle:
                send(idle.popleft(), scheduled)
            else:
                due.append(scheduled)
            scheduled += 1
        if scheduled < count:
            # Whole milliseconds, rounded up: libuv timers have that resolution (see bench/loadgen.py).
            delay = begin + scheduled * interval - clock()
            loop.call_later(max(0.001, math.ceil(delay * 1000.0) / 1000.0), tick)

    cpu_start = time.process_time()
    loop.call_later(max(0.0, begin - clock()), tick)
    # Past the deadline, the unanswered ones keep their status.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            done, timeout=count * interval + args.drain_timeout + max(0.0, begin - clock())
        )
    cpu = time.process_time() - cpu_start
    for conn in connections:
        if conn.transport is not None:
            conn.transport.close()
    return {
        "begin": begin,
        "interval": interval,
        "status": status,
        "delivery_ids": delivery_ids,
        "ack_ms": ack_ms,
        "send_lag_ms": lag_ms,
        "reconnects": reconnects,
        "cpu_seconds": cpu,
    }


def main() -> None:
    """Load the pool, post it, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pool", type=Path, required=True, help="file written by write_pool")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="deliveries per second")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--drain-timeout", type=float, default=15.0)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    pool = orjson.loads(args.pool.read_bytes())
    requests = [
        build_request(args.host, args.port, url, headers, body.encode()) for url, headers, body in pool
    ]
    del pool
    result = run_event_loop(post_all(args, requests))
    args.result.write_bytes(orjson.dumps(result))


if __name__ == "__main__":
    main()
