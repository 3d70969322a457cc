"""NetSuite SuiteQL over REST, served from the emulator's books.

`POST /netsuite/query/v1/suiteql?limit=...&offset=...` (the emulator's NetSuite API base is
`/netsuite`, standing for `https://{account}.suitetalk.api.netsuite.com/services/rest`; the account
is the one the Bearer token's grant was issued for) with `Prefer: transient` and `{"q": ...}`. The
emulator runs no SQL: a small strict matcher reads the queries the poller builds (one record type,
a lower time bound, an optional upper bound and keyset condition on `(lastmodifieddate, id)`, that
order) and answers 400 to anything else. Times are wall clock in the account's time zone
(`Book.time_zone`); one query reaches at most `Limits.max_results` rows. Behaviour and sources:
docs/providers.md, NetSuite; what the emulator adds: docs/emulator.md.
"""

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

from provider_auth.providers import Provider

from .books import NETSUITE_RECORD_TYPES, Record, id_order, render_netsuite
from .core import bearer_token, deliver, gate, state_of

NETSUITE = Provider.NETSUITE
SUITEQL_PATH = "/netsuite/query/v1/suiteql"
ENDPOINT = "suiteql"
MAX_LIMIT = 1000
_COLLECTION = "application/vnd.oracle.resource+json; type=collection"
_ERROR = "application/vnd.oracle.resource+json; type=error"
_TYPES = {
    400: ("https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.1", "Bad Request"),
    401: ("https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.2", "Unauthorized"),
    429: ("https://tools.ietf.org/html/rfc6585#section-4", "Too Many Requests"),
}
_INVALID_LOGIN = (
    "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at "
    "Setup > Users/Roles > User Management > View Login Audit Trail."
)

# The poller's query, and nothing else: SELECT list, source, bounds, keyset, order.
_FORMAT = r"'YYYY-MM-DD HH24:MI:SS'"


def _date(group: str) -> str:
    return rf"TO_DATE\(\s*'(?P<{group}>\d{{4}}-\d{{2}}-\d{{2}} \d{{2}}:\d{{2}}:\d{{2}})'\s*,\s*{_FORMAT}\s*\)"


_QUERY = re.compile(
    rf"\s*SELECT\s+id\s*,\s*TO_CHAR\(\s*lastmodifieddate\s*,\s*{_FORMAT}\s*\)\s+AS\s+modified_at\s*,"
    rf"\s*TO_CHAR\(\s*(?P<created>[a-z]+)\s*,\s*{_FORMAT}\s*\)\s+AS\s+created_at"
    r"(?P<voided>\s*,\s*voided)?"
    r"\s+FROM\s+(?P<table>[a-z]+)\s+WHERE"
    r"(?:\s+type\s*=\s*'(?P<type>[A-Za-z]+)'\s+AND)?"
    rf"\s+lastmodifieddate\s*>=\s*{_date('start')}"
    rf"(?:\s+AND\s+lastmodifieddate\s*<\s*{_date('end')})?"
    rf"(?:\s+AND\s+\(\s*lastmodifieddate\s*>\s*{_date('after')}"
    rf"\s+OR\s+\(\s*lastmodifieddate\s*=\s*{_date('after_again')}"
    r"\s+AND\s+id\s*>\s*(?P<after_id>\d{1,18})\s*\)\s*\))?"
    r"\s+ORDER\s+BY\s+lastmodifieddate\s*,\s*id\s*",
    re.IGNORECASE | re.ASCII,
)
_ENTITY = {(t.table, t.transaction_type): entity for entity, t in NETSUITE_RECORD_TYPES.items()}


class QueryError(ValueError):
    """A query the emulator does not run; the message is safe to send back."""


@dataclass(frozen=True)
class Query:
    """What one poller query asks for; times are instants (epoch seconds)."""

    entity: str
    start: float
    end: float | None
    after: tuple[float, str] | None


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    kind, title = _TYPES[status]
    body = {
        "type": kind,
        "title": title,
        "status": status,
        "o:errorDetails": [{"detail": detail, "o:errorCode": code}],
    }
    return web.Response(
        body=orjson.dumps(body), status=status, headers={"Content-Type": _ERROR, **(headers or {})}
    )


def _instant(wall: str, zone: ZoneInfo) -> float:
    # In the hour a clock falls back, the first of the two instants (docs/providers.md, NetSuite).
    return datetime.fromisoformat(wall).replace(tzinfo=zone).astimezone(UTC).timestamp()


def parse_query(text: str, zone: ZoneInfo) -> Query:
    """The poller's query read back; QueryError for any other SuiteQL."""
    match = _QUERY.fullmatch(text)
    if match is None:
        raise QueryError("the emulator runs only the change polling queries of Ledgerhook")
    table, kind = match["table"].lower(), match["type"]
    entity = _ENTITY.get((table, kind))
    if entity is None:
        raise QueryError(f"unknown record type {table}/{kind}")
    source = NETSUITE_RECORD_TYPES[entity]
    if match["created"].lower() != source.created_column or bool(match["voided"]) != (kind is not None):
        raise QueryError(f"unknown column on {table}")
    after = None
    if match["after"] is not None:
        if match["after"] != match["after_again"]:
            raise QueryError("the keyset condition names two times")
        after = (_instant(match["after"], zone), str(int(match["after_id"])))
    return Query(
        entity=entity,
        start=_instant(match["start"], zone),
        end=_instant(match["end"], zone) if match["end"] is not None else None,
        after=after,
    )


def _matches(query: Query, record: Record) -> bool:
    modified = math.floor(record.updated_at)
    if record.state == "deleted" or modified < query.start:
        return False
    if query.end is not None and modified >= query.end:
        return False
    if query.after is not None:
        moment, last_id = query.after
        return modified > moment or (modified == moment and id_order(record.id) > id_order(last_id))
    return True


def _paging(query: Any, name: str, default: int, low: int, high: int) -> int:
    value = int(query.get(name, default))
    if not low <= value <= high:
        raise QueryError(f"{name} must be {low} to {high}")
    return value


def suiteql_answer(
    records: list[Record], query: Query, zone: str, limit: int, offset: int, cap: int | None
) -> dict[str, Any]:
    """One page of a query's rows ordered by (lastmodifieddate, id); rows past `cap` are never served."""
    rows = sorted(
        (r for r in records if _matches(query, r)), key=lambda r: (math.floor(r.updated_at), id_order(r.id))
    )
    if cap is not None and offset >= cap:
        raise QueryError(f"offset {offset} is past the {cap} rows a query reaches")
    reachable = len(rows) if cap is None else min(len(rows), cap)
    page = rows[offset : min(offset + limit, reachable)]
    return {
        "links": [],
        "count": len(page),
        "hasMore": offset + len(page) < reachable,
        "items": [render_netsuite(r, zone) for r in page],
        "offset": offset,
        "totalResults": len(rows),
    }


async def suiteql(request: web.Request) -> web.StreamResponse:
    """One SuiteQL query for the account of the token's grant."""
    state = state_of(request)
    books = state.books
    token = bearer_token(request)
    grant = state.grant_for_access_token(NETSUITE, token) if token else None
    # A NetSuite token is issued for one account: its grant's first.
    account = grant.accounts[0] if grant is not None and grant.accounts else ""
    usage = books.admit(NETSUITE, account)
    if usage is None:
        state.count_call(NETSUITE, ENDPOINT)
        state.count_event(NETSUITE, "throttled")
        return _error(429, "CONCURRENCY_LIMIT_EXCEEDED", "Concurrent request limit exceeded.")
    ticket = state.request_started(NETSUITE, account, ENDPOINT)
    try:
        # Counted, delayed and faulted like every emulated endpoint; the delay holds its slot.
        faulted = await gate(request, NETSUITE, ENDPOINT)
        if faulted is not None:
            return faulted
        if grant is None or state.grant_for_access_token(NETSUITE, token or "") is None:
            state.count_event(NETSUITE, "unauthorized")
            return _error(401, "INVALID_LOGIN", _INVALID_LOGIN, {"WWW-Authenticate": "Bearer"})
        if books.spend(NETSUITE, account, state.clock()) is not None:
            state.count_event(NETSUITE, "throttled")
            return _error(429, "REQUEST_LIMIT_EXCEEDED", "Request limit exceeded.")
        book = books.book(NETSUITE, account)
        try:
            if request.headers.get("Prefer", "").strip().lower() != "transient":
                raise QueryError("SuiteQL needs the header Prefer: transient")
            limit = _paging(request.query, "limit", MAX_LIMIT, 1, MAX_LIMIT)
            offset = _paging(request.query, "offset", 0, 0, 10**9)
            body = orjson.loads(await request.read())
            text = body.get("q") if isinstance(body, dict) else None
            if not isinstance(text, str):
                raise QueryError('the body must be {"q": "<SuiteQL>"}')
            query = parse_query(text, ZoneInfo(book.time_zone))
            cap = books.limits[NETSUITE].max_results
            answer = suiteql_answer(book.records(query.entity), query, book.time_zone, limit, offset, cap)
        except (orjson.JSONDecodeError, ValueError, OverflowError) as exc:
            reason = str(exc) if isinstance(exc, QueryError) else "the request cannot be read"
            detail = f"Invalid search query. Detailed unprocessed description follows. {reason}"
            return _error(400, "INVALID_PARAMETER", detail)
        response = web.Response(body=orjson.dumps(answer), headers={"Content-Type": _COLLECTION})
        return await deliver(request, NETSUITE, ENDPOINT, response, True)
    finally:
        books.release(usage)
        state.request_ended(ticket)


def setup(app: web.Application) -> None:
    """Add the SuiteQL route."""
    app.router.add_post(SUITEQL_PATH, suiteql)
