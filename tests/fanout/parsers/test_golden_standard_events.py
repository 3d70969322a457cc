"""Ledgerhook standard events (NetSuite SuiteScript and custom senders): the documented shape."""

from datetime import UTC, datetime

import orjson
import pytest

from fanout.changes import CONNECTION_ACCOUNT, ParseError, ProviderChange
from fanout.parsers import PARSERS, standard_events
from fanout.vocabulary import normalize
from provider_auth.providers import Provider


@pytest.mark.parametrize("provider", [Provider.NETSUITE, Provider.CUSTOM])
def test_standard_events_serve_netsuite_and_custom(provider: Provider) -> None:
    assert PARSERS[provider] is standard_events.parse


def test_single_event() -> None:
    body = orjson.dumps(
        {
            "type": "invoice.updated",
            "id": "evt_01",
            "account_id": "TSTDRV1234567",
            "timestamp": "2025-09-10T21:31:25Z",
            "data": {"id": "1042", "updated_at": "2025-09-10T14:31:24.5-07:00", "total": 10},
        }
    )
    assert standard_events.parse(body) == [
        ProviderChange(
            provider_account_id="TSTDRV1234567",
            entity="invoice",
            entity_id="1042",
            operation="updated",
            occurred_at=datetime(2025, 9, 10, 21, 31, 24, 500000, tzinfo=UTC),
            event_id="evt_01",
        )
    ]


def test_batch_with_default_account_entity_override_and_merge() -> None:
    body = orjson.dumps(
        {
            "account_id": "TSTDRV1",
            "events": [
                {
                    "type": "bill.created",
                    "data": {"id": 7, "entity": "vendorbill"},
                    "timestamp": "2025-01-01T00:00:00Z",
                },
                {
                    "type": "contact.merged",
                    "account_id": "OTHER",
                    "data": {"id": "5", "merged_into": "3", "contact_type": "vendor"},
                },
                {"type": "accounting.journal_entry.deleted", "data": {"id": "j1"}},
            ],
        }
    )
    changes = standard_events.parse(body)
    assert [c.provider_account_id for c in changes] == ["TSTDRV1", "OTHER", "TSTDRV1"]
    assert changes[0].entity == "vendorbill"
    assert changes[0].occurred_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert (changes[1].entity_id, changes[1].merged_away_id) == ("3", "5")
    normalized = [normalize(Provider.NETSUITE, change) for change in changes]
    assert [(n.entity, n.operation, n.entity_id, n.merged_into, n.contact_type) for n in normalized] == [
        ("bill", "created", "7", None, None),
        ("contact", "merged", "5", "3", "vendor"),
        ("journal_entry", "deleted", "j1", None, None),
    ]


def test_event_without_account_belongs_to_its_connection() -> None:
    change = standard_events.parse(b'{"type": "customer.created", "data": {"id": "c1"}}')[0]
    assert change.provider_account_id == CONNECTION_ACCOUNT
    normalized = normalize(Provider.CUSTOM, change)
    assert (normalized.entity, normalized.contact_type, normalized.operation) == (
        "contact",
        "customer",
        "created",
    )


def test_operations_are_kept_as_given() -> None:
    change = standard_events.parse(b'{"type": "invoice.paid", "data": {"id": "1"}}')[0]
    assert normalize(Provider.CUSTOM, change).operation == "paid"


def test_empty_batch_is_no_change() -> None:
    assert standard_events.parse(b'{"events": []}') == []


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"data": {"id": "1"}}',
        b'{"type": "invoice", "data": {"id": "1"}}',
        b'{"type": "invoice.", "data": {"id": "1"}}',
        b'{"type": ".updated", "data": {"id": "1"}}',
        b'{"type": "invoice.updated"}',
        b'{"type": "invoice.updated", "data": {}}',
        b'{"type": "invoice.updated", "data": {"id": "1", "updated_at": "yesterday"}}',
        b'{"type": "invoice.updated", "data": {"id": "1", "updated_at": 1700000000}}',
        b'{"type": "invoice.updated", "account_id": ["a"], "data": {"id": "1"}}',
        b'{"events": [{"type": "invoice.updated", "data": {"id": "1"}}, 3]}',
        b'{"events": {}}',
    ],
)
def test_malformed_bodies_raise_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError):
        standard_events.parse(body)
