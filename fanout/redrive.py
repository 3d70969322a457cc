"""Redrive: feed quarantined records back to the raw topic once their cause is fixed.

A redriven record is the original raw record without its quarantine headers and with
`ledgerhook-redrive-count` incremented. Progress is kept in one consumer group per quarantine reason
on the quarantine topic; records an operator discarded (`fanout.quarantine_pending`) are never fed.
What a call feeds, commits and may feed again: docs/architecture.md, "Quarantine and redrive".
"""

import asyncio
import logging
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer, TopicPartition

from fanout.quarantine import QUARANTINE_HEADERS, Reason
from fanout.quarantine_pending import (
    QuarantineDiscards,
    is_discarded,
    open_quarantine,
    reason_of,
    redrive_group,
)
from fanout.raw import H_DELIVERY_ID, H_REDRIVE_COUNT, header, redrive_count

__all__ = ["RedriveResult", "redrive", "redrive_group", "redriven_headers"]

log = logging.getLogger("ledgerhook.fanout.redrive")


@dataclass(frozen=True, slots=True)
class RedriveResult:
    """What a call did: records fed back to the raw topic, and pending records it left alone."""

    redriven: int
    skipped: int


def redriven_headers(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The original headers: quarantine headers removed, redrive count incremented."""
    kept = [
        (name, value) for name, value in headers if name not in QUARANTINE_HEADERS and name != H_REDRIVE_COUNT
    ]
    return [*kept, (H_REDRIVE_COUNT, str(redrive_count(headers) + 1).encode())]


async def redrive(
    producer: AIOKafkaProducer,
    consumer_options: dict[str, Any],
    pool: asyncpg.Pool,
    *,
    quarantine_topic: str,
    raw_topic: str,
    group_id: str,
    reason: Reason | None = None,
    delivery_id: str | None = None,
) -> RedriveResult:
    """Feed the pending quarantine records matching the filters back to `raw_topic`.

    `skipped` counts pending records (not yet redriven for their reason) that did not match.
    Discarded records are neither fed nor counted, and never hold a reason's progress back.
    """
    discards = QuarantineDiscards(pool)
    async with open_quarantine(consumer_options, topic=quarantine_topic, group_id=group_id) as view:
        if not view.partitions:
            return RedriveResult(0, 0)
        discarded = await discards.positions(quarantine_topic)
        starts, ends = view.starts, view.ends
        selected = set(Reason) if reason is None else {reason}
        # Per reason and partition: the first pending record this call left alone (commit stops there).
        held: dict[Reason, dict[TopicPartition, int]] = {r: {} for r in Reason}
        pending: list[asyncio.Future[Any]] = []
        skipped = 0
        async with aclosing(view.records({tp: view.first(tp) for tp in view.partitions})) as records:
            async for record in records:
                tp = TopicPartition(record.topic, record.partition)
                record_reason = reason_of(record)
                if record_reason is None:
                    skipped += 1  # not written by Ledgerhook's worker: never redriven
                    continue
                if record.offset < starts[record_reason][tp]:
                    continue  # redriven by an earlier call
                if is_discarded(record, discarded):
                    continue  # an operator discarded it: never fed, and progress moves past it
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

        committed = {r: dict(by_partition) for r, by_partition in starts.items()}
        for r in selected:
            offsets = {tp: held[r].get(tp, ends[tp]) for tp in view.partitions}
            offsets = {tp: offset for tp, offset in offsets.items() if offset > starts[r][tp]}
            if offsets:
                await view.trackers[r].commit(offsets)
                committed[r].update(offsets)
        if discarded:
            await discards.prune(quarantine_topic, committed)
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
