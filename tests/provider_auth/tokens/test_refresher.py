"""The proactive refresher: due tokens renewed ahead of expiry, once each across replicas, idle refresh
tokens kept alive, broken grants left alone."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import generate_latest

from gateway.dev.emulator import ManualClock
from gateway.settings import Settings
from provider_auth.providers import Provider
from provider_auth.tokens import GrantStatus
from provider_auth.tokens.refresher import Refresher
from tests.provider_auth.tokens.token_support import TokenStack, token_stack

HOUR, DAY = 3600.0, 86_400.0


@pytest.fixture
async def clocked(token_settings: Settings) -> AsyncIterator[tuple[TokenStack, ManualClock]]:
    clock = ManualClock()
    async with token_stack(token_settings, clock=clock, window=600, jitter=120) as running:
        yield running, clock


async def test_tokens_nearing_expiry_are_refreshed_ahead_and_others_left(
    clocked: tuple[TokenStack, ManualClock],
) -> None:
    stack, clock = clocked
    soon = [(await stack.connect(Provider.XERO, expires_in=30 * 60))[0] for _ in range(3)]
    later = [(await stack.connect(Provider.QUICKBOOKS, expires_in=HOUR))[0] for _ in range(2)]
    refresher = Refresher(stack.manager)
    assert sum((await refresher.run_once()).values()) == 0  # nothing due yet
    clock.advance(30 * 60 - 600)  # inside the Xero tokens' window (but not the QuickBooks ones')
    outcomes = await refresher.run_once()
    assert outcomes == {"refreshed": 3}
    assert stack.emu.refreshes(Provider.XERO) == 3 and stack.emu.refreshes(Provider.QUICKBOOKS) == 0
    for connection_id in soon:
        state = await stack.manager.credentials_state(connection_id)
        assert state is not None and state.access_expires_at is not None
        assert state.access_expires_at - clock() == pytest.approx(30 * 60, abs=1)
    clock.advance(HOUR)  # every token is past due now; each is refreshed once more
    assert (await refresher.run_once()) == {"refreshed": 5}
    assert stack.emu.refreshes(Provider.QUICKBOOKS) == 2 and stack.emu.refreshes(Provider.XERO) == 6
    await refresher.sample_status()
    metrics = generate_latest(stack.manager.metrics.registry).decode()
    assert 'ledgerhook_token_connections{provider="xero",status="active"} 3.0' in metrics
    assert 'ledgerhook_token_refreshes_total{outcome="success",provider="xero"} 6.0' in metrics
    assert len(later) == 2


async def test_replicas_share_the_work_without_refreshing_anything_twice(
    clocked: tuple[TokenStack, ManualClock],
) -> None:
    stack, clock = clocked
    for _ in range(30):
        await stack.connect(Provider.XERO, expires_in=30 * 60)
    clock.advance(HOUR)
    stack.emu.set_latency(Provider.XERO, 0.02)
    dsn = stack.settings.database_url.get_secret_value()
    pools = [await asyncpg.create_pool(dsn, min_size=1, max_size=6) for _ in range(3)]
    try:
        refreshers = [Refresher(stack.another_manager(pool), batch_size=4, concurrency=3) for pool in pools]
        results = await asyncio.gather(*(r.run_once() for r in refreshers))
    finally:
        for pool in pools:
            await pool.close()
    assert sum(sum(r.values()) for r in results) == 30
    assert all(r["refreshed"] > 0 for r in results)  # every replica took a share
    assert stack.emu.refreshes(Provider.XERO) == 30 and stack.emu.events(Provider.XERO, "invalid_grant") == 0


async def test_an_idle_refresh_token_is_kept_alive_before_its_inactivity_expiry(
    clocked: tuple[TokenStack, ManualClock],
) -> None:
    stack, clock = clocked
    # An access token that stays valid for long, a refresh token that dies in 2 days if unused.
    connection_id, _, _ = await stack.connect(
        Provider.QUICKBOOKS, expires_in=90 * DAY, refresh_token_expires_at=clock() + 2 * DAY
    )
    refresher = Refresher(stack.manager)
    clock.advance(1 * DAY)
    assert sum((await refresher.run_once()).values()) == 0
    clock.advance(13 * HOUR)  # inside the last quarter of its life
    assert await refresher.run_once() == {"refreshed": 1}
    state = await stack.manager.credentials_state(connection_id)
    assert state is not None and state.refresh_expires_at is not None
    # Intuit's answer restarts the rolling 100 days.
    assert state.refresh_expires_at - clock() == pytest.approx(100 * DAY, abs=5)


async def test_broken_grants_are_not_refreshed_and_unavailable_ones_recover(
    clocked: tuple[TokenStack, ManualClock],
) -> None:
    stack, clock = clocked
    dead, _, refresh = await stack.connect(Provider.QUICKBOOKS, expires_in=HOUR)
    stack.emu.revoke(Provider.QUICKBOOKS, refresh)
    clock.advance(HOUR)
    refresher = Refresher(stack.manager)
    assert await refresher.run_once() == {"needs_reauth": 1}
    calls = stack.emu.calls(Provider.QUICKBOOKS)
    clock.advance(HOUR)
    assert sum((await refresher.run_once()).values()) == 0
    assert stack.emu.calls(Provider.QUICKBOOKS) == calls
    (event,) = await stack.account_events(dead)
    assert event["reason"] == "invalid_grant"
    state = await stack.manager.credentials_state(dead)
    assert state is not None and state.status is GrantStatus.NEEDS_REAUTH and state.refresh_due_at is None
