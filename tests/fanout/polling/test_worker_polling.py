"""The change poller in real `ledgerhook worker` processes, on the session's PostgreSQL and broker,
against the provider emulator: a worker killed mid-poll loses and repeats nothing once another one
takes over; three workers keep one account within its per-minute and in-flight limits as the
emulator counts them; a connection that needs reauthorization is not polled, and catches up once
reconnected; a QuickBooks CDC window of 2,500 changes is split and published once; deletions and
voids reach the changes topic as such."""

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from fanout.polling import quickbooks, xero
from fanout.polling.state import PollState
from gateway.dev.emulator import Emulator, IssuedGrant
from gateway.dev.emulator.books import Record
from gateway.settings import Settings
from provider_auth.providers import Provider
from provider_auth.vault import KeyRing
from tests.fanout.pipeline.pipeline_support import Received, validate_data
from tests.fanout.worker_process import WorkerProcess, stop_every_worker, wait_until
from tests.provider_auth.tokens.token_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    TokenStack,
    key_entries,
    register_clients,
    token_stack,
)
from tests.support import ADMIN_TOKEN, RunningGateway, read_topic, running_gateway

QB = Provider.QUICKBOOKS
XERO = Provider.XERO
# The providers the workers are given an app for, every URL on the emulator.
APPS = (QB, XERO)
# Polls as often as the settings allow, so the tests wait seconds rather than minutes.
FAST = {"POLL_INTERVAL_SECONDS": "1", "SWEEP_INTERVAL_SECONDS": "1", "POLL_SYNC_SECONDS": "1"}
# One poll per test where a repeat would blur what is checked.
ONCE = FAST | {"POLL_INTERVAL_SECONDS": "600", "SWEEP_INTERVAL_SECONDS": "600"}


@pytest.fixture
async def stack(settings_factory: Any, database_url: str) -> AsyncIterator[TokenStack]:
    """The token stack of the poller's tests, on a database of the test's own (a worker polls every
    account it holds), with settings naming the emulated QuickBooks and Xero apps so that worker
    processes can use them too; the workers a test started are killed first at its end."""
    async with Emulator() as emu:
        register_clients(emu)
        apps = {
            f"{provider.env_name.lower()}_{name}": value
            for provider in APPS
            for name, value in (
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("token_url", emu.token_url(provider)),
                ("api_base_url", emu.url(f"/{provider.value}")),
            )
        }
        settings = settings_factory(
            database_url=database_url,
            encryption_keys=f"k1:{KeyRing.generate_key()}",
            worker_group_id=f"fanout-{uuid.uuid4().hex[:8]}",
            worker_session_timeout_ms=3000,
            **apps,
        )
        async with token_stack(settings, emulator=emu) as running:
            try:
                yield running
            finally:
                stop_every_worker()


def start_worker(stack: TokenStack, **env: str) -> WorkerProcess:
    """A `ledgerhook worker` polling with the stack's key ring and apps, fast unless `env` says otherwise."""
    return WorkerProcess(stack.settings, **(app_env(stack.settings) | FAST | env))


def app_env(settings: Settings) -> dict[str, str]:
    """What a worker needs beyond the stack's database and topics to poll: the key ring that opens
    the stored tokens, and the apps at the emulator (`LEDGERHOOK_` names without the prefix)."""
    env = {"ENCRYPTION_KEYS": key_entries(settings)}
    for provider in APPS:
        for name in ("client_id", "client_secret", "token_url", "api_base_url"):
            value = getattr(settings, f"{provider.env_name.lower()}_{name}")
            env[f"{provider.env_name}_{name.upper()}"] = (
                value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            )
    return env


async def connect(
    stack: TokenStack, provider: Provider, account: str, grant: IssuedGrant | None = None
) -> str:
    """A new active connection to `account` holding a live emulator grant; its id."""
    grant = grant or stack.emu.issue_grant(provider, CLIENT_ID, accounts=[account])
    connection_id, _, _ = await stack.connect(provider, account=account, grant=grant)
    return connection_id


def new_realm() -> str:
    return str(uuid.uuid4().int)[:16]


@dataclass(frozen=True)
class Change:
    """One change event as a consumer reads it."""

    event_id: str
    event_type: str
    connection_id: str
    entity_id: str
    operation: str
    origin: str


async def changes(settings: Settings) -> list[Change]:
    """Every event on the changes topic, read with the official CloudEvents SDK, its key checked
    against its connection and the first event of each type against its documented schema."""
    found = []
    validated: set[str] = set()  # one event per type: a schema check costs milliseconds
    # The aiokafka reader: thousands of records in a blink, where librdkafka's takes seconds.
    for record in await read_topic(settings.kafka_bootstrap_servers, settings.topic_changes):
        event = Received(
            record.partition, record.offset, record.key, dict(record.headers), record.value or b""
        ).event()
        data = event.get_data()
        assert isinstance(data, dict)
        if event.get_type() not in validated:
            validate_data(event.get_type(), data)
            validated.add(event.get_type())
        assert record.key == data["connection_id"].encode()
        assert event.get_subject() == f"{data['entity']}/{data['entity_id']}"
        found.append(
            Change(
                event_id=event.get_id(),
                event_type=event.get_type(),
                connection_id=data["connection_id"],
                entity_id=data["entity_id"],
                operation=data["operation"],
                origin=data["origin"],
            )
        )
    return found


def published(*workers: WorkerProcess, provider: Provider) -> float:
    """Change events the workers' polls published, from their own /metrics."""
    return sum(w.metric("ledgerhook_poll_events_published_total", provider=provider.value) for w in workers)


def polls_ok(worker: WorkerProcess, provider: Provider) -> float:
    """Polls the worker finished with outcome ok, from its /metrics."""
    return worker.metric("ledgerhook_poll_polls_total", provider=provider.value, outcome="ok")


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.05
) -> None:
    """Wait until the async `check()` holds, looking `every` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every)


def quickbooks_operation(record: Record) -> str:
    """The operation a CDC read of `record` shows: created while its whole-second creation and
    update times agree (docs/providers.md, QuickBooks Online)."""
    if record.state == "deleted":
        return "deleted"
    return "created" if int(record.created_at) == int(record.updated_at) else "updated"


async def test_a_worker_killed_mid_poll_loses_and_repeats_nothing_once_another_takes_over(
    stack: TokenStack,
) -> None:
    realm = new_realm()
    connections = [await connect(stack, QB, realm) for _ in range(2)]  # two tenants of one realm
    book = stack.emu.book(QB, realm)
    customer = book.create("Customer", DisplayName="Acme")
    gone = book.delete("Vendor", book.create("Vendor", DisplayName="Old").id)
    # More than one CDC answer holds (1,000 objects), 250 a second from now on: after the
    # connections were made, where a first poll starts.
    invoices = book.create_many("Invoice", 1_400, at=time.time() + 5.6, spacing=0.004)
    expected = {
        (connection, record.id, quickbooks_operation(record))
        for connection in connections
        for record in (customer, gone, *invoices)
    }
    stack.emu.set_latency(QB, 0.5, endpoint="cdc")
    state = PollState(stack.pool)
    # A short lease, so the killed worker's account is handed over soon; one poll each.
    env = ONCE | {"POLL_LEASE_SECONDS": "3"}

    first = start_worker(stack, **env)
    # Killed while its second CDC call is in flight: the first answer's events are out, the
    # watermark has not moved.
    await eventually(lambda: _at_least(len(stack.emu.served(QB, realm)), 2), 60, "the second CDC call", 0.005)
    assert stack.emu.served(QB, realm)[1].ended is None
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    killed_at = time.time()
    partial = await changes(stack.settings)
    assert 0 < len(partial) < len(expected)
    assert await state.watermarks(QB, realm) == {}

    stack.emu.set_latency(QB, 0, endpoint="cdc")
    second = start_worker(stack, **env)
    await wait_until(lambda: polls_ok(second, QB) >= 1, 60, "the second worker's poll")
    # The first answer was read again; none of it was published twice.
    assert second.metric("ledgerhook_poll_records_read_total", provider="quickbooks") > len(invoices) + 2
    assert published(second, provider=QB) == len(expected) - len(partial)
    assert await second.stop(signal.SIGTERM) == 0, second.logs()

    events = await changes(stack.settings)
    assert len(events) == len(expected)  # count-exact
    assert {(e.connection_id, e.entity_id, e.operation) for e in events} == expected
    assert {e.origin for e in events} == {"poll"}
    # Every entity's watermark is Intuit's clock at the first answer of the poll that finished
    # (CDC's `time`, to the millisecond).
    first_answer = next(r for r in stack.emu.served(QB, realm) if r.started > killed_at)
    assert first_answer.ended is not None
    marks = await state.watermarks(QB, realm)
    assert set(marks) == set(quickbooks.ENTITIES)
    [mark] = set(marks.values())
    assert first_answer.started - 0.001 <= mark.timestamp() <= first_answer.ended


async def test_three_workers_keep_one_xero_tenant_within_its_minute_and_in_flight_limits(
    stack: TokenStack,
) -> None:
    per_minute, in_flight = 10, 1
    tenant = str(uuid.uuid4())
    connection = await connect(stack, XERO, tenant)
    book = stack.emu.book(XERO, tenant)
    invoices = book.create_many("Invoice", 2 * xero.PAGE_SIZE + 50)
    contact = book.create("Contact", Name="Acme")
    # A poll asks each endpoint once and for two more pages of invoices: more than a minute allows.
    assert len(xero.ENTITIES) + 2 > per_minute
    # The emulator answers 429 past the same limits, as Xero would.
    stack.emu.set_api_limits(XERO, per_minute=per_minute, concurrent=in_flight)
    stack.emu.set_latency(XERO, 0.05)
    limits = {"XERO_REQUESTS_PER_MINUTE": str(per_minute), "XERO_CONCURRENCY": str(in_flight)}

    workers = [start_worker(stack, **limits) for _ in range(3)]
    await wait_until(
        lambda: published(*workers, provider=XERO) >= len(invoices) + 1, 100, "every change to be published"
    )
    for worker in workers:
        worker.process.kill()
    await eventually(lambda: _finished(stack.emu, tenant), 10, "the killed workers' requests to be answered")

    events = await changes(stack.settings)
    assert sorted(e.entity_id for e in events) == sorted([contact.id, *(r.id for r in invoices)])
    assert {(e.connection_id, e.origin) for e in events} == {(connection, "poll")}
    # The emulator's record of every request to the tenant, by arrival: at most `per_minute` in
    # any 60-second span, with the first minute's all used and the poll's last page left for the
    # next (the limit held it up)...
    served = stack.emu.served(XERO, tenant)
    starts = [r.started for r in served]
    assert all(later - earlier >= 60.0 for earlier, later in zip(starts, starts[per_minute:], strict=False))
    assert sum(t < starts[0] + 60.0 for t in starts) == per_minute < len(starts)
    # ...one at a time, each arriving after the one before was answered...
    assert all(r.ended is not None and r.ended <= later.started for r, later in pairwise(served))
    # ...and not a single 429.
    assert stack.emu.events(XERO, "throttled") == 0


async def _finished(emu: Emulator, tenant: str) -> bool:
    return all(r.ended is not None for r in emu.served(XERO, tenant))


async def test_a_connection_needing_reauthorization_is_not_polled_and_catches_up_once_reconnected(
    stack: TokenStack,
) -> None:
    realm, other = new_realm(), new_realm()
    grant = stack.emu.issue_grant(QB, CLIENT_ID, accounts=[realm])
    broken = await connect(stack, QB, realm, grant)
    await connect(stack, QB, other)  # polled all along, so quiet time is seen passing
    book = stack.emu.book(QB, realm)
    invoice = book.create("Invoice", TotalAmt=10)
    vendor = book.create("Vendor", DisplayName="Old")
    state = PollState(stack.pool)

    async with running_gateway(stack.settings) as gateway:
        worker = start_worker(stack)
        await wait_until(lambda: published(worker, provider=QB) >= 2, 60, "the first poll's events")

        # The customer revokes access: the next poll's 401, then invalid_grant on refresh.
        assert stack.emu.revoke(QB, grant.grant_id)

        async def parked() -> bool:
            account = await state.account(QB, realm)
            return (
                await stack.status(broken) == "needs_reauth" and account is not None and not account.enabled
            )

        await eventually(parked, 30, "the connection to need reauthorization and its account to rest")
        quiet_from = len(stack.emu.served(QB, realm))
        meanwhile = [
            book.update("Invoice", invoice.id, TotalAmt=20),
            book.create("Invoice", TotalAmt=30),
            book.delete("Vendor", vendor.id),
        ]
        polled_other = len(stack.emu.served(QB, other))
        await eventually(
            lambda: _at_least(len(stack.emu.served(QB, other)), polled_other + 3), 30, "three more polls"
        )
        assert len(stack.emu.served(QB, realm)) == quiet_from

        await reconnect(stack, gateway, broken, realm)
        await wait_until(lambda: published(worker, provider=QB) >= 5, 30, "the changes made meanwhile")

    events = await changes(stack.settings)
    assert {e.connection_id for e in events} == {broken}
    assert sorted((e.entity_id, e.operation, e.origin) for e in events) == sorted(
        (record.id, quickbooks_operation(record), "poll") for record in (invoice, vendor, *meanwhile)
    )
    assert [e["type"] for e in await stack.account_events(broken)] == [
        "integrated_account:authentication_error",
        "integrated_account:reactivated",
    ]


async def _at_least(value: int, wanted: int) -> bool:
    return value >= wanted


async def reconnect(stack: TokenStack, gateway: RunningGateway, connection_id: str, account: str) -> None:
    """The customer consents again: a new grant handed over through the admin API."""
    fresh = stack.emu.issue_grant(QB, CLIENT_ID, accounts=[account])
    body = {"access_token": fresh.access_token, "refresh_token": fresh.refresh_token, "expires_in": 3600}
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http,
        http.put(f"{gateway.base_url}/admin/v1/connections/{connection_id}/credentials", json=body) as answer,
    ):
        assert answer.status == 200, await answer.text()
        assert (await answer.json())["reactivated"] is True
    assert await stack.status(connection_id) == "active"


async def test_a_connection_reconnected_before_the_next_sync_catches_up_too(stack: TokenStack) -> None:
    realm = new_realm()
    grant = stack.emu.issue_grant(QB, CLIENT_ID, accounts=[realm])
    broken = await connect(stack, QB, realm, grant)
    book = stack.emu.book(QB, realm)
    book.create("Invoice", TotalAmt=10)

    async with running_gateway(stack.settings) as gateway:
        # Syncs five seconds apart: the reconnect lands between two of them, so the account is
        # never set aside and resumed; the poll that met invalid_grant must not hold it back.
        worker = start_worker(stack, POLL_SYNC_SECONDS="5")
        await wait_until(lambda: published(worker, provider=QB) >= 1, 60, "the first poll's event")
        assert stack.emu.revoke(QB, grant.grant_id)

        async def broke() -> bool:
            return await stack.status(broken) == "needs_reauth"

        await eventually(broke, 30, "the connection to need reauthorization")
        added = book.create("Invoice", TotalAmt=30)
        await reconnect(stack, gateway, broken, realm)
        # Two syncs and more.
        await wait_until(lambda: published(worker, provider=QB) >= 2, 15, "the change made meanwhile")

    events = await changes(stack.settings)
    assert [(e.operation, e.origin) for e in events if e.entity_id == added.id] == [("created", "poll")]


async def test_quickbooks_splits_a_window_of_2500_changes_and_publishes_each_once(
    stack: TokenStack,
) -> None:
    realm = new_realm()
    connection = await connect(stack, QB, realm)
    # 250 a second from now on, so one window holds 2,500 changes over ten seconds.
    invoices = stack.emu.book(QB, realm).create_many("Invoice", 2_500, at=time.time() + 10, spacing=0.004)

    worker = start_worker(stack, **ONCE)
    await wait_until(lambda: polls_ok(worker, QB) >= 1, 60, "the poll")
    events = await changes(stack.settings)
    assert sorted(e.entity_id for e in events) == sorted(r.id for r in invoices)  # each once
    assert {(e.connection_id, e.event_type, e.origin) for e in events} == {
        (connection, "accounting.invoice.created", "poll")
    }
    # One poll read the window in several calls: an answer of 1,000 is cut short.
    assert polls_ok(worker, QB) == 1
    calls = stack.emu.calls(QB, "cdc")
    assert calls >= 2 + len(quickbooks.ENTITIES)
    assert worker.metric("ledgerhook_poll_requests_total", provider="quickbooks", outcome="ok") == calls
    assert worker.metric("ledgerhook_poll_records_read_total", provider="quickbooks") >= len(invoices)


async def test_deleted_and_voided_records_reach_the_topic_as_such(stack: TokenStack) -> None:
    tenant = str(uuid.uuid4())
    connection = await connect(stack, XERO, tenant)
    book = stack.emu.book(XERO, tenant)
    deleted, voided, kept = (book.create("Invoice", Total=100) for _ in range(3))

    worker = start_worker(stack)
    await wait_until(lambda: published(worker, provider=XERO) >= 3, 60, "the first poll's events")
    book.delete("Invoice", deleted.id)
    book.void("Invoice", voided.id)
    await wait_until(lambda: published(worker, provider=XERO) >= 5, 30, "the deletion and the void")
    # Two more polls read both again (the overlap): nothing is published twice.
    done = polls_ok(worker, XERO)
    await wait_until(lambda: polls_ok(worker, XERO) >= done + 2, 30, "two more polls")

    events = await changes(stack.settings)
    assert sorted((e.entity_id, e.event_type) for e in events) == sorted(
        [
            *((r.id, "accounting.invoice.updated") for r in (deleted, voided, kept)),
            (deleted.id, "accounting.invoice.deleted"),
            (voided.id, "accounting.invoice.voided"),
        ]
    )
    assert {(e.connection_id, e.origin) for e in events} == {(connection, "poll")}
