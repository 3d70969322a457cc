"""Durable before ack: with the broker gone, deliveries get 503 + Retry-After, never a 200; once it is
back, 200s resume, and every 200 has exactly one record on the raw topic."""

import asyncio
import base64
import hashlib
import hmac
import random
from pathlib import Path

import aiohttp

from gateway.dev import samples
from gateway.dev.embedded import EmbeddedBroker, free_port
from gateway.runtime.kafka import ensure_topics
from tests.support import QUICKBOOKS_TOKENS, make_settings, read_topic, running_gateway


def signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(QUICKBOOKS_TOKENS[0].encode(), body, hashlib.sha256).digest()
    return {"intuit-signature": base64.b64encode(digest).decode(), "content-type": "application/json"}


async def deliver(
    session: aiohttp.ClientSession, url: str, bodies: list[bytes]
) -> list[tuple[bytes, int, str | None]]:
    async def one(body: bytes) -> tuple[bytes, int, str | None]:
        async with session.post(url, data=body, headers=signed(body)) as response:
            assert await response.read() == b""
            return body, response.status, response.headers.get("retry-after")

    return list(await asyncio.gather(*(one(b) for b in bodies)))


async def test_broker_outage_gives_503_then_recovers(postgres_url: str, tmp_path: Path) -> None:
    # A broker of this test's own: it is stopped mid-run. It keeps topics in memory, so what was
    # stored before the stop is checked before stopping it.
    broker = EmbeddedBroker(free_port(), log_path=tmp_path / "broker.log")
    broker.start()
    settings = make_settings(postgres_url, broker.bootstrap, ack_timeout_seconds=1.0, retry_after_seconds=7)
    rng = random.Random(3)
    batch = lambda n: [samples.quickbooks_legacy(str(rng.randint(1, 10**9)), 2, rng) for _ in range(n)]  # noqa: E731
    try:
        async with running_gateway(settings) as gw, aiohttp.ClientSession() as session:
            url = gw.base_url + "/webhooks/quickbooks"

            before = await deliver(session, url, batch(40))
            assert {status for _, status, _ in before} == {200}
            stored = [r.value for r in await read_topic(broker.bootstrap, settings.topic_raw)]
            assert sorted(stored) == sorted(body for body, _, _ in before)

            broker.stop()
            during = await deliver(session, url, batch(20))
            assert {status for _, status, _ in during} == {503}
            assert {retry for _, _, retry in during} == {"7"}
            async with session.get(gw.base_url + "/readyz") as r:
                assert r.status == 503
                assert (await r.json())["checks"]["broker"] == "unreachable"

            broker.start()
            await ensure_topics(settings)  # the in-memory broker came back empty
            recovering: list[tuple[bytes, int, str | None]] = []
            async with asyncio.timeout(60):
                # The producer reconnects and refreshes its metadata on its own: wait for a green batch.
                while not recovering or {status for _, status, _ in recovering[-10:]} != {200}:
                    recovering += await deliver(session, url, batch(10))
                    await asyncio.sleep(0.2)
            after = await deliver(session, url, batch(40))
            assert {status for _, status, _ in after} == {200}

            records = await read_topic(broker.bootstrap, settings.topic_raw)
            stored = [r.value for r in records]
            assert len(stored) == len(set(stored))  # no delivery stored twice
            # Count-exact once recovered: every 200 is on the topic.
            assert {body for body, _, _ in after} <= set(stored)
            # Nothing appears that was not sent after the restart. A delivery answered 503 may still
            # land (the client held it, or the ack was lost in flight): the provider retries it and
            # the fan-out's deterministic event ids drop the repeat (docs/architecture.md).
            sent = {body for body, _, _ in during + recovering + after}
            assert set(stored) <= sent
            # (Tansu, the in-memory dev broker, can lose records that a client held across its
            # restart and sent right after it; a durable broker keeps them. Hence the exact check is
            # made on deliveries after recovery.)
    finally:
        broker.stop()
