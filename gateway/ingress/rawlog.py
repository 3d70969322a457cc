"""The durable append: a delivery is stored once the raw topic's in-sync replicas have it.

Deliveries that arrive while earlier ones are on their way to the broker are batched here, one
batch per partition, and handed to the producer whole (`send_batch`). The producer's per-record
`send` costs several times more CPU per delivery (a coroutine, a partition lookup, a future and a
metadata tuple for each record), and on the busiest path that was the largest cost of the gateway
process (bench/README.md, "Where the gateway's time goes"). What a request waits for is unchanged:
its own record acknowledged by all in-sync replicas, within the ack budget.
"""

import asyncio
import logging
from collections.abc import Sequence
from functools import partial

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from gateway.ingress.delivery import RawDelivery
from gateway.runtime.kafka import partition_of

log = logging.getLogger("ledgerhook.ingress")

# A record waiting to be batched: key, value, headers, and the future its request awaits.
_Queued = tuple[bytes, bytes, list[tuple[str, bytes]], "asyncio.Future[None]"]


class RawLogUnavailable(Exception):
    """The raw topic did not acknowledge in time; the delivery is not stored."""


class RawLog:
    """Appends verified deliveries to the raw topic and waits for the broker's acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, ack_timeout: float) -> None:
        self._producer = producer
        self._topic = topic
        self._ack_timeout = ack_timeout
        self._queued: list[_Queued] = []
        self._shipper: asyncio.Task[None] | None = None  # a strong reference: the loop keeps weak ones

    async def append(self, delivery: RawDelivery, trace: Sequence[tuple[str, bytes]] | None = None) -> None:
        """Return only once the record is acknowledged (acks=all); else RawLogUnavailable. `trace`
        is the request's trace context (`traceparent`, `tracestate`), when tracing is on.

        A record not acknowledged within the budget may still reach the broker later (Kafka cannot
        take a send back); the provider retries the delivery and the fan-out drops the repeat.
        """
        loop = asyncio.get_running_loop()
        headers = delivery.headers()
        if trace:
            headers.extend(trace)
        acked: asyncio.Future[None] = loop.create_future()
        self._queued.append((delivery.key, delivery.body, headers, acked))
        if self._shipper is None:
            self._shipper = loop.create_task(self._ship())
        # One timer, never a timeout context: the future is ours alone, so expiring it touches
        # nothing the producer holds.
        timer = loop.call_at(loop.time() + self._ack_timeout, _expire, acked)
        try:
            await acked
        finally:
            timer.cancel()

    async def _ship(self) -> None:
        """Hand everything queued to the producer, round after round, until nothing is queued.

        One shipper at a time keeps each partition's batches in order. While the producer waits
        for room (its previous batch of a partition still unsent), new deliveries queue here and
        go out together in the next round.
        """
        try:
            while self._queued:
                queued, self._queued = self._queued, []
                try:
                    await self._send(queued)
                except Exception as exc:  # never leave a request waiting out its whole budget
                    if not isinstance(exc, KafkaError):
                        log.exception("raw log batching failed")
                    _settle([acked for *_, acked in queued], RawLogUnavailable(type(exc).__name__))
        finally:
            self._shipper = None

    async def _send(self, queued: list[_Queued]) -> None:
        """Batch `queued` by partition and hand each batch to the producer."""
        # Waits only when the topic's metadata is missing, bounded by the producer's request
        # timeout, which is the ack budget too (gateway.runtime.kafka.make_producer).
        partitions = sorted(await self._producer.partitions_for(self._topic))
        batches: dict[int, tuple[BatchBuilder, list[asyncio.Future[None]]]] = {}
        full: list[tuple[int, BatchBuilder, list[asyncio.Future[None]]]] = []
        for key, value, headers, acked in queued:
            if acked.done():  # expired or cancelled while queued: its request has its answer
                continue
            partition = partition_of(key, partitions)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = (self._producer.create_batch(), [])
            if batch[0].append(timestamp=None, key=key, value=value, headers=headers) is None:
                full.append((partition, *batch))  # a batch takes its first record whatever its size
                batch = batches[partition] = (self._producer.create_batch(), [])
                batch[0].append(timestamp=None, key=key, value=value, headers=headers)
            batch[1].append(acked)
        for partition, builder, waiters in [*full, *((p, b, w) for p, (b, w) in batches.items())]:
            try:
                sent = await self._producer.send_batch(builder, self._topic, partition=partition)
            except KafkaError as exc:
                _settle(waiters, RawLogUnavailable(type(exc).__name__))
                continue
            sent.add_done_callback(partial(_acknowledge, waiters))


def _expire(acked: "asyncio.Future[None]") -> None:
    if not acked.done():
        acked.set_exception(RawLogUnavailable("ack timeout"))


def _settle(waiters: list["asyncio.Future[None]"], failure: RawLogUnavailable | None) -> None:
    for acked in waiters:
        if acked.done():
            continue
        if failure is None:
            acked.set_result(None)
        else:
            acked.set_exception(failure)


def _acknowledge(waiters: list["asyncio.Future[None]"], sent: "asyncio.Future[object]") -> None:
    if sent.cancelled():
        _settle(waiters, RawLogUnavailable("CancelledError"))
        return
    failure = sent.exception()
    _settle(waiters, None if failure is None else RawLogUnavailable(type(failure).__name__))
