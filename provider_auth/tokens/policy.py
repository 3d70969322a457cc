"""The token schedule: when a token counts as fresh, when a grant is due, how long to wait.

Pure arithmetic on epoch seconds: no I/O, no clock (`now` is always a parameter), randomness only
from the `random.Random` passed in. What the rules are for: docs/tokens.md ("Refreshing exactly
once", "Lost answers", "The proactive refresher").
"""

import random
from dataclasses import dataclass

from provider_auth.oauth.specs import OAuthSpec
from provider_auth.tokens.grants import GrantType

__all__ = [
    "DAY",
    "TokenPolicy",
    "backoff",
    "cache_until",
    "deferred_report_at",
    "due_at",
    "gives_up",
    "handed_over_refresh_expiry",
    "in_backoff",
    "is_due",
    "is_fresh",
    "is_valid",
    "keepalive_at",
    "may_reuse",
    "refresh_expiry",
    "remembers_lost_answers",
    "retry_in",
]

DAY = 86_400.0
# 2**60 times any sane backoff base is far past any cap; a larger exponent would overflow a float.
_MAX_DOUBLINGS = 60


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


def is_fresh(policy: TokenPolicy, access_expires_at: float | None, now: float) -> bool:
    """Whether an access token is valid for at least the skew (what callers are handed)."""
    return access_expires_at is not None and access_expires_at - now >= policy.skew


def is_valid(access_expires_at: float | None, now: float) -> bool:
    """Whether an access token still works at all (it may be inside the skew)."""
    return access_expires_at is not None and access_expires_at > now


def cache_until(policy: TokenPolicy, access_expires_at: float, now: float) -> float:
    """Until when a token read now may be served from the in-process cache.

    While it is fresh, and at most `cache_seconds`: that bound is how late another process's
    disconnect, pause or reauth is seen by a cache.
    """
    return min(access_expires_at - policy.skew, now + policy.cache_seconds)


def due_at(
    policy: TokenPolicy,
    spec: OAuthSpec,
    grant_type: GrantType,
    access_expires_at: float | None,
    refresh_expires_at: float | None,
    now: float,
    rng: random.Random,
) -> float | None:
    """When the refresher should next renew a grant whose tokens are stored now.

    Ahead of the access token's expiry by the window plus a random part of the jitter (tokens
    stored together do not come due together), but never before half its remaining life; or
    earlier, to keep an idle refresh token alive (`keepalive_at`). None: nothing to renew.
    """
    candidates: list[float] = []
    if access_expires_at is not None:
        ahead = access_expires_at - policy.window - rng.uniform(0, policy.jitter)
        candidates.append(max(ahead, now + (access_expires_at - now) / 2))
    keepalive = keepalive_at(policy, spec, grant_type, refresh_expires_at, now)
    if keepalive is not None:
        candidates.append(keepalive)
    return min(candidates) if candidates else None


def keepalive_at(
    policy: TokenPolicy,
    spec: OAuthSpec,
    grant_type: GrantType,
    refresh_expires_at: float | None,
    now: float,
) -> float | None:
    """When to use an idle refresh token so its inactivity expiry restarts, or None.

    Only for providers whose refresh tokens die unused (Xero 60 days, QuickBooks 100 days rolling):
    when a quarter of its remaining life is left, and at most `keepalive_margin` before it dies.
    """
    if (
        refresh_expires_at is None
        or grant_type is not GrantType.REFRESH_TOKEN
        or spec.refresh_idle_lifetime is None
    ):
        return None
    remaining = max(0.0, refresh_expires_at - now)
    return refresh_expires_at - min(policy.keepalive_margin, remaining / 4)


def refresh_expiry(
    spec: OAuthSpec, grant_type: GrantType, refresh_expires_in: float | None, now: float
) -> float | None:
    """When the refresh token dies after a refresh answered at `now`; None keeps the stored expiry
    (a hard expiry handed over with the credentials)."""
    if refresh_expires_in is not None:
        return now + refresh_expires_in
    if spec.refresh_idle_lifetime is not None and grant_type is GrantType.REFRESH_TOKEN:
        # Counted from the last use, which is now.
        return now + spec.refresh_idle_lifetime
    return None


def handed_over_refresh_expiry(spec: OAuthSpec, given: float | None, now: float) -> float | None:
    """The refresh token's expiry for credentials handed over now: the one given, else the
    provider's inactivity lifetime from now, else none."""
    if given is not None:
        return given
    return None if spec.refresh_idle_lifetime is None else now + spec.refresh_idle_lifetime


def may_reuse(spec: OAuthSpec, lost_at: float, now: float) -> bool:
    """Whether a refresh token whose answer was lost at `lost_at` may be sent again now."""
    if not spec.rotates or spec.lost_response_grace <= 0:
        # No rotation: the token is still good. No documented grace: only the provider can tell,
        # so the same token is retried until it answers (its invalid_grant is then final).
        return True
    return now < lost_at + spec.lost_response_grace


def remembers_lost_answers(spec: OAuthSpec, grant_type: GrantType) -> bool:
    """Whether a lost answer must be remembered: only where the refresh token may have rotated."""
    return spec.rotates and grant_type is GrantType.REFRESH_TOKEN


def backoff(policy: TokenPolicy, failures: int, retry_after: float | None, rng: random.Random) -> float:
    """Seconds before the next attempt after `failures` transient failures in a row (1 or more).

    Doubling from the base up to the cap, times a random factor in [0.5, 1]; a provider's
    Retry-After is honoured up to the cap.
    """
    doublings = min(max(failures - 1, 0), _MAX_DOUBLINGS)
    delay = min(policy.backoff_cap, policy.backoff_base * 2.0**doublings)
    delay *= rng.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.backoff_cap))
    return delay


def gives_up(policy: TokenPolicy, failures: int, access_valid: bool) -> bool:
    """Whether transient failures make a grant unavailable: its access token no longer works and
    `max_transient_failures` attempts failed."""
    return not access_valid and failures >= policy.max_transient_failures


def is_due(refresh_due_at: float | None, now: float) -> bool:
    """Whether the refresher should renew the grant now (None: never due)."""
    return refresh_due_at is not None and refresh_due_at <= now


def in_backoff(next_attempt_at: float | None, now: float) -> bool:
    """Whether a failed refresh forbids another attempt yet."""
    return next_attempt_at is not None and now < next_attempt_at


def retry_in(next_attempt_at: float | None, now: float) -> float | None:
    """Seconds until the next refresh attempt is allowed (never negative), None when unknown."""
    return None if next_attempt_at is None else max(0.0, next_attempt_at - now)


def deferred_report_at(policy: TokenPolicy, now: float) -> float:
    """When to report a recovery again that could not be reported now (the broker was down)."""
    return now + policy.backoff_base * 5
