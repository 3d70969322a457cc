"""Which signature scheme guards a webhook URL, and what the URL says about the sender.

Shared endpoints (`/webhooks/quickbooks`, `/webhooks/xero`) are enabled by their app's secrets in the
settings; per-connection endpoints take their scheme from the connection registered through the
admin API (the rules per provider: `provider_auth.webhooks.registry`, docs/admin-api.md). A URL with
nothing to verify against has no source: 404.

A connection's scheme is cached for `LEDGERHOOK_CONNECTION_CACHE_SECONDS`, so deliveries rarely wait
on PostgreSQL and concurrent misses share one lookup. While PostgreSQL is unreachable a recently
cached scheme keeps serving; without one the lookup fails and the endpoint answers 503.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from fanout.parsers.freshbooks import verification_code
from gateway.runtime.infra import DATABASE_ERRORS
from gateway.settings import Settings, secret_values
from provider_auth.accounts.store import Connection, ConnectionStore
from provider_auth.ids import canonical_uuid
from provider_auth.providers import Provider
from provider_auth.vault import VaultError
from provider_auth.webhooks import JwtBearer, SignatureScheme, Verdict
from provider_auth.webhooks.base import Headers
from provider_auth.webhooks.registry import SecretHolder, scheme_for, signing

log = logging.getLogger("ledgerhook.sources")

MAX_ENTRIES = 10_000  # bounds memory whatever ids are thrown at the endpoint
STALE_SECONDS = 300.0  # how long a cached scheme may serve while PostgreSQL is unreachable
LOOKUP_TIMEOUT = 2.0  # a lookup slower than this answers 503 rather than miss a provider's deadline


@dataclass(frozen=True, slots=True)
class Source:
    """A webhook sender Ledgerhook knows: its provider, its scheme and, per connection, who it is."""

    provider: Provider
    scheme: SignatureScheme
    connection_id: str | None = None
    provider_account_id: str | None = None


class SourceResolver(Protocol):
    """Finds the source behind `/webhooks/{provider}[/{connection_id}]`, or None (404)."""

    async def resolve(self, provider: Provider, connection_id: str | None) -> Source | None:
        """The source for a URL, or None when nothing is registered there."""
        ...


class SourceUnavailable(Exception):
    """The connection could not be looked up (database unreachable, or its secrets undecryptable)."""


class SharedSources:
    """The app-wide endpoints (QuickBooks, Xero), enabled by configuring their secrets."""

    def __init__(self, settings: Settings) -> None:
        configured = {
            Provider.QUICKBOOKS: settings.quickbooks_verifier_tokens,
            Provider.XERO: settings.xero_webhook_keys,
        }
        self._sources = {
            provider: Source(provider, scheme_for(provider, secret_values(secrets)))
            for provider, secrets in configured.items()
            if secrets
        }

    async def resolve(self, provider: Provider, connection_id: str | None) -> Source | None:
        """The shared source for `provider`; per-connection URLs are not served here."""
        if connection_id is not None:
            return None
        return self._sources.get(provider)


@dataclass(frozen=True, slots=True)
class FreshBooksHandshake:
    """The scheme of a FreshBooks connection without a verifier: only `callback.verify` passes."""

    def verify(self, body: bytes, headers: Headers) -> Verdict:
        """OK for a `callback.verify` form carrying a verifier; anything else is unsigned."""
        return Verdict.OK if verification_code(body) is not None else Verdict.MISSING


@dataclass(frozen=True, slots=True)
class _Entry:
    source: Source | None
    fetched_at: float


class ConnectionSources:
    """Shared endpoints from the settings, per-connection endpoints from the connection store."""

    def __init__(
        self,
        store: ConnectionStore,
        shared: SourceResolver,
        settings: Settings,
        *,
        can_store_secrets: bool,
    ) -> None:
        """`can_store_secrets`: a key ring is configured (the FreshBooks handshake needs one)."""
        self._store = store
        self._shared = shared
        self._ttl = settings.connection_cache_seconds
        self._can_store_secrets = can_store_secrets
        # Providers whose deliveries carry a JWT, checked with public keys from the settings.
        self._jwt: dict[Provider, SignatureScheme] = {}
        if settings.sage_intacct_jwt_keys:
            self._jwt[Provider.SAGE_INTACCT] = JwtBearer.create(
                settings.sage_intacct_jwt_keys,
                issuer=settings.sage_intacct_jwt_issuer,
                audience=settings.sage_intacct_jwt_audience,
            )
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Source | None]] = {}

    async def resolve(self, provider: Provider, connection_id: str | None) -> Source | None:
        """The source for a URL; SourceUnavailable when a connection cannot be looked up."""
        if connection_id is None:
            return await self._shared.resolve(provider, None)
        key = canonical_uuid(connection_id)
        if key is None:
            return None
        source = await self._lookup(key)
        return source if source is not None and source.provider is provider else None

    def invalidate(self, connection_id: str) -> None:
        """Forget a connection's cached scheme (after this process changed it)."""
        key = canonical_uuid(connection_id)
        if key is not None:
            self._cache.pop(key, None)

    async def _lookup(self, key: str) -> Source | None:
        entry = self._cache.get(key)
        if entry is not None and time.monotonic() - entry.fetched_at < self._ttl:
            self._cache.move_to_end(key)
            return entry.source
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.ensure_future(self._refresh(key, entry))
            self._loading[key] = loading
            loading.add_done_callback(lambda done: self._finished(key, done))
        # shield: one caller giving up (client gone) does not cancel the lookup the others share.
        return await asyncio.shield(loading)

    def _finished(self, key: str, done: "asyncio.Future[Source | None]") -> None:
        self._loading.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here, so an unawaited failure is not reported twice

    async def _refresh(self, key: str, stale: _Entry | None) -> Source | None:
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT):
                connection = await self._store.get(key)
                wants_secrets = connection is not None and connection.has_webhook_secret
                secrets = await self._store.webhook_secrets(key) if wants_secrets else []
        except DATABASE_ERRORS as exc:
            if stale is not None and time.monotonic() - stale.fetched_at < STALE_SECONDS:
                log.warning(
                    "connection lookup failed, serving the cached scheme", extra={"error": type(exc).__name__}
                )
                return stale.source
            log.error("connection lookup failed", extra={"error": type(exc).__name__})
            raise SourceUnavailable(type(exc).__name__) from exc
        except VaultError as exc:
            # The key that sealed these secrets is not in LEDGERHOOK_ENCRYPTION_KEYS: an operator fix,
            # so answer 503 (the provider retries) rather than 404 (it may give up).
            log.error(
                "connection secrets cannot be decrypted", extra={"connection_id": key, "error": str(exc)}
            )
            raise SourceUnavailable("undecryptable secrets") from None
        source = self._build(connection, secrets) if connection is not None else None
        self._cache[key] = _Entry(source, time.monotonic())
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_ENTRIES:
            self._cache.popitem(last=False)
        return source

    def _build(self, connection: Connection, secrets: list[str]) -> Source | None:
        """The scheme for a connection, or None when there is nothing to verify against."""
        provider = connection.provider
        holder = signing(provider).holder
        if not connection.receives_events or holder is SecretHolder.APP:
            return None
        scheme: SignatureScheme | None
        if holder is SecretHolder.NONE:
            scheme = self._jwt.get(provider)
        elif not secrets:
            # A FreshBooks connection gets its secret from the `callback.verify` handshake, which is
            # stored encrypted: without a key ring there is nothing to wait for.
            handshake = provider is Provider.FRESHBOOKS and self._can_store_secrets
            scheme = FreshBooksHandshake() if handshake else None
        else:
            try:
                scheme = scheme_for(provider, secrets)
            except ValueError:
                log.warning("connection has unusable webhook secrets", extra={"connection_id": connection.id})
                scheme = None
        if scheme is None:
            return None
        return Source(provider, scheme, connection.id, connection.provider_account_id)
