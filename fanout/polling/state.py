"""Polling state in PostgreSQL: which provider accounts to poll and how often (from their
connections' polling settings), who polls each now, where each entity's next poll starts, and how far
each provider's intervals stretch when its app-wide limit cannot cover them.

Several workers share the accounts through leases taken with `FOR UPDATE SKIP LOCKED`; every time
comes from PostgreSQL's clock, so workers on different machines agree. Tables (migration 0003; the
connections' polling settings, 0006; the stretch, 0013) and what a lease guarantees:
docs/architecture.md, "Polling state" and "Interval stretch".
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from fanout.polling.adapters import WEBHOOK_PROVIDERS
from provider_auth.accounts.store import ConnectionStatus, PollingMode
from provider_auth.providers import Provider

__all__ = [
    "POLLED_PROVIDERS",
    "AccountLease",
    "AccountsSynced",
    "Demand",
    "IntervalStretch",
    "LeaseLost",
    "PollAccount",
    "PollState",
]

# Custom sources only post webhooks: they have no change API to poll.
POLLED_PROVIDERS = frozenset(provider for provider in Provider if provider is not Provider.CUSTOM)

# One sync at a time: concurrent ones would only repeat each other's writes.
_SYNC_LOCK_KEY = 0x506F6C6C53796E63  # "PollSync"

# The interval a connection asks for: its own, else its effective mode's default, `auto` being a
# sweep ($3) for a connection that gets webhooks (its provider's reach every connection ($4), or it
# holds a webhook secret of its own) and a poll ($2) otherwise.
_CONNECTION_INTERVAL = (
    "COALESCE(c.polling_interval_seconds, CASE"
    f" WHEN c.polling_mode = '{PollingMode.SWEEP.value}' THEN $3::integer"
    f" WHEN c.polling_mode = '{PollingMode.AUTO.value}'"
    "  AND (c.provider = ANY($4::text[]) OR c.webhook_secrets IS NOT NULL) THEN $3::integer"
    " ELSE $2::integer END)"
)
# A connection's polls are sweeps: its effective mode is `sweep` (the same rule as the interval's).
_CONNECTION_SWEEPS = (
    f"(c.polling_mode = '{PollingMode.SWEEP.value}' OR (c.polling_mode = '{PollingMode.AUTO.value}'"
    " AND (c.provider = ANY($4::text[]) OR c.webhook_secrets IS NOT NULL)))"
)
_HAS_CONNECTION = (
    "EXISTS (SELECT 1 FROM connections c"
    " WHERE c.provider = d.provider AND c.provider_account_id = d.provider_account_id)"
)
_SAME_ACCOUNT = "a.provider = d.provider AND a.provider_account_id = d.provider_account_id"
# One statement, so every step sees the same connections. `wanted`: each account of a polled
# provider ($1) with an active connection whose mode is not off, at the smallest interval such a
# connection asks for, swept when every such connection's polls are sweeps. `drift`: the accounts
# whose row is not what `wanted` says (in the steady state, only the disabled ones), from one pass
# over both. The steps touch disjoint rows (a row is
# updated once per statement):
# - added: wanted and not there yet, due at once (the default next_due_at is now());
# - resumed: wanted and disabled, due at once, so what changed meanwhile is read from the kept
#   watermarks;
# - rescheduled: wanted, enabled, at another interval or sweep flag; a shorter interval applies
#   from the last poll, not from a due time the longer one set, a longer one from the next poll on;
# - disabled: not wanted but with connection rows (all inactive or off), its watermarks kept;
# - removed: no connection rows at all, its watermarks going with it (foreign key cascade).
_SYNC = (
    "WITH wanted AS ("
    f"  SELECT c.provider, c.provider_account_id, min({_CONNECTION_INTERVAL}) AS interval_seconds,"
    f"  bool_and({_CONNECTION_SWEEPS}) AS sweep"
    "   FROM connections c"
    f"  WHERE c.status = '{ConnectionStatus.ACTIVE.value}' AND c.polling_mode <> '{PollingMode.OFF.value}'"
    "   AND c.provider = ANY($1::text[])"
    "   GROUP BY c.provider, c.provider_account_id),"
    " drift AS ("
    "  SELECT COALESCE(w.provider, a.provider) AS provider,"
    "  COALESCE(w.provider_account_id, a.provider_account_id) AS provider_account_id,"
    "  w.interval_seconds AS wanted, a.provider IS NOT NULL AS present, a.enabled,"
    "  a.interval_seconds AS current, w.sweep"
    "  FROM wanted w FULL JOIN poll_accounts a"
    "  ON a.provider = w.provider AND a.provider_account_id = w.provider_account_id"
    "  WHERE w.provider IS NULL OR a.provider IS NULL OR NOT a.enabled"
    "  OR a.interval_seconds <> w.interval_seconds OR a.sweep <> w.sweep),"
    " added AS ("
    "  INSERT INTO poll_accounts (provider, provider_account_id, interval_seconds, sweep)"
    "  SELECT d.provider, d.provider_account_id, d.wanted, d.sweep FROM drift d WHERE NOT d.present"
    "  ON CONFLICT (provider, provider_account_id) DO NOTHING RETURNING 1),"
    " resumed AS ("
    "  UPDATE poll_accounts a SET enabled = true, next_due_at = now(), interval_seconds = d.wanted,"
    "  sweep = d.sweep"
    f"  FROM drift d WHERE {_SAME_ACCOUNT} AND d.wanted IS NOT NULL AND NOT d.enabled RETURNING 1),"
    " rescheduled AS ("
    "  UPDATE poll_accounts a SET interval_seconds = d.wanted, sweep = d.sweep,"
    "  next_due_at = CASE WHEN a.interval_seconds = d.wanted THEN a.next_due_at"
    "  ELSE LEAST(a.next_due_at, a.last_polled_at + d.wanted * interval '1 second') END"
    f"  FROM drift d WHERE {_SAME_ACCOUNT} AND d.wanted IS NOT NULL AND d.enabled RETURNING 1),"
    " disabled AS ("
    "  UPDATE poll_accounts a SET enabled = false"
    f"  FROM drift d WHERE {_SAME_ACCOUNT} AND d.wanted IS NULL AND d.enabled"
    f"  AND d.provider = ANY($1::text[]) AND {_HAS_CONNECTION} RETURNING 1),"
    " removed AS ("
    "  DELETE FROM poll_accounts a USING drift d"
    f"  WHERE {_SAME_ACCOUNT} AND d.wanted IS NULL AND NOT {_HAS_CONNECTION} RETURNING 1)"
    " SELECT (SELECT count(*) FROM added) AS added, (SELECT count(*) FROM resumed) AS resumed,"
    " (SELECT count(*) FROM disabled) AS disabled, (SELECT count(*) FROM removed) AS removed"
)

_LEASE_COLUMNS = (
    "a.provider, a.provider_account_id, a.lease_owner, a.lease_id::text AS lease_id, a.lease_until,"
    " a.next_due_at, a.interval_seconds, a.sweep"
)
# The due rows come off the partial index `poll_accounts_available` (sweep, available_at) in due
# order, the polled accounts' range first and the swept ones' only for the slots left (the outer
# LIMIT stops the append before its second arm otherwise): accounts without webhooks are served
# first. SKIP LOCKED passes over rows another worker is leasing in this instant instead of waiting.
LEASE_DUE_QUERY = (
    "UPDATE poll_accounts a SET lease_owner = $1, lease_id = gen_random_uuid(), leased_at = now(),"
    " lease_until = now() + $3::double precision * interval '1 second'"
    " FROM ("
    "  SELECT * FROM (SELECT provider, provider_account_id FROM poll_accounts"
    "   WHERE enabled AND NOT sweep AND available_at <= now() ORDER BY available_at LIMIT $2"
    "   FOR UPDATE SKIP LOCKED) polled"
    "  UNION ALL"
    "  SELECT * FROM (SELECT provider, provider_account_id FROM poll_accounts"
    "   WHERE enabled AND sweep AND available_at <= now() ORDER BY available_at LIMIT $2"
    "   FOR UPDATE SKIP LOCKED) swept"
    "  LIMIT $2) due"
    " WHERE a.provider = due.provider AND a.provider_account_id = due.provider_account_id"
    f" RETURNING {_LEASE_COLUMNS}"
)
_HELD = (
    "provider = $1 AND provider_account_id = $2 AND lease_owner = $3 AND lease_id = $4::uuid"
    " AND lease_until > now()"
)
_RENEW = (
    "UPDATE poll_accounts SET lease_until = now() + $5::double precision * interval '1 second'"
    f" WHERE {_HELD} RETURNING lease_until"
)
# Without a delay, the interval (stretched as `poll_stretch` says for the account's provider and
# kind) counts from the poll's start, so a slow poll does not drift it. The requests of a successful
# poll ($7) join the account's running mean.
_FINISH = (
    "UPDATE poll_accounts a SET lease_owner = NULL, lease_id = NULL, leased_at = NULL, lease_until = NULL,"
    " last_polled_at = now(), last_outcome = $5,"
    " next_due_at = CASE WHEN $6::double precision IS NULL"
    "   THEN GREATEST(now(), leased_at + interval_seconds * COALESCE((SELECT s.stretch FROM poll_stretch s"
    "     WHERE s.provider = a.provider AND s.sweep = a.sweep), 1) * interval '1 second')"
    "   ELSE now() + $6::double precision * interval '1 second' END,"
    " requests_per_poll = CASE WHEN $7::real IS NULL THEN requests_per_poll"
    "   WHEN requests_per_poll IS NULL THEN $7::real ELSE (requests_per_poll + $7::real) / 2 END"
    f" WHERE {_HELD} RETURNING next_due_at"
)
# Inside the caller's transaction: clock_timestamp(), since now() is when that transaction began.
# FOR KEY SHARE keeps the row out of other workers' `lease_due` (SKIP LOCKED) until the caller
# commits, while the owner's own `renew` still goes through.
_HOLD_FOR_ADVANCE = (
    "SELECT true FROM poll_accounts WHERE provider = $1 AND provider_account_id = $2"
    " AND lease_owner = $3 AND lease_id = $4::uuid AND lease_until > clock_timestamp() FOR KEY SHARE"
)
# Forward only: a watermark at or behind the stored one leaves the row as it is.
_ADVANCE = (
    "INSERT INTO poll_watermarks (provider, provider_account_id, entity, watermark, updated_at)"
    " SELECT $1, $2, entity, watermark, clock_timestamp()"
    " FROM unnest($3::text[], $4::timestamptz[]) AS w (entity, watermark)"
    " ON CONFLICT (provider, provider_account_id, entity) DO UPDATE"
    " SET watermark = excluded.watermark, updated_at = excluded.updated_at"
    " WHERE excluded.watermark > poll_watermarks.watermark"
)
_HOLDER = (
    "SELECT lease_owner, lease_id::text AS lease_id, lease_until > clock_timestamp() AS live"
    " FROM poll_accounts WHERE provider = $1 AND provider_account_id = $2"
)
_ACCOUNT_COLUMNS = (
    "provider, provider_account_id, enabled, interval_seconds, next_due_at, lease_owner, lease_until,"
    " last_polled_at, last_outcome, sweep, requests_per_poll"
)
# What each provider's enabled accounts ask for, per kind (polled, swept): requests per second at
# their intervals from what their polls cost (`measured`), and the polls per second of those not
# polled yet (`unmeasured`, costed by the caller). One pass over the table, once per sync.
_DEMAND = (
    "SELECT provider, sweep, count(*) AS accounts,"
    " COALESCE(sum(requests_per_poll / interval_seconds), 0) AS measured,"
    " COALESCE(sum(1.0 / interval_seconds) FILTER (WHERE requests_per_poll IS NULL), 0) AS unmeasured"
    " FROM poll_accounts WHERE enabled GROUP BY provider, sweep"
)
_STRETCH_COLUMNS = "provider, sweep, stretch, accounts, demand, budget, updated_at"
_SET_STRETCH = (
    "INSERT INTO poll_stretch AS s (provider, sweep, stretch, accounts, demand, budget, updated_at)"
    " SELECT * , now() FROM unnest($1::text[], $2::boolean[], $3::double precision[], $4::integer[],"
    "  $5::double precision[], $6::double precision[])"
    " ON CONFLICT (provider, sweep) DO UPDATE SET stretch = excluded.stretch,"
    " accounts = excluded.accounts, demand = excluded.demand, budget = excluded.budget,"
    " updated_at = excluded.updated_at"
    " RETURNING provider, sweep, (SELECT o.stretch FROM poll_stretch o"
    "  WHERE o.provider = s.provider AND o.sweep = s.sweep) AS before"
)
# A stretch that shrank: the accounts due later than the new stretched interval after their last
# poll are brought in (by more than a quarter, so a small change does not rewrite every row).
_PULL_IN = (
    "UPDATE poll_accounts SET next_due_at = GREATEST(now(),"
    "  last_polled_at + interval_seconds * $3::double precision * interval '1 second')"
    " WHERE provider = $1 AND sweep = $2 AND enabled AND lease_owner IS NULL"
    " AND next_due_at > last_polled_at + interval_seconds * $3::double precision * 1.25 * interval '1 second'"
)


@dataclass(frozen=True, slots=True)
class AccountsSynced:
    """What one `sync_accounts` changed, in accounts."""

    added: int
    resumed: int
    disabled: int
    removed: int


@dataclass(frozen=True, slots=True)
class AccountLease:
    """One worker's right to poll one provider account until `lease_until` (PostgreSQL's clock)."""

    provider: Provider
    account: str
    owner: str
    # New for every lease, so a lease the same owner took again is not this one.
    lease_id: str
    lease_until: datetime
    # When the poll was due: how late it starts is now minus this.
    due_at: datetime
    interval_seconds: int
    # Every active connection of the account gets webhooks: this poll is a sweep.
    sweep: bool = False


@dataclass(frozen=True, slots=True)
class PollAccount:
    """One account's polling row, as status pages show it."""

    provider: Provider
    account: str
    enabled: bool
    interval_seconds: int
    next_due_at: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_polled_at: datetime | None
    last_outcome: str | None
    # Its polls are sweeps (every active connection gets webhooks): it yields when budgets are short.
    sweep: bool = False
    # The running mean of its successful polls' requests; None before the first.
    requests_per_poll: float | None = None


@dataclass(frozen=True, slots=True)
class Demand:
    """What one provider's enabled accounts of one kind (polled or swept) ask for at their intervals."""

    provider: Provider
    sweep: bool
    accounts: int
    # Requests per second of the accounts whose polls' cost is known.
    measured: float
    # Polls per second of the accounts never polled yet, whose cost the caller estimates.
    unmeasured: float

    def requests_per_second(self, requests_per_poll: float) -> float:
        """The demand in requests per second, an unmeasured poll costing `requests_per_poll`."""
        return self.measured + self.unmeasured * requests_per_poll


@dataclass(frozen=True, slots=True)
class IntervalStretch:
    """How far one provider's polled or swept accounts' intervals are stretched, and from what."""

    provider: Provider
    sweep: bool
    # The factor every interval of these accounts is multiplied by (1: not stretched).
    stretch: float
    accounts: int
    # Requests per second their intervals ask for, and the part of the app-wide limit polls may use
    # (None: the provider has no app-wide limit).
    demand: float
    budget: float | None
    updated_at: datetime | None = None


class LeaseLost(Exception):
    """The lease is no longer the caller's: it expired, or another owner took the account over."""

    def __init__(self, lease: AccountLease, detail: str) -> None:
        super().__init__(
            f"{lease.provider.value} account {lease.account!r}:"
            f" the lease of {lease.owner!r} is lost ({detail})"
        )
        self.lease = lease


def _lease(row: Mapping[str, Any]) -> AccountLease:
    return AccountLease(
        provider=Provider(row["provider"]),
        account=row["provider_account_id"],
        owner=row["lease_owner"],
        lease_id=row["lease_id"],
        lease_until=row["lease_until"],
        due_at=row["next_due_at"],
        interval_seconds=row["interval_seconds"],
        sweep=row["sweep"],
    )


def _stretch(row: Mapping[str, Any]) -> IntervalStretch:
    return IntervalStretch(
        provider=Provider(row["provider"]),
        sweep=row["sweep"],
        stretch=row["stretch"],
        accounts=row["accounts"],
        demand=row["demand"],
        budget=row["budget"],
        updated_at=row["updated_at"],
    )


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value}")


class PollState:
    """The `poll_accounts` and `poll_watermarks` tables, on a pool handed in by the caller.

    `connections` is only read here: its writes are `provider_auth.accounts`'.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # ----- accounts to poll ----------------------------------------------------------------

    async def sync_accounts(
        self,
        poll_interval_seconds: int,
        sweep_interval_seconds: int,
        *,
        providers: Collection[Provider] = POLLED_PROVIDERS,
        webhook_providers: Collection[Provider] = WEBHOOK_PROVIDERS,
    ) -> AccountsSynced:
        """Bring `poll_accounts` in line with `connections`: one row per provider account of
        `providers` with an active connection whose polling mode is not `off`.

        Its interval is the smallest its connections ask for: their own `interval_seconds`, else
        `sweep_interval_seconds` for a connection in `sweep` mode, or in `auto` mode with webhooks
        (its provider is one of `webhook_providers`, or it holds a webhook secret), else
        `poll_interval_seconds`. An account that gained such a connection is added, or enabled
        again, due at once; one whose connections are all inactive (`needs_reauth`, `paused`,
        `disconnected`) or `off` is disabled, keeping its watermarks; one with no connection row at
        all is removed with them.
        """
        _positive("poll_interval_seconds", poll_interval_seconds)
        _positive("sweep_interval_seconds", sweep_interval_seconds)
        slugs = sorted(provider.value for provider in providers)
        webhook_slugs = sorted(provider.value for provider in webhook_providers)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SYNC_LOCK_KEY)
            row = await conn.fetchrow(
                _SYNC, slugs, poll_interval_seconds, sweep_interval_seconds, webhook_slugs
            )
        assert row is not None
        return AccountsSynced(
            added=row["added"], resumed=row["resumed"], disabled=row["disabled"], removed=row["removed"]
        )

    async def account(self, provider: Provider, account: str) -> PollAccount | None:
        """One account's polling row, or None when it is not (or no longer) tracked."""
        row = await self._pool.fetchrow(
            f"SELECT {_ACCOUNT_COLUMNS} FROM poll_accounts WHERE provider = $1 AND provider_account_id = $2",
            provider.value,
            account,
        )
        if row is None:
            return None
        return PollAccount(
            provider=Provider(row["provider"]),
            account=row["provider_account_id"],
            enabled=row["enabled"],
            interval_seconds=row["interval_seconds"],
            next_due_at=row["next_due_at"],
            lease_owner=row["lease_owner"],
            lease_until=row["lease_until"],
            last_polled_at=row["last_polled_at"],
            last_outcome=row["last_outcome"],
            sweep=row["sweep"],
            requests_per_poll=row["requests_per_poll"],
        )

    # ----- interval stretch ------------------------------------------------------------------

    async def demand(self) -> list[Demand]:
        """What the enabled accounts ask for, per provider and kind (polled, swept)."""
        return [
            Demand(
                provider=Provider(row["provider"]),
                sweep=row["sweep"],
                accounts=row["accounts"],
                measured=float(row["measured"]),
                unmeasured=float(row["unmeasured"]),
            )
            for row in await self._pool.fetch(_DEMAND)
        ]

    async def set_stretches(self, stretches: Collection[IntervalStretch]) -> None:
        """Store each provider's and kind's stretch; the next poll of each account is due after its
        interval times the stretch. A stretch that shrank by more than a fifth brings in at once the
        due times the old one pushed out (an account then waits at most the new stretched interval
        after its last poll)."""
        rows = list(stretches)
        for row in rows:
            if row.stretch < 1:
                raise ValueError(f"a stretch is at least 1, not {row.stretch}")
        async with self._pool.acquire() as conn, conn.transaction():
            written = await conn.fetch(
                _SET_STRETCH,
                [row.provider.value for row in rows],
                [row.sweep for row in rows],
                [row.stretch for row in rows],
                [row.accounts for row in rows],
                [row.demand for row in rows],
                [row.budget for row in rows],
            )
            before = {(w["provider"], w["sweep"]): w["before"] for w in written}
            for row in rows:
                old = before.get((row.provider.value, row.sweep))
                if old is not None and row.stretch * 1.25 < old:
                    await conn.execute(_PULL_IN, row.provider.value, row.sweep, row.stretch)

    async def stretches(self) -> list[IntervalStretch]:
        """Every stored stretch, by provider and kind (polled first)."""
        rows = await self._pool.fetch(f"SELECT {_STRETCH_COLUMNS} FROM poll_stretch ORDER BY provider, sweep")
        return [_stretch(row) for row in rows]

    async def stretch(self, provider: Provider, sweep: bool) -> IntervalStretch | None:
        """The stretch of one provider's polled (`sweep` false) or swept accounts; None before the
        first sync that measured them."""
        row = await self._pool.fetchrow(
            f"SELECT {_STRETCH_COLUMNS} FROM poll_stretch WHERE provider = $1 AND sweep = $2",
            provider.value,
            sweep,
        )
        return None if row is None else _stretch(row)

    async def due_now(self, provider: Provider, account: str) -> None:
        """Make an enabled account due now (its connection got tokens again); no-op otherwise."""
        await self._pool.execute(
            "UPDATE poll_accounts SET next_due_at = now()"
            " WHERE provider = $1 AND provider_account_id = $2 AND enabled AND next_due_at > now()",
            provider.value,
            account,
        )

    # ----- leases ----------------------------------------------------------------------------

    async def lease_due(self, owner: str, limit: int, lease_seconds: float) -> list[AccountLease]:
        """Lease up to `limit` enabled accounts that are due and that no live lease holds, for
        `lease_seconds`: polled accounts (without webhooks) before swept ones, most overdue first.

        Safe with any number of workers: an account is in one lease at a time. One whose owner
        died is handed over when its lease runs out.
        """
        if not owner:
            raise ValueError("a lease needs an owner")
        _positive("limit", limit)
        _positive("lease_seconds", lease_seconds)
        rows = await self._pool.fetch(LEASE_DUE_QUERY, owner, limit, lease_seconds)
        return sorted(
            (_lease(row) for row in rows), key=lambda lease: (lease.sweep, lease.due_at, lease.account)
        )

    async def renew(self, lease: AccountLease, lease_seconds: float) -> AccountLease:
        """Extend a live lease to `lease_seconds` from now; LeaseLost when it is no longer held."""
        _positive("lease_seconds", lease_seconds)
        until = await self._pool.fetchval(_RENEW, *self._key(lease), lease_seconds)
        if until is None:
            raise await self._lost(self._pool, lease)
        return replace(lease, lease_until=until)

    async def finish(
        self,
        lease: AccountLease,
        outcome: str,
        next_poll_in: timedelta | None = None,
        *,
        requests: int | None = None,
    ) -> datetime:
        """Release the account, recording the poll's `outcome`; returns when it is due next.

        Due one interval (times its provider's and kind's stretch) after the poll started, or
        `next_poll_in` from now when given (a provider's `Retry-After`, a failed poll's backoff).
        `requests`, the requests a successful poll made, joins the account's running mean (what its
        polls cost). LeaseLost when the lease is no longer held: nothing is recorded then.
        """
        delay = None if next_poll_in is None else next_poll_in.total_seconds()
        if requests is not None and requests < 0:
            raise ValueError(f"requests must not be negative, not {requests}")
        due: datetime | None = await self._pool.fetchval(_FINISH, *self._key(lease), outcome, delay, requests)
        if due is None:
            raise await self._lost(self._pool, lease)
        return due

    # ----- watermarks ------------------------------------------------------------------------

    async def watermarks(self, provider: Provider, account: str) -> dict[str, datetime]:
        """Each entity's watermark for one account ({} before its first completed poll)."""
        rows = await self._pool.fetch(
            "SELECT entity, watermark FROM poll_watermarks WHERE provider = $1 AND provider_account_id = $2",
            provider.value,
            account,
        )
        return {row["entity"]: row["watermark"] for row in rows}

    async def advance(
        self, conn: asyncpg.Connection, lease: AccountLease, watermarks: Mapping[str, datetime]
    ) -> None:
        """Move the lease's account's watermarks forward, in the caller's open transaction.

        The caller commits only once every event behind them is acknowledged. A watermark behind
        the stored one is ignored. LeaseLost when the lease is no longer held; until the caller's
        transaction ends, no other worker can lease the account.
        """
        if not conn.is_in_transaction():
            raise RuntimeError("advance() runs inside the caller's transaction")
        for entity, watermark in watermarks.items():
            if watermark.tzinfo is None:
                raise ValueError(f"the watermark of {entity!r} has no time zone")
        held = await conn.fetchval(_HOLD_FOR_ADVANCE, *self._key(lease))
        if held is None:
            raise await self._lost(conn, lease)
        if watermarks:
            await conn.execute(
                _ADVANCE, lease.provider.value, lease.account, list(watermarks), list(watermarks.values())
            )

    # ----- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _key(lease: AccountLease) -> tuple[str, str, str, str]:
        return (lease.provider.value, lease.account, lease.owner, lease.lease_id)

    @staticmethod
    async def _lost(conn: asyncpg.Connection | asyncpg.Pool, lease: AccountLease) -> LeaseLost:
        """The LeaseLost for a lease a write found not held, saying what became of it."""
        row = await conn.fetchrow(_HOLDER, lease.provider.value, lease.account)
        if row is None:
            return LeaseLost(lease, "the account is no longer polled")
        if row["lease_owner"] is None:
            return LeaseLost(lease, "it has been released")
        if row["lease_id"] != lease.lease_id:
            return LeaseLost(lease, f"taken over by {row['lease_owner']!r}")
        return LeaseLost(lease, "it expired")
