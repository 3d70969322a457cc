"""The connections pages: the list (filter by tenant, provider and status; paged), one connection
(webhook URL, credential state, sync status per entity with backfill progress, its recent account
and token events), and its actions by role: pause, resume, backfill (operator); disconnect, after a
confirmation page (admin)."""

import logging
from datetime import UTC, date, datetime, time
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.admin.credentials import view as credentials_view
from gateway.admin.roles import Role
from gateway.admin.sync import SyncView
from gateway.console.gate import Gate
from gateway.console.render import ConsoleError, Templates
from gateway.console.services import ConsoleServices
from provider_auth import audit
from provider_auth.accounts.store import Connection, ConnectionStatus
from provider_auth.ids import canonical_uuid
from provider_auth.providers import Provider

__all__ = ["ConnectionPages"]

log = logging.getLogger("ledgerhook.console")

PAGE_SIZE = 25
RECENT_EVENTS = 20
MAX_FILTER_CHARS = 200


def _choice(value: str, kind: type[Provider] | type[ConnectionStatus]) -> Any:
    try:
        return kind(value) if value else None
    except ValueError:
        raise ConsoleError(
            400, "That filter is not valid", "Pick a provider and a status from the lists and search again."
        ) from None


def _since(value: str) -> datetime:
    """A backfill's start, from a date field (midnight UTC); in the past."""
    try:
        moment = datetime.combine(date.fromisoformat(value.strip()), time(), UTC)
    except ValueError:
        raise ConsoleError(
            400, "That date is not valid", "Give the day to replay from as YYYY-MM-DD, then send it again."
        ) from None
    if moment >= datetime.now(UTC):
        raise ConsoleError(
            400, "That date is not in the past", "Pick a day before today, then send it again."
        )
    return moment


class ConnectionPages:
    """`/console/connections[...]`."""

    def __init__(self, services: ConsoleServices, gate: Gate, templates: Templates) -> None:
        self._services = services
        self._gate = gate
        self._templates = templates
        self._base = services.public_base_url.rstrip("/")

    async def list(self, request: Request) -> Response:
        """The connections, filtered and paged in creation order."""
        visitor = self._gate.visitor(request)
        query = request.query_params
        tenant = query.get("tenant_id", "").strip()[:MAX_FILTER_CHARS]
        provider = _choice(query.get("provider", ""), Provider)
        status = _choice(query.get("status", ""), ConnectionStatus)
        cursor = query.get("cursor") or None
        if cursor is not None and canonical_uuid(cursor) is None:
            cursor = None
        rows = await self._services.store.page(
            tenant_id=tenant or None, provider=provider, status=status, after=cursor, limit=PAGE_SIZE + 1
        )
        page = rows[:PAGE_SIZE]
        next_cursor = page[-1].id if len(rows) > PAGE_SIZE else None
        filters = {
            "tenant_id": tenant,
            "provider": provider.value if provider else "",
            "status": status.value if status else "",
        }
        return self._templates.page(
            "connections.html",
            visitor=visitor,
            section="connections",
            connections=page,
            filters=filters,
            providers=[p.value for p in Provider],
            statuses=[s.value for s in ConnectionStatus],
            next_cursor=next_cursor,
            first_page=cursor is None,
        )

    async def _find(self, request: Request) -> Connection:
        key = canonical_uuid(request.path_params["connection_id"])
        connection = await self._services.store.get(key) if key else None
        if connection is None:
            raise ConsoleError(
                404, "No such connection", "It may have been erased. Find it again from the connections list."
            )
        return connection

    def webhook_url(self, connection: Connection) -> str | None:
        """Where the provider posts the connection's webhooks; None for app-wide endpoints."""
        if connection.provider.shared_endpoint:
            return None
        return f"{self._base}/webhooks/{connection.provider.value}/{connection.id}"

    async def item(self, request: Request) -> Response:
        """One connection."""
        visitor = self._gate.visitor(request)
        connection = await self._find(request)
        services = self._services
        state = await services.credentials.credentials_state(connection.id) if services.credentials else None
        sync = SyncView.of(await services.sync_status(connection), datetime.now(UTC))
        events = await audit.page(
            services.pool, audit.AuditFilters(connection_id=connection.id), limit=RECENT_EVENTS
        )
        return self._templates.page(
            "connection.html",
            visitor=visitor,
            section="connections",
            connection=connection,
            webhook_url=self.webhook_url(connection),
            credentials=credentials_view(state) if state is not None else None,
            sync=sync,
            events=events,
            notice=_notice(request),
        )

    async def pause(self, request: Request) -> Response:
        """Pause: its change events are held in quarantine until it is resumed."""
        return await self._status(request, ConnectionStatus.PAUSED, "paused")

    async def resume(self, request: Request) -> Response:
        """Resume a paused connection."""
        return await self._status(request, ConnectionStatus.ACTIVE, "resumed")

    async def _status(self, request: Request, status: ConnectionStatus, done: str) -> Response:
        visitor, _ = await self._gate.form(request, Role.OPERATOR)
        connection = await self._find(request)
        await self._services.connections.change_status(connection.id, status, visitor.actor)
        return _back(connection.id, done)

    async def backfill(self, request: Request) -> Response:
        """Queue a backfill from a day on, of every polled entity."""
        visitor, form = await self._gate.form(request, Role.OPERATOR)
        connection = await self._find(request)
        since = form.get("since")
        await self._services.sync.queue_backfill(
            connection.id, _since(since if isinstance(since, str) else ""), None, visitor.actor
        )
        return _back(connection.id, "backfill-queued")

    async def confirm_disconnect(self, request: Request) -> Response:
        """The page that asks before a disconnect."""
        visitor = self._gate.visitor(request, Role.ADMIN)
        connection = await self._find(request)
        return self._templates.page(
            "disconnect.html", visitor=visitor, section="connections", connection=connection
        )

    async def disconnect(self, request: Request) -> Response:
        """Disconnect: its secrets and tokens are erased; the row stays."""
        visitor, _ = await self._gate.form(request, Role.ADMIN)
        connection = await self._find(request)
        await self._services.connections.disconnect(connection.id, visitor.actor)
        return _back(connection.id, "disconnected")


NOTICES = {
    "paused": "Paused. Its change events are held in quarantine until you resume it.",
    "resumed": "Resumed. Redrive its held deliveries from the quarantine page.",
    "backfill-queued": "Backfill queued. Its progress shows under Sync below.",
    "disconnected": "Disconnected. Its secrets and tokens were erased.",
}


def _notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("done", ""))


def _back(connection_id: str, done: str) -> Response:
    return RedirectResponse(f"/console/connections/{connection_id}?done={done}", status_code=303)
