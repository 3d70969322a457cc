"""A token the provider refused (HTTP 401) is replaced once, however fresh it looked and however many
ask, in one process or several; a grant the provider no longer honours breaks as any refresh does."""

import asyncio

import pytest

from provider_auth.accounts.store import ConnectionStatus
from provider_auth.providers import Provider
from provider_auth.tokens import ConnectionPaused, ReauthRequired, TokenUnavailable
from tests.provider_auth.tokens.test_concurrency import wait_until_lock_waiter
from tests.provider_auth.tokens.token_support import TokenStack, wait_until


async def test_a_refused_fresh_token_is_refreshed_once_and_the_new_one_returned(stack: TokenStack) -> None:
    connection_id, access, _ = await stack.connect(Provider.XERO)  # fresh for an hour
    assert (await stack.manager.get_access_token(connection_id)).token == access  # cached now
    token = await stack.manager.refused(connection_id, access)
    assert token.token != access and stack.emu.validate_access_token(Provider.XERO, token.token)
    assert (
        token.connection_id == connection_id and token.expires_at > stack.manager.clock() + 20 * 60
    )  # Xero: 30 min
    assert stack.emu.calls(Provider.XERO) == 1 and stack.emu.refreshes(Provider.XERO) == 1
    # The refused token is not served from the cache again; the new one is.
    assert (await stack.manager.get_access_token(connection_id)).token == token.token
    assert (await stack.another_manager().get_access_token(connection_id)).token == token.token
    # The rotated refresh token was stored: the chain lives on.
    again = await stack.manager.refused(connection_id, token.token)
    assert again.token not in {access, token.token}
    assert stack.emu.refreshes(Provider.XERO) == 2
    assert stack.emu.events(Provider.XERO, "invalid_grant") == 0
    assert await stack.account_events(connection_id) == []
    assert await stack.status(connection_id) == "active"


async def test_concurrent_refusals_in_one_process_make_one_provider_call(stack: TokenStack) -> None:
    connection_id, access, _ = await stack.connect(Provider.QUICKBOOKS)
    stack.emu.set_latency(Provider.QUICKBOOKS, 0.3)  # the refresh stays in flight while the others ask
    tokens = await asyncio.gather(*(stack.manager.refused(connection_id, access) for _ in range(10)))
    assert len({t.token for t in tokens}) == 1 and tokens[0].token != access
    assert stack.emu.calls(Provider.QUICKBOOKS) == 1


async def test_two_managers_sharing_the_database_make_one_provider_call(stack: TokenStack) -> None:
    connection_id, access, _ = await stack.connect(Provider.XERO)
    first, second = stack.another_manager(), stack.another_manager()
    stack.emu.set_latency(Provider.XERO, 0.5)
    ours = asyncio.create_task(first.refused(connection_id, access))
    await wait_until(lambda: stack.emu.calls(Provider.XERO) == 1)
    # The second waits on the grant's lock, then finds the stored token changed.
    theirs = asyncio.create_task(second.refused(connection_id, access))
    await wait_until_lock_waiter(stack.pool)
    mine, other = await ours, await theirs
    assert mine.token == other.token != access
    assert stack.emu.calls(Provider.XERO) == 1
    await first.close()
    await second.close()


async def test_a_refused_token_already_replaced_gets_the_stored_one_without_a_provider_call(
    stack: TokenStack,
) -> None:
    connection_id, access, _ = await stack.connect(Provider.QUICKBOOKS)
    elsewhere = stack.another_manager()
    assert (await elsewhere.get_access_token(connection_id)).token == access  # cached there
    replaced = await stack.manager.refused(connection_id, access)
    assert stack.emu.calls(Provider.QUICKBOOKS) == 1
    # The other process met the same 401 with its cached copy, after the grant had moved on.
    token = await elsewhere.refused(connection_id, access)
    assert token.token == replaced.token
    assert stack.emu.calls(Provider.QUICKBOOKS) == 1
    await elsewhere.close()


async def test_invalid_grant_on_a_forced_refresh_needs_reauth_with_exactly_one_event(
    stack: TokenStack,
) -> None:
    connection_id, access, refresh = await stack.connect(Provider.QUICKBOOKS)
    stack.emu.revoke(Provider.QUICKBOOKS, refresh)
    with pytest.raises(ReauthRequired) as caught:
        await stack.manager.refused(connection_id, access)
    assert caught.value.reason == "invalid_grant"
    assert stack.emu.events(Provider.QUICKBOOKS, "invalid_grant") == 1
    # Broken for good: the next caller gets the error without a call to the provider.
    calls = stack.emu.calls(Provider.QUICKBOOKS)
    with pytest.raises(ReauthRequired):
        await stack.another_manager().refused(connection_id, access)
    with pytest.raises(ReauthRequired):
        await stack.manager.get_access_token(connection_id)
    assert stack.emu.calls(Provider.QUICKBOOKS) == calls
    events = await stack.account_events(connection_id)
    assert [(e["type"], e["reason"]) for e in events] == [
        ("integrated_account:authentication_error", "invalid_grant")
    ]
    assert await stack.status(connection_id) == "needs_reauth"


async def test_a_paused_connection_gets_no_token_for_a_refusal(stack: TokenStack) -> None:
    connection_id, access, _ = await stack.connect(Provider.XERO)
    assert (await stack.manager.get_access_token(connection_id)).token == access
    updated = await stack.connections.update(connection_id, status=ConnectionStatus.PAUSED)
    assert updated is not None and updated.status is ConnectionStatus.PAUSED
    with pytest.raises(ConnectionPaused, match="paused"):
        await stack.manager.refused(connection_id, access)
    assert stack.emu.calls(Provider.XERO) == 0


async def test_a_refused_token_is_not_handed_back_when_the_provider_cannot_be_reached(
    stack: TokenStack,
) -> None:
    connection_id, access, _ = await stack.connect(Provider.XERO)
    stack.emu.fail_next(Provider.XERO, 1, 503)
    with pytest.raises(TokenUnavailable) as caught:
        await stack.manager.refused(connection_id, access)
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    assert stack.emu.calls(Provider.XERO) == 1
    # Inside the backoff: the same answer at once, without another call.
    with pytest.raises(TokenUnavailable):
        await stack.manager.refused(connection_id, access)
    assert stack.emu.calls(Provider.XERO) == 1
    # Past it, the refused token is replaced.
    await asyncio.sleep(0.6)  # the stack's backoff is capped at 0.5 s
    token = await stack.manager.refused(connection_id, access)
    assert token.token != access and stack.emu.validate_access_token(Provider.XERO, token.token)
    assert await stack.account_events(connection_id) == []
