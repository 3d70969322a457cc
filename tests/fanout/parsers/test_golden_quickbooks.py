"""QuickBooks Online golden payloads (docs/providers.md, QuickBooks Online) through parser and vocabulary."""

from datetime import UTC, datetime

import orjson
import pytest

from fanout.changes import NormalizedChange, ParseError, ProviderChange
from fanout.parsers import PARSERS, quickbooks
from fanout.vocabulary import normalize
from provider_auth.providers import Provider

LEGACY = orjson.dumps(
    {
        "eventNotifications": [
            {
                "realmId": "1185883450",
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Customer",
                            "id": "1",
                            "operation": "Create",
                            "lastUpdated": "2015-10-05T14:42:19-0700",
                        },
                        {
                            "name": "Customer",
                            "id": "1",
                            "operation": "Merge",
                            "deletedId": "57",
                            "lastUpdated": "2016-10-05T03:09:04.000Z",
                        },
                        {
                            "name": "Invoice",
                            "id": "130",
                            "operation": "Void",
                            "lastUpdated": "2016-10-05T03:09:04.000Z",
                        },
                        {
                            "name": "Estimate",
                            "id": "979",
                            "operation": "Delete",
                            "lastUpdated": "2015-12-23T12:55:50-08:00",
                        },
                        {"name": "Invoice", "id": "131", "operation": "Emailed"},
                    ]
                },
            },
            {
                "realmId": "9130348125416186",
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "TimeActivity",
                            "id": "4",
                            "operation": "Update",
                            "lastUpdated": "2024-01-02T03:04:05Z",
                        }
                    ]
                },
            },
        ]
    }
)

CLOUDEVENTS = orjson.dumps(
    [
        {
            "specversion": "1.0",
            "id": "88cd52aa-ab3e-4a3f-a1b6-3f4b6c0d1a11",
            "source": "intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58gtT3QKRxeH3d7W8/310687",
            "type": "qbo.account.created.v1",
            "datacontenttype": "application/json",
            "time": "2025-09-10T21:31:25.179851517Z",
            "intuitentityid": "1234",
            "intuitaccountid": "310687",
            "data": {},
        },
        {
            "specversion": "1.0",
            "id": "c0ffee-2",
            "source": "intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58gtT3QKRxeH3d7W8/310687",
            "type": "qbo.vendor.merged.v1",
            "datacontenttype": "application/json",
            "time": "2025-09-10T21:31:26.000000001Z",
            "intuitentityid": "61",
            "intuitaccountid": "310687",
            "data": {"deletedid": "64"},
        },
        {
            "specversion": "1.0",
            "id": "c0ffee-3",
            "source": "intuit.x",
            "type": "qbo.creditmemo.voided.v1",
            "time": "2025-09-10T21:31:27Z",
            "intuitentityid": "77",
            "intuitaccountid": "310687",
        },
        {
            "specversion": "1.0",
            "id": "c0ffee-4",
            "source": "intuit.x",
            "type": "qbo.billpayment.emailed.v1",
            "intuitentityid": "78",
            "intuitaccountid": "310687",
            "data": {},
        },
    ]
)


def test_quickbooks_is_registered() -> None:
    assert PARSERS[Provider.QUICKBOOKS] is quickbooks.parse


def test_legacy_batch_reads_every_notification_and_entity_in_order() -> None:
    changes = quickbooks.parse(LEGACY)
    assert changes == [
        ProviderChange(
            "1185883450", "Customer", "1", "Create", datetime(2015, 10, 5, 21, 42, 19, tzinfo=UTC)
        ),
        ProviderChange(
            "1185883450",
            "Customer",
            "1",
            "Merge",
            datetime(2016, 10, 5, 3, 9, 4, tzinfo=UTC),
            merged_away_id="57",
        ),
        ProviderChange("1185883450", "Invoice", "130", "Void", datetime(2016, 10, 5, 3, 9, 4, tzinfo=UTC)),
        ProviderChange(
            "1185883450", "Estimate", "979", "Delete", datetime(2015, 12, 23, 20, 55, 50, tzinfo=UTC)
        ),
        ProviderChange("1185883450", "Invoice", "131", "Emailed", None),
        ProviderChange(
            "9130348125416186", "TimeActivity", "4", "Update", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
        ),
    ]


def test_legacy_batch_normalizes_to_the_unified_vocabulary() -> None:
    normalized = [normalize(Provider.QUICKBOOKS, change) for change in quickbooks.parse(LEGACY)]
    assert [(n.entity, n.operation, n.entity_id, n.merged_into, n.contact_type) for n in normalized] == [
        ("contact", "created", "1", None, "customer"),
        # Merge: the event is about the merged-away record 57, kept as 1.
        ("contact", "merged", "57", "1", "customer"),
        ("invoice", "voided", "130", None, None),
        ("estimate", "deleted", "979", None, None),
        ("invoice", "emailed", "131", None, None),
        ("time_activity", "updated", "4", None, None),
    ]
    assert [n.provider_entity for n in normalized][-1] == "TimeActivity"


def test_cloudevents_batch_reads_ids_realms_merges_and_nanoseconds() -> None:
    changes = quickbooks.parse(CLOUDEVENTS)
    assert changes[0] == ProviderChange(
        "310687",
        "account",
        "1234",
        "created",
        datetime(2025, 9, 10, 21, 31, 25, 179851, tzinfo=UTC),
        event_id="88cd52aa-ab3e-4a3f-a1b6-3f4b6c0d1a11",
    )
    assert changes[1].merged_away_id == "64"
    assert changes[1].entity_id == "61"
    assert changes[1].occurred_at == datetime(2025, 9, 10, 21, 31, 26, tzinfo=UTC)
    assert changes[3].occurred_at is None
    assert [c.event_id for c in changes] == [
        "88cd52aa-ab3e-4a3f-a1b6-3f4b6c0d1a11",
        "c0ffee-2",
        "c0ffee-3",
        "c0ffee-4",
    ]


def test_cloudevents_batch_normalizes_lower_case_entity_names() -> None:
    normalized = [normalize(Provider.QUICKBOOKS, change) for change in quickbooks.parse(CLOUDEVENTS)]
    assert normalized[1] == NormalizedChange(
        provider_account_id="310687",
        entity="contact",
        provider_entity="vendor",
        entity_id="64",
        operation="merged",
        occurred_at=datetime(2025, 9, 10, 21, 31, 26, tzinfo=UTC),
        event_id="c0ffee-2",
        merged_into="61",
        contact_type="vendor",
    )
    assert [(n.entity, n.operation) for n in normalized] == [
        ("account", "created"),
        ("contact", "merged"),
        ("credit_note", "voided"),
        ("payment", "emailed"),
    ]


def test_legacy_and_cloudevents_name_the_same_entity_alike() -> None:
    legacy = orjson.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": "1",
                    "dataChangeEvent": {
                        "entities": [{"name": "TimeActivity", "id": "9", "operation": "Update"}]
                    },
                }
            ]
        }
    )
    cloud = orjson.dumps(
        [
            {
                "specversion": "1.0",
                "type": "qbo.timeactivity.updated.v1",
                "intuitentityid": "9",
                "intuitaccountid": "1",
            }
        ]
    )
    a = normalize(Provider.QUICKBOOKS, quickbooks.parse(legacy)[0])
    b = normalize(Provider.QUICKBOOKS, quickbooks.parse(cloud)[0])
    assert (
        (a.entity, a.operation, a.entity_id)
        == (b.entity, b.operation, b.entity_id)
        == ("time_activity", "updated", "9")
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"eventNotifications": {}}',
        b'{"eventNotifications": [{"dataChangeEvent": {"entities": []}}]}',
        b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": [{"name": "Bill"}]}}]}',
        b'[{"specversion": "0.3", "type": "qbo.bill.created.v1", "intuitentityid": "1",'
        b' "intuitaccountid": "2"}]',
        b'[{"specversion": "1.0", "type": "bill.created", "intuitentityid": "1", "intuitaccountid": "2"}]',
        b'[{"specversion": "1.0", "type": "qbo.bill.created.v1", "intuitentityid": "1",'
        b' "intuitaccountid": "2", "time": "not a time"}]',
        b"[1]",
    ],
)
def test_malformed_deliveries_raise_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError):
        quickbooks.parse(body)
