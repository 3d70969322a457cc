"""Zoho Books change polling: each entity's list endpoint, filtered on `last_modified_time`, paged.

Paths are relative to `LEDGERHOOK_ZOHO_BOOKS_API_BASE_URL`, which already ends in `/books/v3`; the
organization is the `organization_id` parameter, and the fetcher adds the `Zoho-oauthtoken` header.
What each call relies on, with Zoho's own pages, is under "Polling" in (docs/providers.md, Zoho Books).
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fanout.changes import ParseError, ProviderChange
from fanout.parsers.json_body import as_list, as_object, load_json, optional_text, text
from fanout.polling.pages import PageRequest, PolledPage, PollTarget, next_page
from fanout.timestamps import parse_timestamp

# Journals are left out: an integrator reports their `last_modified_time` filter matching the journal
# date, and their list records carry no last-modified time (docs/providers.md, Zoho Books).
ENTITIES: tuple[str, ...] = (
    "invoice",
    "contact",
    "bill",
    "creditnote",
    "customerpayment",
    "vendorpayment",
    "item",
    "purchaseorder",
    "expense",
    "vendor_credit",
)
# Zoho's pages disagree on whether the filter is "after" or "at or after" a whole-second time, and
# a record may be committed with a time a little older than the moment it can be listed: minutes of
# re-reading, dropped by reconciliation, cost less than a missed change.
OVERLAP = timedelta(minutes=5)
PAGE_SIZE = 200  # the documented default and maximum

# The modified-time filter: documented on invoices, bills, journals and vendor payments, relied on
# for the other list endpoints (docs/providers.md, Zoho Books). One name, to change in one place.
MODIFIED_FILTER = "last_modified_time"


@dataclass(frozen=True, slots=True)
class _Endpoint:
    path: str
    # The array of records in the answer (Zoho's own examples and schema disagree for payments).
    records: tuple[str, ...]
    id_field: str


_ENDPOINTS: dict[str, _Endpoint] = {
    "invoice": _Endpoint("/invoices", ("invoices",), "invoice_id"),
    "contact": _Endpoint("/contacts", ("contacts",), "contact_id"),
    "bill": _Endpoint("/bills", ("bills",), "bill_id"),
    "creditnote": _Endpoint("/creditnotes", ("creditnotes",), "creditnote_id"),
    "customerpayment": _Endpoint(
        "/customerpayments", ("customerpayments", "customer_payments"), "payment_id"
    ),
    "vendorpayment": _Endpoint("/vendorpayments", ("vendorpayments", "vendor_payments"), "payment_id"),
    "item": _Endpoint("/items", ("items",), "item_id"),
    "purchaseorder": _Endpoint("/purchaseorders", ("purchaseorders",), "purchaseorder_id"),
    "expense": _Endpoint("/expenses", ("expenses",), "expense_id"),
    "vendor_credit": _Endpoint("/vendorcredits", ("vendor_credits",), "vendor_credit_id"),
    "journal": _Endpoint("/journals", ("journals",), "journal_id"),
}
_BY_PATH = {endpoint.path: entity for entity, endpoint in _ENDPOINTS.items()}
# Zoho writes every time with its offset (2013-11-18T02:17:40-0800); one without could be in any
# zone, so it is no version to rely on.
_HAS_OFFSET = re.compile(r"(?:[Zz]|[+-]\d{2}:?\d{2})$", re.ASCII)
# Record fields kept as provider extras, as the webhook parser keeps them (the vocabulary reads
# `contact_type` to tell customers from vendors).
_EXTRAS = ("contact_type", "status")


def first_requests(target: PollTarget, since: datetime, entities: Sequence[str]) -> list[PageRequest]:
    """The first page of each entity's list, records modified at or after `since` (aware, UTC)."""
    modified = _filter_time(since)
    return [
        PageRequest(
            method="GET",
            path=_endpoint(entity).path,
            params=(
                ("organization_id", target.account),
                (MODIFIED_FILTER, modified),
                ("page", "1"),
                ("per_page", str(PAGE_SIZE)),
            ),
        )
        for entity in dict.fromkeys(entities)
    ]


def parse_page(target: PollTarget, request: PageRequest, body: bytes) -> PolledPage:
    """One list answer: every record as it is now, and whether `page_context` says more follow."""
    entity = _BY_PATH.get(request.path)
    if entity is None:
        raise ParseError("not a Zoho Books polling request")
    endpoint = _ENDPOINTS[entity]
    document = as_object(load_json(body), where="body")
    _check_code(document)
    raw = _records(document, endpoint)
    context = as_object(document.get("page_context"), where="page_context")
    more = context.get("has_more_page")
    if not isinstance(more, bool):
        raise ParseError("page_context.has_more_page must be true or false")
    if more and not raw:
        # Neither stop (the rest would be lost) nor go on (it may never end): fail the poll.
        raise ParseError("an empty page says more pages follow")
    since = _requested_since(request)
    changes = []
    for i, item in enumerate(raw):
        where = f"record {i}"
        modified, change = _change(target, entity, endpoint, as_object(item, where=where), where)
        # The filter may be ignored where it is not documented: what it would exclude was seen before.
        if since is None or modified >= since:
            changes.append(change)
    return PolledPage(changes=changes, more=more)


def next_requests(target: PollTarget, request: PageRequest, page: PolledPage) -> list[PageRequest]:
    """The next page of the same list while `page_context.has_more_page`; [] after the last one."""
    if not page.more:
        return []
    return [next_page(request)]


def _endpoint(entity: str) -> _Endpoint:
    try:
        return _ENDPOINTS[entity]
    except KeyError:
        raise ValueError(f"not a Zoho Books polling entity: {entity!r}") from None


def _filter_time(since: datetime) -> str:
    """`2013-11-18T10:17:40+0000`: whole seconds, rounded down, with the offset Zoho's examples use."""
    if since.tzinfo is None or since.utcoffset() is None:
        raise ValueError("since must be an aware datetime")
    utc = since.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}+0000"
    )


def _requested_since(request: PageRequest) -> datetime | None:
    for key, value in request.params:
        if key == MODIFIED_FILTER:
            return _time(value)
    return None


def _check_code(document: dict[str, Any]) -> None:
    # Every answer carries `code`: zero for success, an error code otherwise.
    if "code" not in document:
        return
    code = document["code"]
    if isinstance(code, bool) or not isinstance(code, int):
        raise ParseError("code must be a number")
    if code != 0:
        raise ParseError(f"Zoho Books answered code {code}")


def _records(document: dict[str, Any], endpoint: _Endpoint) -> list[Any]:
    for key in endpoint.records:
        if key in document:
            return as_list(document[key], where=key)
    raise ParseError(f"answer has no {endpoint.records[0]} list")


def _change(
    target: PollTarget, entity: str, endpoint: _Endpoint, record: dict[str, Any], where: str
) -> tuple[datetime, ProviderChange]:
    modified = _time(record.get("last_modified_time"))
    if modified is None:
        # A watermark must never pass a record whose version could not be read.
        raise ParseError(f"{where}: no readable last_modified_time")
    attributes: dict[str, str] = {}
    for key in _EXTRAS:
        value = optional_text(record, key)
        if value:
            attributes[key] = value
    change = ProviderChange(
        provider_account_id=target.account,
        entity=entity,
        entity_id=text(record, endpoint.id_field, where=where),
        operation=_operation(record, modified, attributes.get("status")),
        occurred_at=modified,
        attributes=attributes,
    )
    return modified, change


def _operation(record: dict[str, Any], modified: datetime, status: str | None) -> str:
    # A list shows records as they are now: a void document was voided, one never modified since it
    # was created was created (Zoho's examples give both times equal then), anything else updated.
    if status is not None and status.lower() == "void":
        return "voided"
    return "created" if _time(record.get("created_time")) == modified else "updated"


def _time(value: object) -> datetime | None:
    """An aware UTC time from a Zoho time string with its offset, or None."""
    if not isinstance(value, str) or not _HAS_OFFSET.search(value.strip()):
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None
