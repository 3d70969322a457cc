"""`TokenManager`: a valid access token for any connection, refreshed exactly once however many ask.

The facade callers use: an in-process cache for fresh tokens, one refresh task per grant in the
process (single flight), the refresher's entry, and the hand-over and disconnect calls. The refresh
itself, under the grant's row lock, is `provider_auth.tokens.refresh`; the rules are in
docs/tokens.md. Each refresh is an OpenTelemetry span of the tracer handed in (a no-op one by
default).
"""

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.trace import NoOpTracer, Tracer

from provider_auth.accounts.events import ConnectionEvents
from provider_auth.accounts.store import ConnectionStatus
from provider_auth.oauth.apps import OAuthApp, resolve_url
from provider_auth.oauth.client import TokenClient
from provider_auth.providers import Provider
from provider_auth.tokens import revoke
from provider_auth.tokens.errors import (
    ConnectionPaused,
    NoCredentials,
    ReauthRequired,
    TokenError,
    TokenUnavailable,
    unusable,
)
from provider_auth.tokens.grants import ConnectionGrant, GrantRecord, GrantStatus
from provider_auth.tokens.handover import (
    ConnectionRef,
    Credentials,
    CredentialsState,
    Handover,
    credentials_state,
)
from provider_auth.tokens.metrics import TokenMetrics
from provider_auth.tokens.policy import TokenPolicy, cache_until, is_fresh
from provider_auth.tokens.refresh import GrantRefresh, Settled
from provider_auth.tokens.revoke import DisconnectResult
from provider_auth.tokens.store import CredentialStore

__all__ = ["AccessToken", "RefreshOutcome", "TokenManager"]

log = logging.getLogger("ledgerhook.tokens")

RefreshOutcome = Literal["refreshed", "not_due", "needs_reauth", "unavailable", "failed", "gone", "error"]


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A usable access token (the value is hidden from `repr`)."""

    token: str = field(repr=False)
    expires_at: float
    provider: Provider
    connection_id: str
    grant_id: str
    provider_account_id: str
    # Where the provider's API answers for this grant (NetSuite account, Zoho data centre).
    api_base_url: str | None
    scope: str | None


@dataclass(slots=True)
class _Cached:
    token: AccessToken
    fresh_until: float


class TokenManager:
    """Access tokens for connections: cached while fresh, refreshed once per grant at a time."""

    def __init__(
        self,
        store: CredentialStore,
        client: TokenClient,
        apps: Mapping[Provider, OAuthApp],
        events: ConnectionEvents,
        *,
        policy: TokenPolicy | None = None,
        metrics: TokenMetrics | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.apps = dict(apps)
        self.events = events
        self.policy = policy or TokenPolicy()
        self.metrics = metrics or TokenMetrics()
        self.clock = clock
        self.tracer = tracer if tracer is not None else NoOpTracer()
        self._rng = rng or random.Random()
        self._cache: dict[str, _Cached] = {}
        self._flights: dict[str, asyncio.Task[Settled]] = {}

    async def get_access_token(self, connection_id: str) -> AccessToken:
        """An access token valid for at least the skew.

        Raises NoCredentials (none stored, or disconnected), ConnectionPaused, ReauthRequired (the
        customer must reconnect), TokenUnavailable (expired and the provider cannot be reached;
        retry later) or ProviderNotConfigured.
        """
        cached = self._cache.get(connection_id)
        if cached is not None and self.clock() < cached.fresh_until:
            return cached.token
        # A refresh of this connection's grant is under way here: join it without a query.
        if cached is not None and (flight := self._flights.get(cached.token.grant_id)) is not None:
            settled = await asyncio.shield(flight)
            if settled.error is None:
                return self._remember(connection_id, settled.record, cached.token.provider_account_id)
        return await self._token(connection_id, await self._in_use(connection_id))

    async def refused(self, connection_id: str, token: str) -> AccessToken:
        """A token the provider will accept, after it refused `token` (an HTTP 401) for the connection.

        Under the grant's lock: when the stored access token is no longer `token` (another caller or
        process refreshed already) the stored one is returned without calling the provider;
        otherwise the grant is refreshed now, however fresh `token` looked. Raises the errors of
        `get_access_token`.
        """
        cached = self._cache.pop(connection_id, None)
        if cached is not None and cached.token.token == token:
            # Not served from the cache again, to this connection or another on the same grant.
            self._forget_grant(cached.token.grant_id)
        found = await self._in_use(connection_id)
        record = found.record
        error = unusable(record, self.clock())
        if error is not None:
            raise error
        # A flight already under way (joined) may be one that did not know `token` was refused: then
        # a second one, which does, settles it.
        for _ in range(2):
            settled = await self._refresh(record.id, proactive=False, rejected=token)
            if settled.error is not None:
                raise settled.error
            if self.store.open_access(settled.record) != token:
                return self._remember(connection_id, settled.record, found.provider_account_id)
        raise TokenUnavailable(f"grant {record.id} still holds the refused access token", 1.0)

    async def refresh_grant(self, grant_id: str) -> RefreshOutcome:
        """Refresh a grant if it is due (the proactive refresher's call); returns the outcome:
        `refreshed`, `not_due`, `needs_reauth`, `unavailable`, `failed`, `gone`, or `error` for
        anything unexpected (logged)."""
        try:
            settled = await self._refresh(grant_id, proactive=True)
        except NoCredentials:
            return "gone"
        except TokenError:
            return "failed"
        except Exception:
            # One grant's trouble (a ciphertext under a key no longer in the ring, ...) must not
            # stop the refresher's pass over the others.
            log.exception("refresh of a grant failed", extra={"grant_id": grant_id})
            return "error"
        if isinstance(settled.error, ReauthRequired):
            return "needs_reauth"
        if settled.error is not None:
            return "unavailable" if settled.record.status is GrantStatus.UNAVAILABLE else "failed"
        return "refreshed" if settled.refreshed else "not_due"

    async def put_credentials(self, ref: ConnectionRef, credentials: Credentials) -> CredentialsState:
        """Store credentials handed over for a connection (its first ones, or a reconnect).

        A token set already known (its refresh token is some grant's current or recent one) joins
        that grant instead of starting a second refresh chain on the same token. A connection that
        was broken works again: `ConnectionEvents.reactivated` is called for the grant's connections.
        Raises ValueError for unusable credentials and ProviderNotConfigured.
        """
        handover = Handover(
            store=self.store,
            apps=self.apps,
            events=self.events,
            policy=self.policy,
            clock=self.clock,
            rng=self._rng,
        )
        state = await handover.put(ref, credentials)
        self._forget_grant(state.grant_id)
        self._cache.pop(ref.connection_id, None)
        return state

    async def credentials_state(self, connection_id: str) -> CredentialsState | None:
        """The connection's credential state (never a token), or None when it has none."""
        return await credentials_state(self.store, connection_id)

    async def disconnect(self, connection_id: str) -> DisconnectResult:
        """Give the grant back where the provider has an endpoint for it, and erase the tokens now
        (unless other connections still use the grant); see `provider_auth.tokens.revoke`."""
        found = await self.store.for_connection(connection_id)
        if found is None:
            self._cache.pop(connection_id, None)
            return revoke.NOTHING_STORED
        app = self.apps.get(found.record.provider)
        access_token: str | None = None
        if revoke.needs_access_token(found, app):
            try:
                # Whatever the connection's status: a paused connection is given back too.
                access_token = (await self._token(connection_id, found)).token
            except TokenError:
                access_token = None  # the grant cannot be used: nothing to give back with it
        result = await revoke.disconnect(
            self.store, self.client, app, found, connection_id, access_token=access_token
        )
        self._cache.pop(connection_id, None)
        if result.erased:
            self._forget_grant(found.record.id)
        return result

    async def close(self) -> None:
        """Wait for refreshes in flight (never cut one between the provider's answer and the write)."""
        flights = list(self._flights.values())
        if flights:
            await asyncio.gather(*flights, return_exceptions=True)

    async def _in_use(self, connection_id: str) -> ConnectionGrant:
        """The connection's grant, when the connection may be handed a token."""
        found = await self.store.for_connection(connection_id)
        if found is None:
            self._cache.pop(connection_id, None)
            raise NoCredentials(f"connection {connection_id} has no credentials")
        if found.connection_status is ConnectionStatus.DISCONNECTED:
            self._cache.pop(connection_id, None)
            raise NoCredentials(f"connection {connection_id} is disconnected")
        if found.connection_status is ConnectionStatus.PAUSED:
            # Paused: no token is handed out and none is refreshed for it until it is resumed.
            self._cache.pop(connection_id, None)
            raise ConnectionPaused(f"connection {connection_id} is paused")
        return found

    async def _token(self, connection_id: str, found: ConnectionGrant) -> AccessToken:
        """The connection's token from its grant, refreshed first when it is not fresh."""
        record = found.record
        error = unusable(record, self.clock())
        if error is not None:
            raise error
        if not is_fresh(self.policy, record.access_token_expiry, self.clock()):
            settled = await self._refresh(record.id, proactive=False)
            if settled.error is not None:
                raise settled.error
            record = settled.record
        return self._remember(connection_id, record, found.provider_account_id)

    def _remember(self, connection_id: str, record: GrantRecord, account: str) -> AccessToken:
        access = self.store.open_access(record)
        if access is None or record.access_expires_at is None:
            raise TokenUnavailable(f"grant {record.id} holds no access token")
        token = AccessToken(
            token=access,
            expires_at=record.access_expires_at,
            provider=record.provider,
            connection_id=connection_id,
            grant_id=record.id,
            provider_account_id=account,
            api_base_url=self._api_base_url(record),
            scope=record.scope,
        )
        now = self.clock()
        fresh_until = cache_until(self.policy, record.access_expires_at, now)
        if fresh_until > now:
            self._cache[connection_id] = _Cached(token, fresh_until)
        return token

    def _api_base_url(self, record: GrantRecord) -> str | None:
        app = self.apps.get(record.provider)
        if app is None:
            return None
        try:
            return resolve_url(app.api_base_url, record.params, record.extra)
        except ValueError:
            return None

    def _forget_grant(self, grant_id: str) -> None:
        for connection_id in [c for c, e in self._cache.items() if e.token.grant_id == grant_id]:
            del self._cache[connection_id]

    def _refresh(
        self, grant_id: str, *, proactive: bool, rejected: str | None = None
    ) -> "asyncio.Future[Settled]":
        """The grant's refresh: the one already in flight in this process, or a new one (which, given
        the access token the provider `rejected`, refreshes while the grant still holds it)."""
        flight = self._flights.get(grant_id)
        if flight is None:
            refresh = GrantRefresh(
                store=self.store,
                client=self.client,
                apps=self.apps,
                events=self.events,
                policy=self.policy,
                metrics=self.metrics,
                clock=self.clock,
                rng=self._rng,
                tracer=self.tracer,
            )
            # The task copies the current context: a refresh a traced poll needs is a child of its span.
            flight = asyncio.create_task(
                refresh.run(grant_id, proactive=proactive, rejected=rejected), name=f"refresh {grant_id}"
            )
            self._flights[grant_id] = flight
            flight.add_done_callback(lambda task: self._landed(grant_id, task))
        # shield: a caller that gives up does not cancel the refresh the others wait for, and a
        # refresh is never cut between the provider's answer and the write of the new tokens.
        return asyncio.shield(flight)

    def _landed(self, grant_id: str, task: "asyncio.Task[Settled]") -> None:
        if self._flights.get(grant_id) is task:
            del self._flights[grant_id]
        if task.cancelled() or task.exception() is not None:
            return
        settled = task.result()
        if settled.refreshed or settled.error is not None:
            # New tokens, or a grant that cannot serve: nothing cached for it stands.
            self._forget_grant(grant_id)
