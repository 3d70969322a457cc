"""The durable append: a delivery is stored once the raw topic's in-sync replicas have it."""

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from gateway.ingress.delivery import RawDelivery


class RawLogUnavailable(Exception):
    """The raw topic did not acknowledge in time; the delivery is not stored."""


class RawLog:
    """Appends verified deliveries to the raw topic and waits for the broker's acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, ack_timeout: float) -> None:
        self._producer = producer
        self._topic = topic
        self._ack_timeout = ack_timeout

    async def append(self, delivery: RawDelivery, trace: Sequence[tuple[str, bytes]] | None = None) -> None:
        """Return only once the record is acknowledged (acks=all); else RawLogUnavailable. `trace`
        is the request's trace context (`traceparent`, `tracestate`), when tracing is on.

        A record not acknowledged within the budget may still reach the broker later (Kafka cannot
        take a send back); the provider retries the delivery and the fan-out drops the repeat.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ack_timeout
        headers = delivery.headers()
        if trace:
            headers.extend(trace)
        try:
            # Waits only when the topic's metadata is missing, bounded by the producer's request
            # timeout, which is the ack budget too (gateway.runtime.kafka.make_producer).
            pending = await self._producer.send(self._topic, delivery.body, key=delivery.key, headers=headers)
        except KafkaError as exc:
            raise RawLogUnavailable(type(exc).__name__) from exc
        if not pending.done():
            await _wait_until(loop, pending, deadline)
        if not pending.done():
            raise RawLogUnavailable("ack timeout")
        failure = pending.exception()
        if failure is not None:
            raise RawLogUnavailable(type(failure).__name__) from failure


async def _wait_until(
    loop: asyncio.AbstractEventLoop, pending: "asyncio.Future[object]", deadline: float
) -> None:
    # One timer and one callback: cheaper than a timeout context on every request, and the
    # producer's own future is never cancelled (aiokafka resolves it later either way).
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    pending.add_done_callback(wake)
    timer = loop.call_at(deadline, wake)
    try:
        await waiter
    finally:
        timer.cancel()
        pending.remove_done_callback(wake)
