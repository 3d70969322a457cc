"""Sage Intacct change polling over the REST query service: the requests for a poll and their answers.

One query per object, filtered on `audit.modifiedDateTime` at or after a cursor and ordered by it, then
by `key`. A following page restarts from the last second read, skipping the rows of that second
already read, rather than from a row offset of the whole window: a record saved mid-poll can then
only move rows of that one second. The query service does not show deletions. What this relies on:
docs/providers.md, Sage Intacct.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

import orjson

from fanout.changes import ParseError, ProviderChange
from fanout.parsers.json_body import as_list, as_object, load_json, optional_text, text
from fanout.polling.pages import PageRequest, PolledPage, PollTarget
from fanout.timestamps import parse_timestamp

# REST object names, `<application>/<object>`; the vocabulary reads the last segment.
ENTITIES: tuple[str, ...] = (
    "accounts-receivable/invoice",
    "accounts-receivable/payment",
    "accounts-receivable/customer",
    "accounts-payable/bill",
    "accounts-payable/payment",
    "accounts-payable/vendor",
    "general-ledger/journal-entry",
    "general-ledger/account",
)

# `audit.modifiedDateTime` is read to the second and the filter is inclusive, so the last second of a
# poll comes again; and a save is stamped before it commits, which Smart Events, triggers and
# workflows on the object can delay (docs/providers.md, Sage Intacct).
OVERLAP = timedelta(minutes=5)

# The query service's largest page: calls are what the company's monthly API transaction allowance
# counts (docs/providers.md, Sage Intacct).
PAGE_SIZE = 4000

QUERY_PATH = "/services/core/query"  # under LEDGERHOOK_SAGE_INTACCT_API_BASE_URL, which ends in /ia/api/v1

_FIELDS = ("key", "id", "audit.createdDateTime", "audit.modifiedDateTime")
_OBJECT_NAME = re.compile(r"[a-z][a-z0-9-]*/[A-Za-z0-9][A-Za-z0-9:_-]*", re.ASCII)


@dataclass(frozen=True, slots=True)
class _Cursor:
    """What one query request asks for."""

    entity: str
    since: datetime  # aware UTC, whole seconds, inclusive
    skip: int = 0  # rows modified in the second `since` that were already read


def first_requests(target: PollTarget, since: datetime, entities: Sequence[str]) -> list[PageRequest]:
    """The first call of a poll of each of `entities` changed at or after `since` (aware UTC datetime)."""
    if since.tzinfo is None:
        raise ValueError("since must be an aware datetime")
    try:
        start = since.astimezone(UTC).replace(microsecond=0)
    except OverflowError:
        raise ValueError("since is out of range") from None
    requests = []
    for entity in dict.fromkeys(entities):  # each object once
        if not _OBJECT_NAME.fullmatch(entity):
            raise ValueError(f"not a Sage Intacct REST object name: {entity[:60]!r}")
        requests.append(_request(_Cursor(entity, start)))
    return requests


def parse_page(target: PollTarget, request: PageRequest, body: bytes) -> PolledPage:
    """One query answer to `request`, parsed. ParseError (message safe to log, never the body) otherwise."""
    cursor = _cursor_of(request)
    document = as_object(load_json(body), where="body")
    rows = as_list(document.get("ia::result"), where="ia::result")
    more = _more(as_object(document.get("ia::meta"), where="ia::meta"), len(rows))
    changes = []
    previous = cursor.since
    for index, item in enumerate(rows):
        where = f"ia::result[{index}]"
        row = as_object(item, where=where)
        key = text(row, "key", where=where)
        modified = _audit_time(row, "modifiedDateTime", where)
        if modified is None:
            raise ParseError(f"{where}: audit.modifiedDateTime is missing")
        # The next page starts from the last second read: that needs the rows in order from the cursor.
        if _second(modified) < previous:
            raise ParseError(f"{where}: rows are not in audit.modifiedDateTime order from the cursor")
        previous = _second(modified)
        human_id = optional_text(row, "id")
        changes.append(
            ProviderChange(
                provider_account_id=target.account,
                entity=cursor.entity,
                entity_id=key,
                operation="created" if _audit_time(row, "createdDateTime", where) == modified else "updated",
                occurred_at=modified,
                # `key` is the record number; `id` the readable one, when it differs (as webhooks carry it).
                attributes={"id": human_id} if human_id and human_id != key else {},
            )
        )
    if more and not changes:
        raise ParseError("ia::meta says more rows follow an empty page")
    return PolledPage(changes=changes, more=more)


def next_requests(target: PollTarget, request: PageRequest, page: PolledPage) -> list[PageRequest]:
    """The call `page` asks for next: the rows after its last one; [] when that request's work is done."""
    if not page.more:
        return []
    if not page.changes:
        raise ValueError("a page that says more rows follow must hold rows")
    cursor = _cursor_of(request)
    last = _second(page.changes[-1].occurred_at)
    if last == cursor.since:
        skip = cursor.skip + len(page.changes)  # the whole page is in the cursor's second
    else:
        skip = sum(1 for change in page.changes if _second(change.occurred_at) == last)
    return [_request(_Cursor(cursor.entity, last, skip))]


# --- requests ---------------------------------------------------------------------------------------


def _request(cursor: _Cursor) -> PageRequest:
    return PageRequest(
        method="POST",
        path=QUERY_PATH,
        headers=(("Content-Type", "application/json"),),
        body=_body(cursor),
    )


def _body(cursor: _Cursor) -> bytes:
    return orjson.dumps(
        {
            "object": cursor.entity,
            "fields": list(_FIELDS),
            "filters": [{"$gte": {"audit.modifiedDateTime": _iso(cursor.since)}}],
            # Queries from the top-level entity of a multi-entity company leave private entities out.
            "filterParameters": {"includePrivate": True},
            "orderBy": [{"audit.modifiedDateTime": "asc"}, {"key": "asc"}],
            "start": cursor.skip + 1,  # the query service counts rows from 1
            "size": PAGE_SIZE,
        }
    )


def _cursor_of(request: PageRequest) -> _Cursor:
    """What `request` (built by `_request`) asks for; ValueError for a request this module did not build."""
    try:
        query = orjson.loads(request.body or b"")
        cursor = _Cursor(
            entity=query["object"],
            since=parse_timestamp(query["filters"][0]["$gte"]["audit.modifiedDateTime"]),
            skip=query["start"] - 1,
        )
        if _body(cursor) == request.body:  # the one body that renders back to itself
            return cursor
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
        pass
    raise ValueError("not a Sage Intacct query request of this module")


def _iso(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat() + "Z"


# --- values -----------------------------------------------------------------------------------------


def _more(meta: dict[str, Any], rows: int) -> bool:
    """Whether the query matched rows after this page: `next` says so; older answers only count."""
    if "next" in meta:
        following = meta["next"]
        if following is None:
            return False
        if isinstance(following, int) and not isinstance(following, bool):
            return True
        raise ParseError("ia::meta.next must be a row number or null")
    total, start = meta.get("totalCount"), meta.get("start")
    if not _count(total) or not _count(start):
        raise ParseError("ia::meta says neither next nor totalCount and start")
    return start - 1 + rows < total


def _count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _audit_time(row: dict[str, Any], name: str, where: str) -> datetime | None:
    """`audit.<name>`: in the `audit` group as objects carry it, or under its dotted field name."""
    audit = row.get("audit")
    value = audit.get(name) if isinstance(audit, dict) else None
    if value is None:
        value = row.get(f"audit.{name}")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ParseError(f"{where}: audit.{name} must be a date-time string")
    try:
        return parse_timestamp(value)
    except (ValueError, OverflowError):
        raise ParseError(f"{where}: audit.{name} is not a date-time") from None


def _second(moment: datetime | None) -> datetime:
    if moment is None:
        raise ValueError("a polled change always has its time")
    return moment.replace(microsecond=0)
