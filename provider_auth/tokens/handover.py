"""Credentials handed over for a connection (first connect or reconnect), and their state.

A token set already known (its refresh token is some grant's current or a recent one) joins that
grant instead of starting a second refresh chain on the same token. The rules and why:
docs/tokens.md ("Handing tokens over").
"""

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from provider_auth import audit
from provider_auth.accounts.events import ConnectionEvents, ReactivationReason
from provider_auth.audit import AuditAction
from provider_auth.oauth.apps import GrantParams, OAuthApp
from provider_auth.oauth.specs import SPECS, ZOHO_DATA_CENTRES, OAuthSpec
from provider_auth.providers import Provider
from provider_auth.tokens.errors import ProviderNotConfigured
from provider_auth.tokens.grants import GrantRecord, GrantStatus, GrantType, NewTokens
from provider_auth.tokens.policy import TokenPolicy, due_at, handed_over_refresh_expiry
from provider_auth.tokens.store import CredentialStore, fingerprint, timestamp

__all__ = ["ConnectionRef", "Credentials", "CredentialsState", "Handover", "credentials_state"]


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

    @classmethod
    def of(
        cls,
        connection_id: str,
        record: GrantRecord,
        connections: int,
        *,
        action: str | None = None,
        reactivated: bool = False,
    ) -> "CredentialsState":
        """The state of a connection on `record`, a grant `connections` connections share."""
        return cls(
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


async def credentials_state(store: CredentialStore, connection_id: str) -> CredentialsState | None:
    """The connection's credential state (never a token), or None when it has none."""
    found = await store.for_connection(connection_id)
    if found is None:
        return None
    shared = len(await store.connection_ids(store.pool, found.record.id))
    return CredentialsState.of(connection_id, found.record, shared)


@dataclass(frozen=True, slots=True)
class _Write:
    """A validated hand-over, ready to be stored."""

    grant_type: GrantType
    tokens: NewTokens
    params: GrantParams
    due_at: float | None
    digest: bytes | None


class Handover:
    """Stores handed-over credentials; built by `TokenManager` for each hand-over."""

    def __init__(
        self,
        *,
        store: CredentialStore,
        apps: Mapping[Provider, OAuthApp],
        events: ConnectionEvents,
        policy: TokenPolicy,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.store = store
        self.apps = apps
        self.events = events
        self.policy = policy
        self.clock = clock
        self.rng = rng

    async def put(self, ref: ConnectionRef, credentials: Credentials) -> CredentialsState:
        """Store credentials handed over for a connection (its first ones, or a reconnect).

        A connection that was broken works again: `ConnectionEvents.reactivated` is called for the
        grant's connections. Raises ValueError for unusable credentials and ProviderNotConfigured.
        """
        now = self.clock()
        write = self._validated(ref, credentials, now)
        async with self.store.pool.acquire() as conn, conn.transaction():
            link = await self.store.link_of(conn, ref.connection_id)
            previous = await self.store.lock(conn, link[0]) if link else None
            final, action = await self._place(conn, ref, write, previous)
            if link is None or link[0] != final.id:
                await self.store.link(conn, ref.connection_id, final.id, ref.provider_account_id)
                if previous is not None and previous.id != final.id:
                    await self.store.delete_if_orphaned(conn, previous.id)
            ids = await self.store.connection_ids(conn, final.id)
            changed: list[str] = []
            if final.status is GrantStatus.ACTIVE:
                # Safe to call for every connection of the grant: only broken ones change (and report).
                changed = await self.events.reactivated(
                    conn, ids, ReactivationReason.RECONNECTED, timestamp(now)
                )
            await audit.record(
                conn,
                provider=ref.provider.value,
                grant_id=final.id,
                connection_id=ref.connection_id,
                action=AuditAction.RECONNECTED if changed else action,
                detail={
                    "grant_type": write.grant_type.value,
                    "access_expires_at": _iso(final.access_expires_at),
                    "refresh_expires_at": _iso(final.refresh_expires_at),
                    "connections": len(ids),
                    "reactivated": len(changed),
                },
            )
        return CredentialsState.of(
            ref.connection_id, final, len(ids), action=action.value, reactivated=bool(changed)
        )

    def _validated(self, ref: ConnectionRef, credentials: Credentials, now: float) -> _Write:
        spec = SPECS.get(ref.provider)
        if spec is None:
            raise ValueError(f"{ref.provider.value} connections have no OAuth credentials")
        if ref.provider not in self.apps:
            raise ProviderNotConfigured(f"LEDGERHOOK_{ref.provider.env_name}_CLIENT_ID is not set")
        params = _params(ref, credentials)
        tokens = _tokens(spec, credentials, now)
        grant_type = credentials.grant_type
        due = due_at(
            self.policy,
            spec,
            grant_type,
            tokens.access_expires_at,
            tokens.refresh_expires_at,
            now,
            self.rng,
        )
        if tokens.access_token is None:
            due = now  # nothing to serve yet: get one at once
        digest = fingerprint(tokens.refresh_token) if tokens.refresh_token else None
        return _Write(grant_type, tokens, params, due, digest)

    async def _place(
        self, conn: asyncpg.Connection, ref: ConnectionRef, write: _Write, previous: GrantRecord | None
    ) -> tuple[GrantRecord, AuditAction]:
        """The grant the tokens go to, written, and what that amounts to."""
        known = (
            await self.store.find_by_fingerprint(conn, ref.provider, write.digest) if write.digest else None
        )
        if known is not None and known.current_fingerprint != write.digest:
            # An older token of a grant that already rotated past it: the grant's tokens are newer.
            return known, AuditAction.LINKED
        if known is not None:
            newer = (write.tokens.access_expires_at or 0) > (known.access_expires_at or 0)
            final = known
            if known.status is not GrantStatus.ACTIVE or newer:
                final = await self._replace(conn, known.id, write)
            return final, _stored_or_reconnected(known)
        if previous is not None and await self.store.connection_ids(conn, previous.id) == [ref.connection_id]:
            # The connection's own grant, shared with nobody: the new tokens replace its tokens.
            return await self._replace(conn, previous.id, write), _stored_or_reconnected(previous)
        created = await self.store.create_grant(
            conn,
            provider=ref.provider,
            grant_type=write.grant_type,
            tokens=write.tokens,
            params=write.params,
            due_at=write.due_at,
        )
        return created, _stored_or_reconnected(previous)

    async def _replace(self, conn: asyncpg.Connection, grant_id: str, write: _Write) -> GrantRecord:
        return await self.store.replace_tokens(
            conn,
            grant_id,
            grant_type=write.grant_type,
            tokens=write.tokens,
            params=write.params,
            due_at=write.due_at,
        )


def _tokens(spec: OAuthSpec, credentials: Credentials, now: float) -> NewTokens:
    """The tokens to store for a hand-over; ValueError when the grant type cannot work."""
    access_expires_at = credentials.expires_at if credentials.access_token else None
    if credentials.grant_type is GrantType.CLIENT_CREDENTIALS:
        if not spec.supports_client_credentials:
            raise ValueError(f"{spec.provider.value} has no client credentials grant")
        return NewTokens(credentials.access_token, access_expires_at, None, None, credentials.scope)
    if not credentials.refresh_token:
        raise ValueError("refresh_token is required")
    return NewTokens(
        credentials.access_token,
        access_expires_at,
        credentials.refresh_token,
        handed_over_refresh_expiry(spec, credentials.refresh_token_expires_at, now),
        credentials.scope,
    )


def _params(ref: ConnectionRef, credentials: Credentials) -> GrantParams:
    """What picks the grant's endpoints: the Zoho data centre, the NetSuite account."""
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


def _stored_or_reconnected(replaced: GrantRecord | None) -> AuditAction:
    """A hand-over replacing a broken grant is a reconnect."""
    if replaced is not None and replaced.status is not GrantStatus.ACTIVE:
        return AuditAction.RECONNECTED
    return AuditAction.STORED


def _iso(seconds: float | None) -> str | None:
    moment: datetime | None = timestamp(seconds)
    return moment.isoformat() if moment else None
