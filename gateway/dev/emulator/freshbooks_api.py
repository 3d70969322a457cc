"""FreshBooks accounting lists, served from the emulator's books.

`GET /freshbooks/accounting/account/{account_id}/{users/clients,invoices/invoices,...}` (the
emulator's FreshBooks API base is `/freshbooks`) with `search[updated_min]` (a day),
`search[vis_state]`, `page` and `per_page`; answers are `{"response": {"result": {...}}}` with
`page`, `pages`, `per_page` and `total`. Behaviour and sources: docs/providers.md, FreshBooks; what
the emulator adds: docs/emulator.md.
"""

import math
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web

from provider_auth.providers import Provider

from .books import (
    FRESHBOOKS_RESOURCES,
    FRESHBOOKS_ZONE,
    FreshBooksResource,
    Record,
    id_order,
    render_freshbooks,
)
from .core import bearer_token, deliver, gate, json_response, state_of

FRESHBOOKS = Provider.FRESHBOOKS
LIST_PATH = "/freshbooks/accounting/account/{account}/{group}/{resource}"
PAGE_SIZE = 100  # per_page is capped here, silently
_DEFAULT_PAGE_SIZE = 15
_BY_PATH = {resource.path: entity for entity, resource in FRESHBOOKS_RESOURCES.items()}


def list_path(account: str, resource: str) -> str:
    """The path of an account's list on the emulator (`invoices/invoices`, `users/clients`, ...)."""
    return f"/freshbooks/accounting/account/{account}/{resource}"


def _errors(status: int, errno: int, message: str) -> web.Response:
    return json_response({"response": {"errors": [{"errno": errno, "message": message}]}}, status)


def _eastern_day(timestamp: float) -> date:
    return datetime.fromtimestamp(math.floor(timestamp), UTC).astimezone(FRESHBOOKS_ZONE).date()


def _count(query: dict[str, str], name: str, default: int) -> int:
    value = int(query.get(name, default))
    if value < 1:
        raise ValueError(f"{name} must be positive")
    return value


def list_answer(
    account: str, resource: FreshBooksResource, records: list[Record], query: dict[str, str]
) -> dict[str, Any]:
    """One page of a list: live (or, with `search[vis_state]=1`, deleted) records updated on or
    after the `search[updated_min]` day in US/Eastern, in creation order."""
    wanted = query.get("search[vis_state]")
    if wanted not in (None, "0", "1"):
        raise ValueError("search[vis_state] must be 0 or 1")
    deleted = wanted == "1"
    day = query.get("search[updated_min]")
    first_day = date.fromisoformat(day) if day else date.min
    shown = sorted(
        (
            r
            for r in records
            # A deletion keeps the record (vis_state 1) only where FreshBooks soft-deletes.
            if (r.state == "deleted") == deleted
            and (resource.soft_deletes or r.state != "deleted")
            and _eastern_day(r.updated_at) >= first_day
        ),
        key=lambda r: id_order(r.id),
    )
    page = _count(query, "page", 1)
    size = min(PAGE_SIZE, _count(query, "per_page", _DEFAULT_PAGE_SIZE))
    rows = shown[(page - 1) * size : page * size]
    result = {
        resource.records: [render_freshbooks(r, account) for r in rows],
        "page": page,
        "pages": math.ceil(len(shown) / size),
        "per_page": size,
        "total": len(shown),
    }
    return {"response": {"result": result}}


async def list_records(request: web.Request) -> web.StreamResponse:
    """One list of one account, behind a Bearer token whose grant covers the account."""
    entity = _BY_PATH.get(f"{request.match_info['group']}/{request.match_info['resource']}")
    if entity is None:
        return _errors(404, 1012, "The requested resource was not found.")
    resource = FRESHBOOKS_RESOURCES[entity]
    state = state_of(request)
    books = state.books
    account = request.match_info["account"]
    usage = books.admit(FRESHBOOKS, account)
    if usage is None:
        state.count_call(FRESHBOOKS, resource.path)
        state.count_event(FRESHBOOKS, "throttled")
        return _errors(429, 429, "Too many requests.")
    ticket = state.request_started(FRESHBOOKS, account, resource.path)
    try:
        # Counted, delayed and faulted like every emulated endpoint; the delay holds its slot.
        faulted = await gate(request, FRESHBOOKS, resource.path)
        if faulted is not None:
            return faulted
        token = bearer_token(request)
        grant = state.grant_for_access_token(FRESHBOOKS, token) if token else None
        if grant is None:
            state.count_event(FRESHBOOKS, "unauthorized")
            body = {
                "error": "unauthenticated",
                "error_description": "This action requires authentication to continue.",
            }
            return json_response(body, 401)
        if account not in grant.accounts:
            return _errors(
                403, 1003, "The server could not verify that you are authorized to access the URL."
            )
        if books.spend(FRESHBOOKS, account, state.clock()) is not None:
            state.count_event(FRESHBOOKS, "throttled")
            return _errors(429, 429, "Too many requests.")
        book = books.existing(FRESHBOOKS, account)
        try:
            answer = list_answer(account, resource, book.records(entity) if book else [], dict(request.query))
        except ValueError as exc:
            return _errors(400, 1012, str(exc))
        return await deliver(request, FRESHBOOKS, resource.path, json_response(answer), True)
    finally:
        books.release(usage)
        state.request_ended(ticket)


def setup(app: web.Application) -> None:
    """Add the list routes."""
    app.router.add_get(LIST_PATH, list_records)
