"""The admin API as one ASGI app, mounted at `/admin/v1` by `gateway.app`.

Every request passes the admin token check first (so even unknown paths under `/admin/v1` answer
401 to strangers), then its route's role check (each route declares the role each method needs; a
handler may ask for more once it has read the request), then its parameters' check
(gateway.admin.inputs), each route naming the query parameters it takes; every error, routing ones
included, is `application/problem+json`. A path with a trailing slash is 404: no redirect, so no
`Location` is ever built from the `Host` header. Roles: docs/admin-api.md, "Roles".
"""

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.audit import PARAMETERS as AUDIT_PARAMETERS
from gateway.admin.audit import AuditResource, with_audit
from gateway.admin.auth import AdminTokens, RequireAdminToken, require
from gateway.admin.connections import LIST_PARAMETERS, ConnectionsResource
from gateway.admin.credentials import CredentialsResource, with_credentials
from gateway.admin.inputs import check_parameters
from gateway.admin.openapi import openapi_document, with_parameter_problems, with_roles
from gateway.admin.problems import Problem
from gateway.admin.quarantine import LIST_PARAMETERS as QUARANTINE_PARAMETERS
from gateway.admin.quarantine import QuarantineResource, with_quarantine
from gateway.admin.roles import Role
from gateway.admin.sync import SyncResource, with_sync
from gateway.admin.tenants import TenantsResource, with_tenants
from gateway.runtime.infra import DATABASE_ERRORS
from provider_auth.accounts.store import ConnectionStore

log = logging.getLogger("ledgerhook.admin")

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class AdminServices:
    """What the admin API works with, created by the app's lifespan and passed in."""

    store: ConnectionStore
    tokens: AdminTokens
    on_change: Callable[[str], None]  # a connection changed (the webhook scheme cache listens)
    connections: ConnectionsResource
    quarantine: QuarantineResource
    credentials: CredentialsResource
    sync: SyncResource
    tenants: TenantsResource

    @property
    def pool(self) -> asyncpg.Pool:
        """The gateway's database pool (the one the sync resource works on): the audit trail's."""
        return self.sync.pool


class AdminRoute(Route):
    """A route of the admin API with the role each of its methods needs."""

    def __init__(self, path: str, endpoint: Endpoint, roles: Mapping[str, Role]) -> None:
        super().__init__(path, endpoint, methods=list(roles))
        self.roles = dict(roles)


def admin_routes(services: AdminServices) -> list[AdminRoute]:
    """The routes under `/admin/v1`, one resource each, with the role each method needs."""
    connections = services.connections
    trail = AuditResource(services.pool)
    document = b""

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    reads, operates, administers = Role.AUDITOR, Role.OPERATOR, Role.ADMIN
    routes = [
        _route(
            "/connections",
            connections.collection,
            {"GET": reads, "POST": administers},
            {"GET": LIST_PARAMETERS},
        ),
        # PATCH: pausing or resuming needs operator, any other change admin (decided by the handler).
        _route(
            "/connections/{connection_id}",
            connections.item,
            {"GET": reads, "PATCH": operates, "DELETE": administers},
        ),
        _route(
            "/connections/{connection_id}/credentials",
            services.credentials.item,
            {"GET": reads, "PUT": administers},
        ),
        _route("/connections/{connection_id}/sync", services.sync.sync, {"GET": reads}),
        _route("/connections/{connection_id}/backfill", services.sync.backfill, {"POST": operates}),
        _route("/openapi.json", openapi, {"GET": reads}),
        _route("/quarantine", services.quarantine.collection, {"GET": reads}, {"GET": QUARANTINE_PARAMETERS}),
        # Before `{record_id}`, which would match them too.
        _route("/quarantine/redrive", services.quarantine.redrive, {"POST": operates}),
        _route("/quarantine/discard", services.quarantine.post_discard, {"POST": operates}),
        # A record carries its raw body: operator and up.
        _route("/quarantine/{record_id}", services.quarantine.item, {"GET": operates}),
        _route("/audit", trail.list, {"GET": reads}, {"GET": AUDIT_PARAMETERS}),
        # `:path`: a tenant id may hold a `/` (sent as %2F, decoded before routing).
        _route("/tenants/{tenant_id:path}", services.tenants.item, {"DELETE": administers}),
    ]
    described = with_tenants(with_quarantine(with_audit(with_sync(with_credentials(openapi_document())))))
    document = orjson.dumps(with_roles(with_parameter_problems(described), declared_roles(routes)))
    return routes


def declared_roles(routes: list[AdminRoute]) -> dict[str, dict[str, Role]]:
    """The role each route's methods need, by path (HEAD goes with GET)."""
    return {route.path_format: dict(route.roles) for route in routes}


def _route(
    path: str,
    endpoint: Endpoint,
    roles: Mapping[str, Role],
    query: Mapping[str, Collection[str]] | None = None,
) -> AdminRoute:
    """A route whose requests have their role checked, then their parameters: `roles` names the
    role each method needs (no default: every method declares one), `query` the query parameters
    each method takes (none when left out)."""
    takes = dict(query or {})
    needs = dict(roles)

    async def checked(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        require(request, needs[method])
        check_parameters(request, takes.get(method, ()))
        return await endpoint(request)

    return AdminRoute(path, checked, needs)


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
