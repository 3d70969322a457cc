"""A paused connection: no token is handed out for it and its grant is not refreshed for it, while a
grant shared with a connection in use keeps being refreshed; resumed, an expired grant is due again."""

from collections.abc import AsyncIterator

import pytest

from gateway.dev.emulator import ManualClock
from gateway.settings import Settings
from provider_auth.accounts.store import ConnectionStatus
from provider_auth.providers import Provider
from provider_auth.tokens import ConnectionPaused, TokenError
from provider_auth.tokens.refresher import Refresher
from tests.provider_auth.tokens.token_support import CLIENT_ID, TokenStack, token_stack

HOUR = 3600.0


@pytest.fixture
async def clocked(token_settings: Settings) -> AsyncIterator[tuple[TokenStack, ManualClock]]:
    """A stack whose manager and emulator share a clock the test moves."""
    clock = ManualClock()
    async with token_stack(token_settings, clock=clock) as running:
        yield running, clock


async def set_status(stack: TokenStack, connection_id: str, status: ConnectionStatus) -> None:
    """What the admin API's PATCH does to the connection."""
    updated = await stack.connections.update(connection_id, status=status)
    assert updated is not None and updated.status is status


async def test_a_paused_connection_gets_no_token_and_is_refreshed_again_once_resumed(
    clocked: tuple[TokenStack, ManualClock],
) -> None:
    stack, clock = clocked
    connection_id, access, _ = await stack.connect(Provider.XERO, expires_in=30 * 60)
    assert (await stack.manager.get_access_token(connection_id)).token == access
    await set_status(stack, connection_id, ConnectionStatus.PAUSED)
    with pytest.raises(ConnectionPaused, match="paused"):
        await stack.another_manager().get_access_token(connection_id)
    refresher = Refresher(stack.manager)
    clock.advance(HOUR)  # the access token expires while the connection is paused
    assert sum((await refresher.run_once()).values()) == 0
    with pytest.raises(ConnectionPaused) as caught:
        await stack.manager.get_access_token(connection_id)  # the cached token is not served either
    assert isinstance(caught.value, TokenError)
    assert stack.emu.calls(Provider.XERO) == 0
    paused = await stack.manager.credentials_state(connection_id)
    assert paused is not None and paused.refreshed_at is None

    await set_status(stack, connection_id, ConnectionStatus.ACTIVE)
    assert await refresher.run_once() == {"refreshed": 1}  # due again at once
    token = await stack.manager.get_access_token(connection_id)
    assert token.token != access and stack.emu.validate_access_token(Provider.XERO, token.token)
    assert token.expires_at - clock() == pytest.approx(30 * 60, abs=1)
    assert stack.emu.refreshes(Provider.XERO) == 1
    assert await stack.account_events(connection_id) == []
    assert await stack.status(connection_id) == "active"


async def test_a_grant_is_refreshed_while_one_of_its_connections_is_in_use(
    clocked: tuple[TokenStack, ManualClock],
) -> None:
    stack, clock = clocked
    grant = stack.emu.issue_grant(Provider.XERO, CLIENT_ID, accounts=["org-a", "org-b"])
    first, _, _ = await stack.connect(Provider.XERO, account="org-a", grant=grant, expires_in=30 * 60)
    second, _, _ = await stack.connect(Provider.XERO, account="org-b", grant=grant, expires_in=30 * 60)
    refresher = Refresher(stack.manager)
    await set_status(stack, first, ConnectionStatus.PAUSED)
    clock.advance(HOUR)
    assert await refresher.run_once() == {"refreshed": 1}  # org-b still uses the token set
    assert (await stack.manager.get_access_token(second)).token
    with pytest.raises(ConnectionPaused):
        await stack.manager.get_access_token(first)

    await set_status(stack, second, ConnectionStatus.PAUSED)
    clock.advance(HOUR)
    assert sum((await refresher.run_once()).values()) == 0  # nobody uses it now
    assert stack.emu.refreshes(Provider.XERO) == 1
    await set_status(stack, first, ConnectionStatus.ACTIVE)
    assert await refresher.run_once() == {"refreshed": 1}
    assert stack.emu.refreshes(Provider.XERO) == 2
    assert stack.emu.validate_access_token(Provider.XERO, (await stack.manager.get_access_token(first)).token)
    assert await stack.account_events() == []


async def test_a_paused_xero_tenant_is_still_given_back_when_disconnected(stack: TokenStack) -> None:
    grant = stack.emu.issue_grant(Provider.XERO, CLIENT_ID, accounts=["org-1", "org-2"])
    # An access token inside the skew: the disconnect refreshes it to call Xero's connections API.
    connection_id, _, _ = await stack.connect(Provider.XERO, account="org-1", grant=grant, expires_in=30)
    await set_status(stack, connection_id, ConnectionStatus.PAUSED)
    result = await stack.manager.disconnect(connection_id)
    assert result.had_credentials and result.revoked_at_provider and result.erased
    info = stack.emu.grant_info(Provider.XERO, grant.grant_id)
    assert info is not None and [tenant for _, tenant in info.connections] == ["org-2"]
    assert await stack.manager.credentials_state(connection_id) is None
