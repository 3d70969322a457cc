"""The console as one ASGI app, mounted at `/console` by `gateway.app` when it is enabled.

Every answer carries the security headers (gateway.console.security); every error is a page that
says what to do, never a traceback. The POST routes are listed in POST_ROUTES, with the role each
needs (the tests walk them all).
"""

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from gateway.admin.problems import Problem
from gateway.admin.roles import Role
from gateway.console.audit import AuditPage
from gateway.console.connections import ConnectionPages
from gateway.console.gate import Gate, SignInRequired, to_sign_in
from gateway.console.overview import Overview
from gateway.console.quarantine import QuarantinePages
from gateway.console.render import ConsoleError, Templates
from gateway.console.security import SecurityHeaders
from gateway.console.services import ConsoleServices
from gateway.console.sessions import SessionKeys
from gateway.console.sign_in import SignIn
from gateway.console.tenants import TenantPages
from gateway.runtime.infra import DATABASE_ERRORS

__all__ = ["POST_ROUTES", "console_app"]

log = logging.getLogger("ledgerhook.console")

# Every POST route under /console and the role it needs (sign-in needs none; sign-out any).
POST_ROUTES = {
    "/connections/{connection_id}/pause": Role.OPERATOR,
    "/connections/{connection_id}/resume": Role.OPERATOR,
    "/connections/{connection_id}/backfill": Role.OPERATOR,
    "/connections/{connection_id}/disconnect": Role.ADMIN,
    "/quarantine/redrive": Role.OPERATOR,
    "/quarantine/discard": Role.OPERATOR,
    "/tenants/erase": Role.ADMIN,
}


def console_routes(services: ConsoleServices, gate: Gate, templates: Templates) -> list[BaseRoute]:
    """The console's pages and actions."""
    sign_in = SignIn(gate, services.tokens, templates, services.session_seconds)
    overview = Overview(services, gate, templates)
    connections = ConnectionPages(services, gate, templates)
    quarantine = QuarantinePages(services, gate, templates)
    tenants = TenantPages(services, gate, templates)
    audit = AuditPage(services, gate, templates)
    posts = {
        "/connections/{connection_id}/pause": connections.pause,
        "/connections/{connection_id}/resume": connections.resume,
        "/connections/{connection_id}/backfill": connections.backfill,
        "/connections/{connection_id}/disconnect": connections.disconnect,
        "/quarantine/redrive": quarantine.redrive,
        "/quarantine/discard": quarantine.discard,
        "/tenants/erase": tenants.erase,
    }
    assert posts.keys() == POST_ROUTES.keys()
    return [
        Route("/", overview.page, methods=["GET"]),
        Route("/sign-in", sign_in.page, methods=["GET"]),
        Route("/sign-in", sign_in.sign_in, methods=["POST"]),
        Route("/sign-out", sign_in.sign_out, methods=["POST"]),
        Route("/connections", connections.list, methods=["GET"]),
        Route("/connections/{connection_id}", connections.item, methods=["GET"]),
        Route("/connections/{connection_id}/disconnect", connections.confirm_disconnect, methods=["GET"]),
        Route("/quarantine", quarantine.list, methods=["GET"]),
        Route("/quarantine/{record_id}", quarantine.record, methods=["GET"]),
        Route("/tenants/erase", tenants.confirm, methods=["GET"]),
        Route("/audit", audit.page, methods=["GET"]),
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in posts.items()),
        Mount("/static", app=StaticFiles(packages=[("gateway.console", "static")]), name="static"),
    ]


def console_app(services: ConsoleServices) -> ASGIApp:
    """The console: security headers on every answer (error pages included), the pages, errors as
    pages."""
    templates = Templates()
    gate = Gate(SessionKeys(services.session_key), services.tokens)

    async def console_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConsoleError)
        return templates.error(exc)

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return to_sign_in(exc.why)

    async def problem(request: Request, exc: Exception) -> Response:
        # The admin methods the console calls refuse with problems (409 a backfill already open, ...).
        assert isinstance(exc, Problem)
        return templates.error(ConsoleError(exc.status, "That could not be done", exc.detail))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            error = ConsoleError(404, "No such page", "Follow the links of the console from its overview.")
        elif exc.status_code == 405:
            error = ConsoleError(405, "Not allowed here", "Use the console's own links and buttons.")
        else:
            error = ConsoleError(
                exc.status_code, "That request could not be served", "Go back and try again."
            )
        return templates.error(error)

    async def database_error(request: Request, exc: Exception) -> Response:
        log.error("console request failed: database unavailable", extra={"error": type(exc).__name__})
        return templates.error(
            ConsoleError(503, "The database is not answering", "Wait a few seconds and reload the page.")
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("console request failed")
        return templates.error(
            ConsoleError(
                500,
                "Something went wrong",
                "The error is in the gateway's log. Reload the page; if it keeps failing, tell whoever"
                " runs the gateway.",
            )
        )

    app = Starlette(
        routes=console_routes(services, gate, templates),
        exception_handlers={
            ConsoleError: console_error,
            SignInRequired: sign_in_required,
            Problem: problem,
            HTTPException: http_error,
            **dict.fromkeys(DATABASE_ERRORS, database_error),
            Exception: server_error,
        },
    )
    app.router.redirect_slashes = False
    return SecurityHeaders(app)
