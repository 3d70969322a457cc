"""The pending quarantine: listed in topic order with counts by reason, read one by one with a capped
body, discarded (never redriven, never holding a redrive's progress back), every read bounded."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from fanout.quarantine import Reason, quarantine_record
from fanout.quarantine_pending import BODY_LIMIT, PendingQuarantine, parse_record_id
from fanout.redrive import RedriveResult
from gateway.admin.quarantine import redrive_once
from gateway.runtime.infra import Infrastructure, open_infrastructure
from gateway.runtime.kafka import connection_options
from gateway.settings import Settings
from tests.fanout.pipeline.pipeline_support import read_records
from tests.support import migrate_and_create_topics


@dataclass
class Quarantine:
    settings: Settings
    infra: Infrastructure

    def reader(self, **limits: int) -> PendingQuarantine:
        return PendingQuarantine(
            self.infra.pool,
            connection_options(self.settings),
            topic=self.settings.topic_quarantine,
            group_id=self.settings.worker_group_id,
            **limits,
        )

    async def add(self, reason: Reason, value: bytes = b"{}", **headers: str) -> str:
        """Quarantine a raw record as the worker does; returns its delivery id."""
        delivery_id = str(uuid.uuid4())
        raw = {"ledgerhook-delivery-id": delivery_id, "ledgerhook-provider": "quickbooks"} | headers
        record = quarantine_record(
            quarantine_topic=self.settings.topic_quarantine,
            source_topic=self.settings.topic_raw,
            partition=0,
            offset=0,
            key=b"realm",
            value=value,
            headers=[(k, v.encode()) for k, v in raw.items()],
            reason=reason,
            detail=f"because {reason.value}",
        )
        await self.produce(record.value, record.headers)
        return delivery_id

    async def produce(self, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        sent = await self.infra.producer.send(
            self.settings.topic_quarantine, value, key=b"realm", headers=headers, partition=0
        )
        await sent


@pytest.fixture
async def quarantine(settings_factory: Any) -> AsyncIterator[Quarantine]:
    """One partition (offsets follow arrival) and a worker group of the test's own."""
    settings = settings_factory(topic_partitions=1, worker_group_id=f"fanout-{uuid.uuid4().hex[:8]}")
    await migrate_and_create_topics(settings)
    async with open_infrastructure(settings) as infra:
        yield Quarantine(settings, infra)


async def test_pending_records_are_listed_in_order_with_counts_and_pages(quarantine: Quarantine) -> None:
    d0 = await quarantine.add(Reason.UNKNOWN_ACCOUNT, b'{"a": 1}')
    d1 = await quarantine.add(Reason.PAUSED, **{"ledgerhook-connection-id": "c-1"})
    d2 = await quarantine.add(Reason.UNKNOWN_ACCOUNT)
    # A refused poll page: never redriven, so never pending.
    await quarantine.produce(b"<xml/>", [("ledgerhook-quarantine-reason", b"poll_unparseable")])
    pending = quarantine.reader()

    page = await pending.page()
    assert [(r.id, r.reason, r.delivery_id) for r in page.items] == [
        ("0-0", Reason.UNKNOWN_ACCOUNT, d0),
        ("0-1", Reason.PAUSED, d1),
        ("0-2", Reason.UNKNOWN_ACCOUNT, d2),
    ]
    assert page.next is None
    first = page.items[0]
    assert (first.detail, first.provider, first.connection_id, first.body_size) == (
        "because unknown_account",
        "quickbooks",
        None,
        8,
    )
    assert first.body is None and (first.quarantined_at or "").endswith("Z")
    assert page.items[1].connection_id == "c-1"
    counts = await pending.counts()
    assert (counts.by_reason, counts.complete) == ({"unknown_account": 2, "paused": 1}, True)

    one = await pending.page(limit=1)
    assert [r.id for r in one.items] == ["0-0"] and one.next is not None
    two = await pending.page(limit=1, cursor=one.next)
    assert [r.id for r in two.items] == ["0-1"]
    only = await pending.page(Reason.UNKNOWN_ACCOUNT, limit=5)
    assert [r.id for r in only.items] == ["0-0", "0-2"]
    with pytest.raises(ValueError, match="cursor"):
        await pending.page(cursor="not-a-cursor")

    # Redriven for its reason: no longer pending; the other reason's records stay.
    assert await redrive_once(quarantine.settings, Reason.PAUSED) == RedriveResult(1, 3)
    assert [r.id for r in (await pending.page()).items] == ["0-0", "0-2"]
    assert (await pending.counts()).by_reason == {"unknown_account": 2}
    assert await pending.record("0-1") is None


async def test_discarded_records_are_never_redriven_nor_hold_progress_back(quarantine: Quarantine) -> None:
    await quarantine.add(Reason.UNKNOWN_ACCOUNT)
    kept = await quarantine.add(Reason.UNKNOWN_ACCOUNT)
    await quarantine.add(Reason.PAUSED)
    await quarantine.add(Reason.PAUSED)
    pending = quarantine.reader()
    async with quarantine.infra.pool.acquire() as conn:
        by_id = await pending.discard(conn, "ops", ids=["0-0", "0-9", "7-1"])
        assert [r.id for r in by_id.records] == ["0-0"] and by_id.not_pending == ["0-9", "7-1"]
        by_reason = await pending.discard(conn, "ops", reason=Reason.PAUSED)
        assert [r.id for r in by_reason.records] == ["0-2", "0-3"] and not by_reason.more
        again = await pending.discard(conn, "ops", ids=["0-0"])
        assert again.records == [] and again.not_pending == ["0-0"]
    assert [r.id for r in (await pending.page()).items] == ["0-1"]
    assert (await pending.counts()).by_reason == {"unknown_account": 1}
    stored = await quarantine.infra.pool.fetch(
        "SELECT partition, record_offset, reason, actor FROM quarantine_discards WHERE topic = $1"
        " ORDER BY record_offset",
        quarantine.settings.topic_quarantine,
    )
    assert [tuple(row) for row in stored] == [
        (0, 0, "unknown_account", "ops"),
        (0, 2, "paused", "ops"),
        (0, 3, "paused", "ops"),
    ]

    # Only the record left is fed; nothing is left pending after it, and no discard is needed again.
    assert await redrive_once(quarantine.settings) == RedriveResult(1, 0)
    [redriven] = await read_records(
        quarantine.settings.kafka_bootstrap_servers, quarantine.settings.topic_raw
    )
    assert redriven.header("ledgerhook-delivery-id") == kept
    assert await redrive_once(quarantine.settings) == RedriveResult(0, 0)
    assert (await pending.page()).items == []
    leftover = await quarantine.infra.pool.fetchval(
        "SELECT count(*) FROM quarantine_discards WHERE topic = $1", quarantine.settings.topic_quarantine
    )
    assert leftover == 0  # the redrive groups moved past them


async def test_a_discard_of_another_record_at_the_same_position_does_not_apply(
    quarantine: Quarantine,
) -> None:
    """A topic recreated from offset 0 must not inherit its predecessor's discards."""
    await quarantine.add(Reason.PAUSED)
    await quarantine.infra.pool.execute(
        "INSERT INTO quarantine_discards (topic, partition, record_offset, reason, fingerprint, actor)"
        " VALUES ($1, 0, 0, 'paused', $2, 'ops')",
        quarantine.settings.topic_quarantine,
        b"\x00" * 32,
    )
    assert [r.id for r in (await quarantine.reader().page()).items] == ["0-0"]


async def test_a_record_is_read_with_its_body_capped(quarantine: Quarantine) -> None:
    large = ("é" * BODY_LIMIT).encode()  # two bytes per character: the cut falls inside one
    await quarantine.add(Reason.UNPARSEABLE, large)
    await quarantine.add(Reason.UNPARSEABLE, b"\xff\xfe not text")
    pending = quarantine.reader()
    found = await pending.record("0-0")
    assert found is not None and found.body is not None
    assert (found.body_size, len(found.body), found.body_truncated) == (len(large), BODY_LIMIT, True)
    assert found.body_text() == "é" * (BODY_LIMIT // 2)
    binary = await pending.record("0-1")
    assert binary is not None and binary.body == b"\xff\xfe not text" and not binary.body_truncated
    assert binary.body_text() is None
    assert await pending.record("0-2") is None  # past the end
    assert await pending.record("3-0") is None  # no such partition
    assert await pending.record("zero") is None
    assert parse_record_id("0-1") == (0, 1) and parse_record_id("0-1-2") is None


async def test_reads_stop_at_the_scan_limit_and_say_so(quarantine: Quarantine) -> None:
    for _ in range(3):
        await quarantine.add(Reason.DISCONNECTED)
    limited = quarantine.reader(scan_limit=2)
    counts = await limited.counts()
    assert (counts.by_reason, counts.complete) == ({"disconnected": 2}, False)
    first = await limited.page(limit=10)
    assert [r.id for r in first.items] == ["0-0", "0-1"] and first.next is not None
    rest = await limited.page(limit=10, cursor=first.next)
    assert [r.id for r in rest.items] == ["0-2"] and rest.next is None
    async with quarantine.infra.pool.acquire() as conn:
        done = await quarantine.reader(discard_scan_limit=2).discard(conn, "ops", reason=Reason.DISCONNECTED)
    assert [r.id for r in done.records] == ["0-0", "0-1"] and done.more
