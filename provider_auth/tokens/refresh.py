"""One grant's refresh under its row lock: the state machine behind every token refresh.

A pass takes the grant's row lock (`SELECT ... FOR UPDATE`), reads the row again (another process
may have just refreshed), and settles: the tokens are fresh enough, the grant is broken, or the
provider was asked and its answer written before the lock is released. Two answers need another
pass: an `invalid_grant` is confirmed under a new lock before it is called permanent (a race with
another writer is not a revocation), and tokens whose write lost the database connection are
written again on a new one. The rules and why: docs/tokens.md ("Refreshing exactly once", "Lost
answers", "Failure classes").

Traced (the tracer handed in): a `token refresh` span per refresh, with the provider, grant and
outcome, and a CLIENT `token request` span per call to the token endpoint; never a token.
"""

import contextlib
import hmac
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import assert_never

import asyncpg
from opentelemetry.trace import NoOpTracer, SpanKind, Status, StatusCode, Tracer

from provider_auth import audit
from provider_auth.accounts.events import AuthFailure, AuthFailureReason, ConnectionEvents, ReactivationReason
from provider_auth.audit import AuditAction
from provider_auth.oauth.apps import OAuthApp
from provider_auth.oauth.client import TokenClient, TokenRequestError, TokenSet
from provider_auth.oauth.specs import SPECS, OAuthSpec
from provider_auth.providers import Provider
from provider_auth.tokens.errors import (
    NoCredentials,
    ProviderNotConfigured,
    ReauthRequired,
    TokenError,
    TokenUnavailable,
    reauth_required,
)
from provider_auth.tokens.grants import GrantRecord, GrantStatus, GrantType, NewTokens
from provider_auth.tokens.metrics import TokenMetrics
from provider_auth.tokens.policy import (
    TokenPolicy,
    backoff,
    deferred_report_at,
    due_at,
    gives_up,
    in_backoff,
    is_due,
    is_fresh,
    is_valid,
    may_reuse,
    refresh_expiry,
    remembers_lost_answers,
    retry_in,
)
from provider_auth.tokens.store import CredentialStore, timestamp
from provider_auth.tracing import span_failing_by_type

__all__ = ["GrantRefresh", "Settled"]

log = logging.getLogger("ledgerhook.tokens")

# Connection-level errors of the database: the lock and the transaction are gone with them.
_DB_LOST = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError, OSError)
# Passes before a refresh that keeps meeting other writers gives up for now.
_MAX_PASSES = 4


@dataclass(frozen=True, slots=True)
class Settled:
    """How a refresh ended: the grant as it now stands, whether new tokens were stored, and the
    error a caller gets instead of a token (None: the grant's access token may be served)."""

    record: GrantRecord
    refreshed: bool = False
    error: TokenError | None = None


@dataclass(frozen=True, slots=True)
class _Recheck:
    """An invalid_grant to confirm under a new lock before calling it permanent."""

    used_version: int
    error: TokenRequestError


@dataclass(frozen=True, slots=True)
class _Raced:
    """Another writer stored newer tokens while ours were on their way: theirs are used."""


@dataclass(frozen=True, slots=True)
class _Unsaved:
    """Tokens the provider issued whose write lost its database connection, to write again."""

    record: GrantRecord
    tokens: NewTokens
    rotated: bool
    due_at: float | None


_Pass = Settled | _Recheck | _Raced | _Unsaved


class GrantRefresh:
    """Refreshes one grant at a time under its row lock; built by `TokenManager` for each refresh."""

    def __init__(
        self,
        *,
        store: CredentialStore,
        client: TokenClient,
        apps: Mapping[Provider, OAuthApp],
        events: ConnectionEvents,
        policy: TokenPolicy,
        metrics: TokenMetrics,
        clock: Callable[[], float],
        rng: random.Random,
        tracer: Tracer | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.apps = apps
        self.events = events
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
        self.rng = rng
        self.tracer = tracer if tracer is not None else NoOpTracer()

    async def run(self, grant_id: str, *, proactive: bool, rejected: str | None = None) -> Settled:
        """Refresh the grant if it needs it: a caller's refresh (`proactive` False) when its token is
        not fresh, or when it is still `rejected` (the access token the provider just refused); the
        refresher's when it is due.

        Raises NoCredentials (the grant is gone), ProviderNotConfigured, and TokenUnavailable when
        the database or the grant's lock cannot be had.
        """
        attributes: dict[str, str | bool] = {
            "ledgerhook.grant_id": grant_id,
            "ledgerhook.refresh.proactive": proactive,
        }
        with span_failing_by_type(self.tracer, "token refresh", SpanKind.INTERNAL, attributes) as span:
            settled = await self._run(grant_id, proactive=proactive, rejected=rejected)
            span.set_attribute("ledgerhook.provider", settled.record.provider.value)
            outcome = _settled_outcome(settled)
            span.set_attribute("ledgerhook.outcome", outcome)
            if settled.error is not None:
                span.set_status(Status(StatusCode.ERROR, outcome))
            return settled

    async def _run(self, grant_id: str, *, proactive: bool, rejected: str | None) -> Settled:
        with _database_errors_as_unavailable():
            recheck: _Recheck | None = None
            for _ in range(_MAX_PASSES):
                outcome = await self._pass(grant_id, proactive, recheck, rejected)
                match outcome:
                    case Settled():
                        return outcome
                    case _Unsaved():
                        return await self._write_again(outcome)
                    case _Recheck():
                        recheck = outcome
                    case _Raced():
                        # Someone stored newer tokens: refresh only if they are not fresh.
                        recheck, proactive = None, False
                    case _:
                        assert_never(outcome)
            error = TokenUnavailable("the refresh kept racing", 1.0)
            return Settled(await self._peek(grant_id), error=error)

    async def _pass(
        self, grant_id: str, proactive: bool, recheck: _Recheck | None, rejected: str | None
    ) -> _Pass:
        """One transaction holding the grant's row lock."""
        async with self.store.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute(f"SET LOCAL lock_timeout = '{int(self.policy.lock_timeout * 1000)}ms'")
                record = await self.store.lock(conn, grant_id)
                if record is None:
                    raise NoCredentials("the grant no longer exists")
                outcome: _Pass
                if recheck is not None:
                    outcome = await self._confirm(conn, record, recheck)
                else:
                    outcome = await self._step(conn, record, proactive, rejected)
            except BaseException:
                # The connection may be gone with the error (then so is the transaction).
                with contextlib.suppress(Exception):
                    await tx.rollback()
                raise
            if isinstance(outcome, _Unsaved):
                with contextlib.suppress(Exception):  # the connection is gone with the write
                    await tx.rollback()
            elif isinstance(outcome, _Recheck):
                await tx.rollback()  # release the lock so a concurrent writer can land
            else:
                await tx.commit()
            return outcome

    async def _step(
        self, conn: asyncpg.Connection, record: GrantRecord, proactive: bool, rejected: str | None
    ) -> Settled | _Recheck | _Unsaved:
        now = self.clock()
        if record.status is GrantStatus.NEEDS_REAUTH:
            return Settled(record, error=reauth_required(record))
        if record.status is GrantStatus.UNAVAILABLE and not proactive:
            return Settled(
                record,
                error=TokenUnavailable("the provider is unavailable", retry_in(record.next_attempt_at, now)),
            )
        fresh = is_fresh(self.policy, record.access_token_expiry, now)
        # Still the token the provider refused: however fresh it looks, it no longer works.
        refused = rejected is not None and self._holds(record, rejected)
        if proactive:
            needed = is_due(record.refresh_due_at, now)
            if needed and record.status is GrantStatus.UNAVAILABLE and fresh:
                # Refreshed already, but the broker was down when the recovery was to be reported.
                return await self._report_recovery(conn, record)
        else:
            needed = not fresh or refused
        if not needed:
            return Settled(record)
        if in_backoff(record.next_attempt_at, now):
            if is_valid(record.access_token_expiry, now) and not refused:
                return Settled(record)
            error = TokenUnavailable("waiting to retry the refresh", retry_in(record.next_attempt_at, now))
            return Settled(record, error=error)
        app = self.apps.get(record.provider)
        if app is None:
            raise ProviderNotConfigured(f"LEDGERHOOK_{record.provider.env_name}_CLIENT_ID is not set")
        spec = SPECS[record.provider]
        if record.lost_at is not None and not may_reuse(spec, record.lost_at, now):
            # A refresh token whose answer was lost may be reused for 30 minutes only
            # (docs/providers.md, Xero).
            return await self._break(
                conn, record, AuthFailureReason.INVALID_GRANT, None, "refresh answer lost, grace over"
            )
        return await self._call_provider(
            conn, record, app, spec, lost_at=record.lost_at, first=True, refused=refused
        )

    def _holds(self, record: GrantRecord, access_token: str) -> bool:
        """Whether the grant's stored access token is `access_token`."""
        stored = self.store.open_access(record)
        return stored is not None and hmac.compare_digest(stored.encode(), access_token.encode())

    async def _call_provider(
        self,
        conn: asyncpg.Connection,
        record: GrantRecord,
        app: OAuthApp,
        spec: OAuthSpec,
        *,
        lost_at: float | None,
        first: bool,
        refused: bool = False,
    ) -> Settled | _Recheck | _Unsaved:
        started = time.monotonic()
        try:
            tokens = await self._request(app, record)
        except TokenRequestError as exc:
            self._observe(record.provider, started, exc.reason if exc.kind == "permanent" else exc.kind)
            if exc.kind == "lost":
                lost_at = await self._record_loss(conn, record, lost_at, attempt=1 if first else 2)
                if first and may_reuse(spec, lost_at, self.clock()):
                    # A lost answer is retried once at once, still under the lock.
                    return await self._call_provider(
                        conn, record, app, spec, lost_at=lost_at, first=False, refused=refused
                    )
            return await self._failed(conn, record, exc, lost_at, refused=refused)
        self._observe(record.provider, started, "success")
        return await self._succeeded(conn, record, spec, tokens)

    async def _request(self, app: OAuthApp, record: GrantRecord) -> TokenSet:
        attributes = {
            "ledgerhook.provider": record.provider.value,
            "ledgerhook.grant_id": record.id,
            "ledgerhook.grant_type": record.grant_type.value,
        }
        with span_failing_by_type(self.tracer, "token request", SpanKind.CLIENT, attributes) as span:
            try:
                if record.grant_type is GrantType.CLIENT_CREDENTIALS:
                    tokens = await self.client.client_credentials(app, record.params)
                else:
                    refresh_token = self.store.open_refresh(record)
                    if refresh_token is None:
                        raise NoCredentials(f"grant {record.id} holds no refresh token")
                    tokens = await self.client.refresh(app, refresh_token, record.params)
            except TokenRequestError as exc:
                # The metric's outcome: transient, lost, or the provider's error code.
                outcome = (exc.reason if exc.kind == "permanent" else exc.kind) or "unknown"
                span.set_attribute("ledgerhook.outcome", outcome)
                span.set_status(Status(StatusCode.ERROR, outcome))
                raise
            span.set_attribute("ledgerhook.outcome", "success")
            return tokens

    async def _record_loss(
        self, conn: asyncpg.Connection, record: GrantRecord, lost_at: float | None, *, attempt: int
    ) -> float:
        """Audit a lost answer; returns when the first of the current losses happened."""
        first_loss = lost_at is None
        lost_at = lost_at if lost_at is not None else self.clock()
        await audit.record(
            conn,
            provider=record.provider.value,
            grant_id=record.id,
            action=AuditAction.LOST_RESPONSE,
            detail={"attempt": attempt, "first_loss": first_loss},
        )
        return lost_at

    def _observe(self, provider: Provider, started: float, outcome: str | None) -> None:
        self.metrics.refresh_seconds.labels(provider.value).observe(time.monotonic() - started)
        self.metrics.refreshes.labels(provider.value, outcome or "unknown").inc()

    async def _succeeded(
        self, conn: asyncpg.Connection, record: GrantRecord, spec: OAuthSpec, tokens: TokenSet
    ) -> Settled | _Unsaved:
        now = self.clock()
        rotated = tokens.refresh_token is not None and tokens.refresh_token != self.store.open_refresh(record)
        access_expires_at = now + tokens.expires_in
        new = NewTokens(
            access_token=tokens.access_token,
            access_expires_at=access_expires_at,
            refresh_token=tokens.refresh_token if rotated else None,
            refresh_expires_at=refresh_expiry(spec, record.grant_type, tokens.refresh_expires_in, now),
            scope=tokens.scope,
            extra=tokens.extra,
        )
        due = due_at(
            self.policy, spec, record.grant_type, access_expires_at, new.refresh_expires_at, now, self.rng
        )
        try:
            saved = await self.store.save_refreshed(
                conn, record.id, tokens=new, rotated=rotated, now=now, due_at=due
            )
            await audit.record(
                conn,
                provider=record.provider.value,
                grant_id=record.id,
                action=AuditAction.ROTATED if rotated else AuditAction.REFRESHED,
                detail={
                    "access_expires_at": timestamp(access_expires_at).isoformat(),
                    "token_version": saved.token_version,
                },
            )
            if record.status is not GrantStatus.ACTIVE:
                saved = await self._recover_or_defer(conn, saved)
        except _DB_LOST:
            # The provider has already moved on to these tokens: they must not be lost with the lock.
            return _Unsaved(record, new, rotated, due)
        return Settled(saved, refreshed=True)

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
            retry_at = deferred_report_at(self.policy, self.clock())
            await self.store.set_status(conn, saved.id, GrantStatus.UNAVAILABLE, retry_at)
            return replace(saved, status=GrantStatus.UNAVAILABLE, refresh_due_at=retry_at)
        return saved

    async def _report_recovery(self, conn: asyncpg.Connection, record: GrantRecord) -> Settled:
        now = self.clock()
        spec = SPECS[record.provider]
        due = due_at(
            self.policy,
            spec,
            record.grant_type,
            record.access_expires_at,
            record.refresh_expires_at,
            now,
            self.rng,
        )
        await self.store.set_status(conn, record.id, GrantStatus.ACTIVE, due)
        active = replace(record, status=GrantStatus.ACTIVE, refresh_due_at=due)
        return Settled(await self._recover_or_defer(conn, active))

    async def _recovered(self, conn: asyncpg.Connection, record: GrantRecord) -> None:
        ids = await self.store.connection_ids(conn, record.id)
        changed = await self.events.reactivated(
            conn, ids, ReactivationReason.RECOVERED, timestamp(self.clock())
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
        self,
        conn: asyncpg.Connection,
        record: GrantRecord,
        exc: TokenRequestError,
        lost_at: float | None,
        *,
        refused: bool = False,
    ) -> Settled | _Recheck:
        if exc.kind == "permanent":
            reason = _failure_reason(exc.reason)
            if reason is AuthFailureReason.INVALID_GRANT and record.grant_type is GrantType.REFRESH_TOKEN:
                # Maybe another process stored a newer token while we used this one: look again.
                return _Recheck(record.token_version, exc)
            return await self._break(conn, record, reason, exc.provider_error, str(exc))
        now = self.clock()
        spec = SPECS[record.provider]
        failures = record.failure_count + 1
        delay = backoff(self.policy, failures, exc.retry_after, self.rng)
        # A token the provider refused does not work, whatever its expiry says.
        access_valid = is_valid(record.access_token_expiry, now) and not refused
        status = record.status
        if gives_up(self.policy, failures, access_valid) and status is GrantStatus.ACTIVE:
            status = GrantStatus.UNAVAILABLE
        await self.store.save_failure(
            conn,
            record.id,
            status=status,
            failure_count=failures,
            next_attempt_at=now + delay,
            lost_at=lost_at if remembers_lost_answers(spec, record.grant_type) else None,
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
            await self._unavailable(conn, record, exc, now, failures)
        if access_valid:
            return Settled(record)
        return Settled(record, error=TokenUnavailable(f"refresh failed ({exc.kind})", delay))

    async def _unavailable(
        self, conn: asyncpg.Connection, record: GrantRecord, exc: TokenRequestError, now: float, failures: int
    ) -> None:
        """The provider stayed out of reach after the access token expired: report the connections."""
        ids, changed = await self._report_broken(
            conn, record, AuthFailureReason.REFRESH_UNAVAILABLE, exc.provider_error, now
        )
        await audit.record(
            conn,
            provider=record.provider.value,
            grant_id=record.id,
            action=AuditAction.UNAVAILABLE,
            detail={"connections": len(ids), "reported": len(changed), "failures": failures},
        )
        self.metrics.transitions.labels(record.provider.value, "unavailable").inc()

    async def _confirm(
        self, conn: asyncpg.Connection, record: GrantRecord, recheck: _Recheck
    ) -> Settled | _Raced:
        """Under a new lock: a race when the tokens changed since we used them, else permanent."""
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
            return _Raced()
        if record.status is GrantStatus.NEEDS_REAUTH:
            return Settled(record, error=reauth_required(record))
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
    ) -> Settled:
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
        ids, changed = await self._report_broken(conn, record, reason, provider_error, now)
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
        error = ReauthRequired(f"the provider refused the grant ({reason.value})", reason.value)
        return Settled(record, error=error)

    async def _report_broken(
        self,
        conn: asyncpg.Connection,
        record: GrantRecord,
        reason: AuthFailureReason,
        provider_error: str | None,
        now: float,
    ) -> tuple[list[str], list[str]]:
        """Report every connection on the grant broken: (their ids, the ids that changed state)."""
        ids = await self.store.connection_ids(conn, record.id)
        failure = AuthFailure(
            provider=record.provider.value,
            reason=reason,
            provider_error=provider_error,
            occurred_at=timestamp(now),
        )
        return ids, await self.events.broken(conn, ids, failure)

    async def _write_again(self, unsaved: _Unsaved) -> Settled:
        """Write tokens whose first write lost its connection, unless newer ones were stored since."""
        record = unsaved.record
        async with self.store.pool.acquire() as conn, conn.transaction():
            current = await self.store.lock(conn, record.id)
            if current is None:
                raise NoCredentials("the grant no longer exists")
            saved = await self.store.save_refreshed_if_unchanged(
                conn,
                record.id,
                tokens=unsaved.tokens,
                rotated=unsaved.rotated,
                now=self.clock(),
                due_at=unsaved.due_at,
                token_version=record.token_version,
            )
            if saved is None:
                # Someone stored newer tokens meanwhile; theirs stay.
                return Settled(current)
            await audit.record(
                conn,
                provider=record.provider.value,
                grant_id=record.id,
                action=AuditAction.ROTATED if unsaved.rotated else AuditAction.REFRESHED,
                detail={"token_version": saved.token_version, "salvaged": True},
            )
            if current.status is not GrantStatus.ACTIVE:
                saved = await self._recover_or_defer(conn, saved)
        return Settled(saved, refreshed=True)

    async def _peek(self, grant_id: str) -> GrantRecord:
        async with self.store.pool.acquire() as conn, conn.transaction():
            record = await self.store.lock(conn, grant_id)
        if record is None:
            raise NoCredentials(f"grant {grant_id} is gone")
        return record


def _settled_outcome(settled: Settled) -> str:
    """How a refresh ended, for its span: `refreshed`, `not_needed` (fresh already, or not due),
    `needs_reauth`, `unavailable` or `failed`."""
    if settled.error is None:
        return "refreshed" if settled.refreshed else "not_needed"
    if isinstance(settled.error, ReauthRequired):
        return "needs_reauth"
    return "unavailable" if isinstance(settled.error, TokenUnavailable) else "failed"


@contextlib.contextmanager
def _database_errors_as_unavailable() -> Iterator[None]:
    """A lock that cannot be had in time, or a database out of reach, is a TokenUnavailable."""
    try:
        yield
    except asyncpg.LockNotAvailableError:
        raise TokenUnavailable("another process is refreshing this grant", 1.0) from None
    except _DB_LOST as exc:
        raise TokenUnavailable(f"the database is unreachable ({type(exc).__name__})", 1.0) from exc


def _failure_reason(error: str | None) -> AuthFailureReason:
    try:
        return AuthFailureReason(error or "invalid_grant")
    except ValueError:
        return AuthFailureReason.INVALID_GRANT
