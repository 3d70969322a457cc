"""Interval stretch end to end, against the provider emulator with windows shortened to a second: a
Xero app limit covering a third of what the intervals ask for stretches them fairly (every tenant
polled, at about the same stretched interval per kind, tenants without webhooks served first and
stretched less), and the metric and the sync status say so; with enough budget nothing stretches."""

import asyncio
import statistics
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import pairwise

import pytest
from prometheus_client import CollectorRegistry
from rich.console import Console

from fanout.polling import xero
from fanout.polling.budget import ProviderLimits, RateBudgets
from fanout.polling.fetcher import PageFetcher
from fanout.polling.poller import Poller, PollerConfig, PollerMetrics, SchedulerMetrics
from fanout.polling.status import sync_status
from gateway.admin.sync import SyncView
from gateway.cli.sync import render_sync
from gateway.runtime.polling import ManagerTokens
from provider_auth.accounts.store import Polling, PollingMode
from provider_auth.providers import Provider
from tests.provider_auth.tokens.token_support import CLIENT_ID, TokenStack

XERO = Provider.XERO
TENANTS = 6  # of each kind
INTERVAL = 2  # seconds, polls' and sweeps' alike
CONCURRENCY = 4
SWEEP_YIELD = 2.0
SHARE = 0.9
# Every tenant's poll asks each endpoint once (nothing changes in the books).
DEMAND = 2 * TENANTS * len(xero.ENTITIES) / INTERVAL  # requests per second


@dataclass(frozen=True, slots=True)
class Run:
    polled: dict[str, str]  # tenant -> connection id
    swept: dict[str, str]
    registry: CollectorRegistry
    budgets: RateBudgets


@asynccontextmanager
async def running(stack: TokenStack, app_per_second: int) -> AsyncIterator[Run]:
    """Half the tenants set to `poll`, half left `auto` (Xero's webhooks make them sweeps), and a
    poller whose Xero app budget is `app_per_second` requests in a one-second window."""
    # The emulator lets everything through: the budgets alone hold the requests back.
    stack.emu.set_api_limits(XERO, per_minute=None, per_day=None, app_per_minute=None, concurrent=None)
    polled, swept = {}, {}
    for n in range(2 * TENANTS):
        tenant = str(uuid.uuid4())
        grant = stack.emu.issue_grant(XERO, CLIENT_ID, accounts=[tenant])
        connection_id, _, _ = await stack.connect(XERO, account=tenant, grant=grant)
        if n % 2 == 0:
            await stack.connections.update(connection_id, polling=Polling(PollingMode.POLL))
            polled[tenant] = connection_id
        else:
            swept[tenant] = connection_id
    registry = CollectorRegistry()
    metrics = PollerMetrics(registry)
    budgets = RateBudgets(
        stack.pool,
        limits={XERO: ProviderLimits(concurrency=5, app_requests_per_minute=app_per_second)},
        minute=1.0,
    )
    fetcher = PageFetcher(
        stack.http, budgets, ManagerTokens(stack.manager, stack.settings), observe=metrics.observe_request
    )
    config = PollerConfig(
        changes_topic=stack.settings.topic_changes,
        quarantine_topic=stack.settings.topic_quarantine,
        account_events_topic=stack.settings.topic_account_events,
        poll_interval_seconds=INTERVAL,
        sweep_interval_seconds=INTERVAL,
        concurrency=CONCURRENCY,
        lease_seconds=10.0,
        sync_seconds=0.5,
        idle_seconds=0.05,
        app_budget_share=SHARE,
        sweep_yield=SWEEP_YIELD,
    )
    poller = Poller(
        config, stack.pool, stack.producer, fetcher, metrics, scheduler_metrics=SchedulerMetrics(registry)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        yield Run(polled, swept, registry, budgets)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def poll_starts(stack: TokenStack, tenant: str) -> list[float]:
    """When each poll of the tenant began: its request to the endpoint every poll asks first."""
    served = stack.emu.served(XERO, tenant)
    if not served:
        return []
    first = served[0].endpoint
    return [request.started for request in served if request.endpoint == first]


def intervals(starts: list[float]) -> list[float]:
    return [later - earlier for earlier, later in pairwise(starts)]


def stretch_metric(run: Run, mode: str) -> float | None:
    return run.registry.get_sample_value(
        "ledgerhook_poll_interval_stretch", {"provider": "xero", "mode": mode}
    )


async def test_a_third_of_the_demand_stretches_every_tenant_fairly_and_sweeps_yield(
    stack: TokenStack,
) -> None:
    app_per_second = round(DEMAND / 3)
    budget = app_per_second * SHARE
    # What the rule gives (docs/architecture.md, "Interval stretch"): polls and sweeps ask for
    # half the demand each; sweeps alone cannot make room, so both stretch, sweeps twice as far.
    poll_stretch = (DEMAND / 2 + DEMAND / 2 / SWEEP_YIELD) / budget
    sweep_stretch = SWEEP_YIELD * poll_stretch
    assert 2.0 < poll_stretch < 3.0

    async with running(stack, app_per_second) as run:
        await asyncio.sleep(36)
        # The metric and the sync status say how far, as the worker's scrape and `ledgerhook sync`
        # would show it.
        assert stretch_metric(run, "poll") == pytest.approx(poll_stretch, rel=1e-3)
        assert stretch_metric(run, "sweep") == pytest.approx(sweep_stretch, rel=1e-3)
        polled_connection = await stack.connections.get(next(iter(run.polled.values())))
        assert polled_connection is not None
        found = await sync_status(
            stack.pool,
            run.budgets,
            polled_connection,
            poll_interval_seconds=INTERVAL,
            sweep_interval_seconds=INTERVAL,
        )
    assert found.stretch_factor == pytest.approx(poll_stretch, rel=1e-3)
    view = SyncView.of(found, found.connection.created_at).model_dump(mode="json")
    assert view["stretch"]["kind"] == "poll" and view["stretch"]["factor"] == round(poll_stretch, 3)
    assert view["stretch"]["interval_seconds"] == round(INTERVAL * poll_stretch)
    assert view["stretch"]["budget_per_second"] == pytest.approx(budget, rel=1e-3)
    console = Console(record=True, width=200)
    render_sync(console, view)
    assert f"stretched x{round(poll_stretch, 3):g} to every {round(INTERVAL * poll_stretch)} s" in (
        console.export_text()
    )

    starts = {tenant: poll_starts(stack, tenant) for tenant in (*run.polled, *run.swept)}
    # Every tenant was polled, and more than once: nobody starves.
    assert all(len(times) >= 3 for times in starts.values()), {t: len(s) for t, s in starts.items()}
    # The tenants without webhooks were served first: the first slots all went to them, and on
    # average they were reached sooner.
    first_served = sorted(starts, key=lambda tenant: starts[tenant][0])
    assert set(first_served[:CONCURRENCY]) <= set(run.polled)
    assert statistics.mean(starts[t][0] for t in run.polled) < statistics.mean(
        starts[t][0] for t in run.swept
    )
    # Each kind at about its stretched interval, every tenant of a kind about the same: the
    # spread of the per-tenant typical intervals is tight.
    for tenants, stretch in ((run.polled, poll_stretch), (run.swept, sweep_stretch)):
        typical = [statistics.median(intervals(starts[tenant])) for tenant in tenants]
        assert all(0.85 * INTERVAL * stretch <= value <= 1.3 * INTERVAL * stretch for value in typical), (
            typical
        )
        assert max(typical) / min(typical) <= 1.3, typical
    # Polled tenants were polled more often than swept ones, each of them.
    assert min(len(starts[t]) for t in run.polled) > max(len(starts[t]) for t in run.swept)


async def test_with_enough_budget_nothing_is_stretched(stack: TokenStack) -> None:
    async with running(stack, app_per_second=round(DEMAND * 3)) as run:
        await asyncio.sleep(9)
        assert stretch_metric(run, "poll") == 1.0 and stretch_metric(run, "sweep") == 1.0
        connection = await stack.connections.get(next(iter(run.swept.values())))
        assert connection is not None
        found = await sync_status(
            stack.pool,
            run.budgets,
            connection,
            poll_interval_seconds=INTERVAL,
            sweep_interval_seconds=INTERVAL,
        )
    assert found.stretch_factor == 1.0 and found.stretch is not None and found.stretch.accounts == TENANTS
    view = SyncView.of(found, found.connection.created_at).model_dump(mode="json")
    assert view["stretch"]["factor"] == 1.0 and view["stretch"]["kind"] == "sweep"
    console = Console(record=True, width=200)
    render_sync(console, view)
    assert "stretched" not in console.export_text()
    for tenant in (*run.polled, *run.swept):
        typical = statistics.median(intervals(poll_starts(stack, tenant)))
        assert 0.9 * INTERVAL <= typical <= 1.3 * INTERVAL, (tenant, typical)
