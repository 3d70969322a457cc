"""Zoho Books list endpoints, served from the emulator's books.

`GET /zoho-books/{invoices,contacts,...}?organization_id=...` (the emulator's Zoho Books API base is
`/zoho-books`, standing for `{api_domain}/books/v3`) with `last_modified_time`, `page` and
`per_page`; answers carry `code: 0` and `page_context`. `Authorization: Zoho-oauthtoken`; 100 calls a
minute per organization. Behaviour and sources: docs/providers.md, Zoho Books; what the emulator
adds: docs/emulator.md.
"""

import math
from typing import Any

from aiohttp import web

from fanout.timestamps import parse_timestamp
from provider_auth.providers import Provider

from .books import ZOHO_BOOKS_LISTS, Record, ZohoBooksList, id_order, render_zoho_books
from .core import deliver, gate, json_response, state_of

ZOHO = Provider.ZOHO_BOOKS
LIST_PATH = "/zoho-books/{endpoint}"
PAGE_SIZE = 200  # the default and the most a page holds
_BY_PATH = {endpoint.path: entity for entity, endpoint in ZOHO_BOOKS_LISTS.items()}


def list_path(endpoint: str) -> str:
    """The path of a list endpoint on the emulator (`invoices`, `contacts`, ...)."""
    return LIST_PATH.format(endpoint=endpoint)


def _error(status: int, code: int, message: str) -> web.Response:
    return json_response({"code": code, "message": message}, status)


def zoho_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Zoho-oauthtoken` header, or None (Zoho's own scheme)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "zoho-oauthtoken" or not value.strip():
        return None
    return value.strip()


def _page_number(query: dict[str, str], name: str, default: int) -> int:
    value = int(query.get(name, default))
    if value < 1:
        raise ValueError(f"{name} must be positive")
    return value


def list_answer(endpoint: ZohoBooksList, records: list[Record], query: dict[str, str]) -> dict[str, Any]:
    """One page of a list, in creation order, of the records not deleted and modified at or after
    `last_modified_time` (whole seconds)."""
    since = query.get("last_modified_time")
    # A `+` typed raw in a URL arrives as a space.
    floor = parse_timestamp(since.strip().replace(" ", "+")).timestamp() if since else -math.inf
    shown = sorted(
        (r for r in records if r.state != "deleted" and math.floor(r.updated_at) >= floor),
        key=lambda r: (r.created_at, id_order(r.id)),
    )
    page = _page_number(query, "page", 1)
    size = min(PAGE_SIZE, _page_number(query, "per_page", PAGE_SIZE))
    rows = shown[(page - 1) * size : page * size]
    return {
        "code": 0,
        "message": "success",
        endpoint.records: [render_zoho_books(r) for r in rows],
        "page_context": {
            "page": page,
            "per_page": size,
            "has_more_page": page * size < len(shown),
            "sort_column": "created_time",
            "sort_order": "A",
        },
    }


async def list_records(request: web.Request) -> web.StreamResponse:
    """One list endpoint for one organization, behind a Zoho-oauthtoken of a grant covering it."""
    entity = _BY_PATH.get(request.match_info["endpoint"])
    if entity is None:
        return _error(404, 5, "Invalid URL Passed")
    endpoint = ZOHO_BOOKS_LISTS[entity]
    state = state_of(request)
    books = state.books
    organization = request.query.get("organization_id", "").strip()
    usage = books.admit(ZOHO, organization)
    if usage is None:
        state.count_call(ZOHO, endpoint.path)
        state.count_event(ZOHO, "throttled")
        return _error(429, 429, "API usage limit exceeded")
    ticket = state.request_started(ZOHO, organization, endpoint.path)
    try:
        # Counted, delayed and faulted like every emulated endpoint; the delay holds its slot.
        faulted = await gate(request, ZOHO, endpoint.path)
        if faulted is not None:
            return faulted
        token = zoho_token(request)
        grant = state.grant_for_access_token(ZOHO, token) if token else None
        if grant is None:
            state.count_event(ZOHO, "unauthorized")
            return _error(401, 57, "You are not authorized to perform this operation")
        if organization not in grant.accounts:
            message = f"This user is not associated with the CompanyID/CompanyName:{organization[:40]}."
            return _error(400, 6041, message)
        now = state.clock()
        if books.spend(ZOHO, organization, now) is not None:
            state.count_event(ZOHO, "throttled")
            return _error(429, 429, "API usage limit exceeded")
        book = books.existing(ZOHO, organization)
        try:
            body = list_answer(endpoint, book.records(entity) if book else [], dict(request.query))
        except (ValueError, OverflowError):
            return _error(400, 2, "Invalid value passed for last_modified_time, page or per_page")
        return await deliver(request, ZOHO, endpoint.path, json_response(body), True)
    finally:
        books.release(usage)
        state.request_ended(ticket)


def setup(app: web.Application) -> None:
    """Add the list routes."""
    app.router.add_get(LIST_PATH, list_records)
