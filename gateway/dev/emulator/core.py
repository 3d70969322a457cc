"""The shared request pipeline every emulated endpoint goes through.

A handler calls `gate` first (count the call, apply latency, serve an injected fault), reads its
parameters with `read_params`, authenticates with `authenticate_client` or `bearer_token`, and
hands its answer to `deliver` (which may swallow it to play a lost response). Data-API modules
added later reuse the same pieces, so faults, latency and counters work the same everywhere.
"""

import asyncio
import base64
import binascii
import contextlib
from typing import Any
from urllib.parse import unquote_plus

import orjson
from aiohttp import web

from provider_auth.providers import Provider

from .profiles import PROFILES
from .state import EmulatorState

STATE_KEY = web.AppKey("emulator_state", EmulatorState)
STOPPING_KEY = web.AppKey("emulator_stopping", asyncio.Event)


def state_of(request: web.Request) -> EmulatorState:
    """The emulator state serving this request."""
    return request.app[STATE_KEY]


def provider_of(request: web.Request) -> Provider:
    """The provider named by the `{provider}` path segment; 404 when the emulator does not play it."""
    slug = request.match_info.get("provider", "")
    try:
        provider = Provider(slug)
    except ValueError:
        provider = None
    if provider is None or provider not in PROFILES:
        raise web.HTTPNotFound(
            text=orjson.dumps({"error": "unknown_provider", "provider": slug}).decode(),
            content_type="application/json",
        )
    return provider


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response; token responses must not be cached (RFC 6749 section 5.1)."""
    merged = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    merged.update(headers or {})
    return web.Response(
        body=orjson.dumps(body), status=status, headers=merged, content_type="application/json"
    )


def oauth_error(
    error: str, status: int = 400, description: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """An RFC 6749 error body: `{"error": ...}` (plus `error_description` when given)."""
    body: dict[str, str] = {"error": error}
    if description:
        body["error_description"] = description
    return json_response(body, status, headers)


async def pause(request: web.Request, seconds: float) -> None:
    """Sleep, but wake at once when the emulator stops (so shutdown never waits on a delay)."""
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(request.app[STOPPING_KEY].wait(), seconds)


async def gate(request: web.Request, provider: Provider, endpoint: str) -> web.Response | None:
    """Count the call, apply latency, and return the injected fault response if one is due."""
    state = state_of(request)
    state.count_call(provider, endpoint)
    await pause(request, state.latency_for(provider, endpoint))
    fault = state.take_fault(provider, endpoint)
    if fault is None:
        return None
    state.count_event(provider, "fault")
    headers = {}
    if fault.retry_after is not None:
        # Retry-After in delay-seconds form (RFC 9110 section 10.2.3); whole seconds on the wire.
        headers["Retry-After"] = str(max(0, round(fault.retry_after)))
    body = fault.body if fault.body is not None else {"error": "temporarily_unavailable"}
    return json_response(body, fault.status, headers)


async def deliver(
    request: web.Request, provider: Provider, endpoint: str, response: web.Response, succeeded: bool
) -> web.Response:
    """Return `response`, unless a lost response is due: then the work stays done and the client
    gets nothing (held until it gives up, or dropped at once)."""
    if not succeeded:
        return response
    state = state_of(request)
    loss = state.take_loss(provider, endpoint)
    if loss is None:
        return response
    state.count_event(provider, "lost")
    if loss.mode == "hang":
        await pause(request, loss.hang_seconds)
    if request.transport is not None:
        request.transport.abort()
    # Ends the handler without writing a byte; aiohttp treats it as a dropped connection.
    raise asyncio.CancelledError


async def read_params(request: web.Request) -> dict[str, str]:
    """Request parameters from the query string and a form or JSON body (body wins).

    Zoho documents its token parameters in the query string and FreshBooks sends JSON bodies;
    the OAuth standard is a form body. Accepting all three keeps the emulator out of the way.
    """
    params = {k: v for k, v in request.query.items()}
    if not request.can_read_body:
        return params
    if request.content_type == "application/json":
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return params
        if isinstance(data, dict):
            params.update({str(k): str(v) for k, v in data.items() if isinstance(v, str | int | float)})
        return params
    form = await request.post()
    params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    """(client id, secret) from an `Authorization: Basic` header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None
    # RFC 6749 section 2.3.1: both parts are form-urlencoded before being joined.
    return unquote_plus(client_id), unquote_plus(secret)


def bearer_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer` header, or None."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate_client(
    request: web.Request, provider: Provider, params: dict[str, str]
) -> str | web.Response:
    """The authenticated client id, or the 401 `invalid_client` response to send.

    Each provider takes client credentials one way only (Basic header for QuickBooks, Xero and
    NetSuite; parameters for Zoho, FreshBooks and Intacct): credentials sent the other way are
    refused, as the real servers do, so a client wired the wrong way fails here and not in production.
    """
    state = state_of(request)
    method = PROFILES[provider].client_auth
    if method == "basic":
        credentials = basic_credentials(request)
    else:
        client_id, secret = params.get("client_id"), params.get("client_secret")
        credentials = (client_id, secret) if client_id is not None and secret is not None else None
    if credentials is not None and state.check_client(provider, *credentials):
        return credentials[0]
    state.count_event(provider, "invalid_client")
    # RFC 6749 section 5.2: 401 with a challenge for the scheme the client should have used.
    headers = {"WWW-Authenticate": f'Basic realm="{provider.value}"'} if method == "basic" else None
    return oauth_error("invalid_client", 401, headers=headers)
