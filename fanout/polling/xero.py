"""Xero accounting list endpoints, read as polled pages.

Each entity is its own endpoint, asked with `If-Modified-Since`; the endpoints that page are read page
by page in `UpdatedDateUTC` order, the others in one call. Records come back whole, with statuses
DELETED and VOIDED for deletions and voids. Endpoints, paging and dates: docs/providers.md, Xero.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fanout.changes import ParseError, ProviderChange
from fanout.parsers.json_body import (
    as_list,
    as_object,
    load_json,
    optional_text,
    optional_timestamp,
    text,
    timestamp,
)
from fanout.polling.pages import PageRequest, PolledPage, PollTarget


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Xero list endpoint and how to read its records."""

    # The path segment under /api.xro/2.0, which is also the name of the array holding the records.
    collection: str
    id_field: str
    # Takes `page` and `pageSize` and answers with a `pagination` object.
    paged: bool
    # Leaves archived records out unless asked with `includeArchived=true`.
    archived: bool = False
    status_field: str = "Status"


# By entity name as the vocabulary knows it (docs/providers.md, Xero).
ENDPOINTS: dict[str, Endpoint] = {
    "Invoice": Endpoint("Invoices", "InvoiceID", paged=True, archived=True),
    "Contact": Endpoint("Contacts", "ContactID", paged=True, archived=True, status_field="ContactStatus"),
    "CreditNote": Endpoint("CreditNotes", "CreditNoteID", paged=True),
    "Payment": Endpoint("Payments", "PaymentID", paged=True),
    "BankTransaction": Endpoint("BankTransactions", "BankTransactionID", paged=True),
    "ManualJournal": Endpoint("ManualJournals", "ManualJournalID", paged=True),
    "PurchaseOrder": Endpoint("PurchaseOrders", "PurchaseOrderID", paged=True),
    "Overpayment": Endpoint("Overpayments", "OverpaymentID", paged=True),
    "Prepayment": Endpoint("Prepayments", "PrepaymentID", paged=True),
    "Item": Endpoint("Items", "ItemID", paged=False),
    "Account": Endpoint("Accounts", "AccountID", paged=False),
}
# Polled by default: one call per entity per poll at the least, against 5,000 calls a day per
# organisation, so overpayments and prepayments are read only when asked for.
ENTITIES: tuple[str, ...] = (
    "Invoice",
    "Contact",
    "CreditNote",
    "Payment",
    "BankTransaction",
    "ManualJournal",
    "PurchaseOrder",
    "Item",
    "Account",
)

# If-Modified-Since has whole seconds (rounded down here), the watermark may come from our clock when
# an answer carries no DateTimeUTC, and a write can commit after a poll read past its UpdatedDateUTC;
# records read twice are dropped by reconciliation (same id, same version).
OVERLAP = timedelta(minutes=5)
# Xero's page size on every paged endpoint, asked for explicitly.
PAGE_SIZE = 100

_API_PREFIX = "/api.xro/2.0/"
# Operations in words the vocabulary reads: Xero webhooks say UPDATE; a status says the rest.
_UPDATE = "UPDATE"
_STATUS_OPERATIONS = {"DELETED": "DELETED", "VOIDED": "VOIDED"}


def first_requests(target: PollTarget, since: datetime, entities: Sequence[str]) -> list[PageRequest]:
    """The first call of a poll of each of `entities` changed at or after `since` (page 1 where paged)."""
    if since.tzinfo is None:
        raise ValueError("since must be an aware datetime")
    # Whole seconds in UTC, rounded down so that nothing in the second is skipped.
    stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return [_request(target, _endpoint(entity), stamp, 1) for entity in dict.fromkeys(entities)]


def parse_page(target: PollTarget, request: PageRequest, body: bytes) -> PolledPage:
    """One answer of a list endpoint: each record one change, versioned by its UpdatedDateUTC.

    An empty body (the fetcher's 304) is an empty last page. ParseError for anything else than the
    endpoint's records, and for a record without its id or a readable UpdatedDateUTC.
    """
    entity, endpoint = _asked(request)
    if not body:
        # A 304 Not Modified: nothing changed since If-Modified-Since (docs/providers.md, Xero).
        return PolledPage()
    document = as_object(load_json(body), where="body")
    records = as_list(document.get(endpoint.collection), where=endpoint.collection)
    changes = []
    for i, record in enumerate(records):
        where = f"{endpoint.collection}[{i}]"
        changes.append(_change(target, entity, endpoint, as_object(record, where=where), where))
    return PolledPage(
        changes=changes,
        more=_more(endpoint, request, document, len(records)),
        server_time=optional_timestamp(document.get("DateTimeUTC"), "DateTimeUTC"),
    )


def next_requests(target: PollTarget, request: PageRequest, page: PolledPage) -> list[PageRequest]:
    """The next page of the same endpoint while there is one; [] when the endpoint is read."""
    if not page.more:
        return []
    number = _page_number(request)
    params = tuple((key, str(number + 1) if key == "page" else value) for key, value in request.params)
    return [replace(request, params=params)]


def _endpoint(entity: str) -> Endpoint:
    try:
        return ENDPOINTS[entity]
    except KeyError:
        raise ValueError(f"no Xero list endpoint for {entity[:40]!r}") from None


def _request(target: PollTarget, endpoint: Endpoint, stamp: str, page: int) -> PageRequest:
    params: list[tuple[str, str]] = []
    if endpoint.paged:
        # UpdatedDateUTC order: a record changed while a poll pages moves to the end rather than
        # shifting an unread record onto a page already read.
        params += [("page", str(page)), ("pageSize", str(PAGE_SIZE)), ("order", "UpdatedDateUTC ASC")]
    if endpoint.archived:
        params.append(("includeArchived", "true"))
    return PageRequest(
        method="GET",
        path=_API_PREFIX + endpoint.collection,
        params=tuple(params),
        headers=(
            ("Accept", "application/json"),  # Xero answers XML otherwise
            ("xero-tenant-id", target.account),
            ("If-Modified-Since", stamp),
        ),
    )


def _asked(request: PageRequest) -> tuple[str, Endpoint]:
    """The entity and endpoint of a request this module built."""
    collection = request.path.removeprefix(_API_PREFIX)
    for entity, endpoint in ENDPOINTS.items():
        if endpoint.collection == collection:
            return entity, endpoint
    raise ValueError("not a Xero list request of this module")


def _page_number(request: PageRequest) -> int:
    try:
        return int(dict(request.params)["page"])
    except (KeyError, ValueError):
        raise ValueError("not a paged Xero request of this module") from None


def _more(endpoint: Endpoint, request: PageRequest, document: dict[str, Any], count: int) -> bool:
    """Another page follows: up to `pagination.pageCount`, or while pages come back full without it."""
    if not endpoint.paged:
        return False
    pagination = document.get("pagination")
    page_count = None if pagination is None else as_object(pagination, where="pagination").get("pageCount")
    if page_count is None:
        return count >= PAGE_SIZE
    if not isinstance(page_count, int) or isinstance(page_count, bool):
        raise ParseError("pagination.pageCount must be an integer")
    return _page_number(request) < page_count


def _change(
    target: PollTarget, entity: str, endpoint: Endpoint, record: dict[str, Any], where: str
) -> ProviderChange:
    status = optional_text(record, endpoint.status_field)
    attributes: dict[str, str] = {}
    if status:
        attributes["status"] = status
    kind = optional_text(record, "Type")  # ACCREC / ACCPAY, SPEND / RECEIVE, ...
    if kind:
        attributes["type"] = kind
    return ProviderChange(
        provider_account_id=target.account,
        entity=entity,
        entity_id=text(record, endpoint.id_field, where=where),
        operation=_STATUS_OPERATIONS.get((status or "").upper(), _UPDATE),
        occurred_at=timestamp(record.get("UpdatedDateUTC"), f"{where}.UpdatedDateUTC"),
        attributes=attributes,
    )
