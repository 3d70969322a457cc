"""A small HTTP control surface under `/_emulator/`, for a standalone emulator (dev stack, benches).

In-process tests call the `Emulator` methods directly; a separate process uses these instead:
- `GET  /_emulator/health`    -> `{"status": "ok", "providers": [...]}`
- `GET  /_emulator/counters`  -> `EmulatorState.counters()`
- `POST /_emulator/clients`   `{"provider", "client_id", "client_secret"}` -> 204
- `POST /_emulator/grants`    `{"provider", "client_id"?, "accounts"?, "refresh_token"?}`
                              -> `{"access_token", "refresh_token", "grant_id", "expires_in"}`
- `POST /_emulator/revoke`    `{"provider", "token"}` (refresh/access token or grant id) -> `{"revoked"}`
- `POST /_emulator/config`    `{"provider", "access_ttl"?, "refresh_ttl"?, "rotation"?, "grace_seconds"?,
                              "latency"?}` -> 204 (short-lived tokens for a demo, latency for a bench:
                              seconds, or `[lowest, highest]` drawn per request)
- `GET  /_emulator/books/{provider}/{account}` -> the account's records as its API renders them
- `POST /_emulator/books/{provider}/{account}/changes` `{"entity", "operation", "id"?, "fields"?}`,
                              or in bulk `{"entity", "operation", "count", "spacing"?}` or
                              `{"changes": [...]}` -> what changed (docs/emulator.md)
Admin calls are never counted, delayed or faulted.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from provider_auth.providers import Provider

from .books import Book, Record, render
from .core import json_response, state_of
from .profiles import emulated_providers

ADMIN_PREFIX = "/_emulator"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bad_request(message: str) -> web.Response:
    return json_response({"error": "bad_request", "detail": message}, 400)


def _json_handler(action: Callable[[web.Request, dict[str, Any]], web.Response]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _bad_request("the body must be a JSON object")
        if not isinstance(body, dict):
            return _bad_request("the body must be a JSON object")
        try:
            return action(request, body)
        except (KeyError, ValueError, TypeError) as exc:
            return _bad_request(str(exc))

    return handler


async def health(request: web.Request) -> web.Response:
    """Liveness probe for whoever started the emulator."""
    return json_response({"status": "ok", "providers": [p.value for p in emulated_providers()]})


async def counters(request: web.Request) -> web.Response:
    """Every call and event counter."""
    return json_response(state_of(request).counters())


def _register_client(request: web.Request, body: dict[str, Any]) -> web.Response:
    state_of(request).register_client(body["provider"], str(body["client_id"]), str(body["client_secret"]))
    return web.Response(status=204)


def _issue_grant(request: web.Request, body: dict[str, Any]) -> web.Response:
    state = state_of(request)
    accounts = body.get("accounts")
    issued = state.issue_grant(
        body["provider"],
        body.get("client_id"),
        accounts=[str(a) for a in accounts] if accounts is not None else None,
        refresh_token=body.get("refresh_token"),
    )
    access = state.access_token(body["provider"], issued.access_token)
    return json_response(
        {
            "access_token": issued.access_token,
            "refresh_token": issued.refresh_token,
            "grant_id": issued.grant_id,
            # How long the access token lives, as a token endpoint says it: a hand-over needs it.
            "expires_in": access.ttl if access is not None else 0,
        }
    )


def _revoke(request: web.Request, body: dict[str, Any]) -> web.Response:
    return json_response({"revoked": state_of(request).revoke(body["provider"], str(body["token"]))})


def _configure(request: web.Request, body: dict[str, Any]) -> web.Response:
    state, provider = state_of(request), body["provider"]
    state.config(provider)  # KeyError for a provider the emulator does not play
    if "access_ttl" in body:
        state.set_access_ttl(provider, float(body["access_ttl"]))
    if "refresh_ttl" in body:
        ttl = body["refresh_ttl"]
        state.set_refresh_ttl(provider, None if ttl is None else float(ttl))
    if "rotation" in body:
        state.set_rotation(provider, bool(body["rotation"]))
    if "grace_seconds" in body:
        state.set_grace(provider, float(body["grace_seconds"]))
    if "latency" in body:
        latency = body["latency"]
        if isinstance(latency, list):
            lowest, highest = (float(value) for value in latency)  # ValueError unless two numbers
            state.set_latency(provider, lowest, up_to=highest)
        else:
            state.set_latency(provider, float(latency))
    return web.Response(status=204)


def _book(request: web.Request) -> Book:
    provider = Provider(request.match_info["provider"])  # ValueError: not a provider
    return state_of(request).book(provider, request.match_info["account"])


def _summary(book: Book, record: Record) -> dict[str, Any]:
    return {
        "entity": record.entity,
        "id": record.id,
        "state": record.state,
        "record": render(book, record),
    }


async def book_records(request: web.Request) -> web.Response:
    """Every record of an account's book, oldest change first."""
    try:
        book = _book(request)
    except (KeyError, ValueError) as exc:
        return _bad_request(str(exc))
    return json_response({"records": [_summary(book, r) for r in book.records()]})


def _one_change(book: Book, change: dict[str, Any]) -> Record:
    fields = change.get("fields") or {}
    if not isinstance(fields, dict):
        raise TypeError("fields must be a JSON object")
    record_id = change.get("id")
    return book.apply(
        str(change["entity"]), change["operation"], None if record_id is None else str(record_id), **fields
    )


def _change(request: web.Request, body: dict[str, Any]) -> web.Response:
    book = _book(request)
    if isinstance(body.get("changes"), list):
        records = [_one_change(book, dict(change)) for change in body["changes"]]
    elif "count" in body:
        count, operation = int(body["count"]), body.get("operation", "create")
        if count < 1:
            raise ValueError("count must be at least 1")
        if operation == "create":
            spacing = float(body.get("spacing", 0.0))
            records = book.create_many(str(body["entity"]), count, spacing=spacing)
        elif operation == "update":
            records = book.update_many(str(body["entity"]), count)
        else:
            raise ValueError("count goes with operation create or update")
    else:
        records = [_one_change(book, body)]
    return json_response({"changes": [_summary(book, r) for r in records]})


def setup(app: web.Application) -> None:
    """Add the admin routes."""
    app.router.add_get(f"{ADMIN_PREFIX}/health", health)
    app.router.add_get(f"{ADMIN_PREFIX}/counters", counters)
    app.router.add_post(f"{ADMIN_PREFIX}/clients", _json_handler(_register_client))
    app.router.add_post(f"{ADMIN_PREFIX}/grants", _json_handler(_issue_grant))
    app.router.add_post(f"{ADMIN_PREFIX}/revoke", _json_handler(_revoke))
    app.router.add_post(f"{ADMIN_PREFIX}/config", _json_handler(_configure))
    app.router.add_get(f"{ADMIN_PREFIX}/books/{{provider}}/{{account}}", book_records)
    app.router.add_post(f"{ADMIN_PREFIX}/books/{{provider}}/{{account}}/changes", _json_handler(_change))
