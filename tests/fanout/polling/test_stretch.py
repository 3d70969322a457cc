"""Interval stretch: the rule that fits the intervals to a provider's app-wide limit (every account of
a kind by the same factor, sweeps yielding first), its storage and use on real PostgreSQL (polled
accounts leased before swept ones, stretched due times, the cost of polls measured), and the lease
query staying on its index at 100,000 accounts."""

import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.polling import xero
from fanout.polling.budget import ProviderLimits, Stretch, app_budget, stretch_intervals
from fanout.polling.pages import PollTarget
from fanout.polling.poller import estimated_requests_per_poll, plan_stretches
from fanout.polling.state import LEASE_DUE_QUERY, Demand, IntervalStretch, PollState
from provider_auth.accounts.store import ConnectionStore, Polling, PollingMode
from provider_auth.providers import Provider
from tests.support import fresh_database

POLL, SWEEP = 300, 3600
XERO = Provider.XERO


@dataclass(frozen=True, slots=True)
class Db:
    pool: asyncpg.Pool
    connections: ConnectionStore
    state: PollState


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[Db]:
    """A fresh database per test: the sync and the demand read whole tables."""
    async with fresh_database(postgres_url, "stretch", migrated=True) as url:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
        try:
            yield Db(pool, ConnectionStore(pool, keyring=None), PollState(pool))
        finally:
            await pool.close()


# ----- the rule ---------------------------------------------------------------------------------


def test_enough_budget_stretches_nothing() -> None:
    assert stretch_intervals(100.0, 50.0, 150.0) == Stretch(1.0, 1.0)
    assert stretch_intervals(1e9, 1e9, None) == Stretch(1.0, 1.0)  # no app-wide limit


def test_sweeps_stretch_alone_while_that_is_enough() -> None:
    # 80 polled + 40 swept requests/s on 100: sweeps get the 20 left, twice their interval.
    assert stretch_intervals(80.0, 40.0, 100.0, sweep_yield=4.0) == Stretch(1.0, 2.0)


def test_past_the_yield_both_stretch_sweeps_the_more() -> None:
    # Xero's case (issue 14): 50,000 polled tenants at 5 minutes and 50,000 swept at an hour, nine
    # requests a poll, on 90 % of 10,000 requests a minute.
    polled, swept = 50_000 * 9 / 300, 50_000 * 9 / 3600
    budget = app_budget(ProviderLimits(app_requests_per_minute=10_000), 60.0, 0.9)
    assert budget == pytest.approx(150.0)
    factors = stretch_intervals(polled, swept, budget, sweep_yield=4.0)
    assert factors.sweep == pytest.approx(4 * factors.poll)
    assert polled / factors.poll + swept / factors.sweep == pytest.approx(budget)
    assert factors.poll == pytest.approx((1500 + 125 / 4) / 150)


@given(
    polled=st.floats(0, 1e6),
    swept=st.floats(0, 1e6),
    budget=st.floats(1e-3, 1e6),
    sweep_yield=st.floats(1, 100),
)
def test_the_stretch_fits_the_budget_and_never_favours_sweeps(
    polled: float, swept: float, budget: float, sweep_yield: float
) -> None:
    factors = stretch_intervals(polled, swept, budget, sweep_yield)
    assert 1.0 <= factors.poll <= factors.sweep <= max(1.0, factors.poll * sweep_yield) * (1 + 1e-9)
    # What the stretched intervals ask for fits the budget (exactly, once anything is stretched).
    used = polled / factors.poll + swept / factors.sweep
    assert used <= budget * (1 + 1e-9)
    if factors != Stretch(1.0, 1.0):
        assert used == pytest.approx(budget, rel=1e-6)
    # Polls stretch only when sweeps stretched as far as they yield, or polls alone overrun.
    if factors.poll > 1.0:
        assert factors.sweep == pytest.approx(factors.poll * sweep_yield) or polled >= budget


def test_plan_stretches_per_provider_from_measured_and_estimated_demand() -> None:
    demands = [
        # 30 polled tenants every 10 s, 10 measured at 9 requests a poll (9 req/s) and 20 not yet
        # polled (2 polls/s, estimated at 9 requests each: 18 req/s).
        Demand(XERO, False, 30, measured=9.0, unmeasured=2.0),
        Demand(XERO, True, 30, measured=0.0, unmeasured=3.0),
        Demand(Provider.QUICKBOOKS, True, 5, measured=0.5, unmeasured=0.0),
    ]
    limits = {XERO: ProviderLimits(app_requests_per_minute=600)}  # 10 per second
    planned = plan_stretches(
        demands,
        lambda provider: limits.get(provider, ProviderLimits()),
        minute=60.0,
        share=1.0,
        sweep_yield=2.0,
        requests_per_poll=lambda provider: 9.0,
    )
    by_key = {(row.provider, row.sweep): row for row in planned}
    assert by_key[XERO, False].demand == 27.0 and by_key[XERO, True].demand == 27.0
    assert by_key[XERO, False].budget == 10.0 and by_key[XERO, False].accounts == 30
    assert by_key[XERO, False].stretch == pytest.approx((27 + 27 / 2) / 10)
    assert by_key[XERO, True].stretch == pytest.approx(2 * by_key[XERO, False].stretch)
    # No app-wide limit: not stretched, and the kind without accounts is written as such.
    assert (
        by_key[Provider.QUICKBOOKS, True].stretch == 1.0 and by_key[Provider.QUICKBOOKS, True].budget is None
    )
    assert by_key[Provider.QUICKBOOKS, False] == IntervalStretch(
        Provider.QUICKBOOKS, False, 1.0, 0, 0.0, None
    )


def test_a_poll_never_made_is_costed_at_its_first_requests() -> None:
    assert estimated_requests_per_poll(XERO) == len(xero.ENTITIES)
    assert estimated_requests_per_poll(XERO) == len(
        xero.first_requests(PollTarget("t"), datetime(2026, 1, 1, tzinfo=UTC), xero.ENTITIES)
    )
    assert estimated_requests_per_poll(Provider.QUICKBOOKS) == 1.0  # one CDC call for every entity


# ----- state ------------------------------------------------------------------------------------


async def test_accounts_whose_connections_all_get_webhooks_are_swept(db: Db) -> None:
    await db.connections.create("t1", XERO, "webhooked")  # auto: Xero's webhooks reach it
    polled = await db.connections.create("t2", XERO, "polled", polling=Polling(PollingMode.POLL))
    await db.connections.create("t3", XERO, "polled")  # a sweep, sharing the account with a poll
    await db.connections.create("t4", Provider.ZOHO_BOOKS, "org")  # auto without webhooks: a poll
    await db.state.sync_accounts(POLL, SWEEP)
    kinds = {
        account: (await db.state.account(provider, account))
        for provider, account in ((XERO, "webhooked"), (XERO, "polled"), (Provider.ZOHO_BOOKS, "org"))
    }
    assert {name: (row.sweep, row.interval_seconds) for name, row in kinds.items() if row} == {
        "webhooked": (True, SWEEP),
        "polled": (False, POLL),
        "org": (False, POLL),
    }
    # The poll connection set to sweep: the whole account is swept now, from the next sync.
    await db.connections.update(polled.id, polling=Polling(PollingMode.SWEEP))
    await db.state.sync_accounts(POLL, SWEEP)
    row = await db.state.account(XERO, "polled")
    assert row is not None and row.sweep and row.interval_seconds == SWEEP


async def test_polled_accounts_are_leased_before_swept_ones(db: Db) -> None:
    for n in range(4):
        await db.connections.create("t", XERO, f"swept-{n}")
    await db.state.sync_accounts(POLL, SWEEP)
    # Swept accounts due for longer than the polled ones: still leased after them.
    await db.pool.execute("UPDATE poll_accounts SET next_due_at = now() - interval '1 hour'")
    for n in range(4):
        await db.connections.create("t", XERO, f"polled-{n}", polling=Polling(PollingMode.POLL))
    await db.state.sync_accounts(POLL, SWEEP)

    first = await db.state.lease_due("w", 3, 30)
    assert len(first) == 3 and not any(lease.sweep for lease in first)
    assert {lease.account for lease in first} < {f"polled-{n}" for n in range(4)}
    # The polled one left, then the swept ones, most overdue first.
    second = await db.state.lease_due("w", 3, 30)
    assert [lease.sweep for lease in second] == [False, True, True]
    rest = await db.state.lease_due("w", 10, 30)
    assert len(rest) == 2 and all(lease.sweep for lease in rest)


async def test_a_finished_poll_is_due_after_its_stretched_interval_and_its_cost_is_kept(db: Db) -> None:
    await db.connections.create("t", XERO, "polled", polling=Polling(PollingMode.POLL))
    await db.connections.create("t", XERO, "swept")
    await db.state.sync_accounts(60, 600)
    await db.state.set_stretches(
        [IntervalStretch(XERO, False, 2.5, 1, 10.0, 4.0), IntervalStretch(XERO, True, 10.0, 1, 1.0, 4.0)]
    )
    polled, swept = await db.state.lease_due("w", 10, 30)
    due = await db.state.finish(polled, "ok", requests=9)
    assert due == polled.lease_until - timedelta(seconds=30) + timedelta(seconds=60 * 2.5)
    due = await db.state.finish(swept, "ok", requests=12)
    assert due == swept.lease_until - timedelta(seconds=30) + timedelta(seconds=600 * 10)

    # The cost of its polls: a running mean of the requests each successful one made.
    row = await db.state.account(XERO, "polled")
    assert row is not None and row.requests_per_poll == 9.0
    await db.state.due_now(XERO, "polled")
    [again] = await db.state.lease_due("w", 10, 30)
    await db.state.finish(again, "ok", requests=15)
    row = await db.state.account(XERO, "polled")
    assert row is not None and row.requests_per_poll == 12.0
    await db.state.due_now(XERO, "polled")
    [failed] = await db.state.lease_due("w", 10, 30)
    await db.state.finish(failed, "error", timedelta(seconds=1))  # a failed poll says nothing of it
    row = await db.state.account(XERO, "polled")
    assert row is not None and row.requests_per_poll == 12.0

    demand = {(d.provider, d.sweep): d for d in await db.state.demand()}
    assert demand[XERO, False].accounts == 1 and demand[XERO, False].unmeasured == 0.0
    assert demand[XERO, False].measured == pytest.approx(12 / 60)
    assert demand[XERO, True].measured == pytest.approx(12 / 600) and demand[XERO, True].unmeasured == 0.0


async def test_a_shrinking_stretch_brings_pushed_out_accounts_in(db: Db) -> None:
    for n in range(3):
        await db.connections.create("t", XERO, f"polled-{n}", polling=Polling(PollingMode.POLL))
    await db.state.sync_accounts(60, 600)
    await db.state.set_stretches([IntervalStretch(XERO, False, 10.0, 3, 30.0, 3.0)])
    for lease in await db.state.lease_due("w", 10, 30):
        await db.state.finish(lease, "ok", requests=9)
    row = await db.state.account(XERO, "polled-0")
    assert row is not None and row.last_polled_at is not None
    assert row.next_due_at - row.last_polled_at > timedelta(seconds=590)

    # A little less stretch leaves the rows as they are...
    await db.state.set_stretches([IntervalStretch(XERO, False, 9.0, 3, 27.0, 3.0)])
    assert await db.state.account(XERO, "polled-0") == row
    # ...the budget freed: each is due one (barely stretched) interval after its last poll.
    await db.state.set_stretches([IntervalStretch(XERO, False, 1.0, 3, 3.0, 30.0)])
    row = await db.state.account(XERO, "polled-0")
    assert row is not None and row.last_polled_at is not None
    assert row.next_due_at == row.last_polled_at + timedelta(seconds=60)
    stored = await db.state.stretch(XERO, False)
    assert stored is not None and stored.stretch == 1.0 and stored.budget == 30.0
    assert [s.stretch for s in await db.state.stretches()] == [1.0]


async def test_the_lease_query_stays_on_its_index_at_100k_accounts(db: Db) -> None:
    # 100,000 Xero tenants, half polled and half swept, nearly all polled lately and due later; a
    # few of each kind due now. Loaded with COPY in seconds.
    started = time.monotonic()
    rows = []
    for n in range(100_000):
        sweep = n % 2 == 1
        rows.append((XERO.value, str(uuid.UUID(int=n)), SWEEP if sweep else POLL, sweep))
    await db.pool.copy_records_to_table(
        "poll_accounts",
        records=rows,
        columns=["provider", "provider_account_id", "interval_seconds", "sweep"],
    )
    due_now = {str(uuid.UUID(int=n)) for n in range(0, 100_000, 5_000)} | {
        str(uuid.UUID(int=n)) for n in range(1, 100_000, 5_000)
    }
    await db.pool.execute(
        "UPDATE poll_accounts SET next_due_at = now() + interval '1 minute' + random() * interval '5 minutes'"
        " WHERE provider_account_id <> ALL($1::text[])",
        sorted(due_now),
    )
    await db.pool.execute("VACUUM ANALYZE poll_accounts")
    assert time.monotonic() - started < 60

    # The plans PostgreSQL would pick, custom (a worker's few free slots, or many) and generic
    # (the statement is prepared in the pool, and may switch to it): each kind's due range read off
    # the index (a range scan, or a bitmap of it for a large limit), never a scan of the table.
    async with db.pool.acquire() as conn:
        await conn.execute(f"PREPARE lease (text, integer, double precision) AS {LEASE_DUE_QUERY}")
        plans = []
        for mode, limit in (("force_custom_plan", 8), ("force_custom_plan", 500), ("force_generic_plan", 8)):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            rows = await conn.fetch(f"EXPLAIN EXECUTE lease('w', {limit}, 30.0)")
            plans.append("\n".join(row[0] for row in rows))
        await conn.execute("DEALLOCATE lease; RESET plan_cache_mode")
    for plan in plans:
        assert (
            len(re.findall(r"(Index Scan using|Bitmap Index Scan on) poll_accounts_available", plan)) == 2
        ), plan
        assert plan.count("Index Cond: ((sweep = false) AND (available_at <= now()))") == 1, plan
        assert plan.count("Index Cond: ((sweep = true) AND (available_at <= now()))") == 1, plan
        assert "Seq Scan" not in plan, plan
    # Run: the twenty polled ones due first, then swept ones.
    leases = await db.state.lease_due("w", 25, 30)
    assert [lease.sweep for lease in leases] == [False] * 20 + [True] * 5
    assert {lease.account for lease in leases} <= due_now
    # And every pass after it finds what is left at once (on the index, not a scan of the table).
    started = time.monotonic()
    rest = await db.state.lease_due("w", 500, 30)
    assert len(rest) == 15 and all(lease.sweep for lease in rest)
    assert await db.state.lease_due("w", 500, 30) == []
    assert time.monotonic() - started < 1.0
