"""Test helpers shared by every suite: the test stack's settings, a real gateway on loopback, exact
topic reads."""

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.dev.embedded import free_port
from gateway.runtime.kafka import ensure_topics
from gateway.runtime.lifecycle import Lifecycle
from gateway.runtime.migrate import migrate
from gateway.runtime.server import GatewayServer, uvicorn_config
from gateway.settings import Settings, load_settings

QUICKBOOKS_TOKENS = ("qbo-previous-verifier", "qbo-current-verifier")
XERO_KEYS = ("xero-webhook-key-1",)
ADMIN_TOKEN = "test-admin-token"


def make_settings(database_url: str, bootstrap: str, **overrides: Any) -> Settings:
    """Settings for the test stack with topics of their own, so each test counts only its records."""
    suffix = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "database_url": database_url,
        "kafka_bootstrap_servers": bootstrap,
        "kafka_idempotent_producer": False,  # the dev broker has no idempotent producer
        "topic_raw": f"raw-{suffix}",
        "topic_changes": f"changes-{suffix}",
        "topic_account_events": f"account-events-{suffix}",
        "topic_quarantine": f"quarantine-{suffix}",
        "topic_partitions": 3,
        "quickbooks_verifier_tokens": ",".join(QUICKBOOKS_TOKENS),
        "xero_webhook_keys": ",".join(XERO_KEYS),
        "admin_tokens": ADMIN_TOKEN,
        "shutdown_drain_seconds": 0,
    }
    values.update(overrides)
    return load_settings(**values)


@dataclass
class RunningGateway:
    """A gateway serving real HTTP on a loopback port."""

    base_url: str
    settings: Settings
    app: Starlette
    server: GatewayServer
    lifecycle: Lifecycle


def _gateway_server(settings: Settings) -> tuple[GatewayServer, Starlette, Lifecycle, int]:
    lifecycle = Lifecycle()
    app = create_app(settings, lifecycle)
    port = free_port()
    server = GatewayServer(uvicorn_config(settings, app, "127.0.0.1", port), lifecycle, drain_seconds=0)
    return server, app, lifecycle, port


async def migrate_and_create_topics(settings: Settings, migrate_first: bool = True) -> None:
    """Migrate the database and create the topics, as `ledgerhook migrate` does."""
    if migrate_first:
        await migrate(settings.database_url.get_secret_value())
    await ensure_topics(settings)


@asynccontextmanager
async def running_gateway(settings: Settings, migrate_first: bool = True) -> AsyncIterator[RunningGateway]:
    """Serve the gateway in this event loop until the block ends."""
    await migrate_and_create_topics(settings, migrate_first)
    server, app, lifecycle, port = _gateway_server(settings)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("gateway did not start")
        await asyncio.sleep(0.02)
    try:
        yield RunningGateway(f"http://127.0.0.1:{port}", settings, app, server, lifecycle)
    finally:
        server.should_exit = True
        await task


@contextmanager
def gateway_in_thread(settings: Settings) -> Iterator[RunningGateway]:
    """Serve the gateway from a thread with its own loop, for synchronous (hypothesis) tests."""
    asyncio.run(migrate_and_create_topics(settings))
    server, app, lifecycle, port = _gateway_server(settings)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("gateway did not start")
        threading.Event().wait(0.02)
    try:
        yield RunningGateway(f"http://127.0.0.1:{port}", settings, app, server, lifecycle)
    finally:
        server.should_exit = True
        thread.join(30)


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on `topic` right now: reads each partition up to its high watermark, exactly.

    The watermark is taken from fetch responses, not from ListOffsets: the dev broker (Tansu 0.6)
    undercounts end offsets once a batch holds several records.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        await consumer.topics()  # loads metadata
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not assigned:
            return []
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        records: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(30):
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for part in batch.values():
                    records.extend(part)
                behind = [
                    tp
                    for tp in assigned
                    if consumer.highwater(tp) is None or await consumer.position(tp) < consumer.highwater(tp)
                ]
                if not behind and not batch:
                    return records
    finally:
        await consumer.stop()


def record_header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    """A record header's value as text, or None."""
    for key, value in record.headers:
        if key == name:
            return value.decode()
    return None


@asynccontextmanager
async def fresh_database(postgres_url: str, prefix: str, *, migrated: bool = False) -> AsyncIterator[str]:
    """The URL of a new database on the session's server (migrated if asked), dropped at the end:
    for tests whose subject reads a whole table (a sync, a sweep of every row, a size measure)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))
    try:
        if migrated:
            await migrate(url)
        yield url
    finally:
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
