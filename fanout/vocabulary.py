"""The unified entity vocabulary and operation names of Ledgerhook's change events.

`normalize` turns a `ProviderChange` (names as the provider sent them) into a `NormalizedChange`
whose entity and operation form the event type `accounting.<entity>.<operation>`. Provider names
are matched case-insensitively and ignoring separators, so one entity has one name whatever the
format it came in (and its event id agrees); an entity or operation outside the vocabulary keeps a
snake_case name of its own, never dropped. The vocabulary, per provider: docs/events.md, "The
unified vocabulary".

Merges: the event is about the record that disappeared, so `entity_id` is the merged-away id and
`merged_into` the surviving one (the `ProviderChange` carries them the other way round, as
QuickBooks sends them).
"""

import re
from collections.abc import Mapping
from functools import lru_cache

from fanout.changes import NormalizedChange, ProviderChange
from provider_auth.providers import Provider

CREATED = "created"
UPDATED = "updated"
DELETED = "deleted"
MERGED = "merged"
VOIDED = "voided"
EMAILED = "emailed"

CUSTOMER = "customer"
VENDOR = "vendor"

UNKNOWN = "unknown"

_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def snake_case(name: str) -> str:
    """`TimeActivity` -> `time_activity`, `CREDITNOTE` -> `creditnote`, `bill-vendor` -> `bill_vendor`.

    ASCII letters and digits only; a name with none becomes `unknown`.
    """
    words = _BOUNDARY.sub("_", name.strip())
    return _NOT_WORD.sub("_", words.lower()).strip("_") or UNKNOWN


def _key(name: str) -> str:
    # Case and separators never matter (`CreditMemo`, `creditmemo`, `credit_memo`); other
    # characters do, so `Invoice2` or `Invoicé` is not an invoice.
    return "".join(char for char in name.lower() if char.isalnum())


# (unified entity, contact type) by provider entity name, lower-cased without separators.
_Entry = tuple[str, str | None]


def _table(rows: Mapping[str, str | _Entry]) -> dict[str, _Entry]:
    return {_key(name): (row if isinstance(row, tuple) else (row, None)) for name, row in rows.items()}


# Names every provider may use for a unified entity (including the unified names themselves).
_COMMON = _table(
    {
        "account": "account",
        "attachment": "attachment",
        "bill": "bill",
        "contact": "contact",
        "customer": ("contact", CUSTOMER),
        "vendor": ("contact", VENDOR),
        "supplier": ("contact", VENDOR),
        "credit_note": "credit_note",
        "expense": "expense",
        "invoice": "invoice",
        "item": "item",
        "journal_entry": "journal_entry",
        "payment": "payment",
        "purchase_order": "purchase_order",
        "tax_rate": "tax_rate",
        "tracking_category": "tracking_category",
        "vendor_credit": "vendor_credit",
    }
)

# QuickBooks Online entity names (developer.intuit.com API reference; webhooks entity list).
_QUICKBOOKS = _table(
    {
        "Customer": ("contact", CUSTOMER),
        "Vendor": ("contact", VENDOR),
        "Invoice": "invoice",
        "Payment": "payment",
        "BillPayment": "payment",
        "Bill": "bill",
        "CreditMemo": "credit_note",
        "VendorCredit": "vendor_credit",
        "Purchase": "expense",
        "PurchaseOrder": "purchase_order",
        "JournalEntry": "journal_entry",
        "Account": "account",
        "Item": "item",
        "Class": "tracking_category",
        "Department": "tracking_category",
        "TaxCode": "tax_rate",
        "TaxRate": "tax_rate",
        "Attachable": "attachment",
    }
)
# Other QuickBooks entities keep their own name; listed so that the lower-case CloudEvents form
# (`timeactivity`) gets the same snake_case name as the legacy form (`TimeActivity`).
_QUICKBOOKS_OWN = (
    "Budget",
    "CompanyCurrency",
    "CompanyInfo",
    "CreditCardPayment",
    "Currency",
    "Deposit",
    "Employee",
    "Estimate",
    "ExchangeRate",
    "InventoryAdjustment",
    "JournalCode",
    "PaymentMethod",
    "Preferences",
    "RecurringTransaction",
    "RefundReceipt",
    "ReimburseCharge",
    "SalesReceipt",
    "TaxAgency",
    "TaxPayment",
    "Term",
    "TimeActivity",
    "Transfer",
)
_QUICKBOOKS_OWN_KEYS = {_key(name): snake_case(name) for name in _QUICKBOOKS_OWN}

# Xero webhook event categories (developer.xero.com webhooks overview), and the polled objects the
# common names do not cover (docs/providers.md, Xero).
_XERO = _table(
    {
        "CONTACT": "contact",
        "INVOICE": "invoice",
        "CREDITNOTE": "credit_note",
        "ManualJournal": "journal_entry",
    }
)

# FreshBooks webhook event entities (freshbooks.com/api/webhooks).
_FRESHBOOKS = _table(
    {
        "client": ("contact", CUSTOMER),
        "bill_vendor": ("contact", VENDOR),
        "invoice": "invoice",
        "payment": "payment",
        "bill_payment": "payment",
        "expense": "expense",
        "bill": "bill",
        "credit_note": "credit_note",
        "item": "item",
        "tax": "tax_rate",
    }
)

# Zoho Books entity keys (Books API v3 JSON names).
_ZOHO_BOOKS = _table(
    {
        "contact": "contact",
        "customer": ("contact", CUSTOMER),
        "vendor": ("contact", VENDOR),
        "invoice": "invoice",
        "bill": "bill",
        "creditnote": "credit_note",
        "customerpayment": "payment",
        "payment": "payment",
        "vendorpayment": "payment",
        "expense": "expense",
        "purchaseorder": "purchase_order",
        "salesorder": "sales_order",
        "vendor_credit": "vendor_credit",
        "journal": "journal_entry",
        "item": "item",
        "chartofaccount": "account",
        "tax": "tax_rate",
        "recurringinvoice": "recurring_invoice",
        "banktransaction": "bank_transaction",
    }
)

# Sage Intacct object names, XML API (ARINVOICE) and the last segment of REST names
# (accounts-receivable/invoice -> invoice, which the common names already cover).
_SAGE_INTACCT = _table(
    {
        "ARINVOICE": "invoice",
        "APBILL": "bill",
        "ARPYMT": "payment",
        "APPYMT": "payment",
        "ARADJUSTMENT": "credit_note",
        "APADJUSTMENT": "vendor_credit",
        "GLACCOUNT": "account",
        "GLBATCH": "journal_entry",
        "GLENTRY": "journal_entry",
        "DEPARTMENT": "tracking_category",
        "LOCATION": "tracking_category",
        "CLASS": "tracking_category",
        "TAXDETAIL": "tax_rate",
    }
)

# NetSuite record types as a SuiteScript sender names them (standard events).
_NETSUITE = _table(
    {
        "vendorbill": "bill",
        "creditmemo": "credit_note",
        "customerpayment": "payment",
        "vendorpayment": "payment",
        "journalentry": "journal_entry",
        "purchaseorder": "purchase_order",
        "vendorcredit": "vendor_credit",
        "expensereport": "expense",
        "department": "tracking_category",
        "classification": "tracking_category",
        "location": "tracking_category",
        "salestaxitem": "tax_rate",
    }
)

_ENTITIES: dict[Provider, dict[str, _Entry]] = {
    Provider.QUICKBOOKS: _QUICKBOOKS,
    Provider.XERO: _XERO,
    Provider.FRESHBOOKS: _FRESHBOOKS,
    Provider.ZOHO_BOOKS: _ZOHO_BOOKS,
    Provider.SAGE_INTACCT: _SAGE_INTACCT,
    Provider.NETSUITE: _NETSUITE,
    Provider.CUSTOM: {},
}

_OPERATIONS = {
    _key(word): operation
    for operation, words in {
        CREATED: ("create", "created", "add", "added", "insert"),
        UPDATED: ("update", "updated", "edit", "edited", "modify", "modified", "change", "changed"),
        DELETED: ("delete", "deleted", "remove", "removed", "destroy", "destroyed"),
        MERGED: ("merge", "merged"),
        VOIDED: ("void", "voided"),
        EMAILED: ("email", "emailed", "send_by_email"),
    }.items()
    for word in words
}
# Words with a meaning for one provider only.
_PROVIDER_OPERATIONS: dict[Provider, dict[str, str]] = {
    Provider.SAGE_INTACCT: {"set": UPDATED},  # Smart Events: Add, Set, Delete
}


# The public vocabulary: every unified entity and every standard operation (docs and schemas list these).
UNIFIED_ENTITIES: tuple[str, ...] = tuple(sorted({entity for entity, _ in _COMMON.values()}))
STANDARD_OPERATIONS: tuple[str, ...] = (CREATED, UPDATED, DELETED, MERGED, VOIDED, EMAILED)


def normalize(provider: Provider, change: ProviderChange) -> NormalizedChange:
    """`change` in the unified vocabulary of `provider`'s events; never drops an entity or operation."""
    entity, contact_type = entity_name(provider, change.entity)
    if entity == "contact" and contact_type is None:
        # Zoho Books contacts and standard events say which kind in the record.
        kind = change.attributes.get("contact_type", "").strip().lower()
        contact_type = kind if kind in (CUSTOMER, VENDOR) else None
    operation = operation_name(provider, change.operation)
    entity_id, merged_into = change.entity_id, None
    if operation == MERGED and change.merged_away_id:
        entity_id, merged_into = change.merged_away_id, change.entity_id
    return NormalizedChange(
        provider_account_id=change.provider_account_id,
        entity=entity,
        provider_entity=change.entity,
        entity_id=entity_id,
        operation=operation,
        occurred_at=change.occurred_at,
        event_id=change.event_id,
        merged_into=merged_into,
        contact_type=contact_type if entity == "contact" else None,
        attributes=dict(change.attributes),
    )


@lru_cache(maxsize=4096)  # a few dozen names recur in every delivery; bounded against hostile ones
def entity_name(provider: Provider, provider_entity: str) -> tuple[str, str | None]:
    """The unified entity for a provider's entity name, and 'customer'/'vendor' when it says so."""
    key = _key(provider_entity)
    if provider is Provider.SAGE_INTACCT:
        key = _key(provider_entity.rsplit("/", 1)[-1])  # REST names: accounts-payable/bill
    found = _ENTITIES.get(provider, {}).get(key) or _COMMON.get(key)
    if found:
        return found
    if provider is Provider.QUICKBOOKS and key in _QUICKBOOKS_OWN_KEYS:
        return _QUICKBOOKS_OWN_KEYS[key], None
    if provider is Provider.SAGE_INTACCT:
        return snake_case(provider_entity.rsplit("/", 1)[-1]), None
    return snake_case(provider_entity), None


@lru_cache(maxsize=4096)
def operation_name(provider: Provider, provider_operation: str) -> str:
    """The unified operation for a provider's operation word; unknown words in snake_case."""
    key = _key(provider_operation)
    return (
        _PROVIDER_OPERATIONS.get(provider, {}).get(key)
        or _OPERATIONS.get(key)
        or snake_case(provider_operation)
    )
