"""A refresh whose answer is lost: the same refresh token is reused only where the provider allows it
(Xero: for 30 minutes), measured on one clock shared by the manager and the emulator."""

from collections.abc import AsyncIterator

import pytest

from gateway.dev.emulator import ManualClock
from gateway.settings import Settings
from provider_auth.audit import AuditAction, history
from provider_auth.providers import Provider
from provider_auth.tokens import GrantStatus, ReauthRequired
from tests.provider_auth.tokens.token_support import TokenStack, token_stack

MINUTE = 60.0


@pytest.fixture
async def clocked(token_settings: Settings) -> AsyncIterator[tuple[TokenStack, ManualClock]]:
    """A stack whose manager and emulator share a clock the test moves."""
    clock = ManualClock()
    async with token_stack(token_settings, clock=clock, timeout=0.5) as running:
        yield running, clock


async def test_xero_lost_answer_is_retried_at_once_with_the_same_token_inside_the_grace(
    clocked: tuple[TokenStack, ManualClock],
) -> None:
    stack, _ = clocked
    connection_id, _, _ = await stack.connect(Provider.XERO, expires_in=60)
    stack.emu.lose_next_response(Provider.XERO, mode="drop")
    token = await stack.manager.get_access_token(connection_id)
    assert stack.emu.validate_access_token(Provider.XERO, token.token)
    assert stack.emu.refreshes(Provider.XERO) == 2 and stack.emu.events(Provider.XERO, "grace_used") == 1
    assert await stack.account_events(connection_id) == []
    actions = [entry.action for entry in await history(stack.pool, connection_id=connection_id)]
    assert AuditAction.LOST_RESPONSE in actions and AuditAction.ROTATED in actions


async def test_xero_lost_answers_keep_the_same_token_usable_for_thirty_minutes(
    clocked: tuple[TokenStack, ManualClock],
) -> None:
    stack, clock = clocked
    connection_id, old_access, _ = await stack.connect(Provider.XERO, expires_in=120)
    stack.emu.lose_next_response(Provider.XERO, 2, mode="drop")
    # Both attempts lost: the current access token still works, so callers keep it.
    assert (await stack.manager.get_access_token(connection_id)).token == old_access
    clock.advance(25 * MINUTE)  # the access token has expired; still inside Xero's grace
    token = await stack.manager.get_access_token(connection_id)
    assert token.token != old_access and stack.emu.validate_access_token(Provider.XERO, token.token)
    # Three uses of the one token: the first rotated it, the two others were inside the grace.
    assert stack.emu.refreshes(Provider.XERO) == 3 and stack.emu.events(Provider.XERO, "grace_used") == 2
    state = await stack.manager.credentials_state(connection_id)
    assert state is not None and state.status is GrantStatus.ACTIVE and state.failure_count == 0
    assert await stack.account_events(connection_id) == []


async def test_xero_lost_answer_past_the_grace_is_not_retried_and_needs_reauth(
    clocked: tuple[TokenStack, ManualClock],
) -> None:
    stack, clock = clocked
    connection_id, old_access, _ = await stack.connect(Provider.XERO, expires_in=120)
    stack.emu.lose_next_response(Provider.XERO, 2, mode="drop")
    assert (await stack.manager.get_access_token(connection_id)).token == old_access
    calls = stack.emu.calls(Provider.XERO)
    clock.advance(31 * MINUTE)
    with pytest.raises(ReauthRequired) as caught:
        await stack.manager.get_access_token(connection_id)
    assert caught.value.reason == "invalid_grant"
    assert stack.emu.calls(Provider.XERO) == calls  # the old token was not sent again
    (event,) = await stack.account_events(connection_id)
    assert event["type"] == "integrated_account:authentication_error"
    assert event["reason"] == "invalid_grant" and event["provider_error"] is None


async def test_without_a_documented_grace_the_providers_answer_decides(
    clocked: tuple[TokenStack, ManualClock],
) -> None:
    stack, _ = clocked
    # QuickBooks documents no grace: the same token is tried again, and its invalid_grant is final.
    lost_qbo, _, _ = await stack.connect(Provider.QUICKBOOKS, expires_in=60)
    stack.emu.lose_next_response(Provider.QUICKBOOKS, mode="drop")
    with pytest.raises(ReauthRequired):
        await stack.manager.get_access_token(lost_qbo)
    assert stack.emu.calls(Provider.QUICKBOOKS) == 2
    (event,) = await stack.account_events(lost_qbo)
    assert event["reason"] == "invalid_grant" and event["provider_error"] == "invalid_grant"
    # Zoho never rotates: a lost answer costs nothing, the same token simply works again.
    lost_zoho, _, _ = await stack.connect(Provider.ZOHO_BOOKS, expires_in=60)
    stack.emu.lose_next_response(Provider.ZOHO_BOOKS, mode="drop")
    token = await stack.manager.get_access_token(lost_zoho)
    assert stack.emu.validate_access_token(Provider.ZOHO_BOOKS, token.token)
    assert stack.emu.refreshes(Provider.ZOHO_BOOKS) == 2
    assert await stack.account_events(lost_zoho) == []
