"""`ledgerhook worker` as a real process: SIGKILL mid-batch loses nothing, SIGTERM finishes and commits
its batch, health and metrics on the worker port."""

import asyncio
import contextlib
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway.settings import Settings
from provider_auth.accounts.store import ConnectionStore
from provider_auth.providers import Provider
from tests.fanout.pipeline.pipeline_support import (
    PipelineStack,
    Received,
    caught_up,
    expected_id,
    read_events,
    read_records,
    version_of,
)
from tests.fanout.worker_process import WorkerProcess, stop_every_worker, wait_until

REALMS = 12
CHANGES_PER_DELIVERY = 10
OPERATIONS = {"Create": "created", "Update": "updated", "Delete": "deleted"}
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def worker(settings: Settings) -> WorkerProcess:
    """A worker process taking small batches, so a kill lands mid-batch."""
    return WorkerProcess(settings, WORKER_BATCH_SIZE="10")


def published(process: WorkerProcess) -> float:
    """Events the worker published so far, from its own /metrics."""
    return process.metric("ledgerhook_fanout_events_published_total")


async def preload(stack: PipelineStack, realms: list[str], deliveries: int, start: int) -> None:
    """Raw records as the ingress writes them, `CHANGES_PER_DELIVERY` distinct changes each."""
    producer = stack.infra.producer
    pending = []
    for n in range(start, start + deliveries):
        realm = realms[n % len(realms)]
        entities = [
            {
                "name": "Invoice",
                "id": f"{n}-{i}",
                "operation": list(OPERATIONS)[i % 3],
                "lastUpdated": (EPOCH + timedelta(milliseconds=n * 100 + i))
                .isoformat()
                .replace("+00:00", "Z"),
            }
            for i in range(CHANGES_PER_DELIVERY)
        ]
        body = orjson.dumps(
            {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": entities}}]}
        )
        headers = [
            ("ledgerhook-delivery-id", str(uuid.uuid4()).encode()),
            ("ledgerhook-provider", b"quickbooks"),
            ("ledgerhook-received-at", b"2025-06-01T00:00:00.000Z"),
            ("content-type", b"application/json"),
        ]
        pending.append(
            await producer.send(stack.settings.topic_raw, body, key=realm.encode(), headers=headers)
        )
    await asyncio.gather(*pending)


def expected_ids(raw: list[Received], connections: dict[str, list[str]]) -> set[str]:
    """Every event id the raw records must yield, by the documented formula."""
    ids = set()
    for record in raw:
        [notification] = orjson.loads(record.value)["eventNotifications"]
        realm = notification["realmId"]
        for entity in notification["dataChangeEvent"]["entities"]:
            moment = datetime.fromisoformat(entity["lastUpdated"].replace("Z", "+00:00"))
            for connection_id in connections[realm]:
                ids.add(
                    expected_id(
                        connection_id,
                        "quickbooks",
                        realm,
                        "invoice",
                        entity["id"],
                        OPERATIONS[entity["operation"]],
                        version_of(moment),
                    )
                )
    return ids


async def committed(settings: Settings) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.worker_group_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        return {
            p: await consumer.committed(TopicPartition(settings.topic_raw, p)) or 0
            for p in range(settings.topic_partitions)
        }
    finally:
        await consumer.stop()


def assert_repeats_identical(events: list[Received]) -> None:
    """A repeated id is the same record again (key, headers, value), never a different event."""
    first: dict[str, Received] = {}
    for event in events:
        event_id = event.header("ce_id") or ""
        if event_id in first:
            original = first[event_id]
            assert (event.key, event.headers, event.value) == (original.key, original.headers, original.value)
        else:
            first[event_id] = event


@pytest.fixture(autouse=True)
def no_worker_left_behind() -> Iterator[None]:
    """A failing test must not leave a worker process running."""
    yield
    stop_every_worker()


@contextlib.asynccontextmanager
async def stack_and_realms(
    settings_factory: Any,
) -> AsyncIterator[tuple[PipelineStack, ConnectionStore, list[str]]]:
    """A running gateway and infrastructure for a worker group of its own, and fresh realm ids."""
    from gateway.runtime.infra import open_infrastructure
    from tests.support import running_gateway

    settings = settings_factory(
        worker_group_id=f"fanout-{uuid.uuid4().hex[:8]}", worker_session_timeout_ms=3000
    )
    async with running_gateway(settings) as gateway, open_infrastructure(settings) as infra:
        realms = [str(uuid.uuid4().int)[:12] for _ in range(REALMS)]
        yield PipelineStack(settings, gateway, infra), ConnectionStore(infra.pool, keyring=None), realms


async def test_sigkill_mid_batch_then_sigterm(settings_factory: Any) -> None:
    async with stack_and_realms(settings_factory) as (stack, store, realms):
        settings = stack.settings
        connections: dict[str, list[str]] = {}
        for n, realm in enumerate(realms):
            tenants = ["tenant-a", "tenant-b"] if n % 3 == 0 else ["tenant-a"]  # some shared by two tenants
            connections[realm] = [(await store.create(t, Provider.QUICKBOOKS, realm)).id for t in tenants]
        await preload(stack, realms, deliveries=400, start=0)
        raw = await read_records(settings.kafka_bootstrap_servers, settings.topic_raw)
        expected = expected_ids(raw, connections)
        assert len(expected) > 5000

        # 1. Killed while publishing: some events are out, the rest are not.
        first = worker(settings)
        await wait_until(lambda: published(first) > 200, 60, "the worker to publish")
        assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
        partial = await read_events(settings)
        assert 0 < len({e.header("ce_id") for e in partial}) < len(expected)

        # 2. Restarted: catches up; every change delivered, repeats only as the same records again.
        second = worker(settings)
        await caught_up(settings, timeout=60)
        events = await read_events(settings)
        assert {e.header("ce_id") for e in events} == expected
        assert_repeats_identical(events)
        repeats_after_crash = len(events) - len(expected)
        status, body = second.get("/livez")
        assert status == 200
        status, body = second.get("/readyz")
        assert (status, orjson.loads(body)["checks"]) == (
            200,
            {"broker": "ok", "database": "ok", "fanout": "ok"},
        )
        assert "ledgerhook_fanout_records_consumed_total" in second.get("/metrics")[1]

        # 3. SIGTERM while busy: the batch in progress is finished and committed, exit 0.
        await preload(stack, realms, deliveries=300, start=400)
        base = published(second)
        await wait_until(lambda: published(second) > base + 100, 60, "more events")
        assert await second.stop(signal.SIGTERM) == 0, second.logs()
        offsets = await committed(settings)
        raw = await read_records(settings.kafka_bootstrap_servers, settings.topic_raw)
        done = [r for r in raw if r.offset < offsets[r.partition]]
        events = await read_events(settings)
        # Everything published belongs to a committed record, and every committed record is published.
        assert {e.header("ce_id") for e in events} == expected_ids(done, connections)
        assert len(events) - len({e.header("ce_id") for e in events}) == repeats_after_crash

        # 4. A third worker finishes the rest without a single repeat.
        third = worker(settings)
        await caught_up(settings, timeout=60)
        assert await third.stop(signal.SIGTERM) == 0
        events = await read_events(settings)
        every = expected_ids(raw, connections)
        assert {e.header("ce_id") for e in events} == every
        assert len(events) == len(every) + repeats_after_crash
        assert_repeats_identical(events)
        assert Counter(e.key for e in events).keys() == {
            c.encode() for ids in connections.values() for c in ids
        }


async def test_a_worker_joining_mid_drain_takes_partitions_over_without_loss_or_repeat(
    settings_factory: Any,
) -> None:
    """A rebalance while batches are being routed and published: the first worker finishes what it
    is publishing, drops what it polled after, and the owners go on from the committed offsets."""
    async with stack_and_realms(settings_factory) as (stack, store, realms):
        settings = stack.settings
        connections = {
            realm: [(await store.create("tenant-a", Provider.QUICKBOOKS, realm)).id] for realm in realms
        }
        await preload(stack, realms, deliveries=1000, start=0)
        first = worker(settings)
        await wait_until(lambda: published(first) > 300, 60, "the first worker to publish")

        # Deliveries keep coming until the second worker has taken partitions over with work on them.
        second = worker(settings)
        sent = 1000
        deadline = asyncio.get_running_loop().time() + 60
        while not await asyncio.to_thread(lambda: published(second) > 0):
            assert asyncio.get_running_loop().time() < deadline, "the second worker never took over"
            await preload(stack, realms, deliveries=50, start=sent)
            sent += 50
            await asyncio.sleep(0.05)
        await caught_up(settings, timeout=60)
        assert await first.stop(signal.SIGTERM) == 0
        assert await second.stop(signal.SIGTERM) == 0

        raw = await read_records(settings.kafka_bootstrap_servers, settings.topic_raw)
        expected = expected_ids(raw, connections)
        assert len(raw) == sent
        events = await read_events(settings)
        assert {e.header("ce_id") for e in events} == expected
        assert len(events) == len(expected)
