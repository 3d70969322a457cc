"""Zoho Books webhook bodies (entity JSON as in the Books API v3) through the parser and vocabulary."""

from datetime import UTC, datetime

import orjson
import pytest

from fanout.changes import CONNECTION_ACCOUNT, ParseError, ProviderChange
from fanout.parsers import PARSERS, zoho_books
from fanout.vocabulary import normalize
from provider_auth.providers import Provider

INVOICE = orjson.dumps(
    {
        "invoice": {
            "invoice_id": "982000000567114",
            "invoice_number": "INV-00003",
            "customer_id": "982000000567001",
            "status": "sent",
            "total": 40.6,
            "created_time": "2013-11-18T02:17:40-0800",
            "last_modified_time": "2013-11-18T02:17:40-0800",
            "line_items": [{"line_item_id": "982000000567021", "item_id": "982000000030049"}],
            "custom_fields": [],
        },
        "organization_id": "10234695",
    }
)


def test_zoho_books_is_registered() -> None:
    assert PARSERS[Provider.ZOHO_BOOKS] is zoho_books.parse


def test_entity_json_reads_as_one_updated_change_of_the_organization() -> None:
    assert zoho_books.parse(INVOICE) == [
        ProviderChange(
            provider_account_id="10234695",
            entity="invoice",
            entity_id="982000000567114",
            operation="updated",
            occurred_at=datetime(2013, 11, 18, 10, 17, 40, tzinfo=UTC),
            attributes={"status": "sent"},
        )
    ]


def test_vendor_contact_keeps_its_contact_type() -> None:
    body = orjson.dumps(
        {
            "contact": {
                "contact_id": 460000000026049,
                "contact_name": "Bowman and Co",
                "contact_type": "vendor",
                "last_modified_time": "2016-05-23T11:30:22+0530",
            },
            "event_type": "contact_created",
        }
    )
    change = zoho_books.parse(body)[0]
    assert change.entity_id == "460000000026049"
    assert change.provider_account_id == CONNECTION_ACCOUNT  # no organization_id: the connection's
    normalized = normalize(Provider.ZOHO_BOOKS, change)
    assert (normalized.entity, normalized.operation, normalized.contact_type) == (
        "contact",
        "created",
        "vendor",
    )
    assert normalized.occurred_at == datetime(2016, 5, 23, 6, 0, 22, tzinfo=UTC)


@pytest.mark.parametrize(
    ("entity", "id_field", "unified", "contact_type"),
    [
        ("invoice", "invoice_id", "invoice", None),
        ("bill", "bill_id", "bill", None),
        ("creditnote", "creditnote_id", "credit_note", None),
        ("customer", "contact_id", "contact", "customer"),
        ("vendor", "contact_id", "contact", "vendor"),
        ("payment", "payment_id", "payment", None),
        ("vendorpayment", "payment_id", "payment", None),
        ("expense", "expense_id", "expense", None),
        ("purchaseorder", "purchaseorder_id", "purchase_order", None),
        ("salesorder", "salesorder_id", "sales_order", None),
        ("journal", "journal_id", "journal_entry", None),
        ("vendor_credit", "vendor_credit_id", "vendor_credit", None),
        ("item", "item_id", "item", None),
        ("chartofaccount", "account_id", "account", None),
        ("estimate", "estimate_id", "estimate", None),
    ],
)
def test_entities_and_their_id_fields(
    entity: str, id_field: str, unified: str, contact_type: str | None
) -> None:
    body = orjson.dumps(
        {entity: {id_field: "77", "updated_time": "2024-01-01T00:00:00Z"}, "organization_id": "5"}
    )
    normalized = normalize(Provider.ZOHO_BOOKS, zoho_books.parse(body)[0])
    assert (normalized.entity, normalized.entity_id, normalized.contact_type) == (unified, "77", contact_type)
    assert normalized.provider_entity == entity


@pytest.mark.parametrize(
    ("fields", "operation"),
    [
        ({"event_type": "invoice_created"}, "created"),
        ({"event_type": "invoice.deleted"}, "deleted"),
        ({"action": "Edited"}, "updated"),
        ({"event": "invoice_voided"}, "voided"),
        ({"operation": "sent"}, "sent"),
        ({}, "updated"),
    ],
)
def test_operation_comes_from_the_body_else_updated(fields: dict[str, str], operation: str) -> None:
    body = orjson.dumps({"invoice": {"invoice_id": "1"}, **fields})
    assert normalize(Provider.ZOHO_BOOKS, zoho_books.parse(body)[0]).operation == operation


def test_credit_note_event_type_with_underscored_entity() -> None:
    body = orjson.dumps({"creditnote": {"creditnote_id": "3"}, "event_type": "credit_note_updated"})
    assert zoho_books.parse(body)[0].operation == "updated"


def test_the_entity_object_wins_over_nested_objects_without_an_id() -> None:
    body = orjson.dumps(
        {"bill": {"bill_id": "8"}, "organization": {"organization_id": "9"}, "meta": {"source": "workflow"}}
    )
    change = zoho_books.parse(body)[0]
    assert (change.entity, change.entity_id) == ("bill", "8")


def test_unreadable_time_is_left_out_not_fatal() -> None:
    body = orjson.dumps({"invoice": {"invoice_id": "1", "last_modified_time": "18 Nov 2013"}})
    assert zoho_books.parse(body)[0].occurred_at is None


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"{}",
        b'{"organization_id": "1"}',
        b'{"invoice": {"total": 3}}',
        b'{"invoice": {"invoice_id": ""}}',
        b'{"invoice": {"invoice_id": 1.5}}',
        b'{"invoice": {"invoice_id": "1"}, "bill": {"bill_id": "2"}}',
    ],
)
def test_malformed_bodies_raise_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError):
        zoho_books.parse(body)
