"""The admin API as one ASGI app, mounted at `/admin/v1` by `gateway.app`.

Every request passes the admin token check first (so even unknown paths under `/admin/v1` answer
401 to strangers); every error, routing ones included, is `application/problem+json`.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.admin.auth import AdminTokens, RequireAdminToken
from gateway.admin.connections import ConnectionsResource
from gateway.admin.credentials import CredentialsResource, with_credentials
from gateway.admin.openapi import openapi_document
from gateway.admin.problems import Problem
from gateway.admin.quarantine import QuarantineResource
from gateway.admin.sync import SyncResource, with_sync
from gateway.runtime.infra import DATABASE_ERRORS
from provider_auth.accounts.store import ConnectionStore

log = logging.getLogger("ledgerhook.admin")


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
    document = orjson.dumps(with_sync(with_credentials(openapi_document())))

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    return [
        Route("/connections", connections.collection, methods=["GET", "POST"]),
        Route("/connections/{connection_id}", connections.item, methods=["GET", "PATCH", "DELETE"]),
        Route("/connections/{connection_id}/credentials", services.credentials.item, methods=["GET", "PUT"]),
        Route("/connections/{connection_id}/sync", services.sync.sync, methods=["GET"]),
        Route("/connections/{connection_id}/backfill", services.sync.backfill, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/quarantine/redrive", services.quarantine.redrive, methods=["POST"]),
    ]


def admin_app(services: AdminServices) -> Starlette:
    """The admin API: token check, then the routes; errors as problem details."""
    return Starlette(
        routes=admin_routes(services),
        middleware=[Middleware(RequireAdminToken, tokens=services.tokens)],
        exception_handlers={
            Problem: _problem,
            HTTPException: _http_problem,
            **dict.fromkeys(DATABASE_ERRORS, _database_problem),
        },
    )


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response()


async def _database_problem(request: Request, exc: Exception) -> Response:
    log.error("admin request failed: database unavailable", extra={"error": type(exc).__name__})
    problem = Problem(503, "the database is unavailable; try again shortly", headers={"retry-after": "5"})
    return problem.response()


async def _http_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    details = {404: "no such admin resource", 405: f"{request.method} is not allowed here"}
    problem = Problem(
        exc.status_code,
        details.get(exc.status_code, str(exc.detail)),
        headers=dict(exc.headers) if exc.headers else None,
    )
    return problem.response()
