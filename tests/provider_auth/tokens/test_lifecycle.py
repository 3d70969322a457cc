"""The token manager against the emulator, on real PostgreSQL and the real broker: fresh tokens,
refresh and rotation, single flight, revocation and reconnect with their account events."""

import asyncio

import pytest

from gateway.runtime.kafka import make_producer
from provider_auth.providers import Provider
from provider_auth.tokens import (
    ConnectionRef,
    Credentials,
    GrantStatus,
    NoCredentials,
    ReauthRequired,
    TokenUnavailable,
)
from tests.provider_auth.tokens.token_support import CLIENT_ID, TokenStack, connection_events


async def test_a_fresh_token_is_served_without_calling_the_provider(stack: TokenStack) -> None:
    connection_id, access, _ = await stack.connect(Provider.QUICKBOOKS, expires_in=3600)
    token = await stack.manager.get_access_token(connection_id)
    assert token.token == access and token.provider is Provider.QUICKBOOKS
    assert access not in repr(token)
    queries = stack.manager.store.queries
    for _ in range(100):
        assert (await stack.manager.get_access_token(connection_id)).token == access
    assert stack.manager.store.queries == queries  # served from the in-process cache
    assert stack.emu.calls(Provider.QUICKBOOKS) == 0


async def test_an_expiring_token_is_refreshed_and_the_rotated_refresh_token_stored(stack: TokenStack) -> None:
    connection_id, access, refresh = await stack.connect(Provider.XERO, expires_in=60)  # inside the skew
    token = await stack.manager.get_access_token(connection_id)
    assert token.token != access and stack.emu.validate_access_token(Provider.XERO, token.token)
    assert token.expires_at - stack.manager.clock() > 1700
    grant = stack.emu.grant_info(Provider.XERO, token.token)
    assert grant is not None and grant.rotations == 1 and grant.refresh_token != refresh
    # The database holds the new refresh token: a second process refreshes with it successfully.
    other = stack.another_manager(skew=10_000)  # every token looks stale to it
    newer = await other.get_access_token(connection_id)
    assert newer.token != token.token and stack.emu.refreshes(Provider.XERO) == 2
    assert stack.emu.events(Provider.XERO, "invalid_grant") == 0
    state = await stack.manager.credentials_state(connection_id)
    assert state is not None and state.status is GrantStatus.ACTIVE and state.refreshed_at is not None


async def test_concurrent_callers_in_one_process_share_one_refresh(stack: TokenStack) -> None:
    connection_id, _, _ = await stack.connect(Provider.QUICKBOOKS, expires_in=30)
    stack.emu.set_latency(Provider.QUICKBOOKS, 0.2)
    tokens = await asyncio.gather(*(stack.manager.get_access_token(connection_id) for _ in range(200)))
    assert len({t.token for t in tokens}) == 1
    assert stack.emu.calls(Provider.QUICKBOOKS) == 1


async def test_a_revoked_grant_needs_reauth_with_exactly_one_event_then_reconnect(stack: TokenStack) -> None:
    connection_id, _, refresh = await stack.connect(Provider.QUICKBOOKS, expires_in=30)
    stack.emu.revoke(Provider.QUICKBOOKS, refresh)
    with pytest.raises(ReauthRequired) as caught:
        await stack.manager.get_access_token(connection_id)
    assert caught.value.reason == "invalid_grant"
    assert await stack.status(connection_id) == "needs_reauth"
    calls = stack.emu.calls(Provider.QUICKBOOKS)
    other = stack.another_manager()
    for attempt in range(100):
        with pytest.raises(ReauthRequired):
            await (stack.manager if attempt % 2 else other).get_access_token(connection_id)
    assert stack.emu.calls(Provider.QUICKBOOKS) == calls  # no more provider calls either
    events = await stack.account_events(connection_id)
    assert [e["type"] for e in events] == ["integrated_account:authentication_error"]
    assert events[0]["reason"] == "invalid_grant" and events[0]["provider"] == "quickbooks"
    assert events[0]["provider_error"].startswith("invalid_grant")

    # Reconnect: new credentials from a new consent.
    access, new_refresh = stack.emu.issue_grant(Provider.QUICKBOOKS, CLIENT_ID)
    connection = await stack.connections.get(connection_id)
    assert connection is not None
    ref = ConnectionRef(connection_id, Provider.QUICKBOOKS, connection.provider_account_id)
    state = await stack.manager.put_credentials(
        ref, Credentials(access, new_refresh, expires_at=stack.manager.clock() + 3600)
    )
    assert state.status is GrantStatus.ACTIVE and state.reactivated
    again = await stack.manager.put_credentials(
        ref, Credentials(access, new_refresh, expires_at=stack.manager.clock() + 3600)
    )
    assert not again.reactivated  # handing the same credentials over twice is one transition
    assert (await stack.manager.get_access_token(connection_id)).token == access
    assert await stack.status(connection_id) == "active"
    events = await stack.account_events(connection_id)
    assert [e["type"] for e in events] == [
        "integrated_account:authentication_error",
        "integrated_account:reactivated",
    ]
    assert events[1]["reason"] == "reconnected" and events[1]["provider_error"] is None
    assert events[0]["id"] != events[1]["id"]


async def test_invalid_client_is_permanent(stack: TokenStack) -> None:
    connection_id, _, _ = await stack.connect(Provider.XERO, expires_in=30)
    stack.emu.register_client(Provider.XERO, CLIENT_ID, "a-rotated-app-secret")
    with pytest.raises(ReauthRequired) as caught:
        await stack.manager.get_access_token(connection_id)
    assert caught.value.reason == "invalid_client"
    (event,) = await stack.account_events(connection_id)
    assert event["reason"] == "invalid_client"


async def test_zoho_dead_grant_answers_200_invalid_code_and_is_permanent(stack: TokenStack) -> None:
    connection_id, _, refresh = await stack.connect(Provider.ZOHO_BOOKS, expires_in=30, location="eu")
    token = await stack.manager.get_access_token(connection_id)
    assert stack.emu.refreshes(Provider.ZOHO_BOOKS) == 1  # Zoho keeps the same refresh token
    assert token.api_base_url == stack.emu.url("/zoho-books")
    stack.emu.revoke(Provider.ZOHO_BOOKS, refresh)
    other = stack.another_manager(skew=10_000)
    with pytest.raises(ReauthRequired):
        await other.get_access_token(connection_id)
    (event,) = await stack.account_events(connection_id)
    assert event["reason"] == "invalid_grant" and event["provider_error"] == "invalid_code"


async def test_transient_failures_back_off_without_an_event_while_the_token_works(stack: TokenStack) -> None:
    connection_id, access, _ = await stack.connect(Provider.FRESHBOOKS, expires_in=120)  # valid, inside skew
    stack.emu.fail_next(Provider.FRESHBOOKS, 3, 503)
    token = await stack.manager.get_access_token(connection_id)
    assert token.token == access  # the refresh failed, the current token still works
    state = await stack.manager.credentials_state(connection_id)
    assert state is not None and state.failure_count == 1 and state.status is GrantStatus.ACTIVE
    await asyncio.sleep(0.3)
    stack.emu.fail_next(Provider.FRESHBOOKS, 1, 429, retry_after=0)
    await stack.manager.get_access_token(connection_id)
    assert await stack.account_events(connection_id) == []
    assert await stack.status(connection_id) == "active"


async def test_retries_exhausted_after_expiry_report_refresh_unavailable_then_recovery(
    stack: TokenStack,
) -> None:
    connection_id, _, _ = await stack.connect(Provider.SAGE_INTACCT, expires_in=-1)  # already expired
    stack.emu.fail_next(Provider.SAGE_INTACCT, 1000, 502)
    manager = stack.another_manager(max_transient_failures=3, backoff_base=0.01, backoff_cap=0.02)
    for _ in range(2):
        with pytest.raises(TokenUnavailable):
            await manager.get_access_token(connection_id)
        await asyncio.sleep(0.05)
        assert await stack.status(connection_id) == "active"
    with pytest.raises(TokenUnavailable):
        await manager.get_access_token(connection_id)
    assert await stack.status(connection_id) == "needs_reauth"
    for _ in range(5):  # callers are told at once; only the refresher keeps trying
        with pytest.raises(TokenUnavailable):
            await manager.get_access_token(connection_id)
    assert stack.emu.calls(Provider.SAGE_INTACCT) == 3
    (event,) = await stack.account_events(connection_id)
    assert event["reason"] == "refresh_unavailable"

    stack.emu.config(Provider.SAGE_INTACCT).faults.clear()
    state = await manager.credentials_state(connection_id)
    assert state is not None and state.status is GrantStatus.UNAVAILABLE
    await asyncio.sleep(0.05)
    assert await manager.refresh_grant(state.grant_id) == "refreshed"
    assert await stack.status(connection_id) == "active"
    assert (await manager.get_access_token(connection_id)).token
    events = await stack.account_events(connection_id)
    assert [e["type"] for e in events][-1] == "integrated_account:reactivated"


async def test_a_connection_without_credentials(stack: TokenStack) -> None:
    connection_id = await stack.connection(Provider.XERO)
    with pytest.raises(NoCredentials):
        await stack.manager.get_access_token(connection_id)
    with pytest.raises(NoCredentials):
        await stack.manager.get_access_token("not-a-uuid")
    assert await stack.manager.credentials_state(connection_id) is None


async def test_a_recovery_met_by_a_broker_outage_keeps_the_new_tokens_and_is_reported_later(
    stack: TokenStack,
) -> None:
    connection_id, _, _ = await stack.connect(Provider.SAGE_INTACCT, expires_in=-1)
    stack.emu.fail_next(Provider.SAGE_INTACCT, 1000, 503)
    with pytest.raises(TokenUnavailable):
        await stack.another_manager(max_transient_failures=1).get_access_token(connection_id)
    assert await stack.status(connection_id) == "needs_reauth"
    stack.emu.config(Provider.SAGE_INTACCT).faults.clear()
    state = await stack.manager.credentials_state(connection_id)
    assert state is not None
    # The provider answers again, but the broker is down when the recovery is to be reported.
    closed = make_producer(stack.settings)
    await closed.start()
    await closed.stop()
    cut_off = stack.another_manager()
    cut_off.events = connection_events(closed, stack.settings.topic_account_events)
    await asyncio.sleep(0.1)
    assert await cut_off.refresh_grant(state.grant_id) == "refreshed"
    assert stack.emu.refreshes(Provider.SAGE_INTACCT) == 1  # the new (rotated) tokens are stored
    after = await stack.manager.credentials_state(connection_id)
    assert after is not None and after.status is GrantStatus.UNAVAILABLE and after.refreshed_at
    assert await stack.status(connection_id) == "needs_reauth"
    await asyncio.sleep(0.3)  # the deferred report comes due
    assert await stack.manager.refresh_grant(state.grant_id) == "not_due"
    assert stack.emu.refreshes(Provider.SAGE_INTACCT) == 1  # reported without another refresh
    assert await stack.status(connection_id) == "active"
    assert (await stack.manager.get_access_token(connection_id)).token
    events = await stack.account_events(connection_id)
    assert [(e["type"], e["reason"]) for e in events] == [
        ("integrated_account:authentication_error", "refresh_unavailable"),
        ("integrated_account:reactivated", "recovered"),
    ]
