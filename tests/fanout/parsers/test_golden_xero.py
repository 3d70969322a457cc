"""Xero golden payloads (docs/providers.md, Xero) through the parser and the vocabulary."""

from datetime import UTC, datetime

import orjson
import pytest

from fanout.changes import ParseError, ProviderChange
from fanout.parsers import PARSERS, xero
from fanout.vocabulary import normalize
from provider_auth.providers import Provider

TENANT_A = "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"
TENANT_B = "5e0f1c3a-7b2d-4c8e-9f1a-2b3c4d5e6f70"

EVENTS = orjson.dumps(
    {
        "events": [
            {
                "resourceUrl": "https://api.xero.com/api.xro/2.0/Contacts/717f2bfc-c6d4-41fd-b238-3f2f0c0cf777",
                "resourceId": "717f2bfc-c6d4-41fd-b238-3f2f0c0cf777",
                "eventDateUtc": "2024-06-21T01:15:39.902",
                "eventType": "UPDATE",
                "eventCategory": "CONTACT",
                "tenantId": TENANT_A,
                "tenantType": "ORGANISATION",
            },
            {
                "resourceUrl": "https://api.xero.com/api.xro/2.0/Invoices/0b0e2f6a-1111-4a4b-9c9d-222233334444",
                "resourceId": "0b0e2f6a-1111-4a4b-9c9d-222233334444",
                "eventDateUtc": "2024-06-21T01:16:00",
                "eventType": "Create",
                "eventCategory": "INVOICE",
                "tenantId": TENANT_B,
                "tenantType": "ORGANISATION",
            },
            {
                "resourceUrl": "https://api.xero.com/api.xro/2.0/CreditNotes/9a8b7c6d-5555-4e4f-8a8b-666677778888",
                "resourceId": "9a8b7c6d-5555-4e4f-8a8b-666677778888",
                "eventDateUtc": "2024-06-21T01:17:00.5",
                "eventType": "update",
                "eventCategory": "CREDITNOTE",
                "tenantId": TENANT_A,
                "tenantType": "ORGANISATION",
                "data": {"Type": "ACCRECCREDIT", "Status": "AUTHORISED"},
            },
        ],
        "lastEventSequence": 3,
        "firstEventSequence": 1,
        "entropy": "TFRTQTVKWUNCTEZOVVJKVQ",
    }
)


def test_xero_is_registered() -> None:
    assert PARSERS[Provider.XERO] is xero.parse


def test_events_keep_their_own_tenant_and_utc_dates_without_offset() -> None:
    changes = xero.parse(EVENTS)
    assert changes[0] == ProviderChange(
        provider_account_id=TENANT_A,
        entity="CONTACT",
        entity_id="717f2bfc-c6d4-41fd-b238-3f2f0c0cf777",
        operation="UPDATE",
        occurred_at=datetime(2024, 6, 21, 1, 15, 39, 902000, tzinfo=UTC),
        attributes={"tenant_type": "ORGANISATION"},
    )
    assert [c.provider_account_id for c in changes] == [TENANT_A, TENANT_B, TENANT_A]
    assert changes[2].attributes == {
        "type": "ACCRECCREDIT",
        "status": "AUTHORISED",
        "tenant_type": "ORGANISATION",
    }
    assert changes[2].occurred_at == datetime(2024, 6, 21, 1, 17, 0, 500000, tzinfo=UTC)


def test_categories_and_event_types_normalize_case_insensitively() -> None:
    normalized = [normalize(Provider.XERO, change) for change in xero.parse(EVENTS)]
    assert [(n.entity, n.provider_entity, n.operation) for n in normalized] == [
        ("contact", "CONTACT", "updated"),
        ("invoice", "INVOICE", "created"),
        ("credit_note", "CREDITNOTE", "updated"),
    ]
    assert normalized[0].contact_type is None  # a Xero contact may be customer and supplier at once
    assert normalized[2].attributes["type"] == "ACCRECCREDIT"


def test_intent_to_receive_is_a_delivery_with_no_changes() -> None:
    body = b'{"events":[],"lastEventSequence":0,"firstEventSequence":0,"entropy":"S0m3r4Nd0mt3xt"}'
    assert xero.parse(body) == []


def test_subscription_events_keep_their_own_entity_name() -> None:
    body = orjson.dumps(
        {
            "events": [
                {
                    "resourceId": "a1",
                    "eventDateUtc": "2024-06-21T01:15:39.902",
                    "eventType": "UPDATE",
                    "eventCategory": "SUBSCRIPTION",
                    "tenantId": "app-1",
                    "tenantType": "APPLICATION",
                }
            ]
        }
    )
    normalized = normalize(Provider.XERO, xero.parse(body)[0])
    assert (normalized.entity, normalized.operation) == ("subscription", "updated")
    assert normalized.attributes == {"tenant_type": "APPLICATION"}


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"entropy": "x"}',
        b'{"events": {}}',
        b'{"events": [{"resourceId": "1", "eventType": "UPDATE", "eventCategory": "CONTACT"}]}',
        b'{"events": [{"resourceId": "1", "eventType": "UPDATE", "eventCategory": "CONTACT", "tenantId": "t",'
        b' "eventDateUtc": 5}]}',
        b'{"events": [{"resourceId": "1", "eventType": "UPDATE", "eventCategory": "CONTACT", "tenantId": "t",'
        b' "eventDateUtc": "21/06/2024"}]}',
    ],
)
def test_malformed_deliveries_raise_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError):
        xero.parse(body)
