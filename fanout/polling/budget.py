"""Rate budgets shared by every process: a permit before each provider request.

Each provider account has a few scopes (requests per minute, per day, in flight; Xero also the app's
minute), each one limit kept in PostgreSQL with PostgreSQL's clock, so the limits hold however many
workers run. A permit is taken in all of a request's scopes at once or in none. The rule, the storage
and the cost per request: docs/architecture.md, "Rate budgets"; the limits: docs/providers.md.
"""

import asyncio
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import asyncpg

from provider_auth.providers import Provider

log = logging.getLogger("ledgerhook.fanout.budget")

Kind = Literal["poll", "backfill"]

MINUTE = "minute"
DAY = "day"
IN_FLIGHT = "in_flight"
APP_MINUTE = "app_minute"


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """One provider's limits per account (None: no such limit) and, for Xero, per app."""

    requests_per_minute: int | None = None
    concurrency: int | None = None
    requests_per_day: int | None = None
    app_requests_per_minute: int | None = None


DEFAULT_LIMITS: Mapping[Provider, ProviderLimits] = {
    # 500 per minute and 10 in flight per realm (docs/providers.md, QuickBooks Online).
    Provider.QUICKBOOKS: ProviderLimits(requests_per_minute=500, concurrency=10),
    # Per tenant 60 per minute, 5 in flight, 5,000 per day; 10,000 per minute per app
    # (docs/providers.md, Xero).
    Provider.XERO: ProviderLimits(
        requests_per_minute=60, concurrency=5, requests_per_day=5_000, app_requests_per_minute=10_000
    ),
    # 100 per minute per organisation; no concurrency limit is documented (docs/providers.md, Zoho Books).
    Provider.ZOHO_BOOKS: ProviderLimits(requests_per_minute=100),
    # Account-wide concurrency, 5 without SuiteCloud Plus (docs/providers.md, NetSuite).
    Provider.NETSUITE: ProviderLimits(concurrency=5),
    # Concurrency is set by the performance tier and not published per tier (docs/providers.md,
    # Sage Intacct): 2 in flight, the conservative choice, until an account's tier says more.
    Provider.SAGE_INTACCT: ProviderLimits(concurrency=2),
    # Unpublished (docs/providers.md, FreshBooks): a conservative 60 per minute and 2 in flight.
    Provider.FRESHBOOKS: ProviderLimits(requests_per_minute=60, concurrency=2),
}


@dataclass(frozen=True, slots=True)
class Scope:
    """One limit: at most `limit` live entries. A rate scope's entry lives `lifetime` seconds (the
    window); a held (concurrency) scope's entry is deleted when the request ends, or lives
    `lifetime` seconds if its process died first."""

    key: str
    limit: int
    lifetime: float
    held: bool = False


@dataclass(frozen=True, slots=True)
class Permit:
    """Granted entries in every scope of one request; `granted_at` is PostgreSQL's clock."""

    id: uuid.UUID
    scopes: tuple[Scope, ...]
    kind: Kind
    granted_at: datetime


@dataclass(slots=True)
class _Take:
    """One attempt waiting for its batch: its scopes (unique keys), kind, permit id and answer."""

    scopes: tuple[Scope, ...]
    kind: Kind
    permit_id: uuid.UUID
    answer: asyncio.Future[Permit | float]


@dataclass(frozen=True, slots=True)
class ScopeUse:
    """A scope now: live entries (grants in the window, or requests in flight) and its park."""

    limit: int
    used: int
    parked_seconds: float


class BudgetTimeout(TimeoutError):
    """The budget cannot grant within the caller's `max_wait`; `wait_seconds` says when it might."""

    def __init__(self, wait_seconds: float) -> None:
        super().__init__(f"rate budget exhausted; retry in {wait_seconds:.3f} s")
        self.wait_seconds = wait_seconds


@dataclass(frozen=True, slots=True)
class Throttle:
    """What a provider's 429 asks for: park the scope labelled `scope` for `seconds`."""

    scope: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Stretch:
    """The factors a provider's intervals are multiplied by: polled accounts' and swept accounts'."""

    poll: float
    sweep: float


def app_budget(limits: ProviderLimits, minute: float, share: float) -> float | None:
    """The requests per second polls may plan on under the provider's app-wide limit: `share` of it
    (the rest is headroom for backfills, retries and polls costlier than their mean); None when the
    provider has no app-wide limit."""
    if limits.app_requests_per_minute is None:
        return None
    return limits.app_requests_per_minute * share / minute


def stretch_intervals(
    poll_demand: float, sweep_demand: float, budget: float | None, sweep_yield: float = 4.0
) -> Stretch:
    """How far to stretch intervals so the requests they ask for (per second, polled and swept
    accounts') fit `budget` (per second; None: unlimited), fairly: every account of a kind by the
    same factor, so none is starved and none is polled at its interval while another waits.

    Swept accounts (webhooks deliver their changes) yield first: while stretching sweeps alone, up
    to `sweep_yield` times, is enough, polls keep their intervals; past that both stretch, sweeps
    `sweep_yield` times as much as polls. docs/architecture.md, "Interval stretch".
    """
    if poll_demand < 0 or sweep_demand < 0:
        raise ValueError("a demand cannot be negative")
    if sweep_yield < 1:
        raise ValueError(f"sweep_yield must be at least 1, not {sweep_yield}")
    if budget is None or poll_demand + sweep_demand <= budget:
        return Stretch(1.0, 1.0)
    if budget <= 0:
        raise ValueError(f"the budget must be positive, not {budget}")
    spare = budget - poll_demand
    if spare > 0 and sweep_demand <= spare * sweep_yield:
        return Stretch(1.0, max(1.0, sweep_demand / spare))
    # Polls at factor p and sweeps at sweep_yield * p use the budget exactly.
    poll = (poll_demand + sweep_demand / sweep_yield) / budget
    return Stretch(poll, poll * sweep_yield)


def backoff_seconds(
    attempt: int, *, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None
) -> float:
    """Exponential back-off with jitter: a random point in the upper half of min(cap, base * 2**attempt),
    so retries spread out but never come sooner than half the nominal delay."""
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 0), 64))
    return ceiling / 2 + (rng or random).random() * ceiling / 2


def throttle_for_429(
    provider: Provider, headers: Mapping[str, str], attempt: int, rng: random.Random | None = None
) -> Throttle:
    """How long a 429 parks which scope of the account; `attempt` counts 429s in a row from 0. Pure but
    for reading the clock when `Retry-After` is an HTTP date."""
    lower = {name.lower(): value for name, value in headers.items()}
    if provider is Provider.QUICKBOOKS:
        # A minute's pause after a 429, the rule integrators report (docs/providers.md, QuickBooks Online).
        return Throttle(MINUTE, 60.0)
    if provider is Provider.XERO:
        # Xero names the limit hit and says when to come back (docs/providers.md, Xero).
        problem = lower.get("x-rate-limit-problem", "").strip().lower()
        scope = {"day": DAY, "appminute": APP_MINUTE}.get(problem, MINUTE)
        seconds = retry_after_seconds(lower.get("retry-after"))
        return Throttle(scope, seconds if seconds is not None else backoff_seconds(attempt, rng=rng))
    # The others: exponential back-off, never sooner than a `Retry-After` they sent.
    told = retry_after_seconds(lower.get("retry-after")) or 0.0
    return Throttle(MINUTE, max(told, backoff_seconds(attempt, rng=rng)))


def retry_after_seconds(value: str | None) -> float | None:
    """A `Retry-After` value (seconds or an HTTP date) in seconds from now, at most a day, or None if
    absent or unreadable."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    if not math.isfinite(seconds):
        return None
    # No provider limit resets later than a day on; a wilder value is not trusted to park for longer.
    return min(max(0.0, seconds), 86_400.0)


@dataclass(slots=True)
class RateBudgets:
    """Every provider account's budgets, in PostgreSQL through `pool`.

    `minute` and `day` are the window lengths (tests shorten them); `permit_lifetime` bounds how long a
    dead process's in-flight permit counts (keep it above the longest request); `backfill_share` is
    the part of a scope backfills may hold while a poll waits on it (a refused poll counts as waiting
    until it is due back, plus `poll_wait_mark` seconds); `recheck` caps a wait on a concurrency
    scope, whose permits may come back before they expire; `batch_size` bounds how many attempts go
    to PostgreSQL in one call (see `try_acquire`).
    """

    pool: asyncpg.Pool
    limits: Mapping[Provider, ProviderLimits] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    minute: float = 60.0
    day: float = 86_400.0
    permit_lifetime: float = 300.0
    backfill_share: float = 0.5
    recheck: float = 0.25
    poll_wait_mark: float = 1.0
    batch_size: int = 64
    _waiting: list[_Take] = field(default_factory=list, init=False, repr=False)
    _sending: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    def scopes(self, provider: Provider, account: str) -> tuple[Scope, ...]:
        """The scopes a request to `account` at `provider` takes a permit in."""
        return tuple(self._labelled(provider, account).values())

    def scope_key(self, provider: Provider, account: str, label: str) -> str:
        """The key of the scope labelled `label` (`minute`, `day`, `in_flight`, `app_minute`)."""
        if label == APP_MINUTE:
            return f"{provider.value}/app/{MINUTE}"
        return f"{provider.value}/account/{account}/{label}"

    def _labelled(self, provider: Provider, account: str) -> dict[str, Scope]:
        limits = self.limits.get(provider, ProviderLimits())
        wanted = (
            (MINUTE, limits.requests_per_minute, self.minute, False),
            (DAY, limits.requests_per_day, self.day, False),
            (IN_FLIGHT, limits.concurrency, self.permit_lifetime, True),
            (APP_MINUTE, limits.app_requests_per_minute, self.minute, False),
        )
        return {
            label: Scope(self.scope_key(provider, account, label), limit, lifetime, held)
            for label, limit, lifetime, held in wanted
            if limit is not None
        }

    @asynccontextmanager
    async def permit(
        self, provider: Provider, account: str, kind: Kind = "poll", max_wait: float = 30.0
    ) -> AsyncIterator[Permit]:
        """Hold a permit for one request to `account`; released when the block ends."""
        async with self.holding(self.scopes(provider, account), kind, max_wait) as granted:
            yield granted

    @asynccontextmanager
    async def holding(self, scopes: Sequence[Scope], kind: Kind, max_wait: float) -> AsyncIterator[Permit]:
        """Hold a permit in `scopes` (all or none) for the block."""
        granted = await self.acquire(scopes, kind, max_wait)
        try:
            yield granted
        finally:
            await self.release(granted)

    async def acquire(self, scopes: Sequence[Scope], kind: Kind = "poll", max_wait: float = 30.0) -> Permit:
        """Wait until every scope grants; BudgetTimeout when that cannot happen within `max_wait` s."""
        deadline = time.monotonic() + max_wait
        # One permit id for every attempt: a full in-flight scope keeps its next free slot for the
        # attempt whose turn it is, by this id (migration 0014).
        permit_id = uuid.uuid4()
        while True:
            taken = await self.try_acquire(scopes, kind, permit_id)
            if isinstance(taken, Permit):
                return taken
            remaining = deadline - time.monotonic()
            if taken > remaining:
                raise BudgetTimeout(taken)
            # A little jitter so processes woken by the same expiry do not all ask at once.
            await asyncio.sleep(taken + random.random() * 0.01)

    async def try_acquire(
        self, scopes: Sequence[Scope], kind: Kind = "poll", permit_id: uuid.UUID | None = None
    ) -> Permit | float:
        """One attempt: the permit, or the seconds to wait before the next attempt can succeed.
        `permit_id`: the id the permit gets, the same for each attempt of one acquisition (new if
        None).

        Attempts made while another batch of this process's is in PostgreSQL wait for it and go
        together in the next (`batch_size` at most): one call and one commit for all of them.
        """
        unique = tuple({scope.key: scope for scope in scopes}.values())
        ident = permit_id if permit_id is not None else uuid.uuid4()
        take = _Take(unique, kind, ident, asyncio.get_running_loop().create_future())
        self._waiting.append(take)
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send_batches())
        return await take.answer

    async def _send_batches(self) -> None:
        """Send the waiting attempts, a batch at a time, until none is left; never raises."""
        while self._waiting:
            batch = [take for take in self._waiting[: self.batch_size] if not take.answer.done()]
            del self._waiting[: self.batch_size]
            if not batch:
                continue
            try:
                answers = await self._take_batch(batch)
            except Exception as exc:  # the batch's one call failed: so did each of its attempts
                for take in batch:
                    if not take.answer.done():
                        take.answer.set_exception(exc)
                continue
            for take in batch:
                answer = answers[take.permit_id]
                if not take.answer.done():
                    take.answer.set_result(answer)
                elif isinstance(answer, Permit):
                    await self._release_unclaimed(answer)

    async def _take_batch(self, batch: Sequence[_Take]) -> dict[uuid.UUID, Permit | float]:
        """One call of `rate_budget_take_batch` (migration 0008): each attempt's permit or wait."""
        scopes = [scope for take in batch for scope in take.scopes]
        rows = await self.pool.fetch(
            "SELECT permit, wait, granted_at"
            " FROM rate_budget_take_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            [len(take.scopes) for take in batch],
            [s.key for s in scopes],
            [s.limit for s in scopes],
            [s.lifetime for s in scopes],
            [s.held for s in scopes],
            [take.permit_id for take in batch],
            [take.kind == "backfill" for take in batch],
            self.backfill_share,
            self.poll_wait_mark,
            self.recheck,
        )
        by_permit = {row["permit"]: row for row in rows}
        answers: dict[uuid.UUID, Permit | float] = {}
        for take in batch:
            row = by_permit[take.permit_id]
            if row["wait"] > 0:
                answers[take.permit_id] = float(row["wait"])
            else:
                answers[take.permit_id] = Permit(take.permit_id, take.scopes, take.kind, row["granted_at"])
        return answers

    async def _release_unclaimed(self, granted: Permit) -> None:
        """Release a permit whose caller stopped waiting (cancelled) while its batch was taken."""
        try:
            await self.release(granted)
        except Exception:
            # Its entries lapse on their own: in-flight ones after the permit lifetime, rate ones
            # with their window.
            log.warning("could not release an unclaimed rate budget permit", exc_info=True)

    async def release(self, granted: Permit) -> None:
        """End the permit's in-flight entries; its rate entries stay a whole window from now.

        A provider counts a request when it arrives, which is after the grant (a new connection, a
        slow network), so the window restarts at the release: by then the request has arrived.
        """
        # By primary key (scope, permit): one index probe per scope, whatever the table holds.
        await self.pool.execute(
            "WITH ended AS (DELETE FROM rate_budget_entries"
            "   WHERE scope_key = ANY($2::text[]) AND permit_id = $1 AND held)"
            " UPDATE rate_budget_entries"
            " SET expires_at = greatest(expires_at, clock_timestamp() + (expires_at - granted_at))"
            " WHERE scope_key = ANY($2::text[]) AND permit_id = $1 AND NOT held",
            granted.id,
            [scope.key for scope in granted.scopes],
        )

    async def park(self, scope_key: str, seconds: float) -> None:
        """Grant nothing in the scope for `seconds` from now (PostgreSQL's clock), in every process.
        A longer park already in place is kept."""
        await self.pool.execute(
            "INSERT INTO rate_budget_scopes AS s (scope_key, parked_until)"
            " VALUES ($1, clock_timestamp() + make_interval(secs => $2))"
            " ON CONFLICT (scope_key) DO UPDATE"
            " SET parked_until = greatest(s.parked_until, excluded.parked_until)",
            scope_key,
            float(seconds),
        )

    async def park_after_429(
        self, provider: Provider, account: str, headers: Mapping[str, str], attempt: int
    ) -> Throttle:
        """Park the scope a provider's 429 names, for as long as it asks (see `throttle_for_429`).
        An account without that scope (NetSuite has no minute) has all its own scopes parked."""
        throttle = throttle_for_429(provider, headers, attempt)
        scopes = self._labelled(provider, account)
        if throttle.scope in scopes:
            keys = [scopes[throttle.scope].key]
        else:
            keys = [scope.key for label, scope in scopes.items() if label != APP_MINUTE]
        for key in keys:
            await self.park(key, throttle.seconds)
        return throttle

    async def in_use(self, provider: Provider, account: str) -> dict[str, ScopeUse]:
        """Each scope of the account by label: live entries and how long it stays parked."""
        scopes = self._labelled(provider, account)
        rows = await self.pool.fetch(
            "SELECT k.key,"
            " (SELECT count(*) FROM rate_budget_entries e"
            "   WHERE e.scope_key = k.key AND e.expires_at > clock_timestamp()) AS used,"
            " (SELECT greatest(0, extract(epoch FROM s.parked_until - clock_timestamp()))"
            "   FROM rate_budget_scopes s WHERE s.scope_key = k.key) AS parked"
            " FROM unnest($1::text[]) AS k(key)",
            [s.key for s in scopes.values()],
        )
        by_key = {row["key"]: row for row in rows}
        return {
            label: ScopeUse(
                scope.limit, int(by_key[scope.key]["used"]), float(by_key[scope.key]["parked"] or 0)
            )
            for label, scope in scopes.items()
        }
