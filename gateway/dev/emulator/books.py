"""The emulated accounts' books: the records the data APIs serve, and each account's API usage.

A `Book` belongs to one (provider, account): records keyed by (entity, id), stamped by the
emulator's clock, changed through `create`, `update`, `delete` and `void`. The data-API modules
(quickbooks_api.py, xero_api.py, zoho_books_api.py, ...) read it and render its records the way
each provider does.
`Usage` counts an account's (or an app's) requests in sliding windows and in flight, so the API
modules can answer 429 where the provider would. Control endpoints and limits: docs/emulator.md.
"""

import itertools
import math
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo

from fanout.vocabulary import entity_name
from provider_auth.providers import Provider

Operation = Literal["create", "update", "delete", "void"]
RecordState = Literal["active", "deleted", "voided"]
OPERATIONS: tuple[Operation, ...] = ("create", "update", "delete", "void")

# QuickBooks entities the emulator keeps (developer.intuit.com API reference); CDC refuses the
# last five (docs/providers.md, QuickBooks Online).
QUICKBOOKS_ENTITIES: tuple[str, ...] = (
    "Account",
    "Attachable",
    "Bill",
    "BillPayment",
    "Class",
    "CreditMemo",
    "Customer",
    "Department",
    "Deposit",
    "Employee",
    "Estimate",
    "Invoice",
    "Item",
    "JournalEntry",
    "Payment",
    "Purchase",
    "PurchaseOrder",
    "RefundReceipt",
    "SalesReceipt",
    "Transfer",
    "Vendor",
    "VendorCredit",
    "JournalCode",
    "TaxAgency",
    "TaxCode",
    "TaxRate",
    "TimeActivity",
)
QUICKBOOKS_NOT_IN_CDC = frozenset({"JournalCode", "TaxAgency", "TaxCode", "TaxRate", "TimeActivity"})
# QuickBooks stamps times in the company's time zone with its offset; the emulator's companies sit
# at -08:00, as in Intuit's examples (docs/providers.md, QuickBooks Online).
QUICKBOOKS_ZONE = timezone(timedelta(hours=-8))


@dataclass(frozen=True)
class XeroCollection:
    """One Xero list endpoint as the emulator plays it (docs/providers.md, Xero)."""

    name: str  # path segment under /api.xro/2.0 and the array holding the records
    id_field: str
    paged: bool
    status_field: str | None = "Status"
    live_status: str = "AUTHORISED"
    # What a deletion or a void shows; None: the operation does not exist for this endpoint,
    # except a deletion on an endpoint without statuses (Items), which removes the record.
    deleted_status: str | None = "DELETED"
    voided_status: str | None = None
    # Takes `includeArchived`; ARCHIVED records are left out without it.
    archived_param: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)


XERO_COLLECTIONS: Mapping[str, XeroCollection] = {
    c.name: c
    for c in (
        XeroCollection(
            "Invoices",
            "InvoiceID",
            True,
            voided_status="VOIDED",
            archived_param=True,
            extra={"Type": "ACCREC"},
        ),
        XeroCollection(
            "Contacts",
            "ContactID",
            True,
            status_field="ContactStatus",
            live_status="ACTIVE",
            deleted_status="ARCHIVED",
            archived_param=True,
        ),
        XeroCollection(
            "CreditNotes", "CreditNoteID", True, voided_status="VOIDED", extra={"Type": "ACCRECCREDIT"}
        ),
        XeroCollection("Payments", "PaymentID", True),
        XeroCollection("BankTransactions", "BankTransactionID", True, extra={"Type": "SPEND"}),
        XeroCollection(
            "ManualJournals", "ManualJournalID", True, live_status="POSTED", voided_status="VOIDED"
        ),
        XeroCollection("PurchaseOrders", "PurchaseOrderID", True),
        XeroCollection(
            "Overpayments",
            "OverpaymentID",
            True,
            deleted_status=None,
            voided_status="VOIDED",
            extra={"Type": "RECEIVE-OVERPAYMENT"},
        ),
        XeroCollection(
            "Prepayments",
            "PrepaymentID",
            True,
            deleted_status=None,
            voided_status="VOIDED",
            extra={"Type": "RECEIVE-PREPAYMENT"},
        ),
        XeroCollection("Items", "ItemID", False, status_field=None, deleted_status=None),
        XeroCollection("Accounts", "AccountID", False, live_status="ACTIVE", deleted_status="ARCHIVED"),
    )
}
# Book entities are singular (`Invoice`), as the vocabulary and the polling modules name them.
XERO_ENTITIES: Mapping[str, XeroCollection] = {
    name.removesuffix("s"): c for name, c in XERO_COLLECTIONS.items()
}


@dataclass(frozen=True)
class ZohoBooksList:
    """One Zoho Books list endpoint as the emulator plays it (docs/providers.md, Zoho Books)."""

    path: str  # under /books/v3
    records: str  # the array holding the records
    id_field: str
    live_status: str | None  # None: the records carry no status
    voidable: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)


# Keyed by the entity names Zoho's webhooks and the polling module use.
ZOHO_BOOKS_LISTS: Mapping[str, ZohoBooksList] = {
    "invoice": ZohoBooksList("invoices", "invoices", "invoice_id", "sent", voidable=True),
    "contact": ZohoBooksList(
        "contacts", "contacts", "contact_id", "active", extra={"contact_type": "customer"}
    ),
    "bill": ZohoBooksList("bills", "bills", "bill_id", "open", voidable=True),
    "creditnote": ZohoBooksList("creditnotes", "creditnotes", "creditnote_id", "open", voidable=True),
    "customerpayment": ZohoBooksList("customerpayments", "customerpayments", "payment_id", None),
    "vendorpayment": ZohoBooksList("vendorpayments", "vendorpayments", "payment_id", None),
    "item": ZohoBooksList("items", "items", "item_id", "active"),
    "purchaseorder": ZohoBooksList("purchaseorders", "purchaseorders", "purchaseorder_id", "open"),
    "expense": ZohoBooksList("expenses", "expenses", "expense_id", "unbilled"),
    "vendor_credit": ZohoBooksList(
        "vendorcredits", "vendor_credits", "vendor_credit_id", "open", voidable=True
    ),
}
# Zoho writes times with the organization's offset; the emulator's organizations sit at -08:00, as
# in Zoho's examples (docs/providers.md, Zoho Books).
ZOHO_BOOKS_ZONE = timezone(timedelta(hours=-8))


@dataclass(frozen=True)
class FreshBooksResource:
    """One FreshBooks accounting list as the emulator plays it (docs/providers.md, FreshBooks)."""

    path: str  # under /accounting/account/{account_id}/
    records: str  # the array in `response.result`
    id_alias: str  # the duplicate of `id` FreshBooks also writes
    # Deleted records are kept with vis_state 1; without it a deletion removes the record.
    soft_deletes: bool = True
    # FreshBooks writes `created_at` on invoices; the others show only `updated`.
    created_at: bool = False


FRESHBOOKS_RESOURCES: Mapping[str, FreshBooksResource] = {
    "client": FreshBooksResource("users/clients", "clients", "userid"),
    "invoice": FreshBooksResource("invoices/invoices", "invoices", "invoiceid", created_at=True),
    "payment": FreshBooksResource("payments/payments", "payments", "logid"),
    "expense": FreshBooksResource("expenses/expenses", "expenses", "expenseid"),
    "item": FreshBooksResource("items/items", "items", "itemid"),
    "tax": FreshBooksResource("taxes/taxes", "taxes", "taxid", soft_deletes=False),
}
# "For historical reasons" accounting resources answer in US/Eastern, without an offset
# (docs/providers.md, FreshBooks).
FRESHBOOKS_ZONE = ZoneInfo("America/New_York")

# REST objects of the query service the emulator keeps (docs/providers.md, Sage Intacct).
SAGE_INTACCT_OBJECTS: tuple[str, ...] = (
    "accounts-receivable/invoice",
    "accounts-receivable/payment",
    "accounts-receivable/customer",
    "accounts-payable/bill",
    "accounts-payable/payment",
    "accounts-payable/vendor",
    "general-ledger/journal-entry",
    "general-ledger/account",
)


@dataclass(frozen=True)
class NetSuiteTable:
    """Where a NetSuite record type lives in SuiteQL (docs/providers.md, NetSuite)."""

    table: str
    created_column: str
    transaction_type: str | None = None  # `type` in the transaction table


NETSUITE_RECORD_TYPES: Mapping[str, NetSuiteTable] = {
    "invoice": NetSuiteTable("transaction", "createddate", "CustInvc"),
    "creditmemo": NetSuiteTable("transaction", "createddate", "CustCred"),
    "customerpayment": NetSuiteTable("transaction", "createddate", "CustPymt"),
    "vendorbill": NetSuiteTable("transaction", "createddate", "VendBill"),
    "vendorcredit": NetSuiteTable("transaction", "createddate", "VendCred"),
    "vendorpayment": NetSuiteTable("transaction", "createddate", "VendPymt"),
    "journalentry": NetSuiteTable("transaction", "createddate", "Journal"),
    "purchaseorder": NetSuiteTable("transaction", "createddate", "PurchOrd"),
    "expensereport": NetSuiteTable("transaction", "createddate", "ExpRept"),
    "customer": NetSuiteTable("customer", "datecreated"),
    "vendor": NetSuiteTable("vendor", "datecreated"),
    "item": NetSuiteTable("item", "createddate"),
}
# A NetSuite account's time zone when a test sets none (`Book.time_zone`): NetSuite's own default.
NETSUITE_ZONE = "America/Los_Angeles"

BOOK_ENTITIES: Mapping[Provider, tuple[str, ...]] = {
    Provider.QUICKBOOKS: QUICKBOOKS_ENTITIES,
    Provider.XERO: tuple(XERO_ENTITIES),
    Provider.ZOHO_BOOKS: tuple(ZOHO_BOOKS_LISTS),
    Provider.FRESHBOOKS: tuple(FRESHBOOKS_RESOURCES),
    Provider.SAGE_INTACCT: SAGE_INTACCT_OBJECTS,
    Provider.NETSUITE: tuple(NETSUITE_RECORD_TYPES),
}
# What may be voided where the provider shows a void (Xero's are in XERO_COLLECTIONS; QuickBooks
# voids anything); FreshBooks and Sage Intacct polling shows none.
VOIDABLE: Mapping[Provider, frozenset[str]] = {
    Provider.ZOHO_BOOKS: frozenset(e for e, z in ZOHO_BOOKS_LISTS.items() if z.voidable),
    Provider.FRESHBOOKS: frozenset(),
    Provider.SAGE_INTACCT: frozenset(),
    Provider.NETSUITE: frozenset(e for e, t in NETSUITE_RECORD_TYPES.items() if t.transaction_type),
}
# Where a provider's numeric ids start (Zoho's are long numbers like its examples'); Xero's are UUIDs.
FIRST_ID: Mapping[Provider, int] = {Provider.ZOHO_BOOKS: 982_000_000_000_001}


@dataclass(frozen=True)
class Record:
    """One record as it is now. Immutable: every change stores a new one."""

    entity: str
    id: str
    created_at: float
    updated_at: float
    # 0 when created, one more per change (QuickBooks SyncToken).
    version: int
    state: RecordState
    # Order of the last change in the book: ties on `updated_at` keep the order they happened in.
    sequence: int
    fields: Mapping[str, Any] = field(default_factory=dict)


def _key(name: str) -> str:
    return "".join(char for char in name.lower() if char.isalnum())


def resolve_entity(provider: Provider, name: str) -> str:
    """The provider's own entity name for `name`: its own name in any case or spelling
    (`invoice`, `journal_entry`), or a unified one (`credit_note` -> QuickBooks `CreditMemo`).
    ValueError when it names nothing the emulator keeps."""
    entities = BOOK_ENTITIES.get(provider)
    if entities is None:
        raise KeyError(f"the emulator keeps no book for {provider.value}")
    by_key = {_key(entity): entity for entity in entities}
    if _key(name) in by_key:
        return by_key[_key(name)]
    if provider is Provider.XERO:
        # Xero endpoint names (`Invoices`) name their entity too.
        by_collection = {_key(c.name): entity for entity, c in XERO_ENTITIES.items()}
        if _key(name) in by_collection:
            return by_collection[_key(name)]
    unified = entity_name(provider, name)[0]
    for entity in entities:
        if entity_name(provider, entity)[0] == unified:
            return entity
    raise ValueError(f"{provider.value} has no entity {name[:40]!r}")


class Book:
    """The records of one provider account. Thread-safe; every method is atomic."""

    def __init__(self, provider: Provider, account: str, clock: Callable[[], float]) -> None:
        self.provider = provider
        self.account = account
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Record]] = {}
        self._sequence = itertools.count(1)
        self._ids = itertools.count(FIRST_ID.get(provider, 1))
        # The account's IANA time zone, where its API answers wall-clock times (NetSuite).
        self.time_zone = NETSUITE_ZONE

    def _new_id(self) -> str:
        # Xero ids are UUIDs; the other providers' are decimal numbers.
        if self.provider is Provider.XERO:
            return str(uuid.uuid4())
        return str(next(self._ids))

    def _check(self, entity: str, operation: Operation) -> str:
        entity = resolve_entity(self.provider, entity)
        if self.provider is Provider.XERO and operation in ("delete", "void"):
            collection = XERO_ENTITIES[entity]
            if operation == "delete":
                missing = collection.status_field is not None and collection.deleted_status is None
            else:
                missing = collection.voided_status is None
            if missing:
                raise ValueError(f"Xero cannot {operation} a {entity} through its list endpoint")
        if operation == "void" and entity not in VOIDABLE.get(self.provider, frozenset({entity})):
            raise ValueError(f"{self.provider.value} cannot void a {entity}")
        return entity

    def create(self, entity: str, id: str | None = None, *, at: float | None = None, **fields: Any) -> Record:
        """A new record of `entity` (a fresh id unless given), stamped now (or at `at`)."""
        return self.create_many(entity, 1, ids=None if id is None else [id], at=at, fields=fields)[0]

    def create_many(
        self,
        entity: str,
        n: int,
        *,
        ids: Iterable[str] | None = None,
        at: float | None = None,
        spacing: float = 0.0,
        fields: Mapping[str, Any] | None = None,
    ) -> list[Record]:
        """`n` new records; the last is stamped now (or `at`), each earlier one `spacing` seconds
        before the next, so a bulk creation can spread over a window that has already passed."""
        entity = self._check(entity, "create")
        wanted = list(ids) if ids is not None else None
        if wanted is not None and len(wanted) != n:
            raise ValueError("ids must name one id per record")
        with self._lock:
            table = self._records.setdefault(entity, {})
            end = self._clock() if at is None else at
            created = []
            for i in range(n):
                record_id = wanted[i] if wanted is not None else self._new_id()
                if record_id in table:
                    raise ValueError(f"{entity} {record_id} already exists")
                stamp = end - (n - 1 - i) * spacing
                record = Record(
                    entity, record_id, stamp, stamp, 0, "active", next(self._sequence), dict(fields or {})
                )
                table[record_id] = record
                created.append(record)
            return created

    def update(self, entity: str, id: str, *, at: float | None = None, **fields: Any) -> Record:
        """A new version of a live record, its fields merged with `fields`."""
        return self._change(entity, id, "update", at, fields)

    def delete(self, entity: str, id: str, *, at: float | None = None) -> Record:
        """Delete a record (QuickBooks CDC `status: Deleted`; Xero `DELETED`, or `ARCHIVED` for
        contacts and accounts; a deleted Xero item leaves the API)."""
        return self._change(entity, id, "delete", at, {})

    def void(self, entity: str, id: str, *, at: float | None = None) -> Record:
        """Void a record (Xero `VOIDED`; QuickBooks shows a void as an update to zero amounts)."""
        return self._change(entity, id, "void", at, {})

    def update_many(self, entity: str, n: int, *, at: float | None = None) -> list[Record]:
        """Update the `n` live records of `entity` changed longest ago (for steady change streams)."""
        entity = self._check(entity, "update")
        with self._lock:
            live = [r for r in self._records.get(entity, {}).values() if r.state == "active"]
            oldest = sorted(live, key=lambda r: (r.updated_at, r.sequence))[:n]
            return [self._apply(r, "update", at, {}) for r in oldest]

    def apply(self, entity: str, operation: Operation, id: str | None = None, **fields: Any) -> Record:
        """One change by name, as the control endpoint receives it."""
        if operation == "create":
            return self.create(entity, id, **fields)
        if id is None:
            raise ValueError(f"{operation} needs the id of the record")
        if operation == "update":
            return self.update(entity, id, **fields)
        if operation == "delete":
            return self.delete(entity, id)
        if operation == "void":
            return self.void(entity, id)
        raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}")

    def _change(
        self, entity: str, id: str, operation: Operation, at: float | None, fields: dict[str, Any]
    ) -> Record:
        entity = self._check(entity, operation)
        with self._lock:
            current = self._records.get(entity, {}).get(id)
            if current is None:
                raise KeyError(f"no {entity} {id} in {self.provider.value} account {self.account}")
            return self._apply(current, operation, at, fields)

    def _apply(
        self, current: Record, operation: Operation, at: float | None, fields: dict[str, Any]
    ) -> Record:
        if current.state != "active":
            raise ValueError(f"{current.entity} {current.id} is already {current.state}")
        state: RecordState = (
            "deleted" if operation == "delete" else "voided" if operation == "void" else "active"
        )
        stamp = self._clock() if at is None else at
        record = replace(
            current,
            updated_at=max(stamp, current.updated_at),
            version=current.version + 1,
            state=state,
            sequence=next(self._sequence),
            fields={**current.fields, **fields},
        )
        self._records[current.entity][current.id] = record
        return record

    def get(self, entity: str, id: str) -> Record | None:
        """The record as it is now, or None."""
        with self._lock:
            return self._records.get(resolve_entity(self.provider, entity), {}).get(id)

    def records(self, entity: str | None = None) -> list[Record]:
        """Every record (of one entity), in the order of their last change."""
        with self._lock:
            tables = (
                [self._records.get(resolve_entity(self.provider, entity), {})]
                if entity is not None
                else list(self._records.values())
            )
            found = [r for table in tables for r in table.values()]
        return sorted(found, key=lambda r: r.sequence)

    def changed_since(self, entity: str, since: float) -> list[Record]:
        """Records of `entity` last changed at or after `since`, oldest change first."""
        with self._lock:
            found = [r for r in self._records.get(entity, {}).values() if r.updated_at >= since]
        return sorted(found, key=lambda r: (r.updated_at, r.sequence))


def id_order(record_id: str) -> tuple[int, str]:
    """A sort key putting decimal ids in number order (and any other id somewhere stable)."""
    return len(record_id), record_id


# ----- rendering -----------------------------------------------------------------------------


def quickbooks_time(timestamp: float, *, millis: bool = False) -> str:
    """A QuickBooks date-time in the company's offset: `2015-12-23T12:55:50-08:00`."""
    moment = datetime.fromtimestamp(timestamp, UTC).astimezone(QUICKBOOKS_ZONE)
    return moment.isoformat(timespec="milliseconds" if millis else "seconds")


def render_quickbooks(record: Record) -> dict[str, Any]:
    """A record as CDC returns it: the whole object, or `status: Deleted` with its id and time."""
    updated = quickbooks_time(record.updated_at)
    if record.state == "deleted":
        return {
            "domain": "QBO",
            "status": "Deleted",
            "Id": record.id,
            "MetaData": {"LastUpdatedTime": updated},
        }
    body: dict[str, Any] = {
        "Id": record.id,
        "SyncToken": str(record.version),
        "domain": "QBO",
        "sparse": False,
        "MetaData": {"CreateTime": quickbooks_time(record.created_at), "LastUpdatedTime": updated},
    }
    if record.state == "voided":
        # A voided transaction keeps its id with zero amounts and a note (no status of its own).
        body.update({"TotalAmt": 0, "Balance": 0, "PrivateNote": "Voided"})
    body.update(record.fields)
    return body


def xero_date(timestamp: float) -> str:
    """A Xero JSON date: `/Date(1541176290160+0000)/` (milliseconds since the epoch, UTC)."""
    return f"/Date({round(timestamp * 1000)}+0000)/"


def xero_status(record: Record) -> str | None:
    """The status a Xero record shows, None for endpoints without one."""
    collection = XERO_ENTITIES[record.entity]
    if collection.status_field is None:
        return None
    if record.state == "deleted":
        return collection.deleted_status
    if record.state == "voided":
        return collection.voided_status
    return collection.live_status


def render_xero(record: Record) -> dict[str, Any]:
    """A record as a Xero list endpoint returns it."""
    collection = XERO_ENTITIES[record.entity]
    body: dict[str, Any] = {collection.id_field: record.id, **collection.extra}
    if collection.status_field is not None:
        body[collection.status_field] = xero_status(record)
    body["UpdatedDateUTC"] = xero_date(record.updated_at)
    body.update(record.fields)
    return body


def zoho_books_time(timestamp: float) -> str:
    """A Zoho Books time with the organization's offset: `2013-11-18T02:17:40-0800`."""
    moment = datetime.fromtimestamp(math.floor(timestamp), UTC).astimezone(ZOHO_BOOKS_ZONE)
    return moment.strftime("%Y-%m-%dT%H:%M:%S%z")


def render_zoho_books(record: Record) -> dict[str, Any]:
    """A record as a Zoho Books list returns it (a deleted record is never listed)."""
    endpoint = ZOHO_BOOKS_LISTS[record.entity]
    body: dict[str, Any] = {endpoint.id_field: record.id, **endpoint.extra}
    if endpoint.live_status is not None:
        body["status"] = "void" if record.state == "voided" else endpoint.live_status
    body["created_time"] = zoho_books_time(record.created_at)
    body["last_modified_time"] = zoho_books_time(record.updated_at)
    body.update(record.fields)
    return body


def freshbooks_time(timestamp: float) -> str:
    """A FreshBooks accounting time: US/Eastern wall clock without an offset, `2016-07-20 15:36:09`."""
    moment = datetime.fromtimestamp(math.floor(timestamp), UTC).astimezone(FRESHBOOKS_ZONE)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def render_freshbooks(record: Record, account: str = "") -> dict[str, Any]:
    """A record as a FreshBooks accounting list returns it, with `vis_state` 1 once deleted."""
    resource = FRESHBOOKS_RESOURCES[record.entity]
    number = int(record.id) if record.id.isdigit() else record.id
    body: dict[str, Any] = {"id": number, resource.id_alias: number, "accounting_systemid": account}
    if resource.soft_deletes:
        body["vis_state"] = 1 if record.state == "deleted" else 0
    if resource.created_at:
        body["created_at"] = freshbooks_time(record.created_at)
    body["updated"] = freshbooks_time(record.updated_at)
    body.update(record.fields)
    return body


def sage_intacct_time(timestamp: float) -> str:
    """A Sage Intacct audit time: UTC to the second, `2025-04-29T15:26:00Z`."""
    return datetime.fromtimestamp(math.floor(timestamp), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_sage_intacct(record: Record) -> dict[str, Any]:
    """A record as the query service returns it when asked for every field: `key` (the record
    number), `id` (the record number unless the fields give a readable one) and its audit times."""
    body: dict[str, Any] = {
        "key": record.id,
        "id": record.id,
        "audit.createdDateTime": sage_intacct_time(record.created_at),
        "audit.modifiedDateTime": sage_intacct_time(record.updated_at),
    }
    body.update(record.fields)
    return body


def netsuite_time(timestamp: float, time_zone: str = NETSUITE_ZONE) -> str:
    """A time as `TO_CHAR(..., 'YYYY-MM-DD HH24:MI:SS')` writes it: the account's wall clock."""
    moment = datetime.fromtimestamp(math.floor(timestamp), UTC).astimezone(ZoneInfo(time_zone))
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def render_netsuite(record: Record, time_zone: str = NETSUITE_ZONE) -> dict[str, Any]:
    """A record as a row of the SuiteQL query the poller runs (a deleted record has no row)."""
    row: dict[str, Any] = {
        "links": [],
        "id": record.id,
        "modified_at": netsuite_time(record.updated_at, time_zone),
        "created_at": netsuite_time(record.created_at, time_zone),
    }
    if NETSUITE_RECORD_TYPES[record.entity].transaction_type is not None:
        row["voided"] = "T" if record.state == "voided" else "F"
    row.update(record.fields)
    return row


def render(book: "Book", record: Record) -> dict[str, Any]:
    """A record of `book` in its provider's JSON, as that provider's API shows it."""
    provider = book.provider
    if provider is Provider.QUICKBOOKS:
        return render_quickbooks(record)
    if provider is Provider.XERO:
        return render_xero(record)
    if provider is Provider.ZOHO_BOOKS:
        return render_zoho_books(record)
    if provider is Provider.FRESHBOOKS:
        return render_freshbooks(record, book.account)
    if provider is Provider.SAGE_INTACCT:
        return render_sage_intacct(record)
    return render_netsuite(record, book.time_zone)


# ----- usage and limits ----------------------------------------------------------------------


@dataclass
class Limits:
    """How many requests a provider serves: per account per minute, per day and in flight, and
    per app per minute. None: no such limit. Tests may change any field."""

    per_minute: int | None = None
    concurrent: int | None = None
    per_day: int | None = None
    app_per_minute: int | None = None
    # The most rows one query reaches (NetSuite SuiteQL).
    max_results: int | None = None


def default_limits(provider: Provider) -> Limits:
    """The documented limits, from each provider's "Rate limits" (docs/providers.md); FreshBooks
    publishes none and Sage Intacct's depend on the tier, so the emulator sets none for them."""
    if provider is Provider.QUICKBOOKS:
        return Limits(per_minute=500, concurrent=10)
    if provider is Provider.XERO:
        return Limits(per_minute=60, concurrent=5, per_day=5000, app_per_minute=10_000)
    if provider is Provider.ZOHO_BOOKS:
        return Limits(per_minute=100)  # per organization (docs/providers.md, Zoho Books)
    if provider is Provider.NETSUITE:
        # Account-wide concurrency, 5 without SuiteCloud Plus, and 100,000 rows a query
        # (docs/providers.md, NetSuite).
        return Limits(concurrent=5, max_results=100_000)
    return Limits()


MINUTE = 60.0
DAY = 86_400.0


class Window:
    """Requests accepted in the last `span` seconds: at most N in any span means N in this window."""

    def __init__(self, span: float) -> None:
        self.span = span
        self._times: deque[float] = deque()

    def _prune(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.span:
            self._times.popleft()

    def count(self, now: float) -> int:
        """Requests in the window ending now."""
        self._prune(now)
        return len(self._times)

    def add(self, now: float) -> None:
        """Record one accepted request."""
        self._times.append(now)

    def wait(self, now: float) -> float:
        """Seconds until the oldest request leaves the window (a slot frees up)."""
        self._prune(now)
        return max(0.0, self._times[0] + self.span - now) if self._times else 0.0


@dataclass
class Usage:
    """One account's (or one app's) requests: per minute, per day and in flight."""

    minute: Window = field(default_factory=lambda: Window(MINUTE))
    day: Window = field(default_factory=lambda: Window(DAY))
    in_flight: int = 0


class Books:
    """Every book and every account's usage, created on first use."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._books: dict[tuple[Provider, str], Book] = {}
        self._usage: dict[tuple[Provider, str], Usage] = {}
        self.limits: dict[Provider, Limits] = {p: default_limits(p) for p in BOOK_ENTITIES}
        # Guards every `Usage`: a check and its update must be one step for concurrent requests.
        self.lock = threading.Lock()

    def book(self, provider: Provider, account: str) -> Book:
        """The book of a provider account (an empty one the first time)."""
        if provider not in BOOK_ENTITIES:
            raise KeyError(f"the emulator keeps no book for {provider.value}")
        with self._lock:
            book = self._books.get((provider, account))
            if book is None:
                book = self._books[(provider, account)] = Book(provider, account, self._clock)
            return book

    def existing(self, provider: Provider, account: str) -> Book | None:
        """The book of a provider account if anything was ever written to it."""
        with self._lock:
            return self._books.get((provider, account))

    def usage(self, provider: Provider, key: str) -> Usage:
        """The usage of an account (or `app:<client id>`); call with `self.lock` held."""
        usage = self._usage.get((provider, key))
        if usage is None:
            usage = self._usage[(provider, key)] = Usage()
        return usage

    def admit(self, provider: Provider, key: str) -> Usage | None:
        """Take one of an account's in-flight slots for a request (give it back with `release`);
        None when its concurrency limit is reached."""
        limit = self.limits[provider].concurrent
        with self.lock:
            usage = self.usage(provider, key)
            if limit is not None and usage.in_flight >= limit:
                return None
            usage.in_flight += 1
            return usage

    def release(self, usage: Usage) -> None:
        """Give back the slot `admit` took."""
        with self.lock:
            usage.in_flight -= 1

    def spend(self, provider: Provider, key: str, now: float) -> tuple[str, float] | None:
        """Count one request in an account's day and minute windows; or, when one is spent, which
        (`day`, `minute`) and the seconds until it frees a request."""
        limits = self.limits[provider]
        with self.lock:
            usage = self.usage(provider, key)
            if limits.per_day is not None and usage.day.count(now) >= limits.per_day:
                return "day", usage.day.wait(now)
            if limits.per_minute is not None and usage.minute.count(now) >= limits.per_minute:
                return "minute", usage.minute.wait(now)
            usage.day.add(now)
            usage.minute.add(now)
            return None
