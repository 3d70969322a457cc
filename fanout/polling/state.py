"""Polling state in PostgreSQL: which provider accounts to poll, who polls each now, where each
entity's next poll starts.

Several workers share the accounts through leases taken with `FOR UPDATE SKIP LOCKED`; every time
comes from PostgreSQL's clock, so workers on different machines agree. Tables (migration 0003) and
what a lease guarantees: docs/architecture.md, "Polling state".
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from provider_auth.accounts.store import ConnectionStatus
from provider_auth.providers import Provider

__all__ = ["POLLED_PROVIDERS", "AccountLease", "AccountsSynced", "LeaseLost", "PollAccount", "PollState"]

# Custom sources only post webhooks: they have no change API to poll.
POLLED_PROVIDERS = frozenset(provider for provider in Provider if provider is not Provider.CUSTOM)

# One sync at a time: concurrent ones would only repeat each other's writes.
_SYNC_LOCK_KEY = 0x506F6C6C53796E63  # "PollSync"

# An account is polled while one of its connections is active and its provider is polled ($1).
_HAS_ACTIVE_CONNECTION = (
    "a.provider = ANY($1::text[]) AND EXISTS (SELECT 1 FROM connections c"
    " WHERE c.provider = a.provider AND c.provider_account_id = a.provider_account_id"
    f" AND c.status = '{ConnectionStatus.ACTIVE.value}')"
)
_HAS_CONNECTION = (
    "EXISTS (SELECT 1 FROM connections c"
    " WHERE c.provider = a.provider AND c.provider_account_id = a.provider_account_id)"
)
# A new account is due at once (its default next_due_at is now()). The anti-join leaves the rows
# already there out in one pass, rather than one conflict check each.
_ADD = (
    "INSERT INTO poll_accounts (provider, provider_account_id, interval_seconds)"
    " SELECT DISTINCT c.provider, c.provider_account_id, $2::integer FROM connections c"
    f" WHERE c.status = '{ConnectionStatus.ACTIVE.value}' AND c.provider = ANY($1::text[])"
    " AND NOT EXISTS (SELECT 1 FROM poll_accounts a"
    "  WHERE a.provider = c.provider AND a.provider_account_id = c.provider_account_id)"
    " ON CONFLICT (provider, provider_account_id) DO NOTHING"
)
# Active again: due at once, so what changed meanwhile is read from the kept watermarks.
_RESUME = (
    "UPDATE poll_accounts a SET enabled = true, next_due_at = now(), interval_seconds = $2::integer"
    f" WHERE NOT a.enabled AND {_HAS_ACTIVE_CONNECTION}"
)
# A shorter interval applies from the last poll, not from a due time the longer one set.
_RESCHEDULE = (
    "UPDATE poll_accounts a SET interval_seconds = $1::integer,"
    " next_due_at = LEAST(a.next_due_at, a.last_polled_at + $1::integer * interval '1 second')"
    " WHERE a.enabled AND a.interval_seconds <> $1::integer AND a.provider = ANY($2::text[])"
)
_DISABLE = (
    "UPDATE poll_accounts a SET enabled = false"
    " WHERE a.enabled AND a.provider = ANY($1::text[])"
    f" AND NOT ({_HAS_ACTIVE_CONNECTION}) AND {_HAS_CONNECTION}"
)
# Its connection rows are gone altogether: its watermarks go with it (foreign key cascade).
_REMOVE = f"DELETE FROM poll_accounts a WHERE NOT {_HAS_CONNECTION}"

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


def _count(status: str) -> int:
    """Rows an INSERT, UPDATE or DELETE touched, from its command status (`UPDATE 3`)."""
    return int(status.split()[-1])


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
        self, default_interval_seconds: int, *, providers: Collection[Provider] = POLLED_PROVIDERS
    ) -> AccountsSynced:
        """Bring `poll_accounts` in line with `connections`: one row per provider account of
        `providers` with an active connection, polled every `default_interval_seconds`.

        An account that gained an active connection is added, or enabled again, due at once; one
        whose connections are all `needs_reauth`, `paused` or `disconnected` is disabled, keeping
        its watermarks; one with no connection row at all is removed with them.
        """
        _positive("default_interval_seconds", default_interval_seconds)
        slugs = sorted(provider.value for provider in providers)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SYNC_LOCK_KEY)
            added = _count(await conn.execute(_ADD, slugs, default_interval_seconds))
            resumed = _count(await conn.execute(_RESUME, slugs, default_interval_seconds))
            await conn.execute(_RESCHEDULE, default_interval_seconds, slugs)
            disabled = _count(await conn.execute(_DISABLE, slugs))
            removed = _count(await conn.execute(_REMOVE))
        return AccountsSynced(added=added, resumed=resumed, disabled=disabled, removed=removed)

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
