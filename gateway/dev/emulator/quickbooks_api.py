"""QuickBooks Online change data capture, served from the emulator's books.

`GET /quickbooks/v3/company/{realm}/cdc?entities=Invoice,Customer&changedSince=<date-time>` (the
emulator's QuickBooks API base is `/quickbooks`): every object of the asked entities changed at or
after `changedSince`, grouped by entity, oldest first, the deleted ones last in each group, at most
1,000 objects in all and no paging; `time` is the emulator's clock. Behaviour and sources:
docs/providers.md, QuickBooks Online; what the emulator adds: docs/emulator.md.
"""

import math
from datetime import datetime, time
from typing import Any

import orjson
from aiohttp import web

from fanout.timestamps import parse_timestamp
from provider_auth.providers import Provider

from .books import (
    QUICKBOOKS_ENTITIES,
    QUICKBOOKS_NOT_IN_CDC,
    QUICKBOOKS_ZONE,
    quickbooks_time,
    render_quickbooks,
)
from .core import bearer_token, deliver, gate, json_response, state_of
from .state import EmulatorState

QB = Provider.QUICKBOOKS
CDC_PATH = "/quickbooks/v3/company/{realm}/cdc"
ENDPOINT = "cdc"
# At most this many objects in one answer, and this far back (docs/providers.md, QuickBooks Online).
MAX_OBJECTS = 1000
LOOKBACK_SECONDS = 30 * 86_400.0

_BY_KEY = {entity.lower(): entity for entity in QUICKBOOKS_ENTITIES}


def cdc_path(realm: str) -> str:
    """The CDC path of a realm on the emulator."""
    return CDC_PATH.format(realm=realm)


def _fault(status: int, kind: str, code: str, message: str, detail: str, now: float) -> web.Response:
    error = {"Message": message, "Detail": detail, "code": code}
    body = {"Fault": {"Error": [error], "type": kind}, "time": quickbooks_time(now, millis=True)}
    headers = {"WWW-Authenticate": 'Bearer realm="Intuit"'} if status == 401 else None
    return json_response(body, status, headers)


def _unauthorized(now: float) -> web.Response:
    message = "message=AuthenticationFailed; errorCode=003200; statusCode=401"
    return _fault(401, "AUTHENTICATION", "3200", message, "Token invalid or expired", now)


def _forbidden(now: float) -> web.Response:
    message = "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403"
    return _fault(403, "AuthorizationFault", "3100", message, "The token does not cover this company", now)


def _invalid(detail: str, now: float) -> web.Response:
    # Intuit does not document the fault for a bad CDC request; a ValidationFault is its usual shape.
    return _fault(400, "ValidationFault", "2030", "Invalid query parameter", detail, now)


def throttled(now: float) -> web.Response:
    """The 429 Intuit sends past a realm's limits: XML carrying ThrottleExceeded and 003001
    (docs/providers.md, QuickBooks Online, Rate limits). No Retry-After: clients wait 60 s."""
    stamp = quickbooks_time(now, millis=True)
    body = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="{stamp}">'
        '<Fault type="SERVICE"><Error code="3001">'
        "<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>"
        "<Detail>The request limit was reached.</Detail>"
        "</Error></Fault></IntuitResponse>"
    )
    return web.Response(status=429, body=body.encode(), content_type="application/xml")


def _changed_since(value: str) -> float:
    """`changedSince` as epoch seconds: a date-time with an offset, or a date (the company's midnight)."""
    # A `+` typed raw in a URL arrives as a space.
    value = value.strip().replace(" ", "+")
    if len(value) == 10:
        day = datetime.strptime(value, "%Y-%m-%d").date()
        return datetime.combine(day, time(), QUICKBOOKS_ZONE).timestamp()
    return parse_timestamp(value).timestamp()


def _entities(value: str) -> list[str]:
    entities = []
    for name in value.split(","):
        entity = _BY_KEY.get(name.strip().lower())
        if entity is None:
            raise ValueError(f"unknown entity {name.strip()[:40]!r}")
        if entity in QUICKBOOKS_NOT_IN_CDC:
            raise ValueError(f"CDC does not support {entity}")
        entities.append(entity)
    if not entities:
        raise ValueError("entities is required")
    return list(dict.fromkeys(entities))


def cdc_answer(
    state: EmulatorState, realm: str, entities: list[str], since: float, now: float
) -> dict[str, Any]:
    """The CDC document for a realm: live objects by last update then deleted ones, per entity, in
    the order asked, cut at 1,000 objects."""
    book = state.books.existing(QB, realm)
    # Times are compared as QuickBooks shows them, in whole seconds.
    since = math.ceil(since)
    groups: list[dict[str, Any]] = []
    room = MAX_OBJECTS
    for entity in entities:
        if room <= 0 or book is None:
            break
        records = book.changed_since(entity, since)
        ordered = [r for r in records if r.state != "deleted"] + [r for r in records if r.state == "deleted"]
        objects = [render_quickbooks(r) for r in ordered[:room]]
        if objects:
            room -= len(objects)
            groups.append({entity: objects, "startPosition": 1, "maxResults": len(objects)})
    return {"CDCResponse": [{"QueryResponse": groups}], "time": quickbooks_time(now, millis=True)}


async def cdc(request: web.Request) -> web.StreamResponse:
    """CDC for one realm, behind a Bearer token of a grant covering it and the realm's limits."""
    state = state_of(request)
    realm = request.match_info["realm"]
    books, limits = state.books, state.books.limits[QB]
    with books.lock:
        usage = books.usage(QB, realm)
        full = limits.concurrent is not None and usage.in_flight >= limits.concurrent
        if not full:
            usage.in_flight += 1
    if full:
        state.count_call(QB, ENDPOINT)
        state.count_event(QB, "throttled")
        return throttled(state.clock())
    ticket = state.request_started(QB, realm, ENDPOINT)
    try:
        # Counted, delayed and faulted like every emulated endpoint; the delay holds its slot.
        faulted = await gate(request, QB, ENDPOINT)
        if faulted is not None:
            return faulted
        now = state.clock()
        token = bearer_token(request)
        grant = state.grant_for_access_token(QB, token) if token else None
        if grant is None:
            state.count_event(QB, "unauthorized")
            return _unauthorized(now)
        if realm not in grant.accounts:
            return _forbidden(now)
        with books.lock:
            over = limits.per_minute is not None and usage.minute.count(now) >= limits.per_minute
            if not over:
                usage.minute.add(now)
        if over:
            state.count_event(QB, "throttled")
            return throttled(now)
        try:
            entities = _entities(request.query.get("entities", ""))
            since = _changed_since(request.query.get("changedSince", ""))
        except (ValueError, OverflowError) as exc:
            return _invalid(str(exc) or "changedSince is required", now)
        if since < now - LOOKBACK_SECONDS:
            return _invalid("changedSince cannot be more than 30 days in the past", now)
        body = orjson.dumps(cdc_answer(state, realm, entities, since, now))
        response = web.Response(body=body, content_type="application/json")
        return await deliver(request, QB, ENDPOINT, response, True)
    finally:
        with books.lock:
            usage.in_flight -= 1
        state.request_ended(ticket)


def setup(app: web.Application) -> None:
    """Add the CDC route."""
    app.router.add_get(CDC_PATH, cdc)
