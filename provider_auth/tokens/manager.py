"""`TokenManager`: a valid access token for any connection, refreshed exactly once however many ask.

The rules, and why (PROVIDERS.md, "OAuth tokens"; docs/tokens.md):

- **Fresh path.** A token valid for at least the skew is served from an in-process cache (no
  database round trip) until `expires_at - skew` or `cache_seconds` after it was read, whichever
  comes first; the second bound is how fast another process's disconnect or reauth reaches us.
- **One refresh, everywhere.** In a process, concurrent callers for one grant share one asyncio
  task. Across processes and hosts, the refresh runs in a transaction holding the grant's row lock
  (`SELECT ... FOR UPDATE`): the row is re-read after taking the lock (someone else may have just
  refreshed), the provider is called with a bounded timeout, and the new tokens (the rotated refresh
  token above all) are written before the lock is released.
- **Lost answers.** A refresh sent without an answer may have rotated the refresh token at the
  provider. Where the provider documents a grace for reusing it (Xero: 30 minutes) the same token is
  retried only inside that grace, counted from the first loss; past it the grant is dead. Where no
  grace is documented the same token is retried until the provider answers, and its invalid_grant is
  final. A lost answer is retried once at once, still under the lock.
- **Races are not revocations.** Before an `invalid_grant` is called permanent the lock is released
  and the row read again under a new lock: if another writer stored newer tokens in between, it was
  a race, and their token is used.
- **Failure classes.** `invalid_grant` (and provider aliases), `invalid_client`,
  `unauthorized_client`: the grant is `needs_reauth` and each of its connections is reported broken
  once (`ConnectionEvents.broken`), in the same transaction. 5xx, 429, timeouts: backoff with
  jitter, no event, while the current access token still works; once it has expired and
  `max_transient_failures` attempts failed the grant is `unavailable` and its connections are
  reported broken with `refresh_unavailable`. Only the refresher keeps trying such a grant; its
  first success reports them back (`reactivated`).
"""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

import asyncpg

from provider_auth import audit
from provider_auth.accounts.events import AuthFailure, AuthFailureReason, ConnectionEvents, ReactivationReason
from provider_auth.audit import AuditAction
from provider_auth.oauth.apps import GrantParams, OAuthApp, resolve_url
from provider_auth.oauth.client import TokenClient, TokenRequestError, TokenSet
from provider_auth.oauth.specs import SPECS, ZOHO_DATA_CENTRES, OAuthSpec
from provider_auth.providers import Provider
from provider_auth.tokens.errors import (
    NoCredentials,
    ProviderNotConfigured,
    ReauthRequired,
    TokenError,
    TokenUnavailable,
)
from provider_auth.tokens.metrics import TokenMetrics
from provider_auth.tokens.store import (
    CredentialStore,
    GrantRecord,
    GrantStatus,
    GrantType,
    NewTokens,
    fingerprint,
    timestamp,
)

__all__ = [
    "AccessToken",
    "ConnectionRef",
    "Credentials",
    "CredentialsState",
    "DisconnectResult",
    "TokenManager",
    "TokenPolicy",
]

log = logging.getLogger("ledgerhook.tokens")

DAY = 86_400.0
# Connection-level errors of the database: the lock and the transaction are gone with them.
_DB_LOST = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError, OSError)


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """Timing rules of the token manager and the refresher (all in seconds)."""

    # get_access_token hands out tokens valid for at least this long.
    skew: float = 300.0
    # The refresher renews tokens this long before they expire, minus up to `jitter` more.
    window: float = 600.0
    jitter: float = 120.0
    # Transient failures tolerated after the access token expired before refresh_unavailable.
    max_transient_failures: int = 5
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    # Longest a cached fresh token is served without looking at the database again.
    cache_seconds: float = 30.0
    # How long a caller waits for another process's refresh of the same grant.
    lock_timeout: float = 30.0
    # Keep-alive: refresh an idle refresh token when a quarter of its remaining life is left,
    # at most this long before its inactivity expiry.
    keepalive_margin: float = 7 * DAY


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


@dataclass(frozen=True, slots=True)
class ConnectionRef:
    """The connection credentials are handed over for."""

    connection_id: str
    provider: Provider
    provider_account_id: str


@dataclass(frozen=True, slots=True)
class Credentials:
    """Tokens a product hands over after its OAuth consent screen (values hidden from `repr`)."""

    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    refresh_token_expires_at: float | None = None
    scope: str | None = None
    grant_type: GrantType = GrantType.REFRESH_TOKEN
    # Zoho: the data centre the user registered in (`location` of Zoho's authorization answer).
    location: str | None = None
    # NetSuite: the account id in the token URL; defaults to the connection's provider account id.
    account: str | None = None


@dataclass(frozen=True, slots=True)
class CredentialsState:
    """What can be said about a connection's credentials without showing them."""

    connection_id: str
    grant_id: str
    provider: Provider
    grant_type: GrantType
    status: GrantStatus
    access_expires_at: float | None
    refresh_expires_at: float | None
    refreshed_at: float | None
    refresh_due_at: float | None
    failure_count: int
    last_error: str | None
    scope: str | None
    # How many connections share the grant (a Xero token set covering several tenants).
    connections: int
    # What the last hand-over did: stored, reconnected, linked (an older token set of this grant).
    action: str | None = None
    reactivated: bool = False


@dataclass(frozen=True, slots=True)
class DisconnectResult:
    """What disconnecting a connection did to its credentials."""

    had_credentials: bool
    revoked_at_provider: bool
    erased: bool


@dataclass(slots=True)
class _Cached:
    token: AccessToken
    fresh_until: float


@dataclass(frozen=True, slots=True)
class _Recheck:
    """An invalid_grant to confirm under a new lock before calling it permanent."""

    used_version: int
    error: TokenRequestError


@dataclass(frozen=True, slots=True)
class _Done:
    record: GrantRecord
    refreshed: bool
    error: TokenError | None = None


class _Salvage(Exception):
    """Tokens obtained from the provider whose write lost its database connection."""

    def __init__(self, record: GrantRecord, tokens: NewTokens, rotated: bool, due_at: float | None) -> None:
        super().__init__("token write lost its database connection")
        self.record = record
        self.tokens = tokens
        self.rotated = rotated
        self.due_at = due_at


_RACE = object()


class TokenManager:
    """Access tokens for connections; see the module docstring for the rules."""

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
    ) -> None:
        self.store = store
        self.client = client
        self.apps = dict(apps)
        self.events = events
        self.policy = policy or TokenPolicy()
        self.metrics = metrics or TokenMetrics()
        self.clock = clock
        self._rng = rng or random.Random()
        self._cache: dict[str, _Cached] = {}
        self._flights: dict[str, asyncio.Task[_Done]] = {}

    # ----- the hot path --------------------------------------------------------------------

    async def get_access_token(self, connection_id: str) -> AccessToken:
        """An access token valid for at least the skew.

        Raises NoCredentials (none stored, or disconnected), ReauthRequired (the customer must
        reconnect), TokenUnavailable (expired and the provider cannot be reached; retry later) or
        ProviderNotConfigured.
        """
        cached = self._cache.get(connection_id)
        if cached is not None and self.clock() < cached.fresh_until:
            return cached.token
        return await self._load(connection_id, cached)

    async def _load(self, connection_id: str, cached: _Cached | None) -> AccessToken:
        # A refresh of this connection's grant is under way here: join it without a query.
        if cached is not None and (flight := self._flights.get(cached.token.grant_id)) is not None:
            done = await asyncio.shield(flight)
            if done.error is None:
                return self._remember(connection_id, done.record, cached.token.provider_account_id)
        found = await self.store.for_connection(connection_id)
        if found is None:
            self._cache.pop(connection_id, None)
            raise NoCredentials(f"connection {connection_id} has no credentials")
        record, account = found
        _check_usable(record, self.clock())
        if not self._fresh(record):
            done = await self._refresh(record.id, proactive=False)
            if done.error is not None:
                raise done.error
            record = done.record
        return self._remember(connection_id, record, account)

    def _fresh(self, record: GrantRecord) -> bool:
        return (
            record.sealed_access is not None
            and record.access_expires_at is not None
            and record.access_expires_at - self.clock() >= self.policy.skew
        )

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
        fresh_until = min(record.access_expires_at - self.policy.skew, now + self.policy.cache_seconds)
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

    # ----- single flight ---------------------------------------------------------------------

    def _refresh(self, grant_id: str, *, proactive: bool) -> "asyncio.Future[_Done]":
        flight = self._flights.get(grant_id)
        if flight is None:
            flight = asyncio.create_task(
                self._refresh_locked(grant_id, proactive), name=f"refresh {grant_id}"
            )
            self._flights[grant_id] = flight
            flight.add_done_callback(lambda task: self._landed(grant_id, task))
        # shield: a caller that gives up does not cancel the refresh the others wait for, and a
        # refresh is never cut between the provider's answer and the write of the new tokens.
        return asyncio.shield(flight)

    def _landed(self, grant_id: str, task: "asyncio.Task[_Done]") -> None:
        if self._flights.get(grant_id) is task:
            del self._flights[grant_id]
        if not task.cancelled() and task.exception() is None and task.result().refreshed:
            self._forget_grant(grant_id)

    async def _refresh_locked(self, grant_id: str, proactive: bool) -> _Done:
        recheck: _Recheck | None = None
        for _ in range(4):
            outcome = await self._attempt(grant_id, proactive, recheck)
            if isinstance(outcome, _Recheck):
                recheck = outcome
                continue
            if outcome is _RACE:
                recheck = None
                proactive = False  # someone stored newer tokens: only refresh if they are not fresh
                continue
            assert isinstance(outcome, _Done)
            return outcome
        return _Done(await self._peek(grant_id), False, TokenUnavailable("the refresh kept racing", 1.0))

    async def _peek(self, grant_id: str) -> GrantRecord:
        async with self.store.pool.acquire() as conn, conn.transaction():
            record = await self.store.lock(conn, grant_id)
        if record is None:
            raise NoCredentials(f"grant {grant_id} is gone")
        return record

    async def _attempt(self, grant_id: str, proactive: bool, recheck: _Recheck | None) -> object:
        """One locked pass over a grant: a _Done, a _Recheck to confirm, or _RACE."""
        try:
            async with self.store.pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                try:
                    await conn.execute(f"SET LOCAL lock_timeout = '{int(self.policy.lock_timeout * 1000)}ms'")
                    record = await self.store.lock(conn, grant_id)
                    if recheck is not None:
                        outcome = await self._confirm(conn, record, recheck)
                    else:
                        outcome = await self._step(conn, record, proactive)
                    if isinstance(outcome, _Recheck):
                        await tx.rollback()  # release the lock so a concurrent writer can land
                        return outcome
                    await tx.commit()
                except BaseException:
                    # The connection may be gone with the error (then so is the transaction).
                    with contextlib.suppress(Exception):
                        await tx.rollback()
                    raise
                return outcome
        except _Salvage as salvage:
            return await self._salvage(salvage)
        except asyncpg.LockNotAvailableError:
            raise TokenUnavailable("another process is refreshing this grant", 1.0) from None
        except _DB_LOST as exc:
            raise TokenUnavailable(f"the database is unreachable ({type(exc).__name__})", 1.0) from exc

    # ----- under the lock ------------------------------------------------------------------

    async def _step(self, conn: asyncpg.Connection, record: GrantRecord | None, proactive: bool) -> object:
        now = self.clock()
        if record is None:
            raise NoCredentials("the grant no longer exists")
        if record.status is GrantStatus.NEEDS_REAUTH:
            return _Done(record, False, _reauth_error(record))
        if record.status is GrantStatus.UNAVAILABLE and not proactive:
            return _Done(record, False, TokenUnavailable("the provider is unavailable", _wait(record, now)))
        if proactive:
            needed = record.refresh_due_at is not None and record.refresh_due_at <= now
            if needed and record.status is GrantStatus.UNAVAILABLE and self._fresh(record):
                # Refreshed already, but the broker was down when the recovery was to be reported.
                return await self._report_recovery(conn, record)
        else:
            needed = not self._fresh(record)
        if not needed:
            return _Done(record, False)
        if record.next_attempt_at is not None and now < record.next_attempt_at:
            if _access_valid(record, now):
                return _Done(record, False)
            return _Done(record, False, TokenUnavailable("waiting to retry the refresh", _wait(record, now)))
        app = self.apps.get(record.provider)
        if app is None:
            raise ProviderNotConfigured(f"LEDGERHOOK_{record.provider.env_name}_CLIENT_ID is not set")
        spec = SPECS[record.provider]
        if record.lost_at is not None and not _may_reuse(spec, record.lost_at, now):
            # Xero: a refresh token whose answer was lost may be reused for 30 minutes only.
            return await self._break(
                conn, record, AuthFailureReason.INVALID_GRANT, None, "refresh answer lost, grace over"
            )
        return await self._call_provider(conn, record, app, spec, now)

    async def _call_provider(
        self, conn: asyncpg.Connection, record: GrantRecord, app: OAuthApp, spec: OAuthSpec, now: float
    ) -> object:
        lost_at = record.lost_at
        refresh_token = self.store.open_refresh(record)
        if record.grant_type is GrantType.REFRESH_TOKEN and refresh_token is None:
            raise NoCredentials(f"grant {record.id} holds no refresh token")
        for attempt in (1, 2):
            started = time.monotonic()
            try:
                if record.grant_type is GrantType.CLIENT_CREDENTIALS:
                    tokens = await self.client.client_credentials(app, record.params)
                else:
                    assert refresh_token is not None
                    tokens = await self.client.refresh(app, refresh_token, record.params)
            except TokenRequestError as exc:
                self._observe(record.provider, started, exc.reason if exc.kind == "permanent" else exc.kind)
                if exc.kind == "lost":
                    first_loss = lost_at is None
                    lost_at = lost_at if lost_at is not None else self.clock()
                    await audit.record(
                        conn,
                        provider=record.provider.value,
                        grant_id=record.id,
                        action=AuditAction.LOST_RESPONSE,
                        detail={"attempt": attempt, "first_loss": first_loss},
                    )
                    if attempt == 1 and _may_reuse(spec, lost_at, self.clock()):
                        continue
                return await self._failed(conn, record, exc, lost_at)
            self._observe(record.provider, started, "success")
            return await self._succeeded(conn, record, spec, tokens, refresh_token)
        raise AssertionError("unreachable")

    def _observe(self, provider: Provider, started: float, outcome: str | None) -> None:
        self.metrics.refresh_seconds.labels(provider.value).observe(time.monotonic() - started)
        self.metrics.refreshes.labels(provider.value, outcome or "unknown").inc()

    async def _succeeded(
        self,
        conn: asyncpg.Connection,
        record: GrantRecord,
        spec: OAuthSpec,
        tokens: TokenSet,
        old_refresh: str | None,
    ) -> _Done:
        now = self.clock()
        rotated = tokens.refresh_token is not None and tokens.refresh_token != old_refresh
        new = NewTokens(
            access_token=tokens.access_token,
            access_expires_at=now + tokens.expires_in,
            refresh_token=tokens.refresh_token if rotated else None,
            refresh_expires_at=self._refresh_expiry(spec, record, tokens, now),
            scope=tokens.scope,
            extra=tokens.extra,
        )
        due = self._due_at(spec, record.grant_type, new.access_expires_at, new.refresh_expires_at, now)
        try:
            saved = await self.store.save_refreshed(
                conn, record.id, tokens=new, rotated=rotated, now=now, due_at=due
            )
            assert saved is not None
            await audit.record(
                conn,
                provider=record.provider.value,
                grant_id=record.id,
                action=AuditAction.ROTATED if rotated else AuditAction.REFRESHED,
                detail={
                    "access_expires_at": timestamp(new.access_expires_at).isoformat(),  # type: ignore[union-attr]
                    "token_version": saved.token_version,
                },
            )
            if record.status is not GrantStatus.ACTIVE:
                saved = await self._recover_or_defer(conn, saved)
        except _DB_LOST:
            # The provider has already moved on to these tokens: they must not be lost with the lock.
            raise _Salvage(record, new, rotated, due) from None
        return _Done(saved, True)

    async def _recover_or_defer(self, conn: asyncpg.Connection, saved: GrantRecord) -> GrantRecord:
        """Report a recovered grant's connections; if that fails (the broker is down) keep the new
        tokens anyway, leave the grant unavailable and let the next refresher pass report it."""
        try:
            async with conn.transaction():  # a savepoint: its failure leaves the token write standing
                await self._recovered(conn, saved)
        except _DB_LOST:
            raise
        except Exception:
            log.exception(
                "could not report a recovered grant; retrying shortly", extra={"grant_id": saved.id}
            )
            retry_at = self.clock() + self.policy.backoff_base * 5
            await self.store.set_status(conn, saved.id, GrantStatus.UNAVAILABLE, retry_at)
            return replace(saved, status=GrantStatus.UNAVAILABLE, refresh_due_at=retry_at)
        return saved

    async def _report_recovery(self, conn: asyncpg.Connection, record: GrantRecord) -> _Done:
        now = self.clock()
        due = self._due_at(
            SPECS[record.provider],
            record.grant_type,
            record.access_expires_at,
            record.refresh_expires_at,
            now,
        )
        await self.store.set_status(conn, record.id, GrantStatus.ACTIVE, due)
        active = replace(record, status=GrantStatus.ACTIVE, refresh_due_at=due)
        return _Done(await self._recover_or_defer(conn, active), False)

    def _refresh_expiry(
        self, spec: OAuthSpec, record: GrantRecord, tokens: TokenSet, now: float
    ) -> float | None:
        if tokens.refresh_expires_in is not None:
            return now + tokens.refresh_expires_in
        if spec.refresh_idle_lifetime is not None and record.grant_type is GrantType.REFRESH_TOKEN:
            # Xero 60 days, QuickBooks 100 days: counted from the last use, which is now.
            return now + spec.refresh_idle_lifetime
        return None  # keep what is stored (a hard expiry handed over with the credentials)

    def _due_at(
        self,
        spec: OAuthSpec,
        grant_type: GrantType,
        access_expires_at: float | None,
        refresh_expires_at: float | None,
        now: float,
    ) -> float | None:
        """When the refresher should next renew: ahead of the access token's expiry (window plus
        jitter, but never before half its remaining life), or to keep an idle refresh token alive."""
        candidates: list[float] = []
        if access_expires_at is not None:
            ahead = access_expires_at - self.policy.window - self._rng.uniform(0, self.policy.jitter)
            candidates.append(max(ahead, now + (access_expires_at - now) / 2))
        if (
            refresh_expires_at is not None
            and grant_type is GrantType.REFRESH_TOKEN
            and spec.refresh_idle_lifetime is not None
        ):
            remaining = max(0.0, refresh_expires_at - now)
            candidates.append(refresh_expires_at - min(self.policy.keepalive_margin, remaining / 4))
        return min(candidates) if candidates else None

    async def _recovered(self, conn: asyncpg.Connection, record: GrantRecord) -> None:
        ids = await self.store.connection_ids(conn, record.id)
        changed = await self.events.reactivated(
            conn,
            ids,
            ReactivationReason.RECOVERED,
            timestamp(self.clock()),  # type: ignore[arg-type]
        )
        await audit.record(
            conn,
            provider=record.provider.value,
            grant_id=record.id,
            action=AuditAction.RECOVERED,
            detail={"connections": len(ids), "reactivated": len(changed)},
        )
        self.metrics.transitions.labels(record.provider.value, "active").inc()

    async def _failed(
        self, conn: asyncpg.Connection, record: GrantRecord, exc: TokenRequestError, lost_at: float | None
    ) -> object:
        if exc.kind == "permanent":
            reason = _failure_reason(exc.reason)
            if reason is AuthFailureReason.INVALID_GRANT and record.grant_type is GrantType.REFRESH_TOKEN:
                # Maybe another process stored a newer token while we used this one: look again.
                return _Recheck(record.token_version, exc)
            return await self._break(conn, record, reason, exc.provider_error, str(exc))
        now = self.clock()
        spec = SPECS[record.provider]
        failures = record.failure_count + 1
        delay = min(self.policy.backoff_cap, self.policy.backoff_base * 2 ** (failures - 1))
        delay *= self._rng.uniform(0.5, 1.0)
        if exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self.policy.backoff_cap))
        # A lost answer matters only where the refresh token may have rotated with it.
        keep_lost = lost_at if spec.rotates and record.grant_type is GrantType.REFRESH_TOKEN else None
        access_valid = _access_valid(record, now)
        status = record.status
        give_up = not access_valid and failures >= self.policy.max_transient_failures
        if give_up and status is GrantStatus.ACTIVE:
            status = GrantStatus.UNAVAILABLE
        await self.store.save_failure(
            conn,
            record.id,
            status=status,
            failure_count=failures,
            next_attempt_at=now + delay,
            lost_at=keep_lost,
            last_error=f"{exc.kind}: {exc}",
        )
        await audit.record(
            conn,
            provider=record.provider.value,
            grant_id=record.id,
            action=AuditAction.FAILED,
            detail={
                "kind": exc.kind,
                "status": exc.status,
                "failures": failures,
                "retry_in": round(delay, 3),
            },
        )
        if status is not record.status:
            ids = await self.store.connection_ids(conn, record.id)
            failure = AuthFailure(
                provider=record.provider.value,
                reason=AuthFailureReason.REFRESH_UNAVAILABLE,
                provider_error=exc.provider_error,
                occurred_at=timestamp(now),  # type: ignore[arg-type]
            )
            changed = await self.events.broken(conn, ids, failure)
            await audit.record(
                conn,
                provider=record.provider.value,
                grant_id=record.id,
                action=AuditAction.UNAVAILABLE,
                detail={"connections": len(ids), "reported": len(changed), "failures": failures},
            )
            self.metrics.transitions.labels(record.provider.value, "unavailable").inc()
            self._forget_grant(record.id)
        if access_valid:
            return _Done(record, False)
        return _Done(record, False, TokenUnavailable(f"refresh failed ({exc.kind})", delay))

    async def _confirm(
        self, conn: asyncpg.Connection, record: GrantRecord | None, recheck: _Recheck
    ) -> object:
        """Under a new lock: a race when the tokens changed since we used them, else permanent."""
        if record is None:
            raise NoCredentials("the grant no longer exists")
        if record.token_version != recheck.used_version:
            await audit.record(
                conn,
                provider=record.provider.value,
                grant_id=record.id,
                action=AuditAction.RACE,
                detail={"used_version": recheck.used_version, "token_version": record.token_version},
            )
            self.metrics.transitions.labels(record.provider.value, "race").inc()
            log.info(
                "invalid_grant after another writer stored newer tokens: a race, not a revocation",
                extra={"grant_id": record.id, "provider": record.provider.value},
            )
            return _RACE
        if record.status is GrantStatus.NEEDS_REAUTH:
            return _Done(record, False, _reauth_error(record))
        error = recheck.error
        return await self._break(
            conn, record, AuthFailureReason.INVALID_GRANT, error.provider_error, str(error)
        )

    async def _break(
        self,
        conn: asyncpg.Connection,
        record: GrantRecord,
        reason: AuthFailureReason,
        provider_error: str | None,
        why: str,
    ) -> _Done:
        """The grant is dead: needs_reauth, and every connection on it reported broken once."""
        now = self.clock()
        await self.store.save_failure(
            conn,
            record.id,
            status=GrantStatus.NEEDS_REAUTH,
            failure_count=record.failure_count + 1,
            next_attempt_at=None,
            lost_at=record.lost_at,
            last_error=f"{reason.value}: {why}",
        )
        ids = await self.store.connection_ids(conn, record.id)
        failure = AuthFailure(
            provider=record.provider.value,
            reason=reason,
            provider_error=provider_error,
            occurred_at=timestamp(now),  # type: ignore[arg-type]
        )
        changed = await self.events.broken(conn, ids, failure)
        await audit.record(
            conn,
            provider=record.provider.value,
            grant_id=record.id,
            action=AuditAction.NEEDS_REAUTH,
            detail={
                "reason": reason.value,
                "provider_error": provider_error,
                "connections": len(ids),
                "reported": len(changed),
            },
        )
        self.metrics.transitions.labels(record.provider.value, "needs_reauth").inc()
        log.warning(
            "grant needs reauthorization",
            extra={"grant_id": record.id, "provider": record.provider.value, "reason": reason.value},
        )
        self._forget_grant(record.id)
        return _Done(
            record, False, ReauthRequired(f"the provider refused the grant ({reason.value})", reason.value)
        )

    async def _salvage(self, salvage: _Salvage) -> _Done:
        """Write tokens whose first write lost its connection, unless newer ones were stored since."""
        record = salvage.record
        async with self.store.pool.acquire() as conn, conn.transaction():
            current = await self.store.lock(conn, record.id)
            if current is None:
                raise NoCredentials("the grant no longer exists")
            saved = await self.store.save_refreshed(
                conn,
                record.id,
                tokens=salvage.tokens,
                rotated=salvage.rotated,
                now=self.clock(),
                due_at=salvage.due_at,
                expected_version=record.token_version,
            )
            if saved is None:
                # Someone stored newer tokens meanwhile; theirs stay.
                return _Done(current, False)
            await audit.record(
                conn,
                provider=record.provider.value,
                grant_id=record.id,
                action=AuditAction.ROTATED if salvage.rotated else AuditAction.REFRESHED,
                detail={"token_version": saved.token_version, "salvaged": True},
            )
            if current.status is not GrantStatus.ACTIVE:
                saved = await self._recover_or_defer(conn, saved)
        return _Done(saved, True)

    # ----- the refresher's entry ---------------------------------------------------------------

    async def refresh_grant(self, grant_id: str) -> str:
        """Refresh a grant if it is due (the proactive refresher's call); returns the outcome:
        `refreshed`, `not_due`, `needs_reauth`, `unavailable`, `failed` or `gone`."""
        try:
            done = await self._refresh(grant_id, proactive=True)
        except NoCredentials:
            return "gone"
        except TokenError:
            return "failed"
        except Exception:
            # One grant's trouble (a ciphertext under a key no longer in the ring, ...) must not
            # stop the refresher's pass over the others.
            log.exception("refresh of a grant failed", extra={"grant_id": grant_id})
            return "error"
        if isinstance(done.error, ReauthRequired):
            return "needs_reauth"
        if done.error is not None:
            return "unavailable" if done.record.status is GrantStatus.UNAVAILABLE else "failed"
        return "refreshed" if done.refreshed else "not_due"

    # ----- hand-over, state, disconnect ---------------------------------------------------------

    async def put_credentials(self, ref: ConnectionRef, credentials: Credentials) -> CredentialsState:
        """Store credentials handed over for a connection (its first ones, or a reconnect).

        A token set already known (its refresh token is some grant's current or recent one) joins
        that grant instead of starting a second refresh chain on the same token. A connection that
        was broken works again: `ConnectionEvents.reactivated` is called for the grant's connections.
        Raises ValueError for unusable credentials and ProviderNotConfigured.
        """
        spec = SPECS.get(ref.provider)
        if spec is None:
            raise ValueError(f"{ref.provider.value} connections have no OAuth credentials")
        if ref.provider not in self.apps:
            raise ProviderNotConfigured(f"LEDGERHOOK_{ref.provider.env_name}_CLIENT_ID is not set")
        params = self._params(ref, spec, credentials)
        now = self.clock()
        grant_type = credentials.grant_type
        if grant_type is GrantType.CLIENT_CREDENTIALS:
            if not spec.supports_client_credentials:
                raise ValueError(f"{ref.provider.value} has no client credentials grant")
            tokens = NewTokens(
                credentials.access_token,
                credentials.expires_at if credentials.access_token else None,
                None,
                None,
                credentials.scope,
            )
        else:
            if not credentials.refresh_token:
                raise ValueError("refresh_token is required")
            refresh_expires = credentials.refresh_token_expires_at
            if refresh_expires is None and spec.refresh_idle_lifetime is not None:
                refresh_expires = now + spec.refresh_idle_lifetime
            tokens = NewTokens(
                credentials.access_token,
                credentials.expires_at if credentials.access_token else None,
                credentials.refresh_token,
                refresh_expires,
                credentials.scope,
            )
        due = self._due_at(spec, grant_type, tokens.access_expires_at, tokens.refresh_expires_at, now)
        if tokens.access_token is None:
            due = now  # nothing to serve yet: get one at once
        digest = fingerprint(tokens.refresh_token) if tokens.refresh_token else None
        async with self.store.pool.acquire() as conn, conn.transaction():
            link = await self.store.link_of(conn, ref.connection_id)
            previous = await self.store.lock(conn, link[0]) if link else None
            match = await self.store.find_by_fingerprint(conn, ref.provider, digest) if digest else None
            action = AuditAction.STORED
            if match is not None and match.current_fingerprint != digest:
                # An older token of a grant that already rotated past it: the grant's tokens are newer.
                grant_id, action = match.id, AuditAction.LINKED
            elif match is not None:
                grant_id = match.id
                newer = (tokens.access_expires_at or 0) > (match.access_expires_at or 0)
                if match.status is not GrantStatus.ACTIVE or newer:
                    await self.store.replace_tokens(
                        conn, grant_id, grant_type=grant_type, tokens=tokens, params=params, due_at=due
                    )
                if match.status is not GrantStatus.ACTIVE:
                    action = AuditAction.RECONNECTED
            elif previous is not None and await self.store.connection_ids(conn, previous.id) == [
                ref.connection_id
            ]:
                grant_id = previous.id
                await self.store.replace_tokens(
                    conn, grant_id, grant_type=grant_type, tokens=tokens, params=params, due_at=due
                )
                if previous.status is not GrantStatus.ACTIVE:
                    action = AuditAction.RECONNECTED
            else:
                grant_id = await self.store.create_grant(
                    conn,
                    provider=ref.provider,
                    grant_type=grant_type,
                    tokens=tokens,
                    params=params,
                    due_at=due,
                )
                if previous is not None and previous.status is not GrantStatus.ACTIVE:
                    action = AuditAction.RECONNECTED
            if link is None or link[0] != grant_id:
                await self.store.link(conn, ref.connection_id, grant_id, ref.provider_account_id)
                if previous is not None and previous.id != grant_id:
                    await self.store.delete_if_orphaned(conn, previous.id)
            final = await self.store.lock(conn, grant_id)
            assert final is not None
            ids = await self.store.connection_ids(conn, grant_id)
            changed: list[str] = []
            if final.status is GrantStatus.ACTIVE:
                # Safe to call for every connection of the grant: only broken ones change (and report).
                changed = await self.events.reactivated(
                    conn,
                    ids,
                    ReactivationReason.RECONNECTED,
                    timestamp(now),  # type: ignore[arg-type]
                )
            await audit.record(
                conn,
                provider=ref.provider.value,
                grant_id=grant_id,
                connection_id=ref.connection_id,
                action=AuditAction.RECONNECTED if changed else action,
                detail={
                    "grant_type": grant_type.value,
                    "access_expires_at": _iso(final.access_expires_at),
                    "refresh_expires_at": _iso(final.refresh_expires_at),
                    "connections": len(ids),
                    "reactivated": len(changed),
                },
            )
        for connection_id in ids:
            self._cache.pop(connection_id, None)
        self._cache.pop(ref.connection_id, None)
        return _state(ref.connection_id, final, len(ids), action=action.value, reactivated=bool(changed))

    def _params(self, ref: ConnectionRef, spec: OAuthSpec, credentials: Credentials) -> GrantParams:
        location = None
        if ref.provider is Provider.ZOHO_BOOKS:
            location = (credentials.location or "us").lower()
            if location not in ZOHO_DATA_CENTRES:
                known = ", ".join(ZOHO_DATA_CENTRES)
                raise ValueError(f"location must be a Zoho data centre ({known})")
        account = None
        if ref.provider is Provider.NETSUITE:
            account = credentials.account or ref.provider_account_id
        return GrantParams(account=account, location=location)

    async def credentials_state(self, connection_id: str) -> CredentialsState | None:
        """The connection's credential state (never a token), or None when it has none."""
        found = await self.store.for_connection(connection_id)
        if found is None:
            return None
        record, _ = found
        shared = len(await self.store.connection_ids(self.store.pool, record.id))
        return _state(connection_id, record, shared)

    async def disconnect(self, connection_id: str) -> DisconnectResult:
        """Give the grant back where the provider has an endpoint for it, and erase the tokens now.

        QuickBooks: the refresh token is revoked (ending the grant) when no other connection uses
        it. Xero: the tenant's connection is deleted (DELETE /connections/{id}); Xero ends the
        grant with its last tenant. A grant still used by other connections keeps its tokens.
        Provider errors never block the erasure.
        """
        found = await self.store.for_connection(connection_id)
        if found is None:
            self._cache.pop(connection_id, None)
            return DisconnectResult(had_credentials=False, revoked_at_provider=False, erased=False)
        record, account = found
        spec = SPECS[record.provider]
        app = self.apps.get(record.provider)
        bearer: str | None = None
        if app is not None and spec.revoke == "xero_connection" and record.status is GrantStatus.ACTIVE:
            with contextlib.suppress(TokenError):
                bearer = (await self.get_access_token(connection_id)).token
        async with self.store.pool.acquire() as conn, conn.transaction():
            link = await self.store.link_of(conn, connection_id)
            if link is None:
                return DisconnectResult(had_credentials=False, revoked_at_provider=False, erased=False)
            record = await self.store.lock(conn, link[0]) or record
            others = [c for c in await self.store.connection_ids(conn, record.id) if c != connection_id]
            revoked = False
            if app is not None and record.status is not GrantStatus.NEEDS_REAUTH:
                if spec.revoke == "xero_connection" and bearer is not None:
                    revoked = await self.client.xero_disconnect(app, bearer, account)
                elif spec.revoke in ("token_json", "token_form") and not others:
                    token = self.store.open_refresh(record) or self.store.open_access(record)
                    if token is not None:
                        revoked = await self.client.revoke_token(app, token)
            await self.store.unlink(conn, connection_id)
            erased = await self.store.delete_if_orphaned(conn, record.id)
            await audit.record(
                conn,
                provider=record.provider.value,
                grant_id=record.id,
                connection_id=connection_id,
                action=AuditAction.REVOKED if revoked else AuditAction.ERASED,
                detail={
                    "revoked_at_provider": revoked,
                    "grant_erased": erased,
                    "connections_left": len(others),
                },
            )
        self._cache.pop(connection_id, None)
        if erased:
            self._forget_grant(record.id)
        return DisconnectResult(had_credentials=True, revoked_at_provider=revoked, erased=erased)

    async def close(self) -> None:
        """Wait for refreshes in flight (never cut one between the provider's answer and the write)."""
        flights = list(self._flights.values())
        if flights:
            await asyncio.gather(*flights, return_exceptions=True)


def _check_usable(record: GrantRecord, now: float) -> None:
    if record.status is GrantStatus.NEEDS_REAUTH:
        raise _reauth_error(record)
    if record.status is GrantStatus.UNAVAILABLE:
        raise TokenUnavailable("the provider is unavailable", _wait(record, now))


def _reauth_error(record: GrantRecord) -> ReauthRequired:
    reason = (record.last_error or "invalid_grant").split(":", 1)[0]
    if reason not in {r.value for r in AuthFailureReason}:
        reason = AuthFailureReason.INVALID_GRANT.value
    return ReauthRequired(f"the grant needs reauthorization ({reason})", reason)


def _failure_reason(error: str | None) -> AuthFailureReason:
    try:
        return AuthFailureReason(error or "invalid_grant")
    except ValueError:
        return AuthFailureReason.INVALID_GRANT


def _access_valid(record: GrantRecord, now: float) -> bool:
    return (
        record.sealed_access is not None
        and record.access_expires_at is not None
        and record.access_expires_at > now
    )


def _may_reuse(spec: OAuthSpec, lost_at: float, now: float) -> bool:
    """Whether a refresh token whose answer was lost at `lost_at` may be sent again now."""
    if not spec.rotates or spec.lost_response_grace <= 0:
        # No rotation: the token is still good. No documented grace: only the provider can tell,
        # so the same token is retried until it answers (its invalid_grant is then final).
        return True
    return now < lost_at + spec.lost_response_grace


def _wait(record: GrantRecord, now: float) -> float | None:
    return None if record.next_attempt_at is None else max(0.0, record.next_attempt_at - now)


def _iso(seconds: float | None) -> str | None:
    moment: datetime | None = timestamp(seconds)
    return moment.isoformat() if moment else None


def _state(
    connection_id: str,
    record: GrantRecord,
    connections: int,
    *,
    action: str | None = None,
    reactivated: bool = False,
) -> CredentialsState:
    return CredentialsState(
        connection_id=connection_id,
        grant_id=record.id,
        provider=record.provider,
        grant_type=record.grant_type,
        status=record.status,
        access_expires_at=record.access_expires_at,
        refresh_expires_at=record.refresh_expires_at,
        refreshed_at=record.refreshed_at,
        refresh_due_at=record.refresh_due_at,
        failure_count=record.failure_count,
        last_error=record.last_error,
        scope=record.scope,
        connections=connections,
        action=action,
        reactivated=reactivated,
    )
