"""Reconciliation by record version in the publishing transaction: webhooks through the gateway and
the worker, reconciled by default (an older version after a newer one, an update at the version of a
published creation, per-connection versions, webhook-only operations, versionless changes; and
`LEDGERHOOK_RECONCILE_WEBHOOKS=false`), and `publish_once` itself (superseded against duplicate,
nothing of a refused change marked seen, concurrent batches)."""

import asyncio
import dataclasses
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from fanout.dedupe import Outgoing, publish_once
from fanout.pipeline import WorkerConfig
from fanout.reconcile import RecordVersion
from gateway.runtime.polling import poller_config
from gateway.settings import Settings, load_settings
from provider_auth.accounts.store import Connection, ConnectionStore
from provider_auth.providers import Provider
from tests.fanout.pipeline.pipeline_support import (
    PipelineStack,
    Received,
    caught_up,
    expected_id,
    post_signed,
    read_events,
    sample_value,
    version_of,
    worker_running,
)

T1 = datetime(2026, 3, 4, 5, 6, 7, 250000, UTC)
T2 = T1 + timedelta(seconds=1)
T3 = T2 + timedelta(seconds=1)

# (entity, id, operation, lastUpdated or None) as QuickBooks names them.
Entity = tuple[str, str, str, datetime | None]


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    """As the package's fixture, and every connection lookup fresh: a connection created mid-test
    receives the next delivery. Webhook reconciliation is left at its default, on."""
    return settings_factory(  # type: ignore[no-any-return]
        worker_group_id=f"fanout-{uuid.uuid4().hex[:8]}",
        worker_session_timeout_ms=1000,
        connection_cache_seconds=0,
    )


def test_webhooks_are_reconciled_by_default() -> None:
    settings = load_settings(database_url="postgresql://x", kafka_bootstrap_servers="k:9092")
    assert settings.reconcile_webhooks
    assert WorkerConfig("raw", "changes", "quarantine", "group").reconcile_webhooks
    # Polled changes keep ids only when webhooks publish the same records without versions.
    assert not poller_config(settings).remember_reconciled
    assert poller_config(settings.model_copy(update={"reconcile_webhooks": False})).remember_reconciled


def account() -> str:
    """A QuickBooks realm of this test only (the database outlives each test)."""
    return str(uuid.uuid4().int)[:12]


def legacy(realm: str, *entities: Entity) -> bytes:
    """A QuickBooks legacy webhook body of one realm; an entity without a time says no version."""
    described = []
    for name, entity_id, operation, at in entities:
        entity: dict[str, str] = {"name": name, "id": entity_id, "operation": operation}
        if at is not None:
            entity["lastUpdated"] = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        described.append(entity)
    return orjson.dumps(
        {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": described}}]}
    )


async def deliver(stack: PipelineStack, realm: str, *entities: Entity) -> str:
    """Post one signed delivery and wait until the running worker has committed it."""
    delivery_id = await post_signed(stack.gateway, "quickbooks", legacy(realm, *entities))
    await caught_up(stack.settings)
    return delivery_id


def published(records: Sequence[Received], connection: Connection) -> list[tuple[str, str, str | None]]:
    """(type, subject, occurred_at) of a connection's events, in publish order."""
    mine = sorted((r for r in records if r.key == connection.id.encode()), key=lambda r: r.offset)
    described = []
    for record in mine:
        event = record.event()
        data = event.get_data()
        assert isinstance(data, dict)
        described.append((event.get_type(), event.get_subject() or "", data["occurred_at"]))
    return described


def stamp(moment: datetime) -> str:
    """`occurred_at` as the event data writes it (these times have whole milliseconds)."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dropped(registry: CollectorRegistry) -> tuple[float, float]:
    """(superseded, duplicates) so far."""
    return (
        sample_value(registry, "ledgerhook_fanout_events_superseded_total", provider="quickbooks"),
        sample_value(registry, "ledgerhook_fanout_duplicates_dropped_total"),
    )


async def test_an_older_version_after_a_newer_one_is_not_published(
    stack: PipelineStack, store: ConnectionStore
) -> None:
    realm = account()
    connection = await store.create("tenant-1", Provider.QUICKBOOKS, realm)
    async with worker_running(stack) as registry:
        # Invoice 1: t2, then t1 in a later delivery. Invoice 2: t2 then t1 in one delivery.
        await deliver(
            stack,
            realm,
            ("Invoice", "1", "Update", T2),
            ("Invoice", "2", "Update", T2),
            ("Invoice", "2", "Update", T1),
        )
        await deliver(stack, realm, ("Invoice", "1", "Update", T1))
        # A later version still passes: the stored one moved to t2, not past it.
        await deliver(stack, realm, ("Invoice", "1", "Update", T3))
    records = await read_events(stack.settings)
    assert published(records, connection) == [
        ("accounting.invoice.updated", "invoice/1", stamp(T2)),
        ("accounting.invoice.updated", "invoice/2", stamp(T2)),
        ("accounting.invoice.updated", "invoice/1", stamp(T3)),
    ]
    assert dropped(registry) == (2, 0)
    assert (
        sample_value(
            registry, "ledgerhook_fanout_events_published_total", provider="quickbooks", entity="invoice"
        )
        == 3
    )


async def test_an_update_at_the_version_of_a_published_creation_is_not_published(
    stack: PipelineStack, store: ConnectionStore
) -> None:
    """At the version of a published creation, an update repeats that version (another event id,
    the same state): a duplicate, as the creation repeated under a new delivery id is. A live state
    after a deletion of the same version is older: superseded."""
    realm = account()
    connection = await store.create("tenant-1", Provider.QUICKBOOKS, realm)
    async with worker_running(stack) as registry:
        await deliver(stack, realm, ("Invoice", "5", "Create", T1))
        await deliver(stack, realm, ("Invoice", "5", "Update", T1), ("Invoice", "5", "Create", T1))
        assert dropped(registry) == (0, 2)
        # At one version a deletion outranks an update.
        await deliver(stack, realm, ("Invoice", "5", "Update", T2), ("Invoice", "5", "Delete", T2))
        await deliver(stack, realm, ("Invoice", "5", "Update", T2))
        assert dropped(registry) == (1, 2)
    records = await read_events(stack.settings)
    assert published(records, connection) == [
        ("accounting.invoice.created", "invoice/5", stamp(T1)),
        ("accounting.invoice.updated", "invoice/5", stamp(T2)),
        ("accounting.invoice.deleted", "invoice/5", stamp(T2)),
    ]
    [created] = [r for r in records if r.event().get_type() == "accounting.invoice.created"]
    assert created.event().get_id() == expected_id(
        connection.id, "quickbooks", realm, "invoice", "5", "created", version_of(T1)
    )


async def test_versions_are_kept_per_connection(stack: PipelineStack, store: ConnectionStore) -> None:
    """A connection created after a version was published to its sibling still gets that version."""
    realm = account()
    first = await store.create("tenant-1", Provider.QUICKBOOKS, realm)
    async with worker_running(stack) as registry:
        await deliver(stack, realm, ("Vendor", "3", "Update", T1))
        second = await store.create("tenant-2", Provider.QUICKBOOKS, realm)
        await deliver(stack, realm, ("Vendor", "3", "Update", T1))
        await deliver(stack, realm, ("Vendor", "3", "Update", T1))
        assert dropped(registry) == (0, 3)  # the same ids: repeats, counted as duplicates
    records = await read_events(stack.settings)
    for connection in (first, second):
        assert published(records, connection) == [("accounting.contact.updated", "contact/3", stamp(T1))]


async def test_emailed_always_passes_and_moves_no_version(
    stack: PipelineStack, store: ConnectionStore
) -> None:
    realm = account()
    connection = await store.create("tenant-1", Provider.QUICKBOOKS, realm)
    async with worker_running(stack) as registry:
        await deliver(stack, realm, ("Invoice", "7", "Update", T2))
        await deliver(stack, realm, ("Invoice", "7", "Emailed", T1))  # older than the published version
        await deliver(stack, realm, ("Invoice", "7", "Emailed", T3))
        # Published: the email at t3 did not move the record's version.
        await deliver(stack, realm, ("Invoice", "7", "Update", T3))
    assert published(await read_events(stack.settings), connection) == [
        ("accounting.invoice.updated", "invoice/7", stamp(T2)),
        ("accounting.invoice.emailed", "invoice/7", stamp(T1)),
        ("accounting.invoice.emailed", "invoice/7", stamp(T3)),
        ("accounting.invoice.updated", "invoice/7", stamp(T3)),
    ]
    assert dropped(registry) == (0, 0)


async def test_a_change_without_a_version_passes(stack: PipelineStack, store: ConnectionStore) -> None:
    realm = account()
    connection = await store.create("tenant-1", Provider.QUICKBOOKS, realm)
    async with worker_running(stack) as registry:
        await deliver(stack, realm, ("Invoice", "8", "Update", T2))
        await deliver(stack, realm, ("Invoice", "8", "Update", None))
        # Another body, so another id (the body's digest stands in for the version).
        await deliver(stack, realm, ("Invoice", "8", "Update", None), ("Item", "4", "Update", None))
        await deliver(stack, realm, ("Invoice", "8", "Update", T1))  # still judged against t2
    assert published(await read_events(stack.settings), connection) == [
        ("accounting.invoice.updated", "invoice/8", stamp(T2)),
        ("accounting.invoice.updated", "invoice/8", None),
        ("accounting.invoice.updated", "invoice/8", None),
        ("accounting.item.updated", "item/4", None),
    ]
    assert dropped(registry) == (1, 0)


async def test_with_reconciliation_off_webhook_events_are_judged_by_their_ids_only(
    stack: PipelineStack, store: ConnectionStore
) -> None:
    """`LEDGERHOOK_RECONCILE_WEBHOOKS=false`: a webhook event records no version, so changes at a
    published version (or older) under other ids are published, and a poll would repeat them."""
    off = dataclasses.replace(stack, settings=stack.settings.model_copy(update={"reconcile_webhooks": False}))
    realm = account()
    connection = await store.create("tenant-1", Provider.QUICKBOOKS, realm)
    async with worker_running(off) as registry:
        await deliver(off, realm, ("Invoice", "5", "Create", T2))
        await deliver(off, realm, ("Invoice", "5", "Update", T2), ("Invoice", "5", "Update", T1))
        await deliver(off, realm, ("Invoice", "5", "Create", T2))  # the same id again: dedupe drops it
        assert dropped(registry) == (0, 1)
    assert published(await read_events(off.settings), connection) == [
        ("accounting.invoice.created", "invoice/5", stamp(T2)),
        ("accounting.invoice.updated", "invoice/5", stamp(T2)),
        ("accounting.invoice.updated", "invoice/5", stamp(T1)),
    ]
    stored = await stack.infra.pool.fetchval(
        "SELECT count(*) FROM record_versions WHERE connection_id = $1::uuid", connection.id
    )
    assert stored == 0


def change_record(
    stack: PipelineStack, connection_id: str, entity_id: str, operation: str, version: datetime
) -> Outgoing:
    """A change event as the router builds one, with an id that names its record, operation and version."""
    ident = str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"{connection_id}|{entity_id}|{operation}|{version.isoformat()}")
    )
    return Outgoing(
        topic=stack.settings.topic_changes,
        key=connection_id.encode(),
        value=f"{entity_id}|{operation}|{version.isoformat()}".encode(),
        headers=[("ce_id", ident.encode())],
        dedupe_id=ident,
        labels={"provider": "quickbooks", "entity": "invoice"},
        version=RecordVersion(connection_id, "invoice", entity_id, operation, version),
    )


async def seen(stack: PipelineStack, records: Sequence[Outgoing]) -> set[str]:
    rows = await stack.infra.pool.fetch(
        "SELECT event_id::text FROM event_ids WHERE event_id = ANY($1::uuid[])",
        [record.dedupe_id for record in records],
    )
    return {row[0] for row in rows}


async def test_publish_once_tells_superseded_from_duplicates_and_keeps_no_id_of_a_change_with_a_version(
    stack: PipelineStack,
) -> None:
    """A change with a version is judged by its record's row alone: no id of it is kept, passed or
    refused. Refused, it is a duplicate when it repeats the record's latest state (its version and
    rank, whatever the operation's name), superseded when it is older."""
    pool, producer = stack.infra.pool, stack.infra.producer
    connection_id = str(uuid.uuid4())
    updated_t2 = change_record(stack, connection_id, "1", "updated", T2)
    first = await publish_once(pool, producer, [updated_t2])
    assert (first.produced, first.superseded) == ([updated_t2], [])

    updated_t1 = change_record(stack, connection_id, "1", "updated", T1)
    created_t2 = change_record(stack, connection_id, "1", "created", T2)
    repeat = change_record(stack, connection_id, "1", "updated", T2)
    second = await publish_once(pool, producer, [updated_t1, repeat, created_t2])
    assert second.produced == []
    assert second.superseded == [updated_t1]  # the repeat and the creation at t2 are duplicates
    assert await seen(stack, [updated_t2, updated_t1, created_t2]) == set()

    # In one batch: a new version passes, its repeat is a duplicate, an older one is superseded.
    updated_t3 = change_record(stack, connection_id, "1", "updated", T3)
    third = await publish_once(
        pool, producer, [updated_t3, change_record(stack, connection_id, "1", "updated", T3), updated_t1]
    )
    assert (third.produced, third.superseded) == ([updated_t3], [updated_t1])
    assert await seen(stack, [updated_t3]) == set()
    records = sorted(await read_events(stack.settings), key=lambda r: r.offset)
    assert [r.value for r in records] == [updated_t2.value, updated_t3.value]


def without_version(record: Outgoing) -> Outgoing:
    """The same event id as a path without reconciliation publishes it (a webhook, with
    `LEDGERHOOK_RECONCILE_WEBHOOKS=false`)."""
    return dataclasses.replace(record, value=record.value + b"|webhook", version=None)


@pytest.mark.parametrize("versioned_first", [True, False])
async def test_remember_reconciled_lets_a_path_without_versions_meet_one_with_them_on_ids(
    stack: PipelineStack, versioned_first: bool
) -> None:
    pool, producer = stack.infra.pool, stack.infra.producer
    polled = change_record(stack, str(uuid.uuid4()), "1", "updated", T2)
    webhook = without_version(polled)
    first, second = (polled, webhook) if versioned_first else (webhook, polled)
    assert (await publish_once(pool, producer, [first], remember_reconciled=True)).produced == [first]
    assert await seen(stack, [polled]) == {polled.dedupe_id}
    repeated = await publish_once(pool, producer, [second], remember_reconciled=True)
    assert (repeated.produced, repeated.superseded) == ([], [])
    records = [r for r in await read_events(stack.settings) if r.key == polled.key]
    assert [r.value for r in records] == [first.value]


async def test_concurrent_batches_claiming_the_same_records(stack: PipelineStack) -> None:
    """Batches of one connection's records in random orders, published at once: no deadlock (record
    versions, then ids), the latest version of each record published once, and each record's versions
    on the topic only ever later than the one before."""
    rng = random.Random(7)
    connection_id = str(uuid.uuid4())
    versions = [T1 + timedelta(milliseconds=i) for i in range(6)]
    offered = [
        change_record(stack, connection_id, str(entity_id), "updated", version)
        for entity_id in range(5)
        for version in versions
    ]
    batches = [rng.sample(offered, 12) for _ in range(8)]
    results = await asyncio.gather(
        *(publish_once(stack.infra.pool, stack.infra.producer, batch) for batch in batches)
    )

    produced = [record.dedupe_id for result in results for record in result.produced]
    assert len(produced) == len(set(produced))
    latest: dict[str, datetime] = {}
    for record in (record for batch in batches for record in batch):
        assert record.version is not None and record.version.version is not None
        entity_id, version = record.version.entity_id, record.version.version
        latest[entity_id] = max(version, latest.get(entity_id, version))
    on_topic: dict[str, list[str]] = {}
    for received in sorted(await read_events(stack.settings), key=lambda r: r.offset):
        entity_id, _, version_text = received.value.decode().split("|")
        on_topic.setdefault(entity_id, []).append(version_text)
    assert set(on_topic) == set(latest)
    for entity_id, seen_versions in on_topic.items():
        assert [datetime.fromisoformat(v) for v in seen_versions] == sorted(
            {datetime.fromisoformat(v) for v in seen_versions}
        )  # strictly later each time
        assert datetime.fromisoformat(seen_versions[-1]) == latest[entity_id]
    stored = await stack.infra.pool.fetch(
        "SELECT entity_id, version FROM record_versions WHERE connection_id = $1::uuid", connection_id
    )
    assert {row["entity_id"]: row["version"] for row in stored} == latest
