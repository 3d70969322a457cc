"""The change poller on real PostgreSQL, the real broker and the provider emulator: records changed in
an emulated book reach the changes topic as `origin: "poll"` events, once per change and active
connection; watermarks move only after a successful poll; a refused page is quarantined; a paused
connection's account is not polled and catches up on resume; a poller cancelled mid-poll loses
nothing and repeats nothing."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from fanout.polling import xero
from fanout.polling.budget import RateBudgets
from fanout.polling.fetcher import PageFetcher
from fanout.polling.poller import POLL_UNPARSEABLE, Poller, PollerConfig, PollerMetrics
from fanout.polling.state import PollState
from gateway.runtime.polling import ManagerTokens
from gateway.settings import Settings
from provider_auth.accounts.store import ConnectionStatus
from provider_auth.providers import Provider
from provider_auth.vault import KeyRing
from tests.fanout.pipeline.pipeline_support import (
    Received,
    expected_id,
    read_events,
    read_quarantine,
    validate_data,
    version_of,
)
from tests.provider_auth.tokens.token_support import CLIENT_ID, TokenStack, token_stack

QB = Provider.QUICKBOOKS
XERO = Provider.XERO


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A database of the test's own: the poller syncs every connection it holds."""
    name = f"poller_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def stack(settings_factory: Any, database_url: str) -> AsyncIterator[TokenStack]:
    """A token manager against a fresh emulator, on the test's database and topics."""
    settings: Settings = settings_factory(
        database_url=database_url, encryption_keys=f"k1:{KeyRing.generate_key()}"
    )
    async with token_stack(settings) as running:
        yield running


def new_poller(stack: TokenStack, registry: CollectorRegistry | None = None) -> Poller:
    """A poller with one-second intervals, as the worker wires it."""
    metrics = PollerMetrics(registry or CollectorRegistry())
    fetcher = PageFetcher(
        stack.http,
        RateBudgets(stack.pool),
        ManagerTokens(stack.manager, stack.settings),
        observe=metrics.observe_request,
        backoff_base=0.05,
    )
    config = PollerConfig(
        changes_topic=stack.settings.topic_changes,
        quarantine_topic=stack.settings.topic_quarantine,
        poll_interval_seconds=1,
        sweep_interval_seconds=1,
        concurrency=4,
        lease_seconds=3.0,
        sync_seconds=0.2,
        idle_seconds=0.05,
        error_backoff_seconds=0.2,
    )
    return Poller(config, stack.pool, stack.producer, fetcher, metrics)


@asynccontextmanager
async def polling(stack: TokenStack, registry: CollectorRegistry | None = None) -> AsyncIterator[Poller]:
    """A poller running in this loop for the block, stopped at its end."""
    poller = new_poller(stack, registry)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        yield poller
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> None:
    """Wait until the async `check()` returns a true value."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def outcome_is(stack: TokenStack, provider: Provider, account: str, *outcomes: str) -> Callable[[], Any]:
    state = PollState(stack.pool)

    async def check() -> bool:
        row = await state.account(provider, account)
        return row is not None and row.last_outcome in outcomes

    return check


def polled(events: list[Received]) -> list[dict[str, Any]]:
    """Each event's data, checked as a CloudEvent with the official SDK and against its schema."""
    out = []
    for record in events:
        event = record.event()
        data = event.get_data()
        assert isinstance(data, dict)
        validate_data(event.get_type(), data)
        assert event.get_subject() == f"{data['entity']}/{data['entity_id']}"
        assert record.key == data["connection_id"].encode()
        out.append({"type": event.get_type(), "id": event.get_id(), **data})
    return out


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
        await eventually(lambda: _count_events(stack, 4))
        await eventually(outcome_is(stack, QB, realm, "ok"))
    assert len(await read_events(stack.settings)) == 4


async def _count_events(stack: TokenStack, wanted: int) -> bool:
    return len(await read_events(stack.settings)) >= wanted


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
        await eventually(lambda: _count_events(stack, 1))
    events = polled(await read_events(stack.settings))
    assert [(e["entity_id"], e["operation"], e["origin"]) for e in events] == [
        (changed.id, "created", "poll")
    ]


async def test_a_poller_cancelled_mid_poll_loses_and_repeats_nothing(stack: TokenStack) -> None:
    tenant = str(uuid.uuid4())
    await stack.connect(XERO, account=tenant)
    invoices = stack.emu.book(XERO, tenant).create_many("Invoice", 2 * xero.PAGE_SIZE + 50)
    stack.emu.set_latency(XERO, 0.3, endpoint="Invoices")

    crashed = new_poller(stack)
    task = asyncio.create_task(crashed.run(asyncio.Event()))
    await eventually(lambda: _count_events(stack, xero.PAGE_SIZE))
    task.cancel()  # mid-poll: pages published, watermark not moved, the lease left to run out
    await asyncio.gather(task, return_exceptions=True)
    assert await PollState(stack.pool).watermarks(XERO, tenant) == {}
    assert len(await read_events(stack.settings)) < len(invoices)

    async with polling(stack):
        await eventually(outcome_is(stack, XERO, tenant, "ok"), timeout=20)
    events = polled(await read_events(stack.settings))
    assert len(events) == len(invoices)  # count-exact: the repeated first page was dropped
    assert {e["entity_id"] for e in events} == {r.id for r in invoices}
