"""Hostile clients over raw sockets, against `ledgerhook serve` run as operators run it, so the real
uvicorn server and its connection protocol (gateway/runtime/http_protocol.py) answer: heads and
bodies sent a byte a second, a Content-Length that lies either way, header floods, unfinished header
lines, hundreds of idle connections while signed deliveries keep getting 200, and the in-flight cap.
The limits are set short so the module stays fast."""

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import psutil
import pytest

from gateway.dev import samples
from gateway.dev.embedded import EmbeddedBroker, free_port
from gateway.ingress.delivery import H_DELIVERY_ID
from gateway.settings import Settings
from tests.support import (
    ADMIN_TOKEN,
    QUICKBOOKS_TOKENS,
    make_settings,
    migrate_and_create_topics,
    read_topic,
    record_header,
    running_gateway,
)

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
KEEP_ALIVE = 2
# What a busy 2-core machine may add to a deadline before the connection is seen closed.
SLACK = 1.5
LIMITS = {
    "LEDGERHOOK_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
    "LEDGERHOOK_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    "LEDGERHOOK_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE),
}
WEBHOOK = "/webhooks/quickbooks"


@dataclass(frozen=True)
class Served:
    """A `ledgerhook serve` process on a loopback port."""

    port: int
    settings: Settings
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def served(postgres_url: str, broker: EmbeddedBroker) -> Iterator[Served]:
    settings = make_settings(postgres_url, broker.bootstrap)
    asyncio.run(migrate_and_create_topics(settings))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERHOOK_")} | {
        "LEDGERHOOK_DATABASE_URL": settings.database_url.get_secret_value(),
        "LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "LEDGERHOOK_KAFKA_IDEMPOTENT_PRODUCER": "false",
        "LEDGERHOOK_TOPIC_RAW": settings.topic_raw,
        "LEDGERHOOK_QUICKBOOKS_VERIFIER_TOKENS": ",".join(QUICKBOOKS_TOKENS),
        "LEDGERHOOK_ADMIN_TOKENS": ADMIN_TOKEN,
        "LEDGERHOOK_HOST": "127.0.0.1",
        "LEDGERHOOK_PORT": str(port),
        "LEDGERHOOK_SHUTDOWN_DRAIN_SECONDS": "0",
        "LEDGERHOOK_LOG_LEVEL": "WARNING",
        **LIMITS,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "ledgerhook serve exited"
            assert time.monotonic() < deadline, "ledgerhook serve never became ready"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        yield Served(port, settings, process)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Client:
    """One raw TCP connection to the gateway."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.opened = time.monotonic()

    @classmethod
    async def open(cls, port: int) -> "Client":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, timeout: float = 10) -> tuple[int, dict[str, str]]:
        """The next answer's status and headers; its body is read and dropped."""
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
            headers = {
                name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)
            }
            await self.reader.readexactly(int(headers["content-length"]))
        return int(status_line.split()[1]), headers

    async def closed_after(self, timeout: float) -> float:
        """Seconds from opening until the gateway closed the connection (its answers are discarded)."""
        async with asyncio.timeout(timeout):
            try:
                while await self.reader.read(65536):
                    pass
            except ConnectionError:
                pass
        return time.monotonic() - self.opened

    def close(self) -> None:
        self.writer.close()


OpenClient = Callable[[], Awaitable[Client]]


@pytest.fixture
async def clients(served: Served) -> AsyncIterator[OpenClient]:
    """Opens clients to the served gateway and closes them all at the end."""
    opened: list[Client] = []

    async def open_client() -> Client:
        client = await Client.open(served.port)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


def request_head(path: str, headers: dict[str, str], content_length: int) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gateway.test", f"Content-Length: {content_length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def delivery() -> tuple[str, samples.SignedSample]:
    """A signed QuickBooks delivery for a realm of its own (the raw record's key)."""
    realm = str(uuid.uuid4().int)[:12]
    return realm, samples.signed_quickbooks(samples.quickbooks_legacy(realm, 2), QUICKBOOKS_TOKENS[0])


def whole(sample: samples.SignedSample) -> bytes:
    return request_head(WEBHOOK, sample.headers, len(sample.body)) + sample.body


async def stored(settings: Settings, realm: str) -> list[tuple[bytes, str | None]]:
    """(body, delivery id) of the raw records of `realm`."""
    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_raw)
    return [
        (record.value, record_header(record, H_DELIVERY_ID))
        for record in records
        if record.key == realm.encode()
    ]


async def trickle(client: Client, data: bytes, interval: float) -> None:
    """Send `data` a byte at a time until it is sent or the gateway stops reading."""
    try:
        for byte in data:
            await client.send(bytes([byte]))
            await asyncio.sleep(interval)
    except ConnectionError:
        pass


# Time limits.


async def test_a_head_sent_a_byte_a_second_is_cut_at_the_header_timeout(
    served: Served, clients: OpenClient
) -> None:
    slow = await clients()
    sender = asyncio.create_task(trickle(slow, request_head(WEBHOOK, {}, 10), interval=1.0))
    silent = await clients()  # opens and sends nothing
    status, _ = await slow.answer(HEADER_TIMEOUT + SLACK)
    assert status == 408
    assert await slow.closed_after(SLACK) < HEADER_TIMEOUT + SLACK
    sender.cancel()
    # Closed without an answer (it asked nothing), at the header timeout.
    assert await asyncio.wait_for(silent.reader.read(), HEADER_TIMEOUT + SLACK) == b""
    assert time.monotonic() - silent.opened >= HEADER_TIMEOUT * 0.9


async def test_a_slow_body_gets_408_and_nothing_of_it_is_stored(served: Served, clients: OpenClient) -> None:
    realm, sample = delivery()
    slow = await clients()
    await slow.send(request_head(WEBHOOK, sample.headers, len(sample.body)) + sample.body[:10])
    sender = asyncio.create_task(trickle(slow, sample.body[10:], interval=1.0))
    status, headers = await slow.answer(BODY_TIMEOUT + SLACK)
    assert status == 408 and headers["connection"] == "close"
    assert await slow.closed_after(SLACK) < BODY_TIMEOUT + SLACK
    sender.cancel()
    # The same delivery sent at once is stored: the 408 was the pace, nothing else.
    fast = await clients()
    await fast.send(whole(sample))
    status, headers = await fast.answer()
    assert status == 200
    assert await stored(served.settings, realm) == [(sample.body, headers["x-ledgerhook-delivery-id"])]


async def test_content_length_shorter_than_the_bytes_sent(served: Served, clients: OpenClient) -> None:
    """The body is what Content-Length declares; the bytes after it are the next request, which is
    no request: it is answered 400, after the delivery's own answer, and the connection closed. So
    the answer always tells what was stored."""
    realm, sample = delivery()
    client = await clients()
    await client.send(whole(sample) + b'{"more": "of the body?"}')
    status, headers = await client.answer()
    assert status == 200  # the declared body is signed: stored
    assert (await client.answer())[0] == 400
    await client.closed_after(SLACK)
    assert await stored(served.settings, realm) == [(sample.body, headers["x-ledgerhook-delivery-id"])]

    # Declared shorter than the signed body: what was declared is not what was signed.
    realm, sample = delivery()
    client = await clients()
    await client.send(request_head(WEBHOOK, sample.headers, len(sample.body) - 20) + sample.body)
    assert (await client.answer())[0] == 401
    assert (await client.answer())[0] == 400
    await client.closed_after(SLACK)
    assert await stored(served.settings, realm) == []


async def test_content_length_longer_than_the_bytes_sent_ends_in_408(
    served: Served, clients: OpenClient
) -> None:
    realm, sample = delivery()
    webhook = await clients()
    await webhook.send(request_head(WEBHOOK, sample.headers, len(sample.body) + 500) + sample.body)
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    body = orjson.dumps({"tenant_id": tenant, "provider": "xero", "provider_account_id": "acct"})
    admin = await clients()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    await admin.send(request_head("/admin/v1/connections", auth, len(body) + 500) + body)
    for client in (webhook, admin):
        assert (await client.answer(BODY_TIMEOUT + SLACK))[0] == 408
        assert await client.closed_after(SLACK) < BODY_TIMEOUT + SLACK
    assert await stored(served.settings, realm) == []
    listing = await clients()
    get = f"GET /admin/v1/connections?tenant_id={tenant} HTTP/1.1\r\nHost: gateway.test\r\n"
    await listing.send(f"{get}Authorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n".encode())
    assert orjson.loads((await listing.reader.read()).partition(b"\r\n\r\n")[2])["data"] == []


# Header limits.


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({f"x-filler-{i}": str(i) for i in range(5000)}, id="5000 headers"),
        pytest.param({f"x{i}": "1" for i in range(150)}, id="150 short headers"),
        pytest.param({"x-large": "a" * 65536}, id="a 64 KB header"),
        pytest.param({"x-large": "a" * 1_048_576}, id="a 1 MiB header"),
    ],
)
async def test_header_floods_get_431_and_are_not_stored(
    served: Served, clients: OpenClient, extra: dict[str, str]
) -> None:
    realm, sample = delivery()
    flooded = await clients()
    await flooded.send(request_head(WEBHOOK, sample.headers | extra, len(sample.body)) + sample.body)
    status, headers = await flooded.answer()
    assert status == 431 and headers["connection"] == "close"
    await flooded.closed_after(SLACK + 2)
    assert await stored(served.settings, realm) == []
    # The same delivery with its own headers only is stored: the headers were the reason.
    plain = await clients()
    await plain.send(whole(sample))
    assert (await plain.answer())[0] == 200


async def test_unfinished_header_lines_do_not_grow_memory(served: Served, clients: OpenClient) -> None:
    process = psutil.Process(served.process.pid)
    before = process.memory_info().rss
    peak = before
    line = b"POST /webhooks/quickbooks HTTP/1.1\r\nX-Unfinished: " + b"a" * (4 * 1_048_576)

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.02)

    async def flood() -> float:
        client = await clients()
        with contextlib.suppress(ConnectionError):  # refused while still sending
            await client.send(line)
        return await client.closed_after(10)

    watcher = asyncio.create_task(watch())
    durations = await asyncio.gather(*(flood() for _ in range(20)))
    watcher.cancel()
    # The first 32 KiB of each line are parsed and the rest dropped: without the limit, 20 lines of
    # 4 MiB grew the process by about 100 MB and were never closed.
    assert peak - before < 8 * 1_048_576, f"grew by {(peak - before) / 1_048_576:.1f} MiB"
    assert max(durations) < 5


# Idle connections.


async def test_idle_connections_are_closed_on_time_while_deliveries_keep_getting_200(
    served: Served, clients: OpenClient
) -> None:
    realm, sample = delivery()
    # 200 heads of signed deliveries whose body never comes.
    waiting = [await clients() for _ in range(200)]
    for client in waiting:
        client.writer.write(request_head(WEBHOOK, sample.headers, len(sample.body)))
    # 200 kept alive after one answer, 20 of them sending line ends that begin no request.
    kept = [await clients() for _ in range(200)]
    for client in kept:
        client.writer.write(b"GET /livez HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
    answered = []
    for client in kept:
        assert (await client.answer())[0] == 200
        answered.append(time.monotonic())
    # 100 that never send a byte.
    silent = [await clients() for _ in range(100)]

    keep_talking = [asyncio.create_task(trickle(client, b"\r\n" * 20, interval=0.25)) for client in kept[:20]]

    async def deliveries() -> list[float]:
        latencies = []
        end = time.monotonic() + KEEP_ALIVE + SLACK + 1
        while time.monotonic() < end:
            fresh = await Client.open(served.port)
            try:
                started = time.monotonic()
                await fresh.send(whole(delivery()[1]))
                assert (await fresh.answer())[0] == 200
                latencies.append(time.monotonic() - started)
            finally:
                fresh.close()
            await asyncio.sleep(0.1)
        return latencies

    async def closed(group: list[Client], bound: float) -> list[float]:
        return list(await asyncio.gather(*(client.closed_after(bound + SLACK + 5) for client in group)))

    latencies, waited, idle, quiet = await asyncio.gather(
        deliveries(),
        closed(waiting, BODY_TIMEOUT),
        closed(kept, KEEP_ALIVE),
        closed(silent, HEADER_TIMEOUT),
    )
    for task in keep_talking:
        task.cancel()
    assert len(latencies) >= 10 and max(latencies) < 3.0  # QuickBooks waits 3 s
    assert max(waited) < BODY_TIMEOUT + SLACK + 2  # opened one after the other, ~1 s for 500
    assert max(quiet) < HEADER_TIMEOUT + SLACK + 2
    since_answer = [
        client.opened + seconds - answer for client, seconds, answer in zip(kept, idle, answered, strict=True)
    ]
    # Kept alive for the keep-alive time, line ends or not, and no longer.
    assert min(since_answer) > KEEP_ALIVE * 0.75 and max(since_answer) < KEEP_ALIVE + SLACK
    assert await stored(served.settings, realm) == []
    with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/metrics", timeout=5) as answer:
        gauge = [
            line
            for line in answer.read().decode().splitlines()
            if line.startswith("ledgerhook_webhook_in_flight")
        ]
    assert gauge == ["ledgerhook_webhook_in_flight 0.0"]


# The in-flight cap.


async def in_flight(base_url: str) -> float:
    """The gateway's `ledgerhook_webhook_in_flight` gauge."""
    async with aiohttp.ClientSession() as session, session.get(base_url + "/metrics") as answer:
        text = await answer.text()
    return next(
        float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("ledgerhook_webhook_in_flight ")
    )


async def test_over_the_in_flight_cap_503_with_retry_after_before_the_body_is_read(
    settings_factory: Any,
) -> None:
    settings = settings_factory(max_in_flight=4, retry_after_seconds=7)
    async with running_gateway(settings) as gateway:
        port = int(gateway.base_url.rsplit(":", 1)[1])
        held = [(await Client.open(port), delivery()) for _ in range(4)]
        for client, (_, sample) in held:
            await client.send(request_head(WEBHOOK, sample.headers, len(sample.body)))
        while await in_flight(gateway.base_url) < 4:  # the four requests wait for their bodies
            await asyncio.sleep(0.01)

        realm, sample = delivery()
        refused = await Client.open(port)
        await refused.send(request_head(WEBHOOK, sample.headers, len(sample.body)))  # no body
        status, headers = await refused.answer(2)
        assert (status, headers["retry-after"]) == (503, "7")
        probe = await Client.open(port)  # health probes are never refused
        await probe.send(b"GET /livez HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        assert (await probe.answer(2))[0] == 200

        for client, (_, sample_held) in held:
            await client.send(sample_held.body)
        assert [(await client.answer())[0] for client, _ in held] == [200] * 4
        # The refused body, sent now, is read and dropped; the connection serves the retry.
        await refused.send(sample.body + whole(sample))
        status, headers = await refused.answer()
        assert status == 200
        for client in [refused, probe, *(client for client, _ in held)]:
            client.close()
        assert await stored(settings, realm) == [(sample.body, headers["x-ledgerhook-delivery-id"])]
