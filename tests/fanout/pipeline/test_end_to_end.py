"""End to end: signed delivery -> gateway -> raw topic -> worker -> change events, read back by an
independent client (confluent-kafka) and parsed with the official CloudEvents SDK."""

import uuid
from datetime import UTC, datetime

import orjson

from provider_auth.accounts.store import Connection, ConnectionStore
from provider_auth.providers import Provider
from tests.fanout.pipeline.pipeline_support import (
    PipelineStack,
    Received,
    caught_up,
    expected_id,
    post_signed,
    read_events,
    read_quarantine,
    sample_value,
    validate_data,
    version_of,
    worker_running,
)


def account() -> str:
    """A provider account id of this test only (the database outlives each test)."""
    return str(uuid.uuid4().int)[:12]


def by_connection(records: list[Received]) -> dict[str, list[Received]]:
    grouped: dict[str, list[Received]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        grouped.setdefault(record.header("ce_connectionid") or "", []).append(record)
    return grouped


def qbo_event(realm: str, kind: str, entity_id: str, time: str, **extra: object) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": f"intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58gtT3QKRxeH3d7W8/{realm}",
        "type": f"qbo.{kind}.v1",
        "datacontenttype": "application/json",
        "time": time,
        "intuitentityid": entity_id,
        "intuitaccountid": realm,
        "data": extra,
    }


async def test_quickbooks_cloudevents_batch_mixing_accounts(
    stack: PipelineStack, store: ConnectionStore
) -> None:
    realm_a, realm_b = account(), account()
    a1 = await store.create("tenant-1", Provider.QUICKBOOKS, realm_a)
    a2 = await store.create("tenant-2", Provider.QUICKBOOKS, realm_a)  # same company, second tenant
    b3 = await store.create("tenant-3", Provider.QUICKBOOKS, realm_b)
    gone = await store.create("tenant-4", Provider.QUICKBOOKS, realm_a)
    await store.disconnect(gone.id)
    body = orjson.dumps(
        [
            qbo_event(realm_a, "customer.created", "101", "2025-09-10T21:31:25.179851517Z"),
            qbo_event(realm_b, "invoice.updated", "7", "2025-09-10T21:31:26Z"),
            qbo_event(realm_a, "invoice.deleted", "55", "2025-09-10T21:31:27.5Z"),
            qbo_event(realm_b, "payment.created", "9", "2025-09-10T21:31:28.000Z"),
            qbo_event(realm_a, "customer.merged", "102", "2025-09-10T21:31:29Z", deletedid="101"),
        ]
    )
    delivery_id = await post_signed(stack.gateway, "quickbooks", body)

    async with worker_running(stack) as registry:
        await caught_up(stack.settings)
    records = await read_events(stack.settings)

    # (entity, provider entity, entity id, operation, time, merged_into, contact_type) per account.
    changes_a = [
        (
            "contact",
            "customer",
            "101",
            "created",
            datetime(2025, 9, 10, 21, 31, 25, 179851, UTC),
            None,
            "customer",
        ),
        ("invoice", "invoice", "55", "deleted", datetime(2025, 9, 10, 21, 31, 27, 500000, UTC), None, None),
        (
            "contact",
            "customer",
            "101",
            "merged",
            datetime(2025, 9, 10, 21, 31, 29, tzinfo=UTC),
            "102",
            "customer",
        ),
    ]
    changes_b = [
        ("invoice", "invoice", "7", "updated", datetime(2025, 9, 10, 21, 31, 26, tzinfo=UTC), None, None),
        ("payment", "payment", "9", "created", datetime(2025, 9, 10, 21, 31, 28, tzinfo=UTC), None, None),
    ]
    grouped = by_connection(records)
    assert set(grouped) == {a1.id, a2.id, b3.id}  # nothing for the disconnected tenant
    assert len(records) == 8
    for connection, realm, changes in (
        (a1, realm_a, changes_a),
        (a2, realm_a, changes_a),
        (b3, realm_b, changes_b),
    ):
        received = grouped[connection.id]
        assert len(received) == len(changes)
        for record, change in zip(received, changes, strict=True):  # the connection's order is kept
            check_event(record, connection, realm, delivery_id, *change)

    assert await read_quarantine(stack.settings) == []
    assert (
        sample_value(
            registry, "ledgerhook_fanout_events_published_total", provider="quickbooks", entity="contact"
        )
        == 4
    )
    assert sample_value(registry, "ledgerhook_fanout_records_consumed_total", provider="quickbooks") == 1


def check_event(
    record: Received,
    connection: Connection,
    account_id: str,
    delivery_id: str,
    entity: str,
    provider_entity: str,
    entity_id: str,
    operation: str,
    time: datetime,
    merged_into: str | None,
    contact_type: str | None,
) -> None:
    """Every attribute, extension and data field of one change event."""
    provider = connection.provider.value
    event = record.event()
    assert record.key == connection.id.encode()
    assert event.get_specversion() == "1.0"
    assert event.get_type() == f"accounting.{entity}.{operation}"
    assert event.get_source() == f"/ledgerhook/{provider}/{account_id}"
    assert event.get_subject() == f"{entity}/{entity_id}"
    assert event.get_id() == expected_id(
        connection.id, provider, account_id, entity, entity_id, operation, version_of(time)
    )
    assert event.get_time() == time
    assert event.get_datacontenttype() == "application/json"
    assert event.get_extension("tenantid") == connection.tenant_id
    assert event.get_extension("connectionid") == connection.id
    assert event.get_extension("provider") == provider
    assert event.get_extension("partitionkey") == connection.id
    data = event.get_data()
    assert isinstance(data, dict)
    expected = {
        "tenant_id": connection.tenant_id,
        "connection_id": connection.id,
        "provider": provider,
        "provider_account_id": account_id,
        "entity": entity,
        "provider_entity": provider_entity,
        "entity_id": entity_id,
        "operation": operation,
        "occurred_at": time.isoformat(
            timespec="microseconds" if time.microsecond % 1000 else "milliseconds"
        ).replace("+00:00", "Z"),
        "origin": "webhook",
        "delivery_id": delivery_id,
    }
    assert {key: data.get(key) for key in expected} == expected
    assert data.get("merged_into") == merged_into
    assert data.get("contact_type") == contact_type
    validate_data(event.get_type(), data)


async def test_xero_batch_mixing_organisations(stack: PipelineStack, store: ConnectionStore) -> None:
    org_x, org_y = str(uuid.uuid4()), str(uuid.uuid4())
    x1 = await store.create("tenant-1", Provider.XERO, org_x)
    x2 = await store.create("tenant-5", Provider.XERO, org_x)
    y1 = await store.create("tenant-6", Provider.XERO, org_y)
    contact, invoice, note = (str(uuid.uuid4()) for _ in range(3))
    body = orjson.dumps(
        {
            "events": [
                {
                    "resourceUrl": f"https://api.xero.com/api.xro/2.0/Contacts/{contact}",
                    "resourceId": contact,
                    "eventDateUtc": "2024-06-21T01:15:39.902",
                    "eventType": "CREATE",
                    "eventCategory": "CONTACT",
                    "tenantId": org_x,
                    "tenantType": "ORGANISATION",
                },
                {
                    "resourceUrl": f"https://api.xero.com/api.xro/2.0/CreditNotes/{note}",
                    "resourceId": note,
                    "eventDateUtc": "2024-06-21T01:15:40.000",
                    "eventType": "UPDATE",
                    "eventCategory": "CREDITNOTE",
                    "tenantId": org_y,
                    "tenantType": "ORGANISATION",
                },
                {
                    "resourceUrl": f"https://api.xero.com/api.xro/2.0/Invoices/{invoice}",
                    "resourceId": invoice,
                    "eventDateUtc": "2024-06-21T01:15:41.250",
                    "eventType": "UPDATE",
                    "eventCategory": "INVOICE",
                    "tenantId": org_x,
                    "tenantType": "ORGANISATION",
                },
            ],
            "firstEventSequence": 1,
            "lastEventSequence": 3,
            "entropy": "S0m3r4Nd0mt3xt",
        }
    )
    delivery_id = await post_signed(stack.gateway, "xero", body)
    async with worker_running(stack):
        await caught_up(stack.settings)
    grouped = by_connection(await read_events(stack.settings))

    changes_x = [
        ("contact", "CONTACT", contact, "created", datetime(2024, 6, 21, 1, 15, 39, 902000, UTC), None, None),
        ("invoice", "INVOICE", invoice, "updated", datetime(2024, 6, 21, 1, 15, 41, 250000, UTC), None, None),
    ]
    changes_y = [
        (
            "credit_note",
            "CREDITNOTE",
            note,
            "updated",
            datetime(2024, 6, 21, 1, 15, 40, tzinfo=UTC),
            None,
            None,
        )
    ]
    assert set(grouped) == {x1.id, x2.id, y1.id}
    for connection, org, changes in ((x1, org_x, changes_x), (x2, org_x, changes_x), (y1, org_y, changes_y)):
        assert len(grouped[connection.id]) == len(changes)
        for record, change in zip(grouped[connection.id], changes, strict=True):
            check_event(record, connection, org, delivery_id, *change)


async def test_same_delivery_posted_three_times_is_published_once(
    stack: PipelineStack, store: ConnectionStore
) -> None:
    realm = account()
    connection = await store.create("tenant-1", Provider.QUICKBOOKS, realm)
    body = orjson.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": realm,
                    "dataChangeEvent": {
                        "entities": [
                            {
                                "name": "Invoice",
                                "id": "1",
                                "operation": "Create",
                                "lastUpdated": "2025-01-02T03:04:05.000Z",
                            },
                            {
                                "name": "Vendor",
                                "id": "2",
                                "operation": "Update",
                                "lastUpdated": "2025-01-02T03:04:06.000Z",
                            },
                        ]
                    },
                }
            ]
        }
    )
    delivery_ids = [await post_signed(stack.gateway, "quickbooks", body) for _ in range(3)]
    assert len(set(delivery_ids)) == 3  # three distinct deliveries of the same changes

    async with worker_running(stack) as registry:
        await caught_up(stack.settings)
        # Once more while the worker runs: a later repeat is dropped as well.
        await post_signed(stack.gateway, "quickbooks", body)
        await caught_up(stack.settings)
    records = await read_events(stack.settings)

    assert sorted(r.event().get_type() for r in records) == [
        "accounting.contact.updated",
        "accounting.invoice.created",
    ]
    assert len({r.event().get_id() for r in records}) == 2
    assert all(r.key == connection.id.encode() for r in records)
    # The first delivery published them; the three repeats were dropped.
    assert {r.event().get_data()["delivery_id"] for r in records} == {delivery_ids[0]}  # type: ignore[index]
    assert sample_value(registry, "ledgerhook_fanout_duplicates_dropped_total") == 6


async def test_intent_to_receive_is_committed_without_output(stack: PipelineStack) -> None:
    await post_signed(
        stack.gateway, "xero", b'{"events":[],"firstEventSequence":0,"lastEventSequence":0,"entropy":"x"}'
    )
    async with worker_running(stack) as registry:
        await caught_up(stack.settings)
    assert await read_events(stack.settings) == []
    assert await read_quarantine(stack.settings) == []
    assert sample_value(registry, "ledgerhook_fanout_records_consumed_total", provider="xero") == 1
