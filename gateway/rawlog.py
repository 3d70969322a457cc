"""The durable append: a delivery is stored once the raw topic's in-sync replicas have it."""

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from gateway.delivery import RawDelivery


class RawLogUnavailable(Exception):
    """The raw topic did not acknowledge in time; the delivery is not stored."""


class RawLog:
    """Appends verified deliveries to the raw topic and waits for the broker's acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, ack_timeout: float) -> None:
        self._producer = producer
        self._topic = topic
        self._ack_timeout = ack_timeout

    async def append(self, delivery: RawDelivery) -> None:
        """Return only once the record is acknowledged (acks=all); else RawLogUnavailable."""
        try:
            async with asyncio.timeout(self._ack_timeout):
                pending = await self._producer.send(
                    self._topic, delivery.body, key=delivery.key, headers=delivery.headers()
                )
                await pending
        except (TimeoutError, KafkaError) as exc:
            raise RawLogUnavailable(type(exc).__name__) from exc
