"""The Sage Intacct REST query service, served from the emulator's books.

`POST /sage-intacct/services/core/query` (the emulator's Sage Intacct API base is `/sage-intacct`,
standing for `.../ia/api/v1`) with `{"object", "fields", "filters", "filterParameters", "orderBy",
"start", "size"}`: filters on the key and the audit times are evaluated, then the order, then the
page; answers are `{"ia::result": [...], "ia::meta": {..., "next"}}`. The company is the one the
Bearer token's grant was issued for. Behaviour and sources: docs/providers.md, Sage Intacct; what
the emulator adds: docs/emulator.md.
"""

import math
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from fanout.timestamps import parse_timestamp
from provider_auth.providers import Provider

from .books import SAGE_INTACCT_OBJECTS, Record, id_order, render_sage_intacct
from .core import bearer_token, deliver, gate, json_response, state_of

INTACCT = Provider.SAGE_INTACCT
QUERY_PATH = "/sage-intacct/services/core/query"
ENDPOINT = "query"
MAX_SIZE = 4000
_DEFAULT_SIZE = 100
_TIMES = {"audit.createdDateTime", "audit.modifiedDateTime"}
_FILTERABLE = {"key", "id", *_TIMES}
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda a, b: bool(a == b),
    "$ne": lambda a, b: bool(a != b),
    "$lt": lambda a, b: bool(a < b),
    "$lte": lambda a, b: bool(a <= b),
    "$gt": lambda a, b: bool(a > b),
    "$gte": lambda a, b: bool(a >= b),
}


class QueryError(ValueError):
    """A query the service refuses; the message is safe to send back."""


def _error(status: int, code: str, message: str) -> web.Response:
    body = {
        "ia::result": {"ia::error": {"code": code, "message": message}},
        "ia::meta": {"totalCount": 1, "totalSuccess": 0, "totalError": 1},
    }
    return json_response(body, status)


def _sortable(record: Record, name: str) -> Any:
    """A record's value of a filterable field, in a form that compares the way Intacct orders it."""
    if name == "key":
        return id_order(record.id)
    if name == "audit.createdDateTime":
        return math.floor(record.created_at)
    if name == "audit.modifiedDateTime":
        return math.floor(record.updated_at)
    if name == "id":
        return str(record.fields.get("id", record.id))
    raise QueryError(f"cannot filter or order on {name[:60]!r}")


def _operand(name: str, value: Any) -> Any:
    if name in _TIMES:
        if not isinstance(value, str):
            raise QueryError(f"{name} takes a date-time")
        return parse_timestamp(value).timestamp()
    if name == "key":
        return id_order(str(value))
    return str(value)


def _predicates(filters: Any) -> list[Callable[[Record], bool]]:
    if filters is None:
        return []
    if not isinstance(filters, list):
        raise QueryError("filters must be a list")
    predicates = []
    for item in filters:
        if not isinstance(item, dict) or len(item) != 1:
            raise QueryError("each filter is one operator object")
        ((operator, condition),) = item.items()
        compare = _COMPARISONS.get(operator)
        if compare is None or not isinstance(condition, dict) or len(condition) != 1:
            raise QueryError(f"unsupported filter {str(operator)[:20]!r}")
        ((name, value),) = condition.items()
        if name not in _FILTERABLE:
            raise QueryError(f"cannot filter on {str(name)[:60]!r}")
        try:
            operand = _operand(name, value)
        except (ValueError, OverflowError, TypeError):
            raise QueryError(f"{str(name)[:60]} cannot take that value") from None
        predicates.append(_predicate(name, compare, operand))
    return predicates


def _predicate(name: str, compare: Callable[[Any, Any], bool], operand: Any) -> Callable[[Record], bool]:
    return lambda record: compare(_sortable(record, name), operand)


def _sort_key(name: str) -> Callable[[Record], Any]:
    return lambda record: _sortable(record, name)


def query_answer(records: list[Record], query: dict[str, Any]) -> dict[str, Any]:
    """The query's page: rows filtered (all filters and-ed), ordered, cut at `start`/`size`, with
    only the asked fields."""
    fields = query.get("fields")
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise QueryError("fields must name at least one field")
    expression = query.get("filterExpression", "and")
    if expression != "and":
        raise QueryError("the emulator evaluates filterExpression 'and' only")
    if not isinstance(query.get("filterParameters", {}), dict):
        raise QueryError("filterParameters must be an object")
    start, size = query.get("start", 1), query.get("size", _DEFAULT_SIZE)
    if not isinstance(start, int) or isinstance(start, bool) or start < 1:
        raise QueryError("start must be a row number from 1")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE:
        raise QueryError(f"size must be 1 to {MAX_SIZE}")
    predicates = _predicates(query.get("filters"))
    rows = [r for r in records if r.state != "deleted" and all(p(r) for p in predicates)]
    rows.sort(key=lambda r: id_order(r.id))
    order = query.get("orderBy", [])
    if not isinstance(order, list):
        raise QueryError("orderBy must be a list")
    # Stable sorts from the last key to the first give the combined order.
    for item in reversed(order):
        if not isinstance(item, dict) or len(item) != 1:
            raise QueryError("each orderBy entry is one field")
        ((name, direction),) = item.items()
        if name not in _FILTERABLE or direction not in ("asc", "desc"):
            raise QueryError("orderBy takes key, id or an audit time, asc or desc")
        rows.sort(key=_sort_key(name), reverse=direction == "desc")
    for name in fields:
        if name not in _TIMES and name not in ("key", "id") and "." in name:
            raise QueryError(f"unknown field {name[:60]!r}")
    page = rows[start - 1 : start - 1 + size]
    result = []
    for record in page:
        full = render_sage_intacct(record)
        result.append({name: full.get(name) for name in fields})
    following = start + size if start - 1 + size < len(rows) else None
    meta = {
        "totalCount": len(rows),
        "start": start,
        "pageSize": size,
        "next": following,
        "previous": max(1, start - size) if start > 1 else None,
    }
    return {"ia::result": result, "ia::meta": meta}


async def query(request: web.Request) -> web.StreamResponse:
    """One query for the company of the token's grant."""
    state = state_of(request)
    books = state.books
    token = bearer_token(request)
    grant = state.grant_for_access_token(INTACCT, token) if token else None
    # A grant is issued for one company: its first account.
    company = grant.accounts[0] if grant is not None and grant.accounts else ""
    usage = books.admit(INTACCT, company)
    if usage is None:
        state.count_call(INTACCT, ENDPOINT)
        state.count_event(INTACCT, "throttled")
        return _error(429, "tooManyRequests", "Too many concurrent requests")
    ticket = state.request_started(INTACCT, company, ENDPOINT)
    try:
        # Counted, delayed and faulted like every emulated endpoint; the delay holds its slot.
        faulted = await gate(request, INTACCT, ENDPOINT)
        if faulted is not None:
            return faulted
        if grant is None or state.grant_for_access_token(INTACCT, token or "") is None:
            state.count_event(INTACCT, "unauthorized")
            return _error(401, "invalidToken", "The access token is invalid or expired")
        if books.spend(INTACCT, company, state.clock()) is not None:
            state.count_event(INTACCT, "throttled")
            return _error(429, "tooManyRequests", "Too many requests")
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise QueryError("the body must be a query object")
            name = body.get("object")
            if name not in SAGE_INTACCT_OBJECTS:
                raise QueryError(f"unknown object {str(name)[:60]!r}")
            book = books.existing(INTACCT, company)
            answer = query_answer(book.records(name) if book else [], body)
        except (orjson.JSONDecodeError, QueryError) as exc:
            message = str(exc) if isinstance(exc, QueryError) else "the body is not JSON"
            return _error(400, "invalidRequest", message)
        return await deliver(request, INTACCT, ENDPOINT, json_response(answer), True)
    finally:
        books.release(usage)
        state.request_ended(ticket)


def setup(app: web.Application) -> None:
    """Add the query route."""
    app.router.add_post(QUERY_PATH, query)
