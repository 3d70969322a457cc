"""The raw log batches deliveries itself: every append still waits for its own record, each record
lands on the partition the producer's partitioner would pick, in the order of the appends, and a
round larger than one batch is split, not refused. A broker outage is test_durability.py's."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from gateway.ingress.delivery import H_DELIVERY_ID, RawDelivery, new_delivery_id, utcnow
from gateway.ingress.rawlog import RawLog
from gateway.runtime.kafka import crc32_partitioner, ensure_topics, make_producer
from gateway.settings import Settings
from tests.support import read_topic


def delivery(account: str, body: bytes) -> RawDelivery:
    return RawDelivery(
        delivery_id=new_delivery_id(),
        provider="quickbooks",
        body=body,
        received_at=utcnow(),
        content_type="application/json",
        account_key=account,
    )


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def test_concurrent_appends_land_once_on_their_partition_in_order(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    rawlog = RawLog(producer, settings.topic_raw, ack_timeout=10.0)
    accounts = [f"realm-{n}" for n in range(17)]
    sent = [delivery(accounts[n % len(accounts)], f"body-{n}".encode()) for n in range(400)]
    # Tasks start in creation order, so this is the order of the appends.
    await asyncio.gather(*(rawlog.append(d) for d in sent))

    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_raw)
    by_id = {dict(r.headers)[H_DELIVERY_ID].decode(): r for r in records}
    assert len(records) == len(sent) == len(by_id)
    partitions = sorted(await producer.partitions_for(settings.topic_raw))
    assert len(partitions) == settings.topic_partitions > 1
    for d in sent:
        record = by_id[d.delivery_id]
        assert record.value == d.body and record.key == d.key
        assert record.partition == crc32_partitioner(d.key, partitions, partitions)
    for account in accounts:
        offsets = [by_id[d.delivery_id].offset for d in sent if d.account_key == account]
        assert offsets == sorted(offsets), f"{account}'s deliveries out of order"
    assert len({r.partition for r in records}) == settings.topic_partitions


async def test_a_round_larger_than_a_batch_is_split(settings: Settings, producer: AIOKafkaProducer) -> None:
    rawlog = RawLog(producer, settings.topic_raw, ack_timeout=10.0)
    # One account, one partition: five 400 KiB bodies are two full 1 MiB batches and a third.
    sent = [delivery("realm-big", bytes([n]) * 400 * 1024) for n in range(5)]
    await asyncio.gather(*(rawlog.append(d) for d in sent))

    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_raw)
    assert [r.value for r in sorted(records, key=lambda r: r.offset)] == [d.body for d in sent]
