"""The pending quarantine: the records a redrive would still feed, as the admin API and the console
read them, and the operator's discards, kept in PostgreSQL so that a redrive never feeds them.

A record is pending while it is at or after its reason's redrive group's committed offset and not
discarded. Records without a redrivable reason (`poll_unparseable` pages) are never pending. Every
read is bounded: it scans at most a given number of records and says when it stopped early
(docs/architecture.md, "Quarantine and redrive").
"""

import asyncio
import base64
import binascii
import codecs
import hashlib
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from fanout.quarantine import H_DETAIL, H_QUARANTINED_AT, H_REASON, Reason
from fanout.raw import H_CONNECTION_ID, H_DELIVERY_ID, H_PROVIDER, RawHeaders, header

__all__ = [
    "BODY_LIMIT",
    "SCAN_LIMIT",
    "Discarded",
    "PendingCounts",
    "PendingPage",
    "PendingQuarantine",
    "PendingRecord",
    "QuarantineDiscards",
    "QuarantineView",
    "open_quarantine",
    "parse_record_id",
    "reason_of",
    "record_id",
    "redrive_group",
]

STALL_SECONDS = 30.0  # give up when the quarantine topic yields nothing for this long
READ_WAIT_MS = 50  # how long a fetch may wait at the end of a partition
BODY_LIMIT = 64 * 1024  # the most of a body one read returns
SCAN_LIMIT = 10_000  # the most records one listing or count reads
DISCARD_SCAN_LIMIT = 100_000  # the most records one discard reads
_RECORD_ID = re.compile(r"(\d{1,9})-(\d{1,18})", re.ASCII)

Record: TypeAlias = ConsumerRecord[bytes, bytes]


def redrive_group(group_id: str, reason: Reason) -> str:
    """The consumer group tracking redrive progress for one reason."""
    return f"{group_id}.redrive.{reason.value}"


def reason_of(record: Record) -> Reason | None:
    """The record's redrivable reason; None for a record no redrive feeds."""
    try:
        return Reason(header(record.headers, H_REASON) or "")
    except ValueError:
        return None


def record_id(partition: int, offset: int) -> str:
    """The stable id of a quarantine record: its position on the topic."""
    return f"{partition}-{offset}"


def parse_record_id(text: str) -> tuple[int, int] | None:
    """(partition, offset) of a record id, or None when `text` is not one."""
    match = _RECORD_ID.fullmatch(text)
    return (int(match[1]), int(match[2])) if match else None


def fingerprint(record: Record) -> bytes:
    """What a discard remembers besides the position, so that a topic recreated from offset 0 does
    not inherit the discards of its predecessor."""
    digest = hashlib.sha256()
    for part in (record.key or b"", record.value or b"", *(v for _, v in record.headers)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    for name, _ in record.headers:
        digest.update(name.encode())
    return digest.digest()


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """One pending quarantine record; `body` only when asked for, at most `BODY_LIMIT` bytes."""

    id: str
    partition: int
    offset: int
    reason: Reason
    detail: str | None
    delivery_id: str | None
    provider: str | None
    connection_id: str | None
    quarantined_at: str | None
    redrive_count: int
    body_size: int
    body: bytes | None = None
    body_truncated: bool = False

    @classmethod
    def of(cls, record: Record, reason: Reason, *, with_body: bool = False) -> "PendingRecord":
        """The pending view of `record`."""
        value = record.value or b""
        return cls(
            id=record_id(record.partition, record.offset),
            partition=record.partition,
            offset=record.offset,
            reason=reason,
            detail=header(record.headers, H_DETAIL),
            delivery_id=header(record.headers, H_DELIVERY_ID),
            provider=header(record.headers, H_PROVIDER),
            connection_id=header(record.headers, H_CONNECTION_ID),
            quarantined_at=header(record.headers, H_QUARANTINED_AT),
            redrive_count=RawHeaders.read(record.headers).redrive_count,
            body_size=len(value),
            body=value[:BODY_LIMIT] if with_body else None,
            body_truncated=with_body and len(value) > BODY_LIMIT,
        )

    def body_text(self) -> str | None:
        """The body as text when it is UTF-8 (a multi-byte character cut by the limit is left
        out), else None."""
        if self.body is None:
            return None
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            return decoder.decode(self.body, final=not self.body_truncated)
        except UnicodeDecodeError:
            return None


@dataclass(frozen=True, slots=True)
class PendingPage:
    """One page of pending records, in topic order; `next` reads on (None: the end)."""

    items: list[PendingRecord]
    next: str | None


@dataclass(frozen=True, slots=True)
class PendingCounts:
    """Pending records by reason; `complete` is False when the scan stopped at its limit, so each
    count is "this many or more"."""

    by_reason: dict[str, int]
    complete: bool


@dataclass(frozen=True, slots=True)
class Discarded:
    """What a discard did: the records it discarded, the ids given that were not pending, and
    whether it stopped at its scan limit before the end of the topic (call again for the rest)."""

    records: list[PendingRecord]
    not_pending: list[str] = field(default_factory=list)
    more: bool = False


class QuarantineDiscards:
    """The `quarantine_discards` table: positions an operator discarded, never to be redriven."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def positions(self, topic: str) -> dict[tuple[int, int], bytes]:
        """The fingerprint of every discarded record of `topic`, by (partition, offset)."""
        rows = await self._pool.fetch(
            "SELECT partition, record_offset, fingerprint FROM quarantine_discards WHERE topic = $1", topic
        )
        return {(row["partition"], row["record_offset"]): bytes(row["fingerprint"]) for row in rows}

    @staticmethod
    async def add(
        conn: asyncpg.Connection, topic: str, discarded: Sequence[tuple[PendingRecord, bytes]], actor: str
    ) -> int:
        """Remember `discarded` (record, fingerprint) in the caller's transaction; returns how many
        were new."""
        if not discarded:
            return 0
        status: str = await conn.execute(
            "INSERT INTO quarantine_discards (topic, partition, record_offset, reason, fingerprint, actor)"
            " SELECT $1, * FROM unnest($2::int[], $3::bigint[], $4::text[], $5::bytea[], $6::text[])"
            " ON CONFLICT DO NOTHING",
            topic,
            [record.partition for record, _ in discarded],
            [record.offset for record, _ in discarded],
            [record.reason.value for record, _ in discarded],
            [digest for _, digest in discarded],
            [actor] * len(discarded),
        )
        return int(status.rsplit(" ", 1)[-1])

    async def prune(self, topic: str, starts: dict[Reason, dict[TopicPartition, int]]) -> None:
        """Forget the discards a reason's redrive group has moved past: no read looks at them again."""
        below = [
            (reason.value, tp.partition, offset) for reason, by in starts.items() for tp, offset in by.items()
        ]
        await self._pool.execute(
            "DELETE FROM quarantine_discards d"
            " USING unnest($2::text[], $3::int[], $4::bigint[]) AS f(reason, partition, below)"
            " WHERE d.topic = $1 AND d.reason = f.reason AND d.partition = f.partition"
            " AND d.record_offset < f.below",
            topic,
            [reason for reason, _, _ in below],
            [partition for _, partition, _ in below],
            [offset for _, _, offset in below],
        )


class QuarantineView:
    """The quarantine topic as one call sees it: its partitions, where each ends (a snapshot taken
    at the start) and where each reason's redrive group stands; reads records in that range."""

    def __init__(
        self,
        reader: AIOKafkaConsumer,
        trackers: dict[Reason, AIOKafkaConsumer],
        partitions: list[TopicPartition],
        ends: dict[TopicPartition, int],
        starts: dict[Reason, dict[TopicPartition, int]],
    ) -> None:
        self.reader = reader
        self.trackers = trackers  # one per reason; commits a redrive group's progress
        self.partitions = partitions
        self.ends = ends
        self.starts = starts  # per reason: its committed offset, at least the partition's beginning

    def first(self, tp: TopicPartition) -> int:
        """The lowest offset of `tp` that any reason still has pending."""
        return min(by_partition[tp] for by_partition in self.starts.values())

    def pending_reason(self, record: Record, discards: dict[tuple[int, int], bytes]) -> Reason | None:
        """The record's reason when it is pending (not yet redriven for it, not discarded), else None."""
        reason = reason_of(record)
        if reason is None:
            return None
        if record.offset < self.starts[reason][TopicPartition(record.topic, record.partition)]:
            return None
        return None if is_discarded(record, discards) else reason

    async def records(self, firsts: dict[TopicPartition, int]) -> AsyncGenerator[Record, None]:
        """Every record from `firsts` (per partition) up to the end snapshot."""
        reader = self.reader
        todo = []
        for tp in self.partitions:
            if tp in firsts and firsts[tp] < self.ends[tp]:
                reader.seek(tp, firsts[tp])
                todo.append(tp)
        # Partitions not read now are not fetched either.
        reader.pause(*[tp for tp in self.partitions if tp not in todo])
        reader.resume(*todo)
        last_progress = time.monotonic()
        while todo:
            batch = await reader.getmany(*todo, timeout_ms=200)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < self.ends[tp]:
                        yield record
            if batch:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > STALL_SECONDS:
                raise TimeoutError(f"no quarantine records could be read for {STALL_SECONDS:.0f}s")
            todo = [tp for tp in todo if await reader.position(tp) < self.ends[tp]]


def is_discarded(record: Record, discards: dict[tuple[int, int], bytes]) -> bool:
    """True when an operator discarded this very record."""
    kept = discards.get((record.partition, record.offset))
    return kept is not None and kept == fingerprint(record)


@asynccontextmanager
async def open_quarantine(
    consumer_options: dict[str, Any], *, topic: str, group_id: str
) -> AsyncIterator[QuarantineView]:
    """The quarantine topic's view for one call; its consumers stop at the end of the block."""
    # A fetch answers at once when there are records; on an empty partition the broker would hold it
    # for fetch_max_wait_ms (500 by default) before saying so, once per read of the end.
    reader = AIOKafkaConsumer(
        **consumer_options, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=READ_WAIT_MS
    )
    trackers = {
        r: AIOKafkaConsumer(**consumer_options, group_id=redrive_group(group_id, r), enable_auto_commit=False)
        for r in Reason
    }
    clients = [reader, *trackers.values()]
    await asyncio.gather(*(client.start() for client in clients))
    try:
        partitions = await _partitions(reader, topic)
        ends: dict[TopicPartition, int] = {}
        starts: dict[Reason, dict[TopicPartition, int]] = {r: {} for r in Reason}
        if partitions:
            ends = await _end_snapshot(reader, partitions)
            beginnings = await reader.beginning_offsets(partitions)
            for r, tracker in trackers.items():
                tracker.assign(partitions)  # offset storage only: no group membership, no rebalance
                starts[r] = {tp: max(beginnings[tp], await tracker.committed(tp) or 0) for tp in partitions}
        yield QuarantineView(reader, trackers, partitions, ends, starts)
    finally:
        await asyncio.gather(*(client.stop() for client in clients))


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


class PendingQuarantine:
    """Reads and discards pending quarantine records, on the process's pool."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        consumer_options: dict[str, Any],
        *,
        topic: str,
        group_id: str,
        scan_limit: int = SCAN_LIMIT,
        discard_scan_limit: int = DISCARD_SCAN_LIMIT,
    ) -> None:
        self.discards = QuarantineDiscards(pool)
        self._options = consumer_options
        self._topic = topic
        self._group_id = group_id
        self._scan_limit = scan_limit
        self._discard_scan_limit = discard_scan_limit

    def _open(self) -> Any:
        return open_quarantine(self._options, topic=self._topic, group_id=self._group_id)

    async def page(
        self, reason: Reason | None = None, limit: int = 50, cursor: str | None = None
    ) -> PendingPage:
        """Up to `limit` pending records (of `reason`, or all) from `cursor` on, in topic order.

        A page may hold fewer records while `next` is set: the scan stopped at its limit.
        Raises ValueError for a cursor that is not a `next` of an earlier page.
        """
        after = _decode_cursor(cursor) if cursor is not None else None
        items: list[PendingRecord] = []
        scanned = 0
        async with self._open() as view:
            discards = await self.discards.positions(self._topic)
            for tp in view.partitions:
                first = view.first(tp)
                if after is not None:
                    if tp.partition < after[0]:
                        continue
                    if tp.partition == after[0]:
                        first = max(first, after[1])
                async with aclosing(view.records({tp: first})) as records:
                    async for record in records:
                        found = view.pending_reason(record, discards)
                        if found is not None and reason in (None, found):
                            if len(items) == limit:
                                return PendingPage(items, _encode_cursor(tp.partition, record.offset))
                            items.append(PendingRecord.of(record, found))
                        scanned += 1
                        if scanned >= self._scan_limit:
                            return PendingPage(items, _encode_cursor(tp.partition, record.offset + 1))
        return PendingPage(items, None)

    async def counts(self) -> PendingCounts:
        """Pending records by reason, reading at most the scan limit."""
        counts: dict[str, int] = {}
        scanned = 0
        async with self._open() as view:
            discards = await self.discards.positions(self._topic)
            async with aclosing(view.records({tp: view.first(tp) for tp in view.partitions})) as records:
                async for record in records:
                    found = view.pending_reason(record, discards)
                    if found is not None:
                        counts[found.value] = counts.get(found.value, 0) + 1
                    scanned += 1
                    if scanned >= self._scan_limit:
                        return PendingCounts(counts, complete=False)
        return PendingCounts(counts, complete=True)

    async def record(self, wanted: str) -> PendingRecord | None:
        """The pending record with id `wanted`, with its body (capped); None when there is none."""
        position = parse_record_id(wanted)
        if position is None:
            return None
        async with self._open() as view:
            tp = TopicPartition(self._topic, position[0])
            if tp not in view.ends or not view.first(tp) <= position[1] < view.ends[tp]:
                return None
            discards = await self.discards.positions(self._topic)
            async with aclosing(view.records({tp: position[1]})) as records:
                async for record in records:
                    if record.offset != position[1]:
                        return None
                    found = view.pending_reason(record, discards)
                    return None if found is None else PendingRecord.of(record, found, with_body=True)
        return None

    async def discard(
        self,
        conn: asyncpg.Connection,
        actor: str,
        *,
        ids: Iterable[str] | None = None,
        reason: Reason | None = None,
    ) -> Discarded:
        """Discard the pending records named by `ids`, or every pending record of `reason`, in the
        caller's transaction on `conn`; a later redrive never feeds them."""
        wanted = set(ids) if ids is not None else set()
        positions = {p for p in map(parse_record_id, wanted) if p is not None}
        found: list[tuple[PendingRecord, bytes]] = []
        more = False
        scanned = 0
        async with self._open() as view:
            discards = await self.discards.positions(self._topic)
            if reason is not None:
                firsts = {tp: view.starts[reason][tp] for tp in view.partitions}
            else:
                firsts = {}
                for partition, offset in positions:
                    tp = TopicPartition(self._topic, partition)
                    if tp in view.ends:
                        firsts[tp] = min(firsts.get(tp, offset), offset)
            async with aclosing(view.records(firsts)) as records:
                async for record in records:
                    scanned += 1
                    pending = view.pending_reason(record, discards)
                    chosen = (
                        pending == reason
                        if reason is not None
                        else (record.partition, record.offset) in positions
                    )
                    if pending is not None and chosen:
                        found.append((PendingRecord.of(record, pending), fingerprint(record)))
                    if reason is None and len(found) == len(positions):
                        break
                    if scanned >= self._discard_scan_limit:
                        more = True
                        break
        await self.discards.add(conn, self._topic, found, actor)
        done = {record.id for record, _ in found}
        return Discarded([record for record, _ in found], sorted(wanted - done), more)


def _encode_cursor(partition: int, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{partition}:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        partition, offset = text.split(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise ValueError
        return int(partition), int(offset)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor of an earlier page") from None
