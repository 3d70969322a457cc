"""One stream, end to end: a signed QuickBooks webhook through the gateway and the fan-out worker, and
the change poller sweeping the same realm from the emulator, in the worker's own tasks. Each version
of a record reaches the changes topic once, whichever path saw it first."""

import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry

from gateway.dev.emulator import Emulator
from gateway.dev.emulator.books import Record, render_quickbooks
from gateway.runtime.infra import open_infrastructure
from gateway.runtime.worker import running_worker_tasks
from gateway.settings import Settings
from provider_auth.providers import Provider
from provider_auth.vault import KeyRing
from tests.fanout.pipeline.pipeline_support import caught_up, post_signed, read_events
from tests.fanout.polling.polling_support import eventually, polled
from tests.provider_auth.tokens.token_support import CLIENT_ID, emulator_settings, register_clients
from tests.support import ADMIN_TOKEN, RunningGateway, running_gateway

QB = Provider.QUICKBOOKS


@dataclass
class Stack:
    settings: Settings
    emu: Emulator
    gateway: RunningGateway
    registry: CollectorRegistry


@pytest.fixture
async def stack(settings_factory: Any, database_url: str) -> AsyncIterator[Stack]:
    async with Emulator() as emu:
        register_clients(emu)
        settings: Settings = settings_factory(
            database_url=database_url,
            encryption_keys=f"k1:{KeyRing.generate_key()}",
            worker_group_id=f"one-stream-{uuid.uuid4().hex[:8]}",
            worker_session_timeout_ms=1000,
            sweep_interval_seconds=1,
            poll_sync_seconds=1,
            **emulator_settings(emu),
        )
        registry = CollectorRegistry()
        async with (
            running_gateway(settings) as gateway,
            open_infrastructure(settings) as infra,
            running_worker_tasks(settings, infra, registry),
        ):
            yield Stack(settings, emu, gateway, registry)


async def connect(stack: Stack, realm: str) -> str:
    """A QuickBooks connection with tokens, through the admin API."""
    access, refresh = stack.emu.issue_grant(QB, CLIENT_ID, accounts=[realm])
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    base = f"{stack.gateway.base_url}/admin/v1/connections"
    body = {"tenant_id": "acme", "provider": "quickbooks", "provider_account_id": realm}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(base, json=body) as created:
            assert created.status == 201
            connection_id = str((await created.json())["id"])
        tokens = {"access_token": access, "refresh_token": refresh, "expires_in": 3600}
        async with http.put(f"{base}/{connection_id}/credentials", json=tokens) as stored:
            assert stored.status == 200
    return connection_id


def webhook(realm: str, invoice_id: str, operation: str, last_updated: datetime) -> bytes:
    """The legacy QuickBooks notification of one invoice change."""
    entity = {
        "name": "Invoice",
        "id": invoice_id,
        "operation": operation,
        "lastUpdated": last_updated.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    notification = {"realmId": realm, "dataChangeEvent": {"entities": [entity]}}
    return orjson.dumps({"eventNotifications": [notification]})


def last_updated(record: Record) -> datetime:
    """The record's version as QuickBooks shows it (whole seconds)."""
    return datetime.fromisoformat(render_quickbooks(record)["MetaData"]["LastUpdatedTime"])


async def events_of(stack: Stack, invoice_id: str) -> list[dict[str, Any]]:
    return [e for e in polled(await read_events(stack.settings)) if e["entity_id"] == invoice_id]


def has_events(stack: Stack, invoice_id: str, count: int) -> Any:
    async def check() -> bool:
        return len(await events_of(stack, invoice_id)) >= count

    return check


def swept_since(stack: Stack, calls: int) -> Any:
    async def check() -> bool:
        return stack.emu.calls(QB, "cdc") >= calls + 2  # a whole sweep after the webhook's events

    return check


async def test_each_version_is_published_once_whichever_path_saw_it_first(stack: Stack) -> None:
    realm = str(uuid.uuid4().int)[:16]
    book = stack.emu.book(QB, realm)
    connection_id = await connect(stack, realm)

    # Poll first: the sweep publishes the creation; the late webhook of it publishes nothing.
    invoice = book.create("Invoice", TotalAmt=120)
    await eventually(has_events(stack, invoice.id, 1), timeout=30)
    await post_signed(
        stack.gateway, "quickbooks", webhook(realm, invoice.id, "Create", last_updated(invoice))
    )
    await caught_up(stack.settings)

    # Webhook first: the update's event comes from the webhook; the next sweeps publish nothing more.
    # The book takes the update only once the webhook's event is out, so no sweep can see it first
    # (the poll's two-minute overlap still reads it on the next sweep).
    version = datetime.fromtimestamp(math.floor(invoice.updated_at) + 1, UTC)
    await post_signed(stack.gateway, "quickbooks", webhook(realm, invoice.id, "Update", version))
    await caught_up(stack.settings)
    await eventually(has_events(stack, invoice.id, 2), timeout=30)
    updated = book.update("Invoice", invoice.id, at=version.timestamp(), TotalAmt=99)
    assert last_updated(updated) == version
    await eventually(swept_since(stack, stack.emu.calls(QB, "cdc")), timeout=30)

    events = await events_of(stack, invoice.id)
    assert [(e["operation"], e["origin"]) for e in events] == [("created", "poll"), ("updated", "webhook")]
    assert {e["connection_id"] for e in events} == {connection_id}
    assert len({e["id"] for e in events}) == 2
