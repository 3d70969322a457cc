"""Redrive: feed quarantined records back to the raw topic once their cause is fixed.

A redriven record is the original raw record without its quarantine headers and with
`ledgerhook-redrive-count` incremented. Progress is kept in one consumer group per quarantine reason
on the quarantine topic. What a call feeds, commits and may feed again: docs/architecture.md,
"Quarantine and redrive".
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from fanout.quarantine import H_REASON, QUARANTINE_HEADERS, Reason
from fanout.raw import H_DELIVERY_ID, H_REDRIVE_COUNT, header, redrive_count

log = logging.getLogger("ledgerhook.fanout.redrive")

STALL_SECONDS = 30.0  # give up when the quarantine topic yields nothing for this long


@dataclass(frozen=True, slots=True)
class RedriveResult:
    """What a call did: records fed back to the raw topic, and pending records it left alone."""

    redriven: int
    skipped: int


def redrive_group(group_id: str, reason: Reason) -> str:
    """The consumer group tracking redrive progress for one reason."""
    return f"{group_id}.redrive.{reason.value}"


def redriven_headers(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The original headers: quarantine headers removed, redrive count incremented."""
    kept = [
        (name, value) for name, value in headers if name not in QUARANTINE_HEADERS and name != H_REDRIVE_COUNT
    ]
    return [*kept, (H_REDRIVE_COUNT, str(redrive_count(headers) + 1).encode())]


async def redrive(
    producer: AIOKafkaProducer,
    consumer_options: dict[str, Any],
    *,
    quarantine_topic: str,
    raw_topic: str,
    group_id: str,
    reason: Reason | None = None,
    delivery_id: str | None = None,
) -> RedriveResult:
    """Feed the pending quarantine records matching the filters back to `raw_topic`.

    `skipped` counts pending records (not yet redriven for their reason) that did not match.
    """
    reader = AIOKafkaConsumer(**consumer_options, group_id=None, enable_auto_commit=False)
    trackers = {
        r: AIOKafkaConsumer(**consumer_options, group_id=redrive_group(group_id, r), enable_auto_commit=False)
        for r in Reason
    }
    clients = [reader, *trackers.values()]
    await asyncio.gather(*(client.start() for client in clients))
    try:
        partitions = await _partitions(reader, quarantine_topic)
        if not partitions:
            return RedriveResult(0, 0)
        ends = await _end_snapshot(reader, partitions)
        beginnings = await reader.beginning_offsets(partitions)
        starts: dict[Reason, dict[TopicPartition, int]] = {}
        for r, tracker in trackers.items():
            tracker.assign(partitions)  # offset storage only: no group membership, no rebalance
            starts[r] = {tp: max(beginnings[tp], await tracker.committed(tp) or 0) for tp in partitions}

        selected = set(Reason) if reason is None else {reason}
        # Per reason and partition: the first pending record this call left alone (commit stops there).
        held: dict[Reason, dict[TopicPartition, int]] = {r: {} for r in Reason}
        pending: list[asyncio.Future[Any]] = []
        skipped = 0
        async for record in _records(reader, partitions, starts, ends):
            tp = TopicPartition(record.topic, record.partition)
            record_reason = _reason(record)
            if record_reason is None:
                skipped += 1  # not written by Ledgerhook's worker: never redriven
                continue
            if record.offset < starts[record_reason][tp]:
                continue  # redriven by an earlier call
            matches = record_reason in selected and (
                delivery_id is None or header(record.headers, H_DELIVERY_ID) == delivery_id
            )
            if matches:
                pending.append(
                    await producer.send(
                        raw_topic,
                        record.value or b"",
                        key=record.key,
                        headers=redriven_headers(record.headers),
                    )
                )
            else:
                skipped += 1
                held[record_reason].setdefault(tp, record.offset)
        await asyncio.gather(*pending)  # every record acknowledged before any progress is committed

        for r in selected:
            offsets = {tp: held[r].get(tp, ends[tp]) for tp in partitions}
            offsets = {tp: offset for tp, offset in offsets.items() if offset > starts[r][tp]}
            if offsets:
                await trackers[r].commit(offsets)
        result = RedriveResult(redriven=len(pending), skipped=skipped)
        log.info(
            "quarantine redriven",
            extra={
                "redriven": result.redriven,
                "skipped": result.skipped,
                "reason": reason.value if reason else None,
                "delivery_id": delivery_id,
            },
        )
        return result
    finally:
        await asyncio.gather(*(client.stop() for client in clients))


def _reason(record: ConsumerRecord[bytes, bytes]) -> Reason | None:
    try:
        return Reason(header(record.headers, H_REASON) or "")
    except ValueError:
        return None


async def _partitions(reader: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    await reader.topics()  # loads metadata for every topic without creating any
    return [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]


async def _end_snapshot(
    reader: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The end offset of every partition now; assigns them to `reader`.

    The high watermark of a fetch response is exact on every broker; ListOffsets alone is not enough
    (Tansu 0.6 answers it with the last record batch's base offset + 1), so take the larger of both.
    """
    listed = await reader.end_offsets(partitions)
    reader.assign(partitions)
    for tp in partitions:
        reader.seek(tp, max(0, listed[tp] - 1))
    started = time.monotonic()
    while any(reader.highwater(tp) is None for tp in partitions):
        await reader.getmany(*partitions, timeout_ms=200)
        if time.monotonic() - started > STALL_SECONDS:
            raise TimeoutError(f"the quarantine topic's end could not be read in {STALL_SECONDS:.0f}s")
    return {tp: max(listed[tp], reader.highwater(tp) or 0) for tp in partitions}


async def _records(
    reader: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    starts: dict[Reason, dict[TopicPartition, int]],
    ends: dict[TopicPartition, int],
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record from the lowest start of any reason up to the end snapshot."""
    todo = []
    for tp in partitions:
        first = min(by_partition[tp] for by_partition in starts.values())
        if first < ends[tp]:
            reader.seek(tp, first)
            todo.append(tp)
    last_progress = time.monotonic()
    while todo:
        batch = await reader.getmany(*todo, timeout_ms=200)
        for tp, records in batch.items():
            for record in records:
                if record.offset < ends[tp]:
                    yield record
        if batch:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > STALL_SECONDS:
            raise TimeoutError(f"no quarantine records could be read for {STALL_SECONDS:.0f}s")
        todo = [tp for tp in todo if await reader.position(tp) < ends[tp]]
