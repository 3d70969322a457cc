"""The emulator's memory: clients, grants and tokens, per-provider settings, faults and counters.

Everything here is synchronous and guarded by one lock, so a test may call the controls from the
loop that serves the emulator or from another thread. Handlers never hold the lock across an
await, so each token operation is atomic as seen by concurrent requests.
"""

import hmac
import itertools
import random
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from provider_auth.providers import Provider

from .books import Book, Books, Limits
from .profiles import PROFILES, ProviderProfile, emulated_providers

Clock = Callable[[], float]
"""Seconds since the epoch; the emulator's notion of now for every expiry."""

LossMode = Literal["hang", "drop"]
# The newest data-API requests the request log keeps.
REQUEST_LOG_SIZE = 50_000
_Pending = TypeVar("_Pending", "Fault", "Loss")


class ManualClock:
    """A clock that moves only when told to, for expiry and grace-window tests without sleeping."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds`."""
        with self._lock:
            self._now += seconds


@dataclass
class Fault:
    """`remaining` requests to a provider's endpoint (None: any endpoint) answered with `status`."""

    endpoint: str | None
    remaining: int
    status: int
    retry_after: float | None
    body: dict[str, Any] | None


@dataclass
class Loss:
    """`remaining` successful responses that are computed and applied, then never delivered."""

    endpoint: str | None
    remaining: int
    mode: LossMode
    hang_seconds: float


@dataclass
class ProviderConfig:
    """The tunable behaviour of one provider, seeded from its profile. Tests may change any field."""

    profile: ProviderProfile
    rotation: bool
    grace_seconds: float
    access_ttl: float
    refresh_ttl: float | None
    dead_grant_status: int
    dead_grant_error: str
    # Endpoint (None: every endpoint) -> the (lowest, highest) delay, drawn per request.
    latency: dict[str | None, tuple[float, float]] = field(default_factory=dict)
    faults: deque[Fault] = field(default_factory=deque)
    losses: deque[Loss] = field(default_factory=deque)

    @classmethod
    def from_profile(cls, profile: ProviderProfile) -> "ProviderConfig":
        """The provider's documented defaults."""
        return cls(
            profile=profile,
            rotation=profile.rotates,
            grace_seconds=profile.grace_seconds,
            access_ttl=profile.access_ttl,
            refresh_ttl=profile.refresh_ttl,
            dead_grant_status=profile.dead_grant_status,
            dead_grant_error=profile.dead_grant_error,
        )


@dataclass
class Grant:
    """One customer's consent: the refresh token chain, its accounts and (Xero) its connections."""

    grant_id: str
    provider: Provider
    client_id: str
    user: str
    accounts: list[str]
    refresh_token: str
    created_at: float
    refresh_expires_at: float | None
    hard_expires_at: float | None
    # Xero: connection id -> tenant id.
    connections: dict[str, str] = field(default_factory=dict)
    # Superseded refresh token -> the instant its grace ends.
    superseded: dict[str, float] = field(default_factory=dict)
    revoked: bool = False
    rotations: int = 0


@dataclass(frozen=True)
class GrantInfo:
    """A snapshot of a grant for assertions."""

    grant_id: str
    provider: Provider
    client_id: str
    user: str
    accounts: tuple[str, ...]
    refresh_token: str
    connections: tuple[tuple[str, str], ...]
    revoked: bool
    rotations: int
    created_at: float


@dataclass(frozen=True)
class AccessToken:
    """An issued access token: whose it is and when it dies."""

    token: str
    provider: Provider
    client_id: str
    grant_id: str | None
    expires_at: float
    ttl: float
    scope: str | None = None


class IssuedGrant(tuple[str, str]):
    """`(access_token, refresh_token)` of a seeded grant, with its `grant_id` attached."""

    grant_id: str

    def __new__(cls, access_token: str, refresh_token: str, grant_id: str) -> "IssuedGrant":
        issued = super().__new__(cls, (access_token, refresh_token))
        issued.grant_id = grant_id
        return issued

    @property
    def access_token(self) -> str:
        """The access token."""
        return self[0]

    @property
    def refresh_token(self) -> str:
        """The refresh token."""
        return self[1]


@dataclass(frozen=True)
class Refreshed:
    """A successful refresh: what to send back."""

    grant: GrantInfo
    access: AccessToken
    refresh_token: str
    rotated: bool
    refresh_expires_in: float | None


@dataclass(frozen=True)
class Rejected:
    """A refused refresh, with the reason (kept for debugging; not always sent)."""

    reason: str


@dataclass(frozen=True)
class ServedRequest:
    """One data-API request past the account's in-flight check, on the emulator's clock: when it
    came in and when its answer was ready (None while it is still in flight)."""

    provider: Provider
    account: str
    endpoint: str
    started: float
    ended: float | None


def _as_provider(provider: str | Provider) -> Provider:
    slug = Provider(provider)
    if slug not in PROFILES:
        raise KeyError(f"the emulator does not play {slug.value}")
    return slug


class EmulatorState:
    """All emulator state plus the controls tests use. `Emulator` (app.py) serves it over HTTP."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or time.time
        self._lock = threading.RLock()
        self._configs = {p: ProviderConfig.from_profile(PROFILES[p]) for p in emulated_providers()}
        self._clients: dict[tuple[Provider, str], str] = {}
        self._jwt_keys: dict[tuple[Provider, str], tuple[str, Any]] = {}
        self._grants: dict[str, Grant] = {}
        self._by_refresh: dict[tuple[Provider, str], str] = {}
        self._access: dict[tuple[Provider, str], AccessToken] = {}
        self._calls: Counter[tuple[Provider, str]] = Counter()
        self._events: Counter[tuple[Provider, str]] = Counter()
        self._sequence = itertools.count(1)
        # Data-API requests: in flight by ticket, then finished (the newest REQUEST_LOG_SIZE).
        self._tickets = itertools.count(1)
        self._in_flight: dict[int, ServedRequest] = {}
        self._served: deque[ServedRequest] = deque(maxlen=REQUEST_LOG_SIZE)
        # The accounts' records and API usage, read by the data-API modules (books.py).
        self.books = Books(self.clock)

    # ----- configuration -------------------------------------------------------------------

    def config(self, provider: str | Provider) -> ProviderConfig:
        """The live, mutable settings of a provider (for knobs without a dedicated method)."""
        return self._configs[_as_provider(provider)]

    def set_rotation(self, provider: str | Provider, rotate: bool) -> None:
        """Whether refreshes hand out a new refresh token (superseding the old one)."""
        with self._lock:
            self.config(provider).rotation = rotate

    def set_grace(self, provider: str | Provider, seconds: float) -> None:
        """How long a superseded refresh token keeps working (Xero: 30 min, others: 0)."""
        with self._lock:
            self.config(provider).grace_seconds = seconds

    def set_access_ttl(self, provider: str | Provider, seconds: float) -> None:
        """Lifetime of access tokens issued from now on (also sent as `expires_in`)."""
        with self._lock:
            self.config(provider).access_ttl = seconds

    def set_refresh_ttl(self, provider: str | Provider, seconds: float | None) -> None:
        """Rolling lifetime of refresh tokens from their last use; None: they never expire."""
        with self._lock:
            self.config(provider).refresh_ttl = seconds

    def set_latency(
        self,
        provider: str | Provider,
        seconds: float,
        endpoint: str | None = None,
        *,
        up_to: float | None = None,
    ) -> None:
        """Delay every request to the provider (or to one of its endpoints) by `seconds`; with
        `up_to`, by a delay drawn uniformly between `seconds` and `up_to` for each request."""
        highest = seconds if up_to is None else up_to
        if highest < seconds:
            raise ValueError("up_to must not be below seconds")
        with self._lock:
            latency = self.config(provider).latency
            if highest > 0:
                latency[endpoint] = (seconds, highest)
            else:
                latency.pop(endpoint, None)

    def fail_next(
        self,
        provider: str | Provider,
        n: int = 1,
        status: int = 503,
        *,
        retry_after: float | None = None,
        endpoint: str | None = "token",
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next `n` requests to the endpoint with `status` before doing anything.

        A 429 always carries `Retry-After` (1 s unless `retry_after` says otherwise); other
        statuses carry it only when `retry_after` is given. `endpoint=None` matches any endpoint.
        """
        if n < 1:
            raise ValueError("n must be at least 1")
        if status == 429 and retry_after is None:
            retry_after = 1.0
        with self._lock:
            self.config(provider).faults.append(Fault(endpoint, n, status, retry_after, body))

    def lose_next_response(
        self,
        provider: str | Provider,
        n: int = 1,
        *,
        mode: LossMode = "hang",
        hang_seconds: float = 300.0,
        endpoint: str | None = "token",
    ) -> None:
        """Apply the next `n` successful requests (tokens rotate) but never deliver the response.

        `hang`: hold the connection until the client gives up (or `hang_seconds`, or the emulator
        stops), then drop it without a byte; `drop`: close the connection at once.
        """
        if n < 1:
            raise ValueError("n must be at least 1")
        with self._lock:
            self.config(provider).losses.append(Loss(endpoint, n, mode, hang_seconds))

    def latency_for(self, provider: Provider, endpoint: str) -> float:
        """The delay to apply to a request (endpoint-specific first, then provider-wide)."""
        with self._lock:
            latency = self._configs[provider].latency
            lowest, highest = latency.get(endpoint, latency.get(None, (0.0, 0.0)))
        return lowest if highest <= lowest else random.uniform(lowest, highest)

    def take_fault(self, provider: Provider, endpoint: str) -> Fault | None:
        """Consume one pending fault matching the request, if any."""
        with self._lock:
            return _take(self._configs[provider].faults, endpoint)

    def take_loss(self, provider: Provider, endpoint: str) -> Loss | None:
        """Consume one pending lost response matching the request, if any."""
        with self._lock:
            return _take(self._configs[provider].losses, endpoint)

    # ----- clients ------------------------------------------------------------------------

    def register_client(self, provider: str | Provider, client_id: str, client_secret: str) -> None:
        """Register an app (its id and secret) with a provider."""
        with self._lock:
            self._clients[(_as_provider(provider), client_id)] = client_secret

    def check_client(self, provider: Provider, client_id: str, client_secret: str) -> bool:
        """True when the id is registered and the secret matches."""
        with self._lock:
            expected = self._clients.get((provider, client_id))
        if expected is None:
            return False
        return hmac.compare_digest(expected.encode(), client_secret.encode())

    def register_jwt_key(self, provider: str | Provider, client_id: str, kid: str, public_key: Any) -> None:
        """Map a certificate id to a client and its public key (NetSuite client credentials).

        `public_key` is a PEM string/bytes or a `cryptography` public key object.
        """
        if isinstance(public_key, str):
            public_key = public_key.encode()
        if isinstance(public_key, bytes):
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            public_key = load_pem_public_key(public_key)
        with self._lock:
            self._jwt_keys[(_as_provider(provider), kid)] = (client_id, public_key)

    def jwt_key(self, provider: Provider, kid: str) -> tuple[str, Any] | None:
        """The (client id, public key) registered under a certificate id."""
        with self._lock:
            return self._jwt_keys.get((provider, kid))

    def _sole_client(self, provider: Provider) -> str:
        clients = [cid for (p, cid) in self._clients if p == provider]
        if len(clients) != 1:
            raise ValueError(f"pass client_id: {provider.value} has {len(clients)} registered clients")
        return clients[0]

    # ----- grants ---------------------------------------------------------------------------

    def _new_token(self, provider: Provider, kind: str) -> str:
        return f"{provider.value}.{kind}.{next(self._sequence)}.{secrets.token_urlsafe(24)}"

    def _mint_access(
        self, provider: Provider, client_id: str, grant_id: str | None, scope: str | None = None
    ) -> AccessToken:
        ttl = self._configs[provider].access_ttl
        access = AccessToken(
            token=self._new_token(provider, "at"),
            provider=provider,
            client_id=client_id,
            grant_id=grant_id,
            expires_at=self.clock() + ttl,
            ttl=ttl,
            scope=scope,
        )
        self._access[(provider, access.token)] = access
        return access

    def issue_grant(
        self,
        provider: str | Provider,
        client_id: str | None = None,
        *,
        accounts: Iterable[str] | None = None,
        user: str = "user",
        refresh_token: str | None = None,
    ) -> IssuedGrant:
        """Seed a grant as if a user had just consented; returns `(access_token, refresh_token)`.

        `client_id` defaults to the provider's only registered client. `accounts` are the realm,
        tenant or organisation ids it covers (one is made up when omitted); for Xero each gets a
        connection. `refresh_token` fixes the refresh token's value (e.g. a dev-stack fixture).
        """
        slug = _as_provider(provider)
        with self._lock:
            client = client_id if client_id is not None else self._sole_client(slug)
            if (slug, client) not in self._clients:
                raise ValueError(f"client {client!r} is not registered with {slug.value}")
            if refresh_token is not None and (slug, refresh_token) in self._by_refresh:
                raise ValueError("that refresh token is already in use")
            now = self.clock()
            cfg = self._configs[slug]
            grant = Grant(
                grant_id=str(uuid.uuid4()),
                provider=slug,
                client_id=client,
                user=user,
                accounts=list(accounts) if accounts is not None else [str(uuid.uuid4())],
                refresh_token=refresh_token or self._new_token(slug, "rt"),
                created_at=now,
                refresh_expires_at=None,
                hard_expires_at=(now + cfg.profile.refresh_hard_cap)
                if cfg.profile.refresh_hard_cap
                else None,
            )
            grant.refresh_expires_at = self._refresh_expiry(grant, now)
            if slug is Provider.XERO:
                grant.connections = {str(uuid.uuid4()): tenant for tenant in grant.accounts}
            self._grants[grant.grant_id] = grant
            self._by_refresh[(slug, grant.refresh_token)] = grant.grant_id
            self._enforce_grant_limit(grant)
            access = self._mint_access(slug, client, grant.grant_id)
            self._events[(slug, "grant_issued")] += 1
            return IssuedGrant(access.token, grant.refresh_token, grant.grant_id)

    def _enforce_grant_limit(self, newest: Grant) -> None:
        # Zoho keeps at most 20 refresh tokens per user and drops the oldest without telling anyone.
        limit = self._configs[newest.provider].profile.max_grants_per_user
        if limit is None:
            return
        live = [
            g
            for g in self._grants.values()
            if g.provider == newest.provider
            and g.client_id == newest.client_id
            and g.user == newest.user
            and not g.revoked
        ]
        for stale in sorted(live, key=lambda g: g.created_at)[: max(0, len(live) - limit)]:
            self._revoke_grant(stale)

    def _refresh_expiry(self, grant: Grant, now: float) -> float | None:
        ttl = self._configs[grant.provider].refresh_ttl
        expiry = None if ttl is None else now + ttl
        if grant.hard_expires_at is not None:
            expiry = grant.hard_expires_at if expiry is None else min(expiry, grant.hard_expires_at)
        return expiry

    def _find_grant(self, provider: Provider, token_or_id: str) -> Grant | None:
        grant = self._grants.get(token_or_id)
        if grant is not None and grant.provider == provider:
            return grant
        grant_id = self._by_refresh.get((provider, token_or_id))
        if grant_id is None:
            access = self._access.get((provider, token_or_id))
            grant_id = access.grant_id if access else None
        if grant_id is None and provider is Provider.XERO:
            grant_id = next((g.grant_id for g in self._grants.values() if token_or_id in g.connections), None)
        return self._grants.get(grant_id) if grant_id else None

    def grant_info(self, provider: str | Provider, token_or_id: str) -> GrantInfo | None:
        """A snapshot of the grant a refresh/access token, grant id or Xero connection id belongs to."""
        with self._lock:
            grant = self._find_grant(_as_provider(provider), token_or_id)
            return _snapshot(grant) if grant else None

    def refresh(self, provider: Provider, client_id: str, refresh_token: str) -> Refreshed | Rejected:
        """Exchange a refresh token, applying the provider's rotation and grace rules."""
        with self._lock:
            now = self.clock()
            cfg = self._configs[provider]
            grant_id = self._by_refresh.get((provider, refresh_token))
            grant = self._grants.get(grant_id) if grant_id else None
            if grant is None:
                return self._reject(provider, "unknown refresh token")
            if grant.client_id != client_id:
                # RFC 6749 section 6: the refresh token must have been issued to this client.
                return self._reject(provider, "refresh token issued to another client")
            if grant.revoked:
                return self._reject(provider, "grant revoked")
            if refresh_token != grant.refresh_token:
                graced_until = grant.superseded.get(refresh_token, 0.0)
                if now >= graced_until:
                    return self._reject(provider, "refresh token superseded")
                self._events[(provider, "grace_used")] += 1
            elif grant.refresh_expires_at is not None and now >= grant.refresh_expires_at:
                return self._reject(provider, "refresh token expired")
            rotated = cfg.rotation
            if rotated:
                grant.superseded[grant.refresh_token] = now + cfg.grace_seconds
                grant.refresh_token = self._new_token(provider, "rt")
                grant.rotations += 1
                self._by_refresh[(provider, grant.refresh_token)] = grant.grant_id
            grant.refresh_expires_at = self._refresh_expiry(grant, now)
            access = self._mint_access(provider, client_id, grant.grant_id)
            self._events[(provider, "refresh")] += 1
            return Refreshed(
                grant=_snapshot(grant),
                access=access,
                refresh_token=grant.refresh_token,
                rotated=rotated,
                refresh_expires_in=(grant.refresh_expires_at - now) if grant.refresh_expires_at else None,
            )

    def _reject(self, provider: Provider, reason: str) -> Rejected:
        self._events[(provider, "invalid_grant")] += 1
        return Rejected(reason)

    def issue_client_credentials(self, provider: Provider, client_id: str, scope: str | None) -> AccessToken:
        """Issue an access token to a client acting for itself (no grant, no refresh token)."""
        with self._lock:
            self._events[(provider, "client_credentials")] += 1
            return self._mint_access(provider, client_id, None, scope)

    def revoke(
        self, provider: str | Provider, token_or_grant_id: str, *, client_id: str | None = None
    ) -> bool:
        """Revoke the grant behind a refresh/access token or grant id; its tokens all die.

        With `client_id`, only that client's grant is revoked. False when nothing matched.
        """
        slug = _as_provider(provider)
        with self._lock:
            grant = self._find_grant(slug, token_or_grant_id)
            if grant is None or (client_id is not None and grant.client_id != client_id):
                access = self._access.get((slug, token_or_grant_id))
                if access is None or access.grant_id is not None:
                    return False
                if client_id is not None and access.client_id != client_id:
                    return False
                del self._access[(slug, token_or_grant_id)]
                return True
            self._revoke_grant(grant)
            return True

    def _revoke_grant(self, grant: Grant) -> None:
        grant.revoked = True
        self._events[(grant.provider, "revoked")] += 1
        for key in [k for k, a in self._access.items() if a.grant_id == grant.grant_id]:
            del self._access[key]

    def remove_connection(self, grant_id: str, connection_id: str) -> bool:
        """Disconnect one Xero tenant; removing a grant's last connection revokes the grant."""
        with self._lock:
            grant = self._grants.get(grant_id)
            if grant is None or grant.revoked or connection_id not in grant.connections:
                return False
            del grant.connections[connection_id]
            if not grant.connections:
                self._revoke_grant(grant)
            return True

    def access_token(self, provider: str | Provider, token: str) -> AccessToken | None:
        """The live access token record (unexpired, grant not revoked), else None."""
        slug = _as_provider(provider)
        with self._lock:
            access = self._access.get((slug, token))
            if access is None or self.clock() >= access.expires_at:
                return None
            if access.grant_id is not None and self._grants[access.grant_id].revoked:
                return None
            return access

    def validate_access_token(self, provider: str | Provider, token: str) -> bool:
        """True when `token` is a live access token of `provider` (data APIs check bearers here)."""
        return self.access_token(provider, token) is not None

    def grant_for_access_token(self, provider: str | Provider, token: str) -> GrantInfo | None:
        """The grant behind a live access token (None for client-credentials tokens or dead ones)."""
        access = self.access_token(provider, token)
        if access is None or access.grant_id is None:
            return None
        with self._lock:
            return _snapshot(self._grants[access.grant_id])

    # ----- books ------------------------------------------------------------------------------

    def book(self, provider: str | Provider, account: str) -> Book:
        """The mutable book of a provider account (QuickBooks realm, Xero tenant), served by its
        data API: `emu.book("xero", tenant).create("Invoice")`."""
        return self.books.book(_as_provider(provider), account)

    def set_api_limits(self, provider: str | Provider, **limits: int | None) -> Limits:
        """Change a provider's data-API limits (`per_minute`, `concurrent`, `per_day`,
        `app_per_minute`; None lifts one); returns them."""
        current = self.books.limits[_as_provider(provider)]
        for name, value in limits.items():
            if not hasattr(current, name):
                raise TypeError(f"no limit named {name!r}")
            setattr(current, name, value)
        return current

    # ----- counters -------------------------------------------------------------------------

    def count_call(self, provider: Provider, endpoint: str) -> None:
        """Count one request that reached an endpoint (before latency and faults)."""
        with self._lock:
            self._calls[(provider, endpoint)] += 1

    def count_event(self, provider: Provider, event: str) -> None:
        """Count an outcome (fault served, response lost, invalid_client, ...)."""
        with self._lock:
            self._events[(provider, event)] += 1

    def calls(self, provider: str | Provider, endpoint: str = "token") -> int:
        """Requests received by one endpoint of a provider (every attempt, faulted or not)."""
        with self._lock:
            return self._calls[(_as_provider(provider), endpoint)]

    def refreshes(self, provider: str | Provider) -> int:
        """Successful refresh-token exchanges, including those whose response was then lost."""
        return self.events(provider, "refresh")

    def events(self, provider: str | Provider, event: str) -> int:
        """How often an outcome happened: refresh, client_credentials, invalid_grant,
        invalid_client, grace_used, revoked, fault, lost, grant_issued."""
        with self._lock:
            return self._events[(_as_provider(provider), event)]

    def counters(self) -> dict[str, dict[str, dict[str, int]]]:
        """Every counter, as `{provider: {"calls": {endpoint: n}, "events": {event: n}}}`."""
        with self._lock:
            out: dict[str, dict[str, dict[str, int]]] = {}
            for (p, endpoint), n in self._calls.items():
                out.setdefault(p.value, {"calls": {}, "events": {}})["calls"][endpoint] = n
            for (p, event), n in self._events.items():
                out.setdefault(p.value, {"calls": {}, "events": {}})["events"][event] = n
            return out

    def reset_counters(self) -> None:
        """Zero every counter and forget finished requests (grants, tokens and settings stay)."""
        with self._lock:
            self._calls.clear()
            self._events.clear()
            self._served.clear()

    # ----- request log ----------------------------------------------------------------------

    def request_started(self, provider: Provider, account: str, endpoint: str) -> int:
        """Log a data-API request let in for `account`; returns the ticket `request_ended` takes."""
        with self._lock:
            ticket = next(self._tickets)
            self._in_flight[ticket] = ServedRequest(provider, account, endpoint, self.clock(), None)
            return ticket

    def request_ended(self, ticket: int) -> None:
        """Log the end of a request `request_started` let in (its answer is ready, or it failed)."""
        with self._lock:
            started = self._in_flight.pop(ticket)
            self._served.append(replace(started, ended=self.clock()))

    def served(self, provider: str | Provider, account: str | None = None) -> list[ServedRequest]:
        """The provider's data-API requests (for one account), finished or in flight, by arrival:
        how many came in any span and how many overlapped, as the provider would count them."""
        slug = _as_provider(provider)
        with self._lock:
            logged = [*self._served, *self._in_flight.values()]
        found = [r for r in logged if r.provider == slug and (account is None or r.account == account)]
        return sorted(found, key=lambda r: r.started)


def _take(queue: deque[_Pending], endpoint: str) -> _Pending | None:
    for item in queue:
        if item.endpoint is None or item.endpoint == endpoint:
            item.remaining -= 1
            taken = replace(item)
            if item.remaining <= 0:
                queue.remove(item)
            return taken
    return None


def _snapshot(grant: Grant) -> GrantInfo:
    return GrantInfo(
        grant_id=grant.grant_id,
        provider=grant.provider,
        client_id=grant.client_id,
        user=grant.user,
        accounts=tuple(grant.accounts),
        refresh_token=grant.refresh_token,
        connections=tuple(grant.connections.items()),
        revoked=grant.revoked,
        rotations=grant.rotations,
        created_at=grant.created_at,
    )
