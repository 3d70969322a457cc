"""Which signature scheme guards a webhook URL, and what the URL says about the sender.

Shared endpoints (`/webhooks/quickbooks`, `/webhooks/xero`) are enabled by their app-wide secrets in
the settings. Per-connection endpoints (`/webhooks/{provider}/{connection_id}`) take their scheme
from the connection registered through the admin API:

| provider | scheme |
|---|---|
| `zoho-books` | `X-Zoho-Webhook-Signature` (Zoho Billing's scheme) with the connection's secret tokens |
| `freshbooks` | `X-FreshBooks-Hmac-SHA256` with the connection's verifier; before it has one, the
  `callback.verify` handshake (below) |
| `netsuite`, `custom` | Standard Webhooks with the connection's `whsec_` secrets |
| `sage-intacct` | `Authorization: Bearer <JWT>` against `LEDGERHOOK_SAGE_INTACCT_JWT_KEYS` |

An unknown or disconnected connection, a provider other than the connection's, or a connection with
nothing to verify against answers 404.

Caching: a connection's scheme is kept in memory for `LEDGERHOOK_CONNECTION_CACHE_SECONDS` (3 s by
default, at most `MAX_ENTRIES` connections), so deliveries rarely wait on PostgreSQL and concurrent
misses for one connection share one lookup. A new or rotated secret therefore takes effect within
that time in other gateway processes; the process that served the admin call drops its entry at once.
While PostgreSQL cannot be reached, a recently cached scheme keeps serving (up to `STALE_SECONDS`);
without one the answer is 503 with `Retry-After`, so the provider retries.

FreshBooks handshake: registering a callback makes FreshBooks post
`name=callback.verify&object_id=<callback id>&verifier=<code>` (unsigned) to the connection's URL.
For a FreshBooks connection with no secret yet, that post is stored on the raw topic like any
delivery (the product reads the verifier there and PUTs it back to FreshBooks, which completes the
registration), and the verifier becomes the connection's webhook secret, encrypted; only then does
the gateway answer 200. From then on FreshBooks signs every delivery with it, and an unsigned verify
post gets 401. To register a new callback for the same connection, clear its secret first
(`PATCH /admin/v1/connections/{id}` with `"webhook_secrets": []`). Any other post to a connection
in that state gets 401.
"""

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message

from fanout.parsers.freshbooks import verification_code
from gateway.ingress.body import read_limited
from gateway.runtime.metrics import Metrics
from gateway.settings import Settings, secret_values
from provider_auth.accounts.store import Connection, ConnectionStore
from provider_auth.providers import Provider, parse_provider
from provider_auth.vault import VaultError
from provider_auth.webhooks import (
    BodyHmac,
    FreshBooksForm,
    JwtBearer,
    SignatureScheme,
    StandardWebhooks,
    Verdict,
    ZohoWebhookSignature,
)
from provider_auth.webhooks.base import Headers

log = logging.getLogger("ledgerhook.sources")

MAX_ENTRIES = 10_000  # bounds memory whatever ids are thrown at the endpoint
STALE_SECONDS = 300.0  # how long a cached scheme may serve while PostgreSQL is unreachable
LOOKUP_TIMEOUT = 2.0  # a lookup slower than this answers 503 rather than miss a provider's deadline
# What a failed lookup may raise: the database unreachable, slow, or refusing.
DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


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
        self._sources: dict[Provider, Source] = {}
        if settings.quickbooks_verifier_tokens:
            scheme = BodyHmac.create("intuit-signature", secret_values(settings.quickbooks_verifier_tokens))
            self._sources[Provider.QUICKBOOKS] = Source(Provider.QUICKBOOKS, scheme)
        if settings.xero_webhook_keys:
            scheme = BodyHmac.create("x-xero-signature", secret_values(settings.xero_webhook_keys))
            self._sources[Provider.XERO] = Source(Provider.XERO, scheme)

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
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`can_store_secrets`: a key ring is configured (the FreshBooks handshake needs one)."""
        self._store = store
        self._shared = shared
        self._ttl = settings.connection_cache_seconds
        self._can_store_secrets = can_store_secrets
        self._max_entries = max_entries
        self._clock = clock
        self._jwt = (
            JwtBearer.create(
                settings.sage_intacct_jwt_keys,
                issuer=settings.sage_intacct_jwt_issuer,
                audience=settings.sage_intacct_jwt_audience,
            )
            if settings.sage_intacct_jwt_keys
            else None
        )
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Source | None]] = {}

    async def resolve(self, provider: Provider, connection_id: str | None) -> Source | None:
        """The source for a URL; SourceUnavailable when a connection cannot be looked up."""
        if connection_id is None:
            return await self._shared.resolve(provider, None)
        key = canonical_id(connection_id)
        if key is None:
            return None
        source = await self._lookup(key)
        return source if source is not None and source.provider is provider else None

    def invalidate(self, connection_id: str) -> None:
        """Forget a connection's cached scheme (after this process changed it)."""
        key = canonical_id(connection_id)
        if key is not None:
            self._cache.pop(key, None)

    async def _lookup(self, key: str) -> Source | None:
        entry = self._cache.get(key)
        if entry is not None and self._clock() - entry.fetched_at < self._ttl:
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
            if stale is not None and self._clock() - stale.fetched_at < STALE_SECONDS:
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
        self._cache[key] = _Entry(source, self._clock())
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return source

    def _build(self, connection: Connection, secrets: list[str]) -> Source | None:
        """The scheme for a connection, or None when there is nothing to verify against."""
        provider = connection.provider
        if not connection.receives_events or provider.shared_endpoint:
            return None
        scheme: SignatureScheme | None
        try:
            if provider is Provider.SAGE_INTACCT:
                scheme = self._jwt
            elif provider is Provider.FRESHBOOKS and not secrets:
                scheme = FreshBooksHandshake() if self._can_store_secrets else None
            elif not secrets:
                scheme = None
            elif provider is Provider.FRESHBOOKS:
                scheme = FreshBooksForm.create(secrets)
            elif provider is Provider.ZOHO_BOOKS:
                scheme = ZohoWebhookSignature.create(secrets)
            else:  # netsuite, custom
                scheme = StandardWebhooks.create(secrets)
        except ValueError:
            log.warning("connection has unusable webhook secrets", extra={"connection_id": connection.id})
            scheme = None
        if scheme is None:
            return None
        return Source(provider, scheme, connection.id, connection.provider_account_id)


def canonical_id(connection_id: str) -> str | None:
    """The connection id in canonical UUID form, or None when it is not a UUID."""
    try:
        return str(uuid.UUID(connection_id))
    except (ValueError, AttributeError, TypeError):
        return None


class Ingress(Protocol):
    """The webhook handler the per-connection endpoint hands requests to."""

    async def __call__(self, request: Request) -> Response:
        """Answer one webhook request."""
        ...


class ConnectionEndpoint:
    """`/webhooks/{provider}/{connection_id}`: the ingress, plus what only per-connection URLs need.

    It looks the connection up first (a cache hit for the ingress right after), answers 503 when
    that lookup cannot be made, and runs the FreshBooks `callback.verify` handshake.
    """

    def __init__(
        self,
        ingress: Ingress,
        sources: ConnectionSources,
        store: ConnectionStore,
        metrics: Metrics,
        max_body_bytes: int,
        retry_after_seconds: int,
    ) -> None:
        self._ingress = ingress
        self._sources = sources
        self._store = store
        self._metrics = metrics
        self._max_body = max_body_bytes
        self._retry_after = str(retry_after_seconds)

    async def __call__(self, request: Request) -> Response:
        """Answer one per-connection webhook request."""
        provider = parse_provider(request.path_params["provider"])
        if provider is None or request.method != "POST":
            return await self._ingress(request)
        try:
            source = await self._sources.resolve(provider, request.path_params["connection_id"])
        except SourceUnavailable:
            return self._unavailable(provider)
        if source is not None and isinstance(source.scheme, FreshBooksHandshake):
            return await self._handshake(request, source)
        return await self._ingress(request)

    def _unavailable(self, provider: Provider) -> Response:
        self._metrics.requests.labels(provider.value, "unavailable").inc()
        return Response(status_code=503, headers={"retry-after": self._retry_after})

    async def _handshake(self, request: Request, source: Source) -> Response:
        assert source.connection_id is not None
        try:
            body = await read_limited(request, self._max_body)
        except ClientDisconnect:
            return Response(status_code=400)
        if body is None:
            self._metrics.requests.labels(source.provider.value, "too_large").inc()
            return Response(status_code=413)
        replay = _replayed(request, body)
        verifier = verification_code(body)
        if verifier is None:
            return await self._ingress(replay)  # the handshake scheme refuses it: 401
        try:
            current = await self._store.get(source.connection_id)
        except DATABASE_ERRORS:
            return self._unavailable(source.provider)
        if current is None or current.has_webhook_secret or not current.receives_events:
            # Changed since it was cached (another process completed the handshake): look again.
            self._sources.invalidate(source.connection_id)
            return await self._ingress(replay)
        response = await self._ingress(replay)
        if response.status_code != 200:
            return response
        try:
            await self._store.update(source.connection_id, webhook_secrets=[verifier])
        except DATABASE_ERRORS:
            # Stored on the raw topic but not remembered: 503 makes FreshBooks post it again.
            log.error("freshbooks verifier could not be saved", extra={"connection_id": source.connection_id})
            return self._unavailable(source.provider)
        finally:
            self._sources.invalidate(source.connection_id)
        log.info("freshbooks callback verified", extra={"connection_id": source.connection_id})
        return response


def _replayed(request: Request, body: bytes) -> Request:
    """The same request with its body, already read, served again to the next reader."""
    pending = True

    async def receive() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()

    scope: MutableMapping[str, Any] = request.scope
    return Request(scope, receive)
