"""Where polling stands for one connection: its effective mode and interval, its account's last and
next poll and how far its interval is stretched, each entity's watermark, the rate budget in use, and
its latest backfill.

Read by the admin API (`GET /admin/v1/connections/{id}/sync`, docs/admin-api.md); nothing here writes.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from fanout.polling.adapters import ADAPTERS, WEBHOOK_PROVIDERS
from fanout.polling.backfills import BackfillJob, BackfillJobs
from fanout.polling.budget import RateBudgets, ScopeUse
from fanout.polling.state import POLLED_PROVIDERS, IntervalStretch, PollAccount, PollState
from provider_auth.accounts.store import Connection, ConnectionStatus, PollingMode

__all__ = ["SyncStatus", "effective_polling", "sync_status"]


def effective_polling(
    connection: Connection, poll_interval_seconds: int, sweep_interval_seconds: int
) -> tuple[PollingMode, int | None]:
    """The mode a connection is polled in (`poll`, `sweep` or `off`, `auto` resolved) and its interval.

    The rule `PollState.sync_accounts` applies in SQL: `auto` is a sweep when the connection gets
    webhooks (its provider's reach every connection, or it has a webhook secret of its own), else a
    poll; a provider without a change API is off.
    """
    mode = connection.polling.mode
    if connection.provider not in POLLED_PROVIDERS:
        return PollingMode.OFF, None
    if mode is PollingMode.AUTO:
        webhooks = connection.provider in WEBHOOK_PROVIDERS or connection.has_webhook_secret
        mode = PollingMode.SWEEP if webhooks else PollingMode.POLL
    if mode is PollingMode.OFF:
        return mode, None
    default = sweep_interval_seconds if mode is PollingMode.SWEEP else poll_interval_seconds
    return mode, connection.polling.interval_seconds or default


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """One connection's polling, as `sync_status` found it."""

    connection: Connection
    # `poll`, `sweep` or `off`, and the interval this connection asks for (None when off).
    mode: PollingMode
    interval_seconds: int | None
    # Whether this connection is polled now: active, not off, with a change API.
    polled: bool
    # Its provider account's polling row (shared by the account's connections); None before the
    # first sync after the connection was made.
    account: PollAccount | None
    # Each polled entity's watermark (None before its first completed poll), in the module's order.
    watermarks: Mapping[str, datetime | None]
    # The account's rate budget scopes by label (`minute`, `day`, `in_flight`, `app_minute`).
    budget: Mapping[str, ScopeUse]
    backfill: BackfillJob | None
    # How far the account's provider stretches its kind of account (polled or swept) now; None
    # before the first sync that measured them (not stretched).
    stretch: IntervalStretch | None = None

    @property
    def stretch_factor(self) -> float:
        """The factor the account's interval is multiplied by now (1: not stretched)."""
        return 1.0 if self.stretch is None else self.stretch.stretch


async def sync_status(
    pool: asyncpg.Pool,
    budgets: RateBudgets,
    connection: Connection,
    *,
    poll_interval_seconds: int,
    sweep_interval_seconds: int,
) -> SyncStatus:
    """Where polling stands for `connection`."""
    mode, interval = effective_polling(connection, poll_interval_seconds, sweep_interval_seconds)
    polled = mode is not PollingMode.OFF and connection.status is ConnectionStatus.ACTIVE
    provider, account_id = connection.provider, connection.provider_account_id
    if connection.provider not in POLLED_PROVIDERS:
        return SyncStatus(connection, mode, interval, False, None, {}, {}, None)
    state = PollState(pool)
    account = await state.account(provider, account_id)
    stored = await state.watermarks(provider, account_id)
    watermarks = {entity: stored.get(entity) for entity in ADAPTERS[provider].ENTITIES}
    budget = await budgets.in_use(provider, account_id)
    backfill = await BackfillJobs(pool).latest(connection.id)
    stretch = None if account is None else await state.stretch(provider, account.sweep)
    return SyncStatus(connection, mode, interval, polled, account, watermarks, budget, backfill, stretch)
