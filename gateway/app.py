"""The Starlette application: routes, and the lifespan that wires services to the infrastructure."""

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from fanout.polling.budget import RateBudgets
from fanout.polling.state import PollState
from fanout.polling.status import SyncStatus, sync_status
from gateway.admin import AdminServices, AdminTokens, admin_app
from gateway.admin.connections import ConnectionsResource
from gateway.admin.credentials import CredentialsResource
from gateway.admin.quarantine import QuarantineResource
from gateway.admin.sync import SyncResource
from gateway.admin.tenants import TenantsResource
from gateway.console import ConsoleServices, console_app
from gateway.ingress.connection_endpoint import ConnectionEndpoint
from gateway.ingress.endpoint import Ingress, empty, shared_provider
from gateway.ingress.rawlog import RawLog
from gateway.ingress.verification import ConnectionSources, SharedSources
from gateway.runtime.activity import ActivityHistory, recording_activity
from gateway.runtime.health import Readiness, health_routes
from gateway.runtime.infra import Infrastructure, open_infrastructure
from gateway.runtime.lifecycle import Lifecycle
from gateway.runtime.metrics import Metrics
from gateway.runtime.oauth import build_token_manager
from gateway.runtime.polling import rate_limits
from gateway.runtime.tracing import INGRESS, TOKENS, Tracing
from gateway.settings import Settings, secret_values
from provider_auth.accounts.store import Connection, ConnectionStore
from provider_auth.tokens import TokenManager
from provider_auth.vault import KeyRing

WEBHOOK_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class GatewayApp(Starlette):
    """Starlette, except that shared-endpoint webhooks go straight to the ingress (set up in the
    lifespan), before its middleware and routing; every other request is Starlette's."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        if scope["type"] == "http":
            provider = shared_provider(scope)
            if provider is not None:
                ingress: Ingress = self.state.ingress
                await ingress.serve_shared(scope, receive, send, provider)
                return
        await super().__call__(scope, receive, send)


@dataclass(frozen=True)
class InProcessWorker:
    """What the gateway shares with the worker's tasks when they run in its process (`ledgerhook
    dev`): one metrics registry (one `/metrics` for both), the process's one token manager (None
    without encryption keys; its owner closes it) and the tasks' readiness checks, which `/readyz`
    adds to its own."""

    registry: CollectorRegistry
    tokens: TokenManager | None
    checks: Callable[[], Mapping[str, str]]


def create_app(
    settings: Settings,
    lifecycle: Lifecycle,
    infra: Infrastructure | None = None,
    worker: InProcessWorker | None = None,
    tracing: Tracing | None = None,
) -> Starlette:
    """The gateway app; `lifecycle` tells it when the server drains. It opens its own infrastructure
    at startup unless `infra` is handed in, and makes its own token manager unless `worker` runs
    in the same process. `tracing` is the process's (`gateway.runtime.tracing`); none: off."""
    metrics = Metrics(worker.registry if worker is not None else None)
    tracing = tracing if tracing is not None else Tracing()
    ingress_tracer = tracing.tracer(INGRESS)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if infra is None:
                live = await stack.enter_async_context(open_infrastructure(settings))
            else:
                live = infra
            if worker is None:
                # With the worker in this process (`ledgerhook dev`) its recorder covers this registry.
                await stack.enter_async_context(recording_activity(live.pool, metrics.registry))
            rawlog = RawLog(live.producer, settings.topic_raw, settings.ack_timeout_seconds)
            shared = SharedSources(settings)
            app.state.ingress = Ingress(
                shared,
                rawlog,
                metrics,
                settings.max_body_bytes,
                settings.retry_after_seconds,
                ingress_tracer,
            )
            app.state.readiness = Readiness(
                lifecycle, live.producer, live.pool, worker.checks if worker is not None else None
            )
            # Per-connection endpoints get their own ingress: the shared endpoints' path stays as it is.
            keys = settings.encryption_keys
            keyring = KeyRing.parse(keys.get_secret_value()) if keys else None
            store = ConnectionStore(live.pool, keyring)
            # OAuth tokens (provider_auth): credentials endpoint, disconnects, token metrics on /metrics.
            if worker is not None:
                tokens = worker.tokens
            else:
                tokens = build_token_manager(settings, live, metrics.registry, tracing.tracer(TOKENS))
            sources = ConnectionSources(store, shared, settings, can_store_secrets=keyring is not None)
            app.state.connection_endpoint = ConnectionEndpoint(
                Ingress(
                    sources,
                    rawlog,
                    metrics,
                    settings.max_body_bytes,
                    settings.retry_after_seconds,
                    ingress_tracer,
                ),
                sources,
                store,
                metrics,
                settings.max_body_bytes,
                settings.retry_after_seconds,
            )
            admin_tokens = AdminTokens(secret_values(settings.admin_tokens))
            budgets = RateBudgets(live.pool, limits=rate_limits(settings))
            credentials = CredentialsResource(store, tokens, PollState(live.pool))
            services = AdminServices(
                store,
                admin_tokens,
                on_change=sources.invalidate,
                connections=ConnectionsResource(
                    store,
                    settings.public_base_url,
                    sources.invalidate,
                    before_disconnect=credentials.disconnect,
                    audit_pool=live.pool,
                ),
                quarantine=QuarantineResource(settings, live.producer, live.pool),
                credentials=credentials,
                sync=SyncResource(
                    store,
                    live.pool,
                    budgets,
                    poll_interval_seconds=settings.poll_interval_seconds,
                    sweep_interval_seconds=settings.sweep_interval_seconds,
                ),
                tenants=TenantsResource(live.pool, credentials.disconnect, sources.invalidate),
            )
            app.state.admin = admin_app(services)
            if settings.console_enabled:
                app.state.console = _console(settings, services, live.pool, budgets, tokens)
            yield
            if worker is None and tokens is not None:
                await tokens.close()  # refreshes in flight finish and store their tokens

    async def webhook(request: Request) -> Response:
        ingress: Ingress = request.app.state.ingress
        return await ingress(request)

    async def connection_webhook(request: Request) -> Response:
        endpoint: ConnectionEndpoint = request.app.state.connection_endpoint
        return await endpoint(request)

    async def admin(scope: Scope, receive: Receive, send: Send) -> None:
        # Built in the lifespan (it needs the pool), like the ingress.
        await scope["app"].state.admin(scope, receive, send)

    async def console(scope: Scope, receive: Receive, send: Send) -> None:
        # Built in the lifespan, like the admin API.
        await scope["app"].state.console(scope, receive, send)

    async def console_home(request: Request) -> Response:
        return RedirectResponse("/console/", status_code=307)

    async def readyz(request: Request) -> Response:
        readiness: Readiness = request.app.state.readiness
        return await readiness.readyz(request)

    routes = [
        Route("/webhooks/{provider}", webhook, methods=WEBHOOK_METHODS),
        Route("/webhooks/{provider}/{connection_id}", connection_webhook, methods=WEBHOOK_METHODS),
        Mount("/admin/v1", app=admin),
        *health_routes(readyz, metrics.registry),
    ]
    if settings.console_enabled:
        routes += [Route("/console", console_home, methods=["GET", "HEAD"]), Mount("/console", app=console)]
    app = GatewayApp(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _bare_http_error})
    # No redirect for a trailing slash: Starlette would build its Location from the Host header.
    app.router.redirect_slashes = False
    return app


async def _bare_http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 from routing carry no body, like every webhook answer."""
    assert isinstance(exc, HTTPException)
    return empty(exc.status_code, dict(exc.headers) if exc.headers else None)


def _console(
    settings: Settings,
    admin: AdminServices,
    pool: asyncpg.Pool,
    budgets: RateBudgets,
    tokens: TokenManager | None,
) -> ASGIApp:
    """The web console (gateway.console), acting through the admin API's own resources."""
    key = settings.console_session_key

    async def status_of(connection: Connection) -> SyncStatus:
        return await sync_status(
            pool,
            budgets,
            connection,
            poll_interval_seconds=settings.poll_interval_seconds,
            sweep_interval_seconds=settings.sweep_interval_seconds,
        )

    return console_app(
        ConsoleServices(
            tokens=admin.tokens,
            store=admin.store,
            pool=pool,
            public_base_url=settings.public_base_url,
            session_key=key.get_secret_value().encode() if key is not None else None,
            session_seconds=settings.console_session_seconds,
            connections=admin.connections,
            sync_status=status_of,
            sync=admin.sync,
            credentials=tokens,
            quarantine=admin.quarantine,
            tenants=admin.tenants,
            activity=ActivityHistory(pool),
        )
    )
