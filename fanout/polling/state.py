"""Polling state in PostgreSQL: which provider accounts to poll and how often (from their
connections' polling settings), who polls each now, where each entity's next poll starts.

Several workers share the accounts through leases taken with `FOR UPDATE SKIP LOCKED`; every time
comes from PostgreSQL's clock, so workers on different machines agree. Tables (migration 0003; the
connections' polling settings, 0006) and what a lease guarantees: docs/architecture.md, "Polling
state".
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from fanout.polling.adapters import WEBHOOK_PROVIDERS
from provider_auth.accounts.store import ConnectionStatus, PollingMode
from provider_auth.providers import Provider

__all__ = ["POLLED_PROVIDERS", "AccountLease", "AccountsSynced", "LeaseLost", "PollAccount", "PollState"]

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
_HAS_CONNECTION = (
    "EXISTS (SELECT 1 FROM connections c"
    " WHERE c.provider = d.provider AND c.provider_account_id = d.provider_account_id)"
)
_SAME_ACCOUNT = "a.provider = d.provider AND a.provider_account_id = d.provider_account_id"
# One statement, so every step sees the same connections. `wanted`: each account of a polled
# provider ($1) with an active connection whose mode is not off, at the smallest interval such a
# connection asks for. `drift`: the accounts whose row is not what `wanted` says (in the steady
# state, only the disabled ones), from one pass over both. The steps touch disjoint rows (a row is
# updated once per statement):
# - added: wanted and not there yet, due at once (the default next_due_at is now());
# - resumed: wanted and disabled, due at once, so what changed meanwhile is read from the kept
#   watermarks;
# - rescheduled: wanted, enabled, at another interval; a shorter one applies from the last poll,
#   not from a due time the longer one set, a longer one from the next poll on;
# - disabled: not wanted but with connection rows (all inactive or off), its watermarks kept;
# - removed: no connection rows at all, its watermarks going with it (foreign key cascade).
_SYNC = (
    "WITH wanted AS ("
    f"  SELECT c.provider, c.provider_account_id, min({_CONNECTION_INTERVAL}) AS interval_seconds"
    "   FROM connections c"
    f"  WHERE c.status = '{ConnectionStatus.ACTIVE.value}' AND c.polling_mode <> '{PollingMode.OFF.value}'"
    "   AND c.provider = ANY($1::text[])"
    "   GROUP BY c.provider, c.provider_account_id),"
    " drift AS ("
    "  SELECT COALESCE(w.provider, a.provider) AS provider,"
    "  COALESCE(w.provider_account_id, a.provider_account_id) AS provider_account_id,"
    "  w.interval_seconds AS wanted, a.provider IS NOT NULL AS present, a.enabled,"
    "  a.interval_seconds AS current"
    "  FROM wanted w FULL JOIN poll_accounts a"
    "  ON a.provider = w.provider AND a.provider_account_id = w.provider_account_id"
    "  WHERE w.provider IS NULL OR a.provider IS NULL OR NOT a.enabled"
    "  OR a.interval_seconds <> w.interval_seconds),"
    " added AS ("
    "  INSERT INTO poll_accounts (provider, provider_account_id, interval_seconds)"
    "  SELECT d.provider, d.provider_account_id, d.wanted FROM drift d WHERE NOT d.present"
    "  ON CONFLICT (provider, provider_account_id) DO NOTHING RETURNING 1),"
    " resumed AS ("
    "  UPDATE poll_accounts a SET enabled = true, next_due_at = now(), interval_seconds = d.wanted"
    f"  FROM drift d WHERE {_SAME_ACCOUNT} AND d.wanted IS NOT NULL AND NOT d.enabled RETURNING 1),"
    " rescheduled AS ("
    "  UPDATE poll_accounts a SET interval_seconds = d.wanted,"
    "  next_due_at = LEAST(a.next_due_at, a.last_polled_at + d.wanted * interval '1 second')"
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
    " a.next_due_at, a.interval_seconds"
)
# The due rows come off the partial index `poll_accounts_available` in due order; SKIP LOCKED passes
# over rows another worker is leasing in this instant instead of waiting for it.
LEASE_DUE_QUERY = (
    "UPDATE poll_accounts a SET lease_owner = $1, lease_id = gen_random_uuid(), leased_at = now(),"
    " lease_until = now() + $3::double precision * interval '1 second'"
    " FROM (SELECT provider, provider_account_id FROM poll_accounts"
    "  WHERE enabled AND available_at <= now() ORDER BY available_at LIMIT $2"
    "  FOR UPDATE SKIP LOCKED) due"
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
# Without a delay, the interval counts from the poll's start, so a slow poll does not drift it.
_FINISH = (
    "UPDATE poll_accounts SET lease_owner = NULL, lease_id = NULL, leased_at = NULL, lease_until = NULL,"
    " last_polled_at = now(), last_outcome = $5,"
    " next_due_at = CASE WHEN $6::double precision IS NULL"
    "   THEN GREATEST(now(), leased_at + interval_seconds * interval '1 second')"
    "   ELSE now() + $6::double precision * interval '1 second' END"
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
    " last_polled_at, last_outcome"
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
        )

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
        """Lease up to `limit` enabled accounts that are due and that no live lease holds, most
        overdue first, for `lease_seconds`.

        Safe with any number of workers: an account is in one lease at a time. One whose owner
        died is handed over when its lease runs out.
        """
        if not owner:
            raise ValueError("a lease needs an owner")
        _positive("limit", limit)
        _positive("lease_seconds", lease_seconds)
        rows = await self._pool.fetch(LEASE_DUE_QUERY, owner, limit, lease_seconds)
        return sorted((_lease(row) for row in rows), key=lambda lease: (lease.due_at, lease.account))

    async def renew(self, lease: AccountLease, lease_seconds: float) -> AccountLease:
        """Extend a live lease to `lease_seconds` from now; LeaseLost when it is no longer held."""
        _positive("lease_seconds", lease_seconds)
        until = await self._pool.fetchval(_RENEW, *self._key(lease), lease_seconds)
        if until is None:
            raise await self._lost(self._pool, lease)
        return replace(lease, lease_until=until)

    async def finish(
        self, lease: AccountLease, outcome: str, next_poll_in: timedelta | None = None
    ) -> datetime:
        """Release the account, recording the poll's `outcome`; returns when it is due next.

        Due one interval after the poll started, or `next_poll_in` from now when given (a
        provider's `Retry-After`, a failed poll's backoff). LeaseLost when the lease is no longer
        held: nothing is recorded then.
        """
        delay = None if next_poll_in is None else next_poll_in.total_seconds()
        due: datetime | None = await self._pool.fetchval(_FINISH, *self._key(lease), outcome, delay)
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
