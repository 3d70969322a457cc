"""Xero accounting list endpoints, served from the emulator's books.

`GET /xero/api.xro/2.0/{Invoices,Contacts,...}` (the emulator's Xero API base is `/xero`) with
`xero-tenant-id`, `If-Modified-Since`, `page`/`pageSize`, `order=UpdatedDateUTC ASC|DESC` and
`includeArchived`; answers carry `DateTimeUTC` and, when paged, `pagination`. Per tenant 60 calls a
minute, 5 in flight and 5,000 a day, per app 10,000 a minute, with the rate headers and 429s Xero
sends. Behaviour and sources: docs/providers.md, Xero; what the emulator adds: docs/emulator.md.
"""

import math
import uuid
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from aiohttp import web

from fanout.timestamps import parse_timestamp
from provider_auth.providers import Provider

from .books import XERO_COLLECTIONS, Limits, Record, Usage, XeroCollection, render_xero, xero_status
from .core import bearer_token, deliver, gate, json_response, state_of

XERO = Provider.XERO
LIST_PATH = "/xero/api.xro/2.0/{collection}"
PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def list_path(collection: str) -> str:
    """The path of a list endpoint on the emulator (`Invoices`, `Contacts`, ...)."""
    return LIST_PATH.format(collection=collection)


def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"Type": None, "Title": title, "Status": status, "Detail": detail}
    return json_response(body, status, headers)


def _remaining(limits: Limits, tenant: Usage, app: Usage, now: float) -> dict[str, str]:
    """The rate headers of every answer: calls left in each window."""
    headers = {}
    if limits.per_day is not None:
        headers["X-DayLimit-Remaining"] = str(max(0, limits.per_day - tenant.day.count(now)))
    if limits.per_minute is not None:
        headers["X-MinLimit-Remaining"] = str(max(0, limits.per_minute - tenant.minute.count(now)))
    if limits.app_per_minute is not None:
        headers["X-AppMinLimit-Remaining"] = str(max(0, limits.app_per_minute - app.minute.count(now)))
    return headers


def _throttled(problem: str, wait: float, headers: dict[str, str]) -> web.Response:
    """Xero's 429: which limit in `X-Rate-Limit-Problem`, how long to wait in `Retry-After`."""
    headers = {**headers, "Retry-After": str(max(1, math.ceil(wait))), "X-Rate-Limit-Problem": problem}
    return _problem(429, "Too Many Requests", f"{problem} rate limit exceeded", headers)


def _spend(limits: Limits, tenant: Usage, app: Usage, now: float) -> tuple[str, float] | None:
    """Take one call from the tenant's and the app's windows, or say which limit is spent."""
    if limits.per_day is not None and tenant.day.count(now) >= limits.per_day:
        return "day", tenant.day.wait(now)
    if limits.per_minute is not None and tenant.minute.count(now) >= limits.per_minute:
        return "minute", tenant.minute.wait(now)
    if limits.app_per_minute is not None and app.minute.count(now) >= limits.app_per_minute:
        return "appminute", app.minute.wait(now)
    tenant.day.add(now)
    tenant.minute.add(now)
    app.minute.add(now)
    return None


def _modified_since(value: str | None) -> float | None:
    """`If-Modified-Since` as epoch seconds: `2019-03-01T12:30:15` (UTC) or an HTTP date."""
    if value is None or not value.strip():
        return None
    try:
        return parse_timestamp(value).timestamp()
    except (ValueError, OverflowError):
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise ValueError("If-Modified-Since is not a date") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _visible(collection: XeroCollection, record: Record, include_archived: bool) -> bool:
    status = xero_status(record)
    if record.state == "deleted" and status is None:
        return False  # deleted for good: gone from the API
    return include_archived or not collection.archived_param or status != "ARCHIVED"


def _ordered(records: list[Record], order: str | None) -> list[Record]:
    field, _, direction = (order or "").strip().partition(" ")
    if field.lower() != "updateddateutc":
        # Without an order the emulator lists records as they were created.
        return sorted(records, key=lambda r: (r.created_at, r.id))
    return sorted(
        records, key=lambda r: (r.updated_at, r.sequence), reverse=direction.strip().upper() == "DESC"
    )


def list_answer(
    collection: XeroCollection, records: list[Record], query: dict[str, str], now: float
) -> dict[str, Any]:
    """A list endpoint's document for `records` (already filtered by date), one page if asked."""
    include_archived = query.get("includeArchived", "").lower() == "true" and collection.archived_param
    shown = _ordered([r for r in records if _visible(collection, r, include_archived)], query.get("order"))
    body: dict[str, Any] = {
        "Id": str(uuid.uuid4()),
        "Status": "OK",
        "ProviderName": "Ledgerhook provider emulator",
        "DateTimeUTC": f"/Date({round(now * 1000)})/",
    }
    if collection.paged and "page" in query:
        page = int(query["page"])
        size = min(MAX_PAGE_SIZE, int(query.get("pageSize", PAGE_SIZE)))
        if page < 1 or size < 1:
            raise ValueError("page and pageSize must be positive")
        body["pagination"] = {
            "page": page,
            "pageSize": size,
            "pageCount": math.ceil(len(shown) / size),
            "itemCount": len(shown),
        }
        shown = shown[(page - 1) * size : page * size]
    body[collection.name] = [render_xero(r) for r in shown]
    return body


async def list_records(request: web.Request) -> web.StreamResponse:
    """One list endpoint for one tenant, behind a Bearer token whose grant connects it."""
    collection = XERO_COLLECTIONS.get(request.match_info["collection"])
    if collection is None:
        return _problem(404, "Not Found", "The resource you're looking for cannot be found")
    state = state_of(request)
    tenant = request.headers.get("xero-tenant-id", "").strip()
    books, limits = state.books, state.books.limits[XERO]
    with books.lock:
        usage = books.usage(XERO, tenant)
        full = limits.concurrent is not None and usage.in_flight >= limits.concurrent
        if not full:
            usage.in_flight += 1
    if full:
        state.count_call(XERO, collection.name)
        state.count_event(XERO, "throttled")
        return _throttled("concurrent", 1.0, {})
    ticket = state.request_started(XERO, tenant, collection.name)
    try:
        # Counted, delayed and faulted like every emulated endpoint; the delay holds its slot.
        faulted = await gate(request, XERO, collection.name)
        if faulted is not None:
            return faulted
        token = bearer_token(request)
        grant = state.grant_for_access_token(XERO, token) if token else None
        if grant is None:
            state.count_event(XERO, "unauthorized")
            return _problem(401, "Unauthorized", "AuthenticationUnsuccessful", {"WWW-Authenticate": "Bearer"})
        if not tenant or tenant not in {t for _, t in grant.connections}:
            # Xero answers 403 for a tenant the token's connections do not include.
            return _problem(403, "Forbidden", "AuthenticationUnsuccessful")
        now = state.clock()
        with books.lock:
            app = books.usage(XERO, f"app:{grant.client_id}")
            spent = _spend(limits, usage, app, now)
            headers = _remaining(limits, usage, app, now)
        if spent is not None:
            state.count_event(XERO, "throttled")
            return _throttled(*spent, headers)
        try:
            since = _modified_since(request.headers.get("If-Modified-Since"))
            book = books.existing(XERO, tenant)
            entity = collection.name.removesuffix("s")
            records = book.changed_since(entity, since if since is not None else -math.inf) if book else []
            body = list_answer(collection, records, dict(request.query), now)
        except ValueError as exc:
            return _problem(400, "Bad Request", str(exc), headers)
        return await deliver(request, XERO, collection.name, json_response(body, 200, headers), True)
    finally:
        with books.lock:
            usage.in_flight -= 1
        state.request_ended(ticket)


def setup(app: web.Application) -> None:
    """Add the list routes."""
    app.router.add_get(LIST_PATH, list_records)
