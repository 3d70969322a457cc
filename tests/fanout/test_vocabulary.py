"""The unified vocabulary: every mapping row, operations, merges, contact types, the snake_case rule."""

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.changes import NormalizedChange, ProviderChange
from fanout.vocabulary import entity_name, normalize, operation_name, snake_case
from provider_auth.providers import Provider

QUICKBOOKS_ROWS = [
    ("Customer", "contact", "customer"),
    ("Vendor", "contact", "vendor"),
    ("Invoice", "invoice", None),
    ("Payment", "payment", None),
    ("BillPayment", "payment", None),
    ("Bill", "bill", None),
    ("CreditMemo", "credit_note", None),
    ("VendorCredit", "vendor_credit", None),
    ("Purchase", "expense", None),
    ("PurchaseOrder", "purchase_order", None),
    ("JournalEntry", "journal_entry", None),
    ("Account", "account", None),
    ("Item", "item", None),
    ("Class", "tracking_category", None),
    ("Department", "tracking_category", None),
    ("TaxCode", "tax_rate", None),
    ("TaxRate", "tax_rate", None),
    ("Attachable", "attachment", None),
    ("Estimate", "estimate", None),
    ("TimeActivity", "time_activity", None),
    ("SalesReceipt", "sales_receipt", None),
    ("RefundReceipt", "refund_receipt", None),
]


@pytest.mark.parametrize(("name", "entity", "contact_type"), QUICKBOOKS_ROWS)
def test_quickbooks_entities_in_both_formats(name: str, entity: str, contact_type: str | None) -> None:
    # Legacy sends `CreditMemo`; CloudEvents types carry `creditmemo`: one entity either way.
    assert entity_name(Provider.QUICKBOOKS, name) == (entity, contact_type)
    assert entity_name(Provider.QUICKBOOKS, name.lower()) == (entity, contact_type)
    assert entity_name(Provider.QUICKBOOKS, name.upper()) == (entity, contact_type)


@pytest.mark.parametrize(
    ("provider", "name", "entity", "contact_type"),
    [
        (Provider.XERO, "CONTACT", "contact", None),
        (Provider.XERO, "INVOICE", "invoice", None),
        (Provider.XERO, "CREDITNOTE", "credit_note", None),
        (Provider.XERO, "SUBSCRIPTION", "subscription", None),
        (Provider.FRESHBOOKS, "client", "contact", "customer"),
        (Provider.FRESHBOOKS, "invoice", "invoice", None),
        (Provider.FRESHBOOKS, "payment", "payment", None),
        (Provider.FRESHBOOKS, "bill_payment", "payment", None),
        (Provider.FRESHBOOKS, "expense", "expense", None),
        (Provider.FRESHBOOKS, "bill", "bill", None),
        (Provider.FRESHBOOKS, "bill_vendor", "contact", "vendor"),
        (Provider.FRESHBOOKS, "item", "item", None),
        (Provider.FRESHBOOKS, "tax", "tax_rate", None),
        (Provider.FRESHBOOKS, "credit_note", "credit_note", None),
        (Provider.FRESHBOOKS, "time_entry", "time_entry", None),
        (Provider.ZOHO_BOOKS, "contact", "contact", None),
        (Provider.ZOHO_BOOKS, "customer", "contact", "customer"),
        (Provider.ZOHO_BOOKS, "vendor", "contact", "vendor"),
        (Provider.ZOHO_BOOKS, "invoice", "invoice", None),
        (Provider.ZOHO_BOOKS, "bill", "bill", None),
        (Provider.ZOHO_BOOKS, "creditnote", "credit_note", None),
        (Provider.ZOHO_BOOKS, "vendorpayment", "payment", None),
        (Provider.ZOHO_BOOKS, "journal", "journal_entry", None),
        (Provider.ZOHO_BOOKS, "chartofaccount", "account", None),
        (Provider.ZOHO_BOOKS, "purchaseorder", "purchase_order", None),
        (Provider.ZOHO_BOOKS, "tax", "tax_rate", None),
        (Provider.SAGE_INTACCT, "ARINVOICE", "invoice", None),
        (Provider.SAGE_INTACCT, "APBILL", "bill", None),
        (Provider.SAGE_INTACCT, "CUSTOMER", "contact", "customer"),
        (Provider.SAGE_INTACCT, "VENDOR", "contact", "vendor"),
        (Provider.SAGE_INTACCT, "ARADJUSTMENT", "credit_note", None),
        (Provider.SAGE_INTACCT, "GLBATCH", "journal_entry", None),
        (Provider.SAGE_INTACCT, "DEPARTMENT", "tracking_category", None),
        (Provider.SAGE_INTACCT, "accounts-receivable/invoice", "invoice", None),
        (Provider.SAGE_INTACCT, "general-ledger/journal-entry", "journal_entry", None),
        (Provider.SAGE_INTACCT, "SODOCUMENT", "sodocument", None),
        (Provider.NETSUITE, "vendorbill", "bill", None),
        (Provider.NETSUITE, "creditmemo", "credit_note", None),
        (Provider.NETSUITE, "customer", "contact", "customer"),
        (Provider.NETSUITE, "journalentry", "journal_entry", None),
        (Provider.CUSTOM, "credit_note", "credit_note", None),
        (Provider.CUSTOM, "supplier", "contact", "vendor"),
        (Provider.CUSTOM, "Widget", "widget", None),
    ],
)
def test_other_provider_entities(
    provider: Provider, name: str, entity: str, contact_type: str | None
) -> None:
    assert entity_name(provider, name) == (entity, contact_type)


@pytest.mark.parametrize(
    ("provider", "word", "operation"),
    [
        (Provider.QUICKBOOKS, "Create", "created"),
        (Provider.QUICKBOOKS, "Update", "updated"),
        (Provider.QUICKBOOKS, "Delete", "deleted"),
        (Provider.QUICKBOOKS, "Merge", "merged"),
        (Provider.QUICKBOOKS, "Void", "voided"),
        (Provider.QUICKBOOKS, "Emailed", "emailed"),
        (Provider.QUICKBOOKS, "created", "created"),
        (Provider.QUICKBOOKS, "updated", "updated"),
        (Provider.QUICKBOOKS, "deleted", "deleted"),
        (Provider.QUICKBOOKS, "merged", "merged"),
        (Provider.QUICKBOOKS, "voided", "voided"),
        (Provider.QUICKBOOKS, "emailed", "emailed"),
        (Provider.XERO, "CREATE", "created"),
        (Provider.XERO, "UPDATE", "updated"),
        (Provider.XERO, "Update", "updated"),
        (Provider.FRESHBOOKS, "create", "created"),
        (Provider.FRESHBOOKS, "update", "updated"),
        (Provider.FRESHBOOKS, "delete", "deleted"),
        (Provider.FRESHBOOKS, "sendByEmail", "emailed"),
        (Provider.ZOHO_BOOKS, "Edited", "updated"),
        (Provider.SAGE_INTACCT, "add", "created"),
        (Provider.SAGE_INTACCT, "Set", "updated"),
        (Provider.NETSUITE, "created", "created"),
        # Unknown provider words are kept, in snake_case; "set" means nothing outside Intacct.
        (Provider.QUICKBOOKS, "Archive", "archive"),
        (Provider.FRESHBOOKS, "markAsPaid", "mark_as_paid"),
        (Provider.CUSTOM, "set", "set"),
        (Provider.CUSTOM, "!!!", "unknown"),
    ],
)
def test_operations(provider: Provider, word: str, operation: str) -> None:
    assert operation_name(provider, word) == operation


def test_merge_names_the_merged_away_record_and_points_to_the_survivor() -> None:
    change = ProviderChange("realm", "Vendor", "61", "Merge", None, event_id="e", merged_away_id="64")
    assert normalize(Provider.QUICKBOOKS, change) == NormalizedChange(
        provider_account_id="realm",
        entity="contact",
        provider_entity="Vendor",
        entity_id="64",
        operation="merged",
        occurred_at=None,
        event_id="e",
        merged_into="61",
        contact_type="vendor",
    )


def test_merge_without_the_merged_away_id_keeps_the_record() -> None:
    normalized = normalize(Provider.QUICKBOOKS, ProviderChange("r", "Customer", "1", "Merge", None))
    assert (normalized.entity_id, normalized.merged_into) == ("1", None)


def test_contact_type_from_the_record_and_only_for_contacts() -> None:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    contact = ProviderChange("org", "contact", "1", "created", when, attributes={"contact_type": "Vendor"})
    assert normalize(Provider.ZOHO_BOOKS, contact).contact_type == "vendor"
    odd = ProviderChange("org", "contact", "1", "created", when, attributes={"contact_type": "partner"})
    assert normalize(Provider.ZOHO_BOOKS, odd).contact_type is None
    invoice = ProviderChange("org", "invoice", "1", "created", when, attributes={"contact_type": "customer"})
    normalized = normalize(Provider.ZOHO_BOOKS, invoice)
    assert normalized.contact_type is None
    assert normalized.attributes == {"contact_type": "customer"}
    assert normalized.occurred_at == when


def test_attributes_are_copied_not_shared() -> None:
    change = ProviderChange("t", "INVOICE", "1", "UPDATE", None, attributes={"status": "PAID"})
    normalized = normalize(Provider.XERO, change)
    normalized.attributes["status"] = "changed"
    assert change.attributes == {"status": "PAID"}


@pytest.mark.parametrize(
    ("name", "snake"),
    [
        ("TimeActivity", "time_activity"),
        ("JournalEntry", "journal_entry"),
        ("CREDITNOTE", "creditnote"),
        ("HTTPResponse", "http_response"),
        ("bill-vendor", "bill_vendor"),
        ("accounts receivable/invoice", "accounts_receivable_invoice"),
        ("Form1099", "form1099"),
        ("  __x__  ", "x"),
        ("Überweisung", "berweisung"),
        ("発注", "unknown"),
        ("", "unknown"),
    ],
)
def test_snake_case(name: str, snake: str) -> None:
    assert snake_case(name) == snake


_NAME = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")


@given(st.sampled_from(list(Provider)), st.text(max_size=40), st.text(max_size=40))
def test_any_name_gives_an_event_type_segment(provider: Provider, entity: str, operation: str) -> None:
    # `accounting.<entity>.<operation>` must stay one dotted name of three parts.
    unified, contact_type = entity_name(provider, entity)
    assert _NAME.fullmatch(unified)
    assert _NAME.fullmatch(operation_name(provider, operation))
    assert contact_type in (None, "customer", "vendor")


@pytest.mark.parametrize("name", ["Invoice2", "Invoicé", "Invoice_2"])
def test_only_case_and_separators_are_ignored_when_matching(name: str) -> None:
    assert entity_name(Provider.QUICKBOOKS, name)[0] != "invoice"
