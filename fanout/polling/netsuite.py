"""NetSuite change polling over SuiteQL: the requests for a poll and the reading of their answers.

One SuiteQL query per record type, bounded on `lastmodifieddate` read as a full timestamp in the
account's time zone (never a date), ordered by `lastmodifieddate, id`. A following page asks for the
rows after the last one read (a keyset) rather than for a row offset, so rows sharing a timestamp
across a page boundary are neither lost nor repeated, and a record saved mid-poll cannot shift unread
rows out of reach. A window whose query matches more rows than SuiteQL serves is cut in two by time.
SuiteQL does not show deletions. What this relies on: docs/providers.md, NetSuite.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from fanout.changes import ParseError, ProviderChange
from fanout.parsers.json_body import as_list, as_object, load_json
from fanout.polling.pages import PageRequest, PolledPage, PollTarget

# Record types as NetSuite names them (and its SuiteScript senders do); the vocabulary maps each.
ENTITIES: tuple[str, ...] = (
    "invoice",
    "creditmemo",
    "customerpayment",
    "vendorbill",
    "vendorcredit",
    "vendorpayment",
    "journalentry",
    "purchaseorder",
    "expensereport",
    "customer",
    "vendor",
    "item",
)

# `lastmodifieddate` is read to the second and the lower bound is inclusive, so the last second of a
# poll comes again; and a save is stamped when it starts but seen when it commits, which user event
# scripts and workflows on the record can delay by minutes (docs/providers.md, NetSuite).
OVERLAP = timedelta(minutes=10)

# SuiteQL serves at most 1,000 rows a page (docs/providers.md, NetSuite).
PAGE_SIZE = 1000

# A SuiteQL query reaches at most 100,000 rows without SuiteAnalytics Connect: a window that matches
# more is cut in two (docs/providers.md, NetSuite).
MAX_RESULTS = 100_000

SUITEQL_PATH = "/query/v1/suiteql"  # under LEDGERHOOK_NETSUITE_API_BASE_URL, which ends in /services/rest


@dataclass(frozen=True, slots=True)
class _Source:
    """Where a record type lives in SuiteQL."""

    table: str
    # The creation time column: transactions and items say `createddate`, entities `datecreated`.
    created: str
    # The `type` of a transaction (the `transaction` table holds every kind).
    transaction_type: str | None = None


_SOURCES: dict[str, _Source] = {
    "invoice": _Source("transaction", "createddate", "CustInvc"),
    "creditmemo": _Source("transaction", "createddate", "CustCred"),
    "customerpayment": _Source("transaction", "createddate", "CustPymt"),
    "vendorbill": _Source("transaction", "createddate", "VendBill"),
    "vendorcredit": _Source("transaction", "createddate", "VendCred"),
    "vendorpayment": _Source("transaction", "createddate", "VendPymt"),
    "journalentry": _Source("transaction", "createddate", "Journal"),
    "purchaseorder": _Source("transaction", "createddate", "PurchOrd"),
    "expensereport": _Source("transaction", "createddate", "ExpRept"),
    "customer": _Source("customer", "datecreated"),
    "vendor": _Source("vendor", "datecreated"),
    "item": _Source("item", "createddate"),
}
_ENTITY_OF_SOURCE = {(source.table, source.transaction_type): entity for entity, source in _SOURCES.items()}


@dataclass(frozen=True, slots=True)
class _Slice:
    """What one SuiteQL request asks for. Times are wall clock in the account's time zone, whole seconds."""

    entity: str
    start: datetime  # inclusive
    end: datetime | None  # exclusive; None: no upper bound
    # The last (lastmodifieddate, id) already read: this request asks for the rows after it.
    after: tuple[datetime, int] | None = None


@dataclass(slots=True)
class SuiteQLPage(PolledPage):
    """A SuiteQL answer: the `PolledPage`, plus what `next_requests` needs to ask for the rest."""

    # `totalResults`: how many rows the request's query matched, this page's included.
    total_results: int | None = None
    # The page's last row as SuiteQL ordered it, (lastmodifieddate, id): where the next page starts.
    last_row: tuple[datetime, int] | None = None


def first_requests(target: PollTarget, since: datetime, entities: Sequence[str]) -> list[PageRequest]:
    """The first call of a poll of each of `entities` changed at or after `since` (aware UTC datetime)."""
    start = _wall_clock(since, _zone(target.time_zone))
    requests = []
    for entity in dict.fromkeys(entities):  # each record type once
        if entity not in _SOURCES:
            raise ValueError(f"NetSuite polling has no query for {entity!r}")
        requests.append(_request(_Slice(entity, start, None)))
    return requests


def parse_page(target: PollTarget, request: PageRequest, body: bytes) -> SuiteQLPage:
    """One SuiteQL answer to `request`, parsed. ParseError (message safe to log, never the body) otherwise."""
    window = _slice_of(request)
    try:
        zone = _zone(target.time_zone)
    except ValueError:
        raise ParseError("the account's time zone is unknown") from None
    document = as_object(load_json(body), where="body")
    has_more = document.get("hasMore")
    if not isinstance(has_more, bool):
        raise ParseError("hasMore must be true or false")
    total = document.get("totalResults")
    if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0):
        raise ParseError("totalResults must be a count")
    changes: list[ProviderChange] = []
    last_row: tuple[datetime, int] | None = None
    for index, item in enumerate(as_list(document.get("items"), where="items")):
        where = f"items[{index}]"
        row = as_object(item, where=where)
        record = _record_id(row.get("id"), where)
        modified = _wall_time(row.get("modified_at"), where)
        if modified is None:
            raise ParseError(f"{where}: modified_at is missing")
        created = _wall_time(row.get("created_at"), where)
        changes.append(
            ProviderChange(
                provider_account_id=target.account,
                entity=window.entity,
                entity_id=str(record),
                operation=_operation(row.get("voided"), created, modified, where),
                occurred_at=_instant(modified, zone, where),
            )
        )
        last_row = (modified, record)
    if has_more and last_row is None:
        raise ParseError("hasMore is true but the page holds no items")
    # Each page must move the keyset on, or the poll would ask for the same page forever.
    if last_row is not None and window.after is not None and last_row <= window.after:
        raise ParseError("the page does not move past the rows already read")
    return SuiteQLPage(changes=changes, more=has_more, total_results=total, last_row=last_row)


def next_requests(target: PollTarget, request: PageRequest, page: PolledPage) -> list[PageRequest]:
    """The calls `page` asks for next: the rows after its last one, in one window or two; [] when done."""
    if not page.more:
        return []
    if not isinstance(page, SuiteQLPage) or page.last_row is None:
        raise ValueError("next_requests needs the page parse_page read for this request")
    window = _slice_of(request)
    rest = replace(window, after=page.last_row)
    if page.total_results is not None and page.total_results > MAX_RESULTS:
        middle = _middle(window, page.last_row[0], len(page.changes))
        if middle is not None:
            return [_request(replace(rest, end=middle)), _request(_Slice(window.entity, middle, window.end))]
    return [_request(rest)]


# --- requests ---------------------------------------------------------------------------------------

_FORMAT = "YYYY-MM-DD HH24:MI:SS"  # SuiteQL's TO_CHAR / TO_DATE pattern of a full timestamp
_WALL = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", re.ASCII)


def _request(window: _Slice) -> PageRequest:
    return PageRequest(
        method="POST",
        path=SUITEQL_PATH,
        # Keyset pages always start at row 0 of their own query.
        params=(("limit", str(PAGE_SIZE)), ("offset", "0")),
        headers=(("Prefer", "transient"), ("Content-Type", "application/json")),
        body=orjson.dumps({"q": _query(window)}),
    )


def _query(window: _Slice) -> str:
    # SuiteQL over REST takes no bound parameters: the only values written into the query are times
    # this module formats, integer ids and the constant names above.
    source = _SOURCES[window.entity]
    columns = (
        f"id, TO_CHAR(lastmodifieddate, '{_FORMAT}') AS modified_at, "
        f"TO_CHAR({source.created}, '{_FORMAT}') AS created_at"
    )
    conditions = []
    if source.transaction_type is not None:
        columns += ", voided"
        conditions.append(f"type = '{source.transaction_type}'")
    conditions.append(f"lastmodifieddate >= {_date(window.start)}")
    if window.end is not None:
        conditions.append(f"lastmodifieddate < {_date(window.end)}")
    if window.after is not None:
        moment, record = window.after
        conditions.append(
            f"(lastmodifieddate > {_date(moment)} OR (lastmodifieddate = {_date(moment)} AND id > {record}))"
        )
    return (
        f"SELECT {columns} FROM {source.table} WHERE {' AND '.join(conditions)} ORDER BY lastmodifieddate, id"
    )


def _date(moment: datetime) -> str:
    return f"TO_DATE('{moment.isoformat(sep=' ')}', '{_FORMAT}')"


_SOURCE_PART = re.compile(r" FROM ([a-z]+) WHERE (?:type = '([A-Za-z]+)' AND )?", re.ASCII)
_DATE_PART = re.compile(r"TO_DATE\('([^']*)'", re.ASCII)
_AFTER_ID_PART = re.compile(r" AND id > (\d+)\)\)", re.ASCII)


def _slice_of(request: PageRequest) -> _Slice:
    """What `request` (built by `_request`) asks for; ValueError for a request this module did not build."""
    try:
        query = orjson.loads(request.body or b"")["q"]
        source = _SOURCE_PART.search(query)
        entity = _ENTITY_OF_SOURCE[(source.group(1), source.group(2))] if source else ""
        dates = [datetime.fromisoformat(text) for text in _DATE_PART.findall(query)]
        after_id = _AFTER_ID_PART.search(query)
        window = _Slice(
            entity=entity,
            start=dates[0],
            end=dates[1] if " AND lastmodifieddate < " in query else None,
            after=(dates[-1], int(after_id.group(1))) if after_id else None,
        )
        if _query(window) == query:  # the one request that renders back to itself
            return window
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
        pass
    raise ValueError("not a SuiteQL request of this module")


def _middle(window: _Slice, read_up_to: datetime, rows: int) -> datetime | None:
    """Where to cut what is left of `window` (after `read_up_to`) in two; None when it cannot be cut."""
    try:
        if window.end is not None:
            middle = read_up_to + (window.end - read_up_to) / 2
        else:
            # No upper bound to halve: cut where this page's pace puts half of what SuiteQL serves.
            began = window.after[0] if window.after is not None else window.start
            pace = max(read_up_to - began, timedelta(seconds=1)) / max(rows, 1)
            middle = read_up_to + pace * (MAX_RESULTS // 2)
    except OverflowError:
        return None
    middle = middle.replace(microsecond=0)
    # Within one second there is nothing left to cut: the window is read on, page by page.
    return middle if middle > read_up_to else None


# --- times and values -------------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name[:60]!r}") from None


def _wall_clock(moment: datetime, zone: ZoneInfo) -> datetime:
    """`moment` as the account's wall clock, cut to the second (the lower bound only widens)."""
    if moment.tzinfo is None:
        raise ValueError("since must be an aware datetime")
    try:
        return moment.astimezone(zone).replace(tzinfo=None, microsecond=0)
    except OverflowError:
        raise ValueError("since is out of range") from None


def _wall_time(value: Any, where: str) -> datetime | None:
    """A `YYYY-MM-DD HH:MM:SS` wall-clock time as written by TO_CHAR; None when absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _WALL.fullmatch(value):
        raise ParseError(f"{where}: a time must look like YYYY-MM-DD HH:MM:SS")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ParseError(f"{where}: a time is not a date") from None


def _instant(wall: datetime, zone: ZoneInfo, where: str) -> datetime:
    # In the hour a clock falls back, a wall time names two instants: the first is taken
    # (docs/providers.md, NetSuite).
    try:
        return wall.replace(tzinfo=zone).astimezone(UTC)
    except (OverflowError, ValueError):
        raise ParseError(f"{where}: a time is out of range") from None


_ID = re.compile(r"[0-9]{1,18}", re.ASCII)


def _record_id(value: Any, where: str) -> int:
    """NetSuite internal ids are integers; the keyset compares them as such."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**18:
        return value
    if isinstance(value, str) and _ID.fullmatch(value):
        return int(value)
    raise ParseError(f"{where}: id must be a NetSuite internal id")


def _operation(voided: Any, created: datetime | None, modified: datetime, where: str) -> str:
    if voided in ("T", True):
        return "voided"
    if voided not in (None, "F", False):
        raise ParseError(f"{where}: voided must be T or F")
    # The same second for creation and last change: the record has not changed since it was made.
    return "created" if created == modified else "updated"
