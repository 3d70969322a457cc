"""The connections resource: `/admin/v1/connections[/{connection_id}]`.

A connection is one tenant's link to one provider account. Create, list (cursor pages), get,
update and delete (disconnect) it here, its polling setting included (docs/admin-api.md, "Polling").
Webhook secrets of per-connection endpoints are write-only: they are stored encrypted with the key
ring and no answer ever contains one (`has_webhook_secret` says whether there is one). Every change
is recorded in the audit trail, a secret only as `webhook_secrets_changed: true`; the writes the
console shares (`change_status`, `disconnect`) take the actor and raise problems.
"""

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import asyncpg
import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, model_validator
from starlette.requests import Request
from starlette.responses import Response

from fanout.polling.state import POLLED_PROVIDERS
from gateway.admin.auth import require_role
from gateway.admin.http import (
    connection_not_found,
    find_connection,
    json_response,
    read_json_object,
    validated,
)
from gateway.admin.inputs import page_limit
from gateway.admin.problems import Problem, pointer, validation_problem
from gateway.admin.roles import Actor, Role, actor_of
from provider_auth import audit
from provider_auth.accounts.store import (
    UNSET,
    ConnectionExists,
    ConnectionStatus,
    ConnectionStore,
    MissingKeyRing,
    PollingMode,
)
from provider_auth.accounts.store import Connection as StoredConnection
from provider_auth.accounts.store import Polling as StoredPolling
from provider_auth.ids import canonical_uuid
from provider_auth.providers import Provider
from provider_auth.webhooks.registry import SecretHolder, check_secret, signing

log = logging.getLogger("ledgerhook.admin")

MAX_BODY_BYTES = 65_536
MAX_METADATA_BYTES = 16_384
MAX_METADATA_DEPTH = 8
MAX_SECRETS = 5  # active at once: enough to rotate, few enough to verify fast
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_POLL_INTERVAL_SECONDS = 7 * 86_400  # a week: longer would leave an account unread for too long
# The query parameters of `GET /admin/v1/connections`; any other is 422 (gateway.admin.inputs).
LIST_PARAMETERS = ("tenant_id", "provider", "status", "limit", "cursor")

_Choice = TypeVar("_Choice", Provider, ConnectionStatus)


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError("must not contain control characters")
    return value


def _secret(value: str) -> str:
    # Printable ASCII without spaces covers every provider's secrets (Zoho's 12-50 letters and digits,
    # FreshBooks verifiers, `whsec_` base64) and keeps header-borne secrets unambiguous.
    if not all(33 <= ord(char) <= 126 for char in value):
        raise ValueError("must be printable ASCII without spaces")
    return value


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    if _depth(value, 1) > MAX_METADATA_DEPTH:
        raise ValueError(f"must not nest deeper than {MAX_METADATA_DEPTH} levels")
    if len(orjson.dumps(value)) > MAX_METADATA_BYTES:
        raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    return value


def _depth(value: Any, level: int) -> int:
    """The nesting depth of a JSON value, counted no further than one past the limit."""
    if level > MAX_METADATA_DEPTH:
        return level
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return max((_depth(child, level + 1) for child in children), default=level)


Identifier = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_text)]
DisplayName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_text)]
Metadata = Annotated[
    dict[str, Any],
    Field(description=f"Free-form JSON object, at most {MAX_METADATA_BYTES} bytes."),
    AfterValidator(_metadata),
]
Secret = Annotated[
    str,
    Field(min_length=1, max_length=512, json_schema_extra={"writeOnly": True}),
    AfterValidator(_secret),
]


class Polling(BaseModel):
    """How the connection's provider account is polled for changes."""

    model_config = ConfigDict(extra="forbid", title="Polling")

    mode: PollingMode = Field(
        default=PollingMode.AUTO,
        description="`poll`: the provider's change API is read every interval; `sweep`: the same at a "
        "slower pace, to catch webhooks that never came; `auto`: `sweep` for a connection that gets "
        "webhooks (QuickBooks, Xero, or one with a webhook secret), `poll` otherwise; `off`: not polled "
        "for this connection.",
    )
    # Strict: true, 1.5 and "60" are refused rather than read as numbers.
    interval_seconds: Annotated[StrictInt, Field(ge=1, le=MAX_POLL_INTERVAL_SECONDS)] | None = Field(
        default=None,
        description="null: LEDGERHOOK_POLL_INTERVAL_SECONDS for `poll`, LEDGERHOOK_SWEEP_INTERVAL_SECONDS "
        "for `sweep`. An account shared by several connections is polled at the smallest interval "
        "among them.",
    )

    @classmethod
    def of(cls, polling: StoredPolling) -> "Polling":
        """The public view of a stored polling setting."""
        return cls(mode=polling.mode, interval_seconds=polling.interval_seconds)

    def stored(self) -> StoredPolling:
        """The setting as the connection store keeps it."""
        return StoredPolling(self.mode, self.interval_seconds)


class _SecretFields(BaseModel):
    """`webhook_secret` or `webhook_secrets`, never both."""

    model_config = ConfigDict(extra="forbid")

    webhook_secret: Secret | None = Field(
        None, description="The connection's webhook secret (write-only; never returned)."
    )
    webhook_secrets: Annotated[list[Secret], Field(max_length=MAX_SECRETS)] | None = Field(
        None,
        description="Several active secrets, for rotation (write-only). Replaces all existing ones.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> "_SecretFields":
        if {"webhook_secret", "webhook_secrets"} <= self.model_fields_set:
            raise ValueError("give webhook_secret or webhook_secrets, not both")
        return self

    def secrets(self) -> list[str] | None:
        """The secrets given, as a list; None when neither member was sent."""
        if "webhook_secrets" in self.model_fields_set:
            return list(self.webhook_secrets or [])
        if "webhook_secret" in self.model_fields_set:
            return [self.webhook_secret] if self.webhook_secret is not None else []
        return None

    def secrets_pointer(self) -> str:
        """Where the secrets were sent, for error pointers."""
        return "webhook_secrets" if "webhook_secrets" in self.model_fields_set else "webhook_secret"


class ConnectionCreate(_SecretFields):
    """The body of `POST /admin/v1/connections`."""

    model_config = ConfigDict(extra="forbid", title="ConnectionCreate")

    tenant_id: Identifier = Field(description="Your identifier of the customer who owns the connection.")
    provider: Provider = Field(description="Provider slug.")
    provider_account_id: Identifier = Field(
        description="The provider's account id: QuickBooks realm, Xero tenant, Zoho organization, ..."
    )
    display_name: DisplayName | None = None
    metadata: Metadata = Field(default_factory=dict)
    polling: Polling = Field(default_factory=Polling, description="Members left out take their defaults.")


class ConnectionUpdate(_SecretFields):
    """The body of `PATCH /admin/v1/connections/{id}`: only the members sent change."""

    model_config = ConfigDict(extra="forbid", title="ConnectionUpdate")

    display_name: DisplayName | None = Field(None, description="null removes it.")
    metadata: Metadata | None = Field(None, description="Replaces the whole object.")
    status: Literal["active", "paused"] | None = Field(
        None,
        description="`needs_reauth` is set by the token layer; `disconnected` only by DELETE. "
        "Setting `active` on a disconnected connection reconnects it.",
    )
    polling: Polling | None = Field(
        None, description="Replaces the whole setting: members left out take their defaults."
    )


class Connection(BaseModel):
    """A connection as every answer shows it (never with a secret)."""

    model_config = ConfigDict(title="Connection")

    id: str = Field(description="Connection id (UUIDv7).")
    tenant_id: str
    provider: Provider
    provider_account_id: str
    status: ConnectionStatus
    display_name: str | None
    metadata: dict[str, Any]
    has_webhook_secret: bool
    polling: Polling
    webhook_url: str | None = Field(
        description="Where the provider posts this connection's webhooks; null for providers with "
        "one app-wide endpoint (quickbooks, xero)."
    )
    created_at: datetime
    updated_at: datetime


class ConnectionPage(BaseModel):
    """One page of `GET /admin/v1/connections`."""

    model_config = ConfigDict(title="ConnectionPage")

    data: list[Connection]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


def no_secret_reason(provider: Provider) -> str | None:
    """Why `provider` takes no per-connection webhook secret, or None when it does."""
    holder = signing(provider).holder
    if holder is SecretHolder.APP:
        return (
            f"{provider.value} connections take no webhook secret: the app-wide endpoint is verified with "
            f"LEDGERHOOK_{provider.env_name}_* settings"
        )
    if holder is SecretHolder.NONE:
        return (
            f"{provider.value} connections take no webhook secret: deliveries carry a JWT verified with "
            f"LEDGERHOOK_{provider.env_name}_JWT_KEYS"
        )
    return None


def check_secrets(provider: Provider, secrets: list[str], member: str) -> None:
    """422 when the secrets do not fit the provider's scheme; messages never repeat a secret."""
    if not secrets:
        return
    reason = no_secret_reason(provider)
    if reason is not None:
        raise validation_problem([{"pointer": pointer((member,)), "detail": reason}])
    errors = []
    for index, secret in enumerate(secrets):
        try:
            check_secret(provider, secret)
        except ValueError as exc:
            location = (member, index) if member == "webhook_secrets" else (member,)
            errors.append({"pointer": pointer(location), "detail": str(exc)})
    if errors:
        raise validation_problem(errors)


def check_polling(provider: Provider, polling: Polling) -> None:
    """422 when `provider` has no change API to poll yet `polling` asks for polling."""
    if provider in POLLED_PROVIDERS:
        return
    reason = f"{provider.value} connections are never polled: they have no change API"
    errors = []
    if polling.mode in (PollingMode.POLL, PollingMode.SWEEP):
        errors.append({"pointer": "#/polling/mode", "detail": reason})
    if polling.interval_seconds is not None:
        errors.append({"pointer": "#/polling/interval_seconds", "detail": reason})
    if errors:
        raise validation_problem(errors)


class ConnectionsResource:
    """The handlers of the connections resource, holding the store they work on."""

    def __init__(
        self,
        store: ConnectionStore,
        public_base_url: str,
        on_change: Callable[[str], None],
        before_disconnect: Callable[[str], Awaitable[None]],
        audit_pool: asyncpg.Pool,
    ) -> None:
        """`on_change(connection_id)` runs after every write (the webhook scheme cache listens);
        `before_disconnect(connection_id)` before a DELETE disconnects (OAuth tokens are revoked at
        the provider where it has an endpoint, and erased); `audit_pool` holds the audit trail, in
        the store's database: each change and its entry are written in one of its transactions."""
        self._store = store
        self._base = public_base_url.rstrip("/")
        self._on_change = on_change
        self._before_disconnect = before_disconnect
        self._audit = audit_pool

    def render(self, connection: StoredConnection) -> Connection:
        """The public view of a connection."""
        per_connection = not connection.provider.shared_endpoint
        return Connection(
            id=connection.id,
            tenant_id=connection.tenant_id,
            provider=connection.provider,
            provider_account_id=connection.provider_account_id,
            status=connection.status,
            display_name=connection.display_name,
            metadata=connection.metadata,
            has_webhook_secret=connection.has_webhook_secret,
            polling=Polling.of(connection.polling),
            webhook_url=(
                f"{self._base}/webhooks/{connection.provider.value}/{connection.id}"
                if per_connection
                else None
            ),
            created_at=connection.created_at,
            updated_at=connection.updated_at,
        )

    async def collection(self, request: Request) -> Response:
        """`GET` lists, `POST` creates."""
        if request.method == "POST":
            return await self.create(request)
        return await self.list(request)

    async def item(self, request: Request) -> Response:
        """`GET`, `PATCH` or `DELETE` one connection."""
        if request.method == "PATCH":
            return await self.update(request)
        if request.method == "DELETE":
            return await self.delete(request)
        return await self.get(request)

    async def create(self, request: Request) -> Response:
        """Register a connection: 201 with it and its Location; 409 when the tenant already has it."""
        new = validated(ConnectionCreate, await read_json_object(request, MAX_BODY_BYTES))
        secrets = new.secrets() or []
        check_secrets(new.provider, secrets, new.secrets_pointer())
        check_polling(new.provider, new.polling)
        try:
            async with self._recorded() as (store, conn):
                connection = await store.create(
                    new.tenant_id,
                    new.provider,
                    new.provider_account_id,
                    display_name=new.display_name,
                    metadata=new.metadata,
                    webhook_secrets=secrets,
                    polling=new.polling.stored(),
                )
                created: dict[str, Any] = {
                    member: {"from": None, "to": value} for member, value in _members(connection).items()
                }
                if secrets:
                    created["webhook_secrets_changed"] = True
                await self._record(conn, actor_of(request), "connection.create", connection, created)
        except ConnectionExists:
            existing = [
                c.id
                for c in await self._store.by_account(new.provider, new.provider_account_id)
                if c.tenant_id == new.tenant_id
            ]
            raise Problem(
                409,
                f"tenant {new.tenant_id!r} already has a {new.provider.value} connection to this account",
                extensions={"connection_id": existing[0]} if existing else None,
            ) from None
        except MissingKeyRing:
            raise _no_key_ring(new.secrets_pointer()) from None
        self._on_change(connection.id)
        log.info(
            "connection created",
            extra={
                "connection_id": connection.id,
                "tenant_id": connection.tenant_id,
                "provider": new.provider,
            },
        )
        return json_response(
            self.render(connection), 201, {"location": f"/admin/v1/connections/{connection.id}"}
        )

    async def list(self, request: Request) -> Response:
        """A page of connections in creation order, filtered by tenant, provider and status. The
        parameters are LIST_PARAMETERS, each once and not empty (checked before)."""
        query = request.query_params
        errors: list[dict[str, str]] = []
        limit = page_limit(request, DEFAULT_LIMIT, MAX_LIMIT, errors)
        provider = _choice(query.get("provider"), Provider, "provider", errors)
        status = _choice(query.get("status"), ConnectionStatus, "status", errors)
        tenant = query.get("tenant_id")
        cursor = query.get("cursor")
        if cursor is not None and canonical_uuid(cursor) is None:
            errors.append({"parameter": "cursor", "detail": "must be a next_cursor from a previous page"})
        if errors:
            raise validation_problem(errors, "the query parameters are not valid")
        rows = await self._store.page(
            tenant_id=tenant, provider=provider, status=status, after=cursor, limit=limit + 1
        )
        page = rows[:limit]
        next_cursor = page[-1].id if len(rows) > limit else None
        return json_response(ConnectionPage(data=[self.render(c) for c in page], next_cursor=next_cursor))

    async def get(self, request: Request) -> Response:
        """One connection, or 404."""
        return json_response(self.render(await find_connection(self._store, request)))

    async def update(self, request: Request) -> Response:
        """Change the members sent; 404 for an unknown id. A body that only sets `status` pauses or
        resumes (`change_status`, operator or above); any other change needs admin."""
        connection = await find_connection(self._store, request)
        change = validated(ConnectionUpdate, await read_json_object(request, MAX_BODY_BYTES))
        sent = change.model_fields_set
        secrets = change.secrets()
        if secrets is not None:
            check_secrets(connection.provider, secrets, change.secrets_pointer())
        if "metadata" in sent and change.metadata is None:
            raise validation_problem([{"pointer": "#/metadata", "detail": "must be an object"}])
        if "status" in sent and change.status is None:
            raise validation_problem([{"pointer": "#/status", "detail": "must be active or paused"}])
        if "polling" in sent and change.polling is None:
            raise validation_problem([{"pointer": "#/polling", "detail": "must be an object"}])
        if change.polling is not None:
            check_polling(connection.provider, change.polling)
        actor = actor_of(request)
        if sent == {"status"} and change.status is not None:
            return json_response(await self.change_status(connection.id, change.status, actor))
        if not sent:
            return json_response(self.render(connection))
        require_role(actor.principal, Role.ADMIN)
        try:
            async with self._recorded() as (store, conn):
                updated = await store.update(
                    connection.id,
                    display_name=change.display_name if "display_name" in sent else UNSET,
                    metadata=change.metadata if change.metadata is not None else UNSET,
                    status=ConnectionStatus(change.status) if change.status is not None else UNSET,
                    webhook_secrets=secrets if secrets is not None else UNSET,
                    polling=change.polling.stored() if change.polling is not None else UNSET,
                )
                if updated is None:
                    raise connection_not_found()
                before, after = _members(connection), _members(updated)
                changes: dict[str, Any] = {
                    member: {"from": before[member], "to": after[member]}
                    for member in before
                    if before[member] != after[member]
                }
                if secrets is not None:
                    changes["webhook_secrets_changed"] = True
                await self._record(conn, actor, "connection.update", updated, changes)
        except MissingKeyRing:
            raise _no_key_ring(change.secrets_pointer()) from None
        self._on_change(updated.id)
        log.info("connection updated", extra={"connection_id": updated.id, "fields": sorted(sent)})
        return json_response(self.render(updated))

    async def change_status(self, connection_id: str, status: str, actor: Actor) -> Connection:
        """Pause (`paused`) or resume (`active`) a connection on behalf of `actor`, and record it:
        operator or above, admin when the connection is disconnected (that reconnects it).
        Problems: 403, 404, 422 for another status."""
        if status not in (ConnectionStatus.ACTIVE, ConnectionStatus.PAUSED):
            raise validation_problem([{"pointer": "#/status", "detail": "must be active or paused"}])
        connection = await self._store.get(connection_id)
        if connection is None:
            raise connection_not_found()
        reconnects = connection.status is ConnectionStatus.DISCONNECTED
        require_role(actor.principal, Role.ADMIN if reconnects else Role.OPERATOR)
        async with self._recorded() as (store, conn):
            updated = await store.update(connection.id, status=ConnectionStatus(status))
            if updated is None:
                raise connection_not_found()
            action = "connection.pause" if updated.status is ConnectionStatus.PAUSED else "connection.resume"
            changes = {"status": {"from": connection.status.value, "to": updated.status.value}}
            await self._record(conn, actor, action, updated, changes)
        self._on_change(updated.id)
        log.info("connection updated", extra={"connection_id": updated.id, "fields": ["status"]})
        return self.render(updated)

    async def delete(self, request: Request) -> Response:
        """Disconnect: status `disconnected`, secrets erased, the row kept; 204."""
        connection = await find_connection(self._store, request)
        await self.disconnect(connection.id, actor_of(request))
        return Response(status_code=204)

    async def disconnect(self, connection_id: str, actor: Actor) -> None:
        """Disconnect a connection on behalf of `actor` (admin): its OAuth tokens revoked and erased,
        its secrets erased, status `disconnected`, the row kept; recorded. Problems: 403, 404."""
        require_role(actor.principal, Role.ADMIN)
        connection = await self._store.get(connection_id)
        if connection is None:
            raise connection_not_found()
        await self._before_disconnect(connection.id)
        async with self._recorded() as (store, conn):
            disconnected = await store.disconnect(connection.id)
            if disconnected is None:
                raise connection_not_found()
            changes: dict[str, Any] = {
                "status": {"from": connection.status.value, "to": disconnected.status.value}
            }
            if connection.has_webhook_secret:
                changes["webhook_secrets_changed"] = True
            await self._record(conn, actor, "connection.disconnect", disconnected, changes)
        self._on_change(connection.id)
        log.info("connection disconnected", extra={"connection_id": connection.id})

    @contextlib.asynccontextmanager
    async def _recorded(self) -> AsyncIterator[tuple[ConnectionStore, asyncpg.Connection]]:
        """One transaction for a change and its audit entry: both are written, or neither (an
        entry that cannot be written refuses the change)."""
        async with self._audit.acquire() as conn, conn.transaction():
            yield self._store.within(conn), conn

    async def _record(
        self,
        conn: asyncpg.Connection,
        actor: Actor,
        action: str,
        connection: StoredConnection,
        changes: dict[str, Any],
    ) -> None:
        await audit.record_change(
            conn,
            actor=actor.principal.name,
            role=actor.principal.role.value,
            via=actor.via,
            client=actor.client,
            action=action,
            target=f"connection:{connection.id}",
            changes=changes,
            connection_id=connection.id,
            provider=connection.provider.value,
        )


def _members(connection: StoredConnection) -> dict[str, Any]:
    """The plain members of a connection the audit trail shows before and after (no secret)."""
    return {
        "tenant_id": connection.tenant_id,
        "provider": connection.provider.value,
        "provider_account_id": connection.provider_account_id,
        "status": connection.status.value,
        "display_name": connection.display_name,
        "metadata": connection.metadata,
        "polling": {
            "mode": connection.polling.mode.value,
            "interval_seconds": connection.polling.interval_seconds,
        },
    }


def _no_key_ring(member: str) -> Problem:
    return validation_problem(
        [
            {
                "pointer": pointer((member,)),
                "detail": "cannot be stored: the gateway has no LEDGERHOOK_ENCRYPTION_KEYS to encrypt it",
            }
        ]
    )


def _choice(
    value: str | None, kind: type[_Choice], name: str, errors: list[dict[str, str]]
) -> _Choice | None:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        errors.append({"parameter": name, "detail": "must be one of " + ", ".join(m.value for m in kind)})
        return None
