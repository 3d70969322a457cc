"""FreshBooks change polling: the accounting list endpoints searched on `updated_min`, 100 a page.

Paths are relative to `LEDGERHOOK_FRESHBOOKS_API_BASE_URL` (the API host) and sit under
`/accounting/account/{account_id}/`, the account being `PollTarget.account`; time-tracking
resources, keyed by a business id, are not polled. The fetcher adds the access token. Deleted
records (`vis_state` 1) are only listed when asked for, so each entity that has them is read twice.
What each call relies on, with FreshBooks' own pages, is under "Polling" in (docs/providers.md,
FreshBooks).
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fanout.changes import ParseError, ProviderChange
from fanout.parsers.json_body import as_list, as_object, load_json, text
from fanout.polling.pages import PageRequest, PolledPage, PollTarget, next_page
from fanout.timestamps import parse_timestamp

# Credit notes and bill payments are left out: their answers carry no last-updated time. Bills and
# bill vendors are pollable on request: a feature not every account has (docs/providers.md, FreshBooks).
ENTITIES: tuple[str, ...] = ("client", "invoice", "payment", "expense", "item", "tax")
# The search matches whole days, and `updated` is a zone-less time FreshBooks writes in US/Eastern:
# a resource answering in another zone would be read hours off, and each autumn repeats an hour. A
# day of re-reading covers all of it; reconciliation drops what was already published.
OVERLAP = timedelta(days=1)
PAGE_SIZE = 100  # FreshBooks caps per_page at 100, silently

UPDATED_MIN = "search[updated_min]"  # updated on or after a day (YYYY-MM-DD)
VIS_STATE = "search[vis_state]"
_DELETED = 1
_ARCHIVED = 2
# "For historical reasons" the accounting resources answer times in US/Eastern, without an offset.
_EASTERN = ZoneInfo("America/New_York")
_ACCOUNTING = "/accounting/account/"
_ZONELESS = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?", re.ASCII)
_HAS_OFFSET = re.compile(r"(?:[Zz]|[+-]\d{2}:?\d{2})$", re.ASCII)


@dataclass(frozen=True, slots=True)
class _Resource:
    path: str  # under /accounting/account/{account_id}/
    records: str  # the array of records in `response.result`
    id_fields: tuple[str, ...]  # the first one present is the record's id
    updated: str  # the last-updated time
    zone: tzinfo  # the zone of that time when it has no offset
    soft_deletes: bool  # deleted records are kept with vis_state 1


_RESOURCES: dict[str, _Resource] = {
    "client": _Resource("users/clients", "clients", ("id", "userid"), "updated", _EASTERN, True),
    "invoice": _Resource("invoices/invoices", "invoices", ("id", "invoiceid"), "updated", _EASTERN, True),
    "payment": _Resource("payments/payments", "payments", ("id", "logid"), "updated", _EASTERN, True),
    "expense": _Resource("expenses/expenses", "expenses", ("id", "expenseid"), "updated", _EASTERN, True),
    "item": _Resource("items/items", "items", ("id", "itemid"), "updated", _EASTERN, True),
    # Taxes have no vis_state: a deleted tax is gone, and only its webhook tells.
    "tax": _Resource("taxes/taxes", "taxes", ("id", "taxid"), "updated", _EASTERN, False),
    # The newer bills API answers `updated_at`, in UTC per FreshBooks' SDK (bill vendors: assumed alike).
    "bill": _Resource("bills/bills", "bills", ("id",), "updated_at", UTC, True),
    "bill_vendor": _Resource(
        "bill_vendors/bill_vendors", "bill_vendors", ("vendorid", "id"), "updated_at", UTC, True
    ),
}
_BY_PATH = {resource.path: entity for entity, resource in _RESOURCES.items()}


def first_requests(target: PollTarget, since: datetime, entities: Sequence[str]) -> list[PageRequest]:
    """The first page of each entity's list updated on or after `since`'s day (aware, UTC), and of
    its deleted records where it keeps them."""
    day = _search_day(since)
    requests = []
    for entity in dict.fromkeys(entities):
        resource = _resource(entity)
        path = f"{_ACCOUNTING}{quote(target.account, safe='')}/{resource.path}"
        paging = (("page", "1"), ("per_page", str(PAGE_SIZE)))
        requests.append(PageRequest(method="GET", path=path, params=((UPDATED_MIN, day), *paging)))
        if resource.soft_deletes:
            deleted = ((UPDATED_MIN, day), (VIS_STATE, str(_DELETED)), *paging)
            requests.append(PageRequest(method="GET", path=path, params=deleted))
    return requests


def parse_page(target: PollTarget, request: PageRequest, body: bytes) -> PolledPage:
    """One list answer: every record as it is now, and whether `page` < `pages`."""
    entity = _entity_of(request.path)
    resource = _RESOURCES[entity]
    document = as_object(load_json(body), where="body")
    response = as_object(document.get("response"), where="response")
    if "errors" in response:
        raise ParseError(_error(response["errors"]))
    result = as_object(response.get("result"), where="response.result")
    raw = as_list(result.get(resource.records), where=resource.records)
    more = _count(result, "page") < _count(result, "pages")
    if more and not raw:
        # Neither stop (the rest would be lost) nor go on (it may never end): fail the poll.
        raise ParseError("an empty page says more pages follow")
    floor = _requested_floor(request)
    changes = []
    for i, item in enumerate(raw):
        change = _change(target, entity, resource, as_object(item, where=f"record {i}"), f"record {i}")
        # Integrators report the search ignored on some endpoints: what it would exclude was seen before.
        if floor is None or change.occurred_at is None or change.occurred_at >= floor:
            changes.append(change)
    return PolledPage(changes=changes, more=more)


def next_requests(target: PollTarget, request: PageRequest, page: PolledPage) -> list[PageRequest]:
    """The next page of the same search while `page` < `pages`; [] after the last one."""
    if not page.more:
        return []
    return [next_page(request)]


def _resource(entity: str) -> _Resource:
    try:
        return _RESOURCES[entity]
    except KeyError:
        raise ValueError(f"not a FreshBooks polling entity: {entity!r}") from None


def _entity_of(path: str) -> str:
    account, _, resource_path = path.removeprefix(_ACCOUNTING).partition("/")
    entity = _BY_PATH.get(resource_path) if path.startswith(_ACCOUNTING) and account else None
    if entity is None:
        raise ParseError("not a FreshBooks polling request")
    return entity


def _search_day(since: datetime) -> str:
    """`since`'s day in US/Eastern: never later than its day in UTC, so nothing since it is left out."""
    if since.tzinfo is None or since.utcoffset() is None:
        raise ValueError("since must be an aware datetime")
    return since.astimezone(_EASTERN).date().isoformat()


def _requested_floor(request: PageRequest) -> datetime | None:
    """The first instant the request's `updated_min` day admits (midnight in US/Eastern)."""
    for key, value in request.params:
        if key == UPDATED_MIN:
            try:
                return datetime.combine(date.fromisoformat(value), time(), tzinfo=_EASTERN)
            except ValueError:
                return None
    return None


def _error(errors: Any) -> str:
    # {"response": {"errors": [{"errno": 1012, "field": ..., "message": ..., "object": ...}]}}: only
    # the number is repeated, the rest may quote the request.
    first = errors[0] if isinstance(errors, list) and errors else errors
    errno = first.get("errno") if isinstance(first, dict) else None
    if isinstance(errno, int) and not isinstance(errno, bool) and abs(errno) < 10**9:
        return f"FreshBooks answered errno {errno}"
    return "FreshBooks answered an error"


def _count(result: dict[str, Any], key: str) -> int:
    value = result.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ParseError(f"response.result.{key} must be a count")
    return value


def _change(
    target: PollTarget, entity: str, resource: _Resource, record: dict[str, Any], where: str
) -> ProviderChange:
    updated = record.get(resource.updated)
    occurred_at = _time(updated, resource.zone)
    if occurred_at is None:
        # A watermark must never pass a record whose version could not be read.
        raise ParseError(f"{where}: no readable {resource.updated}")
    vis_state = record.get("vis_state")
    if vis_state is not None and (isinstance(vis_state, bool) or not isinstance(vis_state, int)):
        raise ParseError(f"{where}: vis_state must be a number")
    attributes: dict[str, str] = {}
    if vis_state == _DELETED:
        operation = "deleted"
    else:
        # Archived records stay in the books (hidden in the UI): an update, marked as such.
        if vis_state == _ARCHIVED:
            attributes["vis_state"] = "archived"
        # Never modified since it was created (same time written twice): created.
        created = record.get("created_at")
        fresh = isinstance(created, str) and created.strip() == str(updated).strip()
        operation = "created" if fresh else "updated"
    return ProviderChange(
        provider_account_id=target.account,
        entity=entity,
        entity_id=_record_id(record, resource, where),
        operation=operation,
        occurred_at=occurred_at,
        attributes=attributes,
    )


def _record_id(record: dict[str, Any], resource: _Resource, where: str) -> str:
    for key in resource.id_fields:
        if record.get(key) is not None:
            return text(record, key, where=where)
    raise ParseError(f"{where}: {resource.id_fields[0]} is missing")


def _time(value: object, zone: tzinfo) -> datetime | None:
    """An aware UTC time from `2016-07-20 15:36:09` in `zone`, or from a time with an offset; or None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    try:
        if _ZONELESS.fullmatch(value):
            # The first of a repeated autumn hour is taken: the earlier instant, within the overlap.
            return datetime.fromisoformat(value).replace(tzinfo=zone).astimezone(UTC)
        if _HAS_OFFSET.search(value):
            return parse_timestamp(value)
    except (ValueError, OverflowError):
        pass
    return None
