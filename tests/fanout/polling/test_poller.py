"""The change poller on real PostgreSQL, the real broker and the provider emulator: records changed in
an emulated book reach the changes topic as `origin: "poll"` events, once per change and active
connection; watermarks move only after a successful poll; a refused page is quarantined; a paused
connection's account is not polled and catches up on resume; a poller cancelled mid-poll loses
nothing and repeats nothing."""

import asyncio
import logging
import uuid
from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry

from fanout.polling import xero
from fanout.polling.poller import POLL_UNPARSEABLE
from fanout.polling.state import PollState
from provider_auth.accounts.store import ConnectionStatus
from provider_auth.providers import Provider
from tests.fanout.pipeline.pipeline_support import expected_id, read_events, read_quarantine, version_of
from tests.fanout.polling.polling_support import (
    count_events,
    eventually,
    new_poller,
    outcome_is,
    polled,
    polling,
)
from tests.provider_auth.tokens.token_support import CLIENT_ID, TokenStack

QB = Provider.QUICKBOOKS
XERO = Provider.XERO


async def two_tenants_on_one_realm(stack: TokenStack) -> tuple[str, list[str]]:
    realm = str(uuid.uuid4().int)[:16]
    connections = []
    for _ in range(2):
        grant = stack.emu.issue_grant(QB, CLIENT_ID, accounts=[realm])
        connection_id, _, _ = await stack.connect(QB, account=realm, grant=grant)
        connections.append(connection_id)
    return realm, connections


async def test_quickbooks_changes_reach_every_connection_of_the_realm_with_one_cdc_call(
    stack: TokenStack,
) -> None:
    realm, connections = await two_tenants_on_one_realm(stack)
    book = stack.emu.book(QB, realm)
    invoice = book.create("Invoice", TotalAmt=120)
    customer = book.create("Customer", DisplayName="Acme")
    gone = book.create("Vendor", DisplayName="Old")
    await asyncio.sleep(1.05)  # a later second: an update, not a creation
    book.update("Invoice", invoice.id, TotalAmt=99)
    book.delete("Vendor", gone.id)
    registry = CollectorRegistry()

    async with polling(stack, registry):
        await eventually(outcome_is(stack, QB, realm, "ok"))
        assert stack.emu.calls(QB, "cdc") == 1
        first = await PollState(stack.pool).watermarks(QB, realm)

        async def budget_shown() -> bool:  # the one CDC call, in the realm's minute window
            labels = {"provider": "quickbooks", "scope": "minute"}
            return registry.get_sample_value("ledgerhook_poll_budget_in_use", labels) == 1

        await eventually(budget_shown)

    events = polled(await read_events(stack.settings))
    assert len(events) == 6  # three changes, two connections
    assert {e["origin"] for e in events} == {"poll"}
    assert {e["delivery_id"] for e in events} == {None}
    assert {(e["connection_id"], e["type"], e["entity_id"]) for e in events} == {
        (connection, type_, ident)
        for connection in connections
        for type_, ident in (
            ("accounting.invoice.updated", invoice.id),
            ("accounting.contact.created", customer.id),
            ("accounting.contact.deleted", gone.id),
        )
    }
    for event in events:  # the documented id formula, the same for a webhook of this version
        occurred = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
        assert event["id"] == expected_id(
            event["connection_id"],
            "quickbooks",
            realm,
            event["entity"],
            event["entity_id"],
            event["operation"],
            version_of(occurred),
        )
    assert set(first) >= {"Invoice", "Customer", "Vendor"}
    assert (
        registry.get_sample_value("ledgerhook_poll_events_published_total", {"provider": "quickbooks"}) == 6
    )
    assert registry.get_sample_value("ledgerhook_poll_records_read_total", {"provider": "quickbooks"}) == 3
    assert (
        registry.get_sample_value(
            "ledgerhook_poll_requests_total", {"provider": "quickbooks", "outcome": "ok"}
        )
        == 1
    )

    # Nothing new: the next sweep publishes nothing, and its watermark moves to Intuit's clock.
    async with polling(stack):
        await eventually(lambda: _at_least(stack.emu.calls(QB, "cdc"), 2))
        await eventually(outcome_is(stack, QB, realm, "ok"))
    second = await PollState(stack.pool).watermarks(QB, realm)
    assert all(second[entity] > first[entity] for entity in first)
    assert len(await read_events(stack.settings)) == 6


async def _at_least(value: int, wanted: int) -> bool:
    return value >= wanted


async def test_xero_pages_through_three_pages_and_moves_the_invoice_watermark(stack: TokenStack) -> None:
    tenant = str(uuid.uuid4())
    connection_id, _, _ = await stack.connect(XERO, account=tenant)
    invoices = stack.emu.book(XERO, tenant).create_many("Invoice", 2 * xero.PAGE_SIZE + 50)

    async with polling(stack):
        await eventually(outcome_is(stack, XERO, tenant, "ok"))
        assert stack.emu.calls(XERO, "Invoices") == 3

    events = polled(await read_events(stack.settings))
    assert len(events) == len(invoices)
    assert {e["entity_id"] for e in events} == {r.id for r in invoices}
    assert {(e["connection_id"], e["origin"], e["entity"]) for e in events} == {
        (connection_id, "poll", "invoice")
    }
    marks = await PollState(stack.pool).watermarks(XERO, tenant)
    latest = max(datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00")) for e in events)
    # Xero's clock at the first answer (its DateTimeUTC), for every entity of the poll.
    assert set(marks) == set(xero.ENTITIES)
    assert len(set(marks.values())) == 1
    assert marks["Invoice"] >= latest


async def test_a_page_the_parser_refuses_is_quarantined_and_the_watermark_stays(stack: TokenStack) -> None:
    realm, _ = await two_tenants_on_one_realm(stack)
    book = stack.emu.book(QB, realm)
    book.create("Invoice")
    state = PollState(stack.pool)
    async with polling(stack):
        await eventually(outcome_is(stack, QB, realm, "ok"))
    before = await state.watermarks(QB, realm)
    assert len(await read_events(stack.settings)) == 2

    # A 200 that is a Fault, not a CDC answer.
    fault = {"Fault": {"type": "SystemFault", "Error": [{"code": "10000", "Message": "internal"}]}}
    stack.emu.fail_next(QB, status=200, endpoint="cdc", body=fault)
    book.create("Invoice")
    async with polling(stack):
        await eventually(outcome_is(stack, QB, realm, "unparseable"))
        assert await state.watermarks(QB, realm) == before
    quarantined = await read_quarantine(stack.settings)
    assert len(quarantined) == 1
    assert quarantined[0].header("ledgerhook-quarantine-reason") == POLL_UNPARSEABLE
    assert "SystemFault" in (quarantined[0].header("ledgerhook-quarantine-detail") or "")
    assert quarantined[0].value.startswith(b'{"Fault"')

    # The next poll reads the same window again and publishes what the refused page held.
    async with polling(stack):
        await eventually(lambda: count_events(stack, 4))
        await eventually(outcome_is(stack, QB, realm, "ok"))
    assert len(await read_events(stack.settings)) == 4


async def test_a_paused_connection_is_not_polled_and_catches_up_on_resume(stack: TokenStack) -> None:
    realm = str(uuid.uuid4().int)[:16]
    connection_id, _, _ = await stack.connect(QB, account=realm)
    book = stack.emu.book(QB, realm)
    async with polling(stack):
        await eventually(outcome_is(stack, QB, realm, "ok"))
        await stack.connections.update(connection_id, status=ConnectionStatus.PAUSED)
        state = PollState(stack.pool)

        async def disabled() -> bool:
            row = await state.account(QB, realm)
            return row is not None and not row.enabled and row.lease_owner is None

        await eventually(disabled)
        calls = stack.emu.calls(QB, "cdc")
        changed = book.create("Invoice")
        await asyncio.sleep(2.5)  # more than two intervals
        assert stack.emu.calls(QB, "cdc") == calls
        assert await read_events(stack.settings) == []

        await stack.connections.update(connection_id, status=ConnectionStatus.ACTIVE)
        await eventually(lambda: count_events(stack, 1))
    events = polled(await read_events(stack.settings))
    assert [(e["entity_id"], e["operation"], e["origin"]) for e in events] == [
        (changed.id, "created", "poll")
    ]


async def test_a_poller_cancelled_mid_poll_loses_and_repeats_nothing(stack: TokenStack) -> None:
    tenant = str(uuid.uuid4())
    await stack.connect(XERO, account=tenant)
    invoices = stack.emu.book(XERO, tenant).create_many("Invoice", 5 * xero.PAGE_SIZE + 50)
    # Six pages of half a second: the first page's events are seen (a read of the whole topic,
    # slow on a busy machine) well before the last page could be in.
    stack.emu.set_latency(XERO, 0.5, endpoint="Invoices")

    crashed = new_poller(stack)
    task = asyncio.create_task(crashed.run(asyncio.Event()))
    await eventually(lambda: count_events(stack, xero.PAGE_SIZE))
    task.cancel()  # mid-poll: pages published, watermark not moved, the lease left to run out
    await asyncio.gather(task, return_exceptions=True)
    assert await PollState(stack.pool).watermarks(XERO, tenant) == {}
    assert len(await read_events(stack.settings)) < len(invoices)

    async with polling(stack):
        await eventually(outcome_is(stack, XERO, tenant, "ok"), timeout=20)
    events = polled(await read_events(stack.settings))
    assert len(events) == len(invoices)  # count-exact: the repeated first page was dropped
    assert {e["entity_id"] for e in events} == {r.id for r in invoices}


async def test_a_connection_without_tokens_yet_is_not_reported_as_a_fault(
    stack: TokenStack, caplog: pytest.LogCaptureFixture
) -> None:
    # Registered before its tokens were handed over: its polls fail as `auth`, logged at INFO only,
    # while a connection whose tokens the provider refuses is a warning.
    realm = str(uuid.uuid4().int)[:16]
    await stack.connections.create(f"tenant-{uuid.uuid4().hex[:8]}", QB, realm)
    revoked_realm = str(uuid.uuid4().int)[:16]
    grant = stack.emu.issue_grant(QB, CLIENT_ID, accounts=[revoked_realm])
    await stack.connect(QB, account=revoked_realm, grant=grant)
    stack.emu.revoke(QB, grant.grant_id)
    caplog.set_level(logging.INFO, logger="ledgerhook.fanout.poller")
    async with polling(stack):
        await eventually(outcome_is(stack, QB, realm, "auth"))
        await eventually(outcome_is(stack, QB, revoked_realm, "auth"))
    failed = {
        record.__dict__["account"]: record.levelno
        for record in caplog.records
        if record.getMessage() == "poll failed"
    }
    assert failed == {realm: logging.INFO, revoked_realm: logging.WARNING}
