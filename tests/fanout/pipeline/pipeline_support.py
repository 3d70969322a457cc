"""Helpers of the fan-out worker tests: the stack, the worker in this loop, an independent reader."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import jsonschema
import referencing
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioTopicPartition
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from gateway.ingress.delivery import DELIVERY_ID_HEADER
from gateway.runtime.infra import Infrastructure
from gateway.runtime.worker import running_worker_tasks
from gateway.settings import Settings
from tests.paths import REPO_ROOT
from tests.support import QUICKBOOKS_TOKENS, XERO_KEYS, RunningGateway

SCHEMAS = REPO_ROOT / "docs" / "schemas"
# The event id namespace as docs/events.md publishes it (not imported: the test checks the formula).
NAMESPACE = uuid.UUID("6f1d2c3a-8b4e-5a7f-9c0d-1e2f3a4b5c6d")


@dataclass
class PipelineStack:
    """A running gateway plus the infrastructure a worker uses."""

    settings: Settings
    gateway: RunningGateway
    infra: Infrastructure


def expected_id(
    connection_id: str, provider: str, account: str, entity: str, entity_id: str, operation: str, version: str
) -> str:
    """The documented event id formula, computed independently of fanout.change_events."""
    name = "|".join([connection_id, provider, account, entity, entity_id, operation, version])
    return str(uuid.uuid5(NAMESPACE, name))


def version_of(moment: datetime) -> str:
    """The <version> part of the formula for a change with a timestamp."""
    return moment.isoformat(timespec="microseconds")


def b64_hmac(key: str, body: bytes) -> str:
    """base64 HMAC-SHA256, as QuickBooks and Xero sign."""
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


async def post_signed(gateway: RunningGateway, provider: str, body: bytes) -> str:
    """POST a correctly signed shared-endpoint delivery; returns its delivery id (asserting 200)."""
    header, key = {
        "quickbooks": ("intuit-signature", QUICKBOOKS_TOKENS[0]),
        "xero": ("x-xero-signature", XERO_KEYS[0]),
    }[provider]
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gateway.base_url}/webhooks/{provider}",
            data=body,
            headers={header: b64_hmac(key, body), "content-type": "application/json"},
        ) as response,
    ):
        assert response.status == 200
        return response.headers[DELIVERY_ID_HEADER]


@asynccontextmanager
async def worker_running(stack: PipelineStack) -> AsyncIterator[CollectorRegistry]:
    """The worker process's tasks (fan-out, pruning) in this event loop, with their own registry."""
    registry = CollectorRegistry()
    async with asyncio.timeout(60), running_worker_tasks(stack.settings, stack.infra, registry):
        yield registry


async def caught_up(settings: Settings, timeout: float = 30) -> None:
    """Wait until the worker group has committed every raw record produced so far."""
    deadline = time.monotonic() + timeout
    while True:
        behind = await partitions_behind(
            settings.kafka_bootstrap_servers, settings.topic_raw, settings.worker_group_id
        )
        if not behind:
            return
        assert time.monotonic() < deadline, f"worker still behind on raw partitions {behind}"
        await asyncio.sleep(0.1)


async def partitions_behind(bootstrap: str, topic: str, group_id: str) -> list[int]:
    """Partitions of `topic` whose committed offset in `group_id` is short of the end (no group join)."""
    ends = await end_offsets(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        behind = []
        for partition, end in ends.items():
            committed = await consumer.committed(AioTopicPartition(topic, partition))
            if end > 0 and (committed or 0) < end:
                behind.append(partition)
        return behind
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset of every partition, from a fetch's high watermark.

    Not from ListOffsets alone: Tansu 0.6 answers it with the last record batch's base offset + 1.
    """
    # An empty partition's fetch would wait fetch_max_wait_ms (500 by default) for records.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [AioTopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return {}
        listed = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, max(0, listed[tp] - 1))
        async with asyncio.timeout(10):
            while any(consumer.highwater(tp) is None for tp in partitions):
                await consumer.getmany(timeout_ms=100)
        return {tp.partition: max(listed[tp], consumer.highwater(tp) or 0) for tp in partitions}
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Received:
    """One record read back by the independent reader."""

    partition: int
    offset: int
    key: bytes | None
    headers: dict[str, bytes]
    value: bytes

    def event(self) -> BaseCloudEvent:
        """The record parsed by the official CloudEvents SDK (Kafka binary content mode)."""
        return from_binary(KafkaMessage(headers=self.headers, key=self.key, value=self.value), JSONFormat())

    def header(self, name: str) -> str | None:
        """A header as text."""
        value = self.headers.get(name)
        return value.decode() if value is not None else None


def read_all(bootstrap: str, topic: str, ends: dict[int, int], timeout: float = 30) -> list[Received]:
    """Every record of `topic` below `ends`, read by a confluent-kafka consumer with assigned partitions."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",  # required by librdkafka; never joined nor committed
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 20,
        }
    )
    try:
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(todo)])
        records: list[Received] = []
        deadline = time.monotonic() + timeout
        while todo:
            assert time.monotonic() < deadline, "topic not read in time"
            message = consumer.poll(0.1)
            if message is None:
                continue
            if message.error():
                raise KafkaException(message.error())
            partition, offset = message.partition(), message.offset()
            if offset < ends[partition]:
                records.append(
                    Received(
                        partition=partition,
                        offset=offset,
                        key=message.key(),
                        headers=dict(message.headers() or []),
                        value=message.value() or b"",
                    )
                )
            if offset >= ends[partition] - 1:
                todo.discard(partition)
        return records
    finally:
        consumer.close()


async def read_records(bootstrap: str, topic: str) -> list[Received]:
    """Every record on `topic` now (confluent-kafka reader)."""
    ends = await end_offsets(bootstrap, topic)
    return await asyncio.to_thread(read_all, bootstrap, topic, ends)


async def read_events(settings: Settings) -> list[Received]:
    """Everything on the changes topic now."""
    return await read_records(settings.kafka_bootstrap_servers, settings.topic_changes)


async def read_quarantine(settings: Settings) -> list[Received]:
    """Everything on the quarantine topic now."""
    return await read_records(settings.kafka_bootstrap_servers, settings.topic_quarantine)


def _schema_registry() -> referencing.Registry[Any]:
    resources = []
    for path in SCHEMAS.glob("*.json"):
        document = json.loads(path.read_text())
        resource = referencing.Resource.from_contents(document)
        resources.append((document.get("$id", path.name), resource))
    return referencing.Registry().with_resources(resources)


def validate_data(event_type: str, data: dict[str, Any]) -> None:
    """Validate event data against docs/schemas/<type>.json, else the generic change schema."""
    path = SCHEMAS / f"{event_type}.json"
    if not path.exists():
        path = SCHEMAS / "accounting.change.json"
    schema = json.loads(path.read_text())
    validator = jsonschema.Draft202012Validator(schema, registry=_schema_registry())
    validator.validate(data)


def sample_value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A metric sample's value, 0 when never set."""
    return registry.get_sample_value(name, labels) or 0.0


async def produce_raw(stack: PipelineStack, value: bytes, key: bytes | None, headers: dict[str, str]) -> None:
    """Append a record to the raw topic directly (what ingress would write, or something it never does)."""
    pending = await stack.infra.producer.send(
        stack.settings.topic_raw, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()]
    )
    await pending


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a `ledgerhook` subprocess needs to use this test's stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERHOOK_")}
    values = {
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_IDEMPOTENT_PRODUCER": "false",
        "TOPIC_RAW": settings.topic_raw,
        "TOPIC_CHANGES": settings.topic_changes,
        "TOPIC_QUARANTINE": settings.topic_quarantine,
        "TOPIC_ACCOUNT_EVENTS": settings.topic_account_events,
        "TOPIC_PARTITIONS": str(settings.topic_partitions),
        "WORKER_GROUP_ID": settings.worker_group_id,
        "WORKER_SESSION_TIMEOUT_MS": str(settings.worker_session_timeout_ms),
        "LOG_LEVEL": "INFO",
    }
    return env | {f"LEDGERHOOK_{k}": v for k, v in (values | extra).items()}
