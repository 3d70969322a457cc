"""Xero's connections API: which tenants a token set covers, and disconnecting one.

`GET https://api.xero.com/connections` lists the tenants of the access token's grant; `DELETE
https://api.xero.com/connections/{id}` disconnects one, 204 (docs/providers.md, Xero). The emulator
also revokes the grant once its last connection is gone, so a refresh then answers invalid_grant.
"""

from datetime import UTC, datetime

from aiohttp import web

from provider_auth.providers import Provider

from .core import bearer_token, deliver, gate, json_response, state_of
from .state import GrantInfo

CONNECTIONS_PATH = "/xero/connections"


def _xero_time(timestamp: float) -> str:
    # Xero connection timestamps are UTC without an offset, e.g. 2019-07-09T23:40:30.1833130.
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0")


def _unauthorized() -> web.Response:
    return json_response(
        {"Type": None, "Title": "Unauthorized", "Status": 401, "Detail": "AuthenticationUnsuccessful"},
        401,
        {"WWW-Authenticate": "Bearer"},
    )


def _grant(request: web.Request) -> GrantInfo | None:
    token = bearer_token(request)
    return state_of(request).grant_for_access_token(Provider.XERO, token) if token else None


async def list_connections(request: web.Request) -> web.Response:
    """The tenants connected under the bearer token's grant."""
    faulted = await gate(request, Provider.XERO, "connections")
    if faulted is not None:
        return faulted
    grant = _grant(request)
    if grant is None:
        return _unauthorized()
    created = _xero_time(grant.created_at)
    body = [
        {
            "id": connection_id,
            "authEventId": grant.grant_id,
            "tenantId": tenant_id,
            "tenantType": "ORGANISATION",
            "tenantName": f"Organisation {tenant_id[:8]}",
            "createdDateUtc": created,
            "updatedDateUtc": created,
        }
        for connection_id, tenant_id in grant.connections
    ]
    return await deliver(request, Provider.XERO, "connections", json_response(body), True)


async def delete_connection(request: web.Request) -> web.Response:
    """Disconnect one tenant of the bearer token's grant (204), 404 when it is not one of them."""
    faulted = await gate(request, Provider.XERO, "connections")
    if faulted is not None:
        return faulted
    grant = _grant(request)
    if grant is None:
        return _unauthorized()
    removed = state_of(request).remove_connection(grant.grant_id, request.match_info["connection_id"])
    response = (
        web.Response(status=204) if removed else json_response({"Title": "Not Found", "Status": 404}, 404)
    )
    return await deliver(request, Provider.XERO, "connections", response, removed)


def setup(app: web.Application) -> None:
    """Add the Xero connections routes."""
    app.router.add_get(CONNECTIONS_PATH, list_connections)
    app.router.add_delete(CONNECTIONS_PATH + "/{connection_id}", delete_connection)
