"""The credentials resource: `/admin/v1/connections/{connection_id}/credentials`.

`PUT` hands over a connection's OAuth tokens: how a product passes on what its OAuth consent screen
gave it, and how a broken (`needs_reauth`) connection is reconnected. Tokens are write-only: they are
stored encrypted with the key ring and no answer ever contains one. `GET` shows the credential state
(expiries, last refresh, failures), never a token. See docs/tokens.md. A hand-over is recorded in the
audit trail by what changed (grant type, expiries, whether tokens were given), never a token.
"""

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from aiokafka.errors import KafkaError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)
from starlette.requests import Request
from starlette.responses import Response

from fanout.polling.state import PollState
from gateway.admin.http import find_connection, json_response, read_json_object, validated
from gateway.admin.openapi import CONNECTION_ID_PARAMETER, REF, add_schemas, problem_responses
from gateway.admin.problems import Problem, validation_problem
from gateway.admin.roles import actor_of
from provider_auth import audit
from provider_auth.accounts.store import ConnectionStatus, ConnectionStore
from provider_auth.oauth.specs import SPECS, ZOHO_DATA_CENTRES
from provider_auth.providers import Provider
from provider_auth.tokens import (
    ConnectionRef,
    Credentials,
    CredentialsState,
    GrantStatus,
    GrantType,
    ProviderNotConfigured,
    TokenManager,
)

__all__ = ["CredentialsPut", "CredentialsResource", "CredentialsView", "view", "with_credentials"]

log = logging.getLogger("ledgerhook.admin")

MAX_BODY_BYTES = 65_536
MAX_TOKEN_LENGTH = 8192  # Intacct and NetSuite access tokens are JWTs of a few KiB
MAX_LIFETIME = timedelta(days=3650)  # ten years: a later expiry is a mistake (9999-12-31), not a token
CLOCK_SKEW = timedelta(minutes=5)  # how far the product's clock may be behind ours
# As NetSuite writes account ids (`1234567`, `TSTDRV1234567`, `1234567_SB1`); the id becomes part of
# the token endpoint's host name, so nothing else may pass.
NETSUITE_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
RFC3339 = "must be an RFC 3339 timestamp with an offset, e.g. 2026-12-01T10:00:00Z"


def _token(value: str) -> str:
    if not all(33 <= ord(char) <= 126 for char in value):
        raise ValueError("must be printable ASCII without spaces")
    return value


def _scope(value: str) -> str:
    # Scope tokens are printable ASCII, separated by spaces (RFC 6749, section 3.3).
    if not all(32 <= ord(char) <= 126 for char in value):
        raise ValueError("must be printable ASCII (scope tokens separated by spaces)")
    return value


def _account_id(value: str) -> str:
    if NETSUITE_ACCOUNT.fullmatch(value) is None:
        raise ValueError("must be a NetSuite account id: letters, digits, _ and -")
    return value


def _seconds(value: Any) -> int:
    # A whole number: 3600.0 counts (JSON has one kind of number, and some encoders write every one
    # with a fraction); 0.5, true and "3600" do not.
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise ValueError("must be a whole number of seconds")
    if not 0 < value <= MAX_LIFETIME.total_seconds():
        raise ValueError(f"must be from 1 to {int(MAX_LIFETIME.total_seconds())} seconds (ten years)")
    return int(value)


def _timestamp(value: Any) -> datetime:
    # Text only: pydantic would also read a number as seconds since 1970.
    if not isinstance(value, str):
        raise ValueError(RFC3339)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(RFC3339) from None
    if moment.tzinfo is None:
        raise ValueError("needs an offset (e.g. Z)")
    if moment > datetime.now(UTC) + MAX_LIFETIME:
        raise ValueError("must be at most ten years from now")
    return moment


def _access_expiry(moment: datetime) -> datetime:
    if moment < datetime.now(UTC) - CLOCK_SKEW:
        raise ValueError(
            "is in the past: the access token has expired; leave access_token and expires_at out and a "
            "new one is fetched at once"
        )
    return moment


def _refresh_expiry(moment: datetime) -> datetime:
    if moment <= datetime.now(UTC):
        raise ValueError("is in the past: an expired refresh token cannot be used; ask the user to reconnect")
    return moment


Seconds = Annotated[
    int,
    PlainValidator(_seconds),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": int(MAX_LIFETIME.total_seconds())}),
]
Timestamp = Annotated[
    datetime,
    PlainValidator(_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


Token = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TOKEN_LENGTH, json_schema_extra={"writeOnly": True}),
    AfterValidator(_token),
]


class CredentialsPut(BaseModel):
    """The body of `PUT .../credentials` (the token response of the provider, as the product got it)."""

    model_config = ConfigDict(extra="forbid", title="CredentialsPut")

    access_token: Token | None = Field(None, description="The access token (write-only).")
    refresh_token: Token | None = Field(
        None, description="The refresh token (write-only); required unless grant_type is client_credentials."
    )
    expires_in: Seconds | None = Field(
        None, description="Whole seconds the access token lives, from now; at most ten years."
    )
    expires_at: Annotated[Timestamp, AfterValidator(_access_expiry)] | None = Field(
        None,
        description="When the access token expires (RFC 3339, with an offset): from 5 minutes ago to ten"
        " years ahead.",
    )
    refresh_token_expires_at: Annotated[Timestamp, AfterValidator(_refresh_expiry)] | None = Field(
        None,
        description="When the refresh token expires if unused (QuickBooks: x_refresh_token_expires_in):"
        " in the future, at most ten years ahead.",
    )
    scope: Annotated[str, AfterValidator(_scope)] | None = Field(
        None,
        max_length=2000,
        description="Printable ASCII, scope tokens separated by spaces; kept for reference.",
    )
    grant_type: Literal["refresh_token", "client_credentials"] = Field(
        "refresh_token",
        description="`client_credentials`: NetSuite machine-to-machine, tokens minted with the configured "
        "certificate key (no tokens need to be sent).",
    )
    location: str | None = Field(
        None, description="Zoho Books: the data centre of the user (`location` of Zoho's answer), e.g. `eu`."
    )
    account_id: Annotated[str, AfterValidator(_account_id)] | None = Field(
        None,
        max_length=100,
        description="NetSuite: the account id (letters, digits, `_` and `-`), when it differs from"
        " provider_account_id.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "CredentialsPut":
        if self.expires_in is not None and self.expires_at is not None:
            raise ValueError("give expires_in or expires_at, not both")
        if self.grant_type == "refresh_token" and self.refresh_token is None:
            raise ValueError("refresh_token is required")
        if self.access_token is not None and self.expires_in is None and self.expires_at is None:
            raise ValueError("an access_token needs expires_in or expires_at")
        return self


class CredentialsView(BaseModel):
    """A connection's credential state: never a token."""

    model_config = ConfigDict(title="CredentialsView")

    connection_id: str
    status: Literal["active", "needs_reauth", "unavailable"] = Field(
        description="`needs_reauth`: the provider refused the grant; `unavailable`: the provider could not "
        "be reached after the access token expired (Ledgerhook keeps trying)."
    )
    grant_type: Literal["refresh_token", "client_credentials"]
    access_token_expires_at: datetime | None
    refresh_token_expires_at: datetime | None
    refreshed_at: datetime | None
    next_refresh_at: datetime | None
    failure_count: int
    last_error: str | None
    scope: str | None
    shared_by_connections: int = Field(
        description="Connections using this token set (one Xero consent may cover several tenants)."
    )
    reactivated: bool = Field(False, description="This hand-over made a broken connection work again.")


def _moment(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def view(state: CredentialsState) -> CredentialsView:
    """The public view of a credential state."""
    return CredentialsView(
        connection_id=state.connection_id,
        status=state.status.value,
        grant_type=state.grant_type.value,
        access_token_expires_at=_moment(state.access_expires_at),
        refresh_token_expires_at=_moment(state.refresh_expires_at),
        refreshed_at=_moment(state.refreshed_at),
        next_refresh_at=_moment(state.refresh_due_at)
        if state.status is not GrantStatus.NEEDS_REAUTH
        else None,
        failure_count=state.failure_count,
        last_error=state.last_error,
        scope=state.scope,
        shared_by_connections=state.connections,
        reactivated=state.reactivated,
    )


class CredentialsResource:
    """`GET` and `PUT` of a connection's credentials; `disconnect` for the connection's DELETE."""

    def __init__(
        self, store: ConnectionStore, manager: TokenManager | None, polls: PollState | None = None
    ) -> None:
        """`manager` None: the gateway has no key ring, so no tokens can be stored (409 to PUT).
        `polls`: the polling state, whose account is made due once it has tokens again."""
        self._store = store
        self._manager = manager
        self._polls = polls

    async def item(self, request: Request) -> Response:
        """`GET` or `PUT`."""
        if request.method == "PUT":
            return await self.put(request)
        return await self.get(request)

    async def get(self, request: Request) -> Response:
        """The credential state; 404 when the connection or its credentials are unknown."""
        connection = await find_connection(self._store, request)
        state = await self._manager.credentials_state(connection.id) if self._manager else None
        if state is None:
            raise Problem(404, "this connection has no credentials")
        return json_response(view(state))

    async def put(self, request: Request) -> Response:
        """Store handed-over credentials: 200 with the state (`reactivated` tells a reconnect)."""
        connection = await find_connection(self._store, request)
        given = validated(CredentialsPut, await read_json_object(request, MAX_BODY_BYTES))
        if connection.status is ConnectionStatus.DISCONNECTED:
            raise Problem(409, "the connection is disconnected; set its status to active first")
        if connection.provider not in SPECS:
            raise Problem(409, f"{connection.provider.value} connections use no OAuth tokens")
        if self._manager is None:
            raise Problem(409, "tokens cannot be stored: the gateway has no LEDGERHOOK_ENCRYPTION_KEYS")
        errors = _provider_rules(connection.provider, connection.provider_account_id, given)
        if errors:
            raise validation_problem(errors)
        now = self._manager.clock()
        expires_at = (
            now + given.expires_in
            if given.expires_in is not None
            else given.expires_at.timestamp()
            if given.expires_at is not None
            else None
        )
        credentials = Credentials(
            access_token=given.access_token,
            refresh_token=given.refresh_token,
            expires_at=expires_at,
            refresh_token_expires_at=(
                given.refresh_token_expires_at.timestamp() if given.refresh_token_expires_at else None
            ),
            scope=given.scope,
            grant_type=GrantType(given.grant_type),
            location=given.location,
            account=given.account_id,
        )
        ref = ConnectionRef(connection.id, connection.provider, connection.provider_account_id)
        before = await self._manager.credentials_state(connection.id)
        try:
            state = await self._manager.put_credentials(ref, credentials)
        except ProviderNotConfigured as exc:
            raise Problem(409, str(exc)) from None
        except KafkaError:
            # A reconnect's reactivated event could not be published: nothing was stored.
            raise Problem(
                503,
                "the broker is unavailable; nothing was stored, retry shortly",
                headers={"retry-after": "5"},
            ) from None
        except ValueError as exc:
            raise validation_problem([{"pointer": "#", "detail": str(exc)}]) from None
        if self._polls is not None:
            # An account a poll found without usable tokens waits long before it is tried again;
            # with tokens it is polled at once (and a reconnect publishes what changed meanwhile).
            await self._polls.due_now(connection.provider, connection.provider_account_id)
        actor = actor_of(request)
        # The token store offers no transaction to share: the entry follows the hand-over at once.
        await audit.record_change(
            self._manager.store.pool,
            actor=actor.principal.name,
            role=actor.principal.role.value,
            via=actor.via,
            client=actor.client,
            action="credentials.put",
            target=f"connection:{connection.id}",
            changes=_handover_changes(before, state, given),
            connection_id=connection.id,
            provider=connection.provider.value,
        )
        log.info(
            "credentials stored",
            extra={
                "connection_id": connection.id,
                "provider": connection.provider.value,
                "action": state.action,
                "reactivated": state.reactivated,
            },
        )
        return json_response(view(state))

    async def disconnect(self, connection_id: str) -> None:
        """Before a connection is disconnected: revoke at the provider where possible, erase tokens."""
        if self._manager is None:
            return
        result = await self._manager.disconnect(connection_id)
        if result.had_credentials:
            log.info(
                "credentials erased",
                extra={"connection_id": connection_id, "revoked_at_provider": result.revoked_at_provider},
            )


def _handover_changes(
    before: CredentialsState | None, after: CredentialsState, given: CredentialsPut
) -> dict[str, Any]:
    """What a hand-over changed, for the audit trail: kinds, expiries and whether tokens were
    given; never a token."""

    def moment(seconds: float | None) -> str | None:
        found = _moment(seconds)
        return None if found is None else found.isoformat()

    members = {
        "grant_type": (before.grant_type.value if before else None, after.grant_type.value),
        "status": (before.status.value if before else None, after.status.value),
        "access_token_expires_at": (
            moment(before.access_expires_at) if before else None,
            moment(after.access_expires_at),
        ),
        "refresh_token_expires_at": (
            moment(before.refresh_expires_at) if before else None,
            moment(after.refresh_expires_at),
        ),
        "scope": (before.scope if before else None, after.scope),
    }
    changes: dict[str, Any] = {
        member: {"from": old, "to": new} for member, (old, new) in members.items() if old != new
    }
    changes["access_token_changed"] = given.access_token is not None
    changes["refresh_token_changed"] = given.refresh_token is not None
    if after.reactivated:
        changes["reactivated"] = True
    return changes


def _provider_rules(provider: Provider, account: str, given: CredentialsPut) -> list[dict[str, str]]:
    errors = []
    if given.grant_type == "client_credentials" and not SPECS[provider].supports_client_credentials:
        errors.append(
            {"pointer": "#/grant_type", "detail": f"{provider.value} has no client credentials grant"}
        )
    if given.location is not None:
        if provider is not Provider.ZOHO_BOOKS:
            errors.append({"pointer": "#/location", "detail": "only zoho-books connections take a location"})
        elif given.location.lower() not in ZOHO_DATA_CENTRES:
            known = ", ".join(ZOHO_DATA_CENTRES)
            errors.append({"pointer": "#/location", "detail": f"must be a Zoho data centre: {known}"})
    if given.account_id is not None and provider is not Provider.NETSUITE:
        errors.append({"pointer": "#/account_id", "detail": "only netsuite connections take an account_id"})
    if provider is Provider.NETSUITE and given.account_id is None and not NETSUITE_ACCOUNT.fullmatch(account):
        errors.append(
            {
                "pointer": "#/account_id",
                "detail": "required: the connection's provider_account_id is not a NetSuite account id",
            }
        )
    return errors


def with_credentials(document: dict[str, Any]) -> dict[str, Any]:
    """The admin OpenAPI document with the credentials path and its schemas added."""
    add_schemas(document, [(CredentialsPut, "validation"), (CredentialsView, "serialization")])
    reasons = {
        400: "The body is not JSON.",
        401: "Missing or wrong admin token.",
        404: "No connection with this id (GET: or it has no credentials).",
        409: "The connection is disconnected, its provider uses no OAuth, the provider's app is not "
        "configured, or the gateway has no key ring.",
        413: "The body is too large.",
        422: "Invalid members, listed in `errors`.",
        503: "The database did not answer; retry later.",
    }
    state = {"application/json": {"schema": {"$ref": REF.format(model="CredentialsView")}}}
    document["paths"]["/connections/{connection_id}/credentials"] = {
        "parameters": [CONNECTION_ID_PARAMETER],
        "get": {
            "operationId": "getCredentials",
            "summary": "A connection's credential state (never a token)",
            "responses": {"200": {"description": "The state.", "content": state}}
            | problem_responses(reasons, 401, 404, 503),
        },
        "put": {
            "operationId": "putCredentials",
            "summary": "Hand over OAuth tokens (first connect or reconnect); tokens are write-only",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": REF.format(model="CredentialsPut")}}},
            },
            "responses": {"200": {"description": "Stored.", "content": state}}
            | problem_responses(reasons, 400, 401, 404, 409, 413, 422, 503),
        },
    }
    return document
