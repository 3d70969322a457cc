"""The admin API as one ASGI app, mounted at `/admin/v1` by `gateway.app`.

Every request passes the admin token check first (so even unknown paths under `/admin/v1` answer
401 to strangers), then its parameters' check (gateway.admin.inputs), each route naming the query
parameters it takes; every error, routing ones included, is `application/problem+json`. A path with
a trailing slash is 404: no redirect, so no `Location` is ever built from the `Host` header.
"""

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.admin.auth import AdminTokens, RequireAdminToken
from gateway.admin.connections import LIST_PARAMETERS, ConnectionsResource
from gateway.admin.credentials import CredentialsResource, with_credentials
from gateway.admin.inputs import check_parameters
from gateway.admin.openapi import openapi_document, with_parameter_problems
from gateway.admin.problems import Problem
from gateway.admin.quarantine import QuarantineResource
from gateway.admin.sync import SyncResource, with_sync
from gateway.runtime.infra import DATABASE_ERRORS
from provider_auth.accounts.store import ConnectionStore

log = logging.getLogger("ledgerhook.admin")

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class AdminServices:
    """What the admin API works with, created by the app's lifespan and passed in."""

    store: ConnectionStore
    tokens: AdminTokens
    public_base_url: str
    on_change: Callable[[str], None]  # a connection changed (the webhook scheme cache listens)
    quarantine: QuarantineResource
    credentials: CredentialsResource
    sync: SyncResource


def admin_routes(services: AdminServices) -> list[BaseRoute]:
    """The routes under `/admin/v1`, one resource each."""
    connections = ConnectionsResource(
        services.store,
        services.public_base_url,
        services.on_change,
        before_disconnect=services.credentials.disconnect,
    )
    document = orjson.dumps(with_parameter_problems(with_sync(with_credentials(openapi_document()))))

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    return [
        _route("/connections", connections.collection, ["GET", "POST"], {"GET": LIST_PARAMETERS}),
        _route("/connections/{connection_id}", connections.item, ["GET", "PATCH", "DELETE"]),
        _route("/connections/{connection_id}/credentials", services.credentials.item, ["GET", "PUT"]),
        _route("/connections/{connection_id}/sync", services.sync.sync, ["GET"]),
        _route("/connections/{connection_id}/backfill", services.sync.backfill, ["POST"]),
        _route("/openapi.json", openapi, ["GET"]),
        _route("/quarantine/redrive", services.quarantine.redrive, ["POST"]),
    ]


def _route(
    path: str, endpoint: Endpoint, methods: list[str], query: Mapping[str, Collection[str]] | None = None
) -> Route:
    """A route whose requests have their parameters checked first: `query` names the query
    parameters each method takes (none when left out)."""
    takes = dict(query or {})

    async def checked(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        check_parameters(request, takes.get(method, ()))
        return await endpoint(request)

    return Route(path, checked, methods=methods)


def admin_app(services: AdminServices) -> Starlette:
    """The admin API: token check, then the routes; errors as problem details."""
    app = Starlette(
        routes=admin_routes(services),
        middleware=[Middleware(RequireAdminToken, tokens=services.tokens)],
        exception_handlers={
            Problem: _problem,
            HTTPException: _http_problem,
            **dict.fromkeys(DATABASE_ERRORS, _database_problem),
        },
    )
    # Starlette would answer `/connections/` with a redirect whose Location is built from `Host`.
    app.router.redirect_slashes = False
    return app


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response()


async def _database_problem(request: Request, exc: Exception) -> Response:
    log.error("admin request failed: database unavailable", extra={"error": type(exc).__name__})
    problem = Problem(503, "the database is unavailable; try again shortly", headers={"retry-after": "5"})
    return problem.response()


async def _http_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    missing = "no such admin resource" + ("; admin paths end without a slash" if _slashed(request) else "")
    details = {404: missing, 405: f"{request.method} is not allowed here"}
    problem = Problem(
        exc.status_code,
        details.get(exc.status_code, str(exc.detail)),
        headers=dict(exc.headers) if exc.headers else None,
    )
    return problem.response()


def _slashed(request: Request) -> bool:
    path: str = request.scope["path"]
    return len(path) > 1 and path.endswith("/")
