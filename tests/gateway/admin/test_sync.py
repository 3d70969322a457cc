"""The sync resource over real HTTP, with a poller running against the emulator: `POST .../backfill`
queues a job that the poller reads through, `GET .../sync` shows where polling and the job stand;
`ledgerhook backfill` follows a job to the end (Ctrl-C stops following, not the job) and
`ledgerhook sync` prints the status."""

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from fanout.polling import xero
from gateway.dev.emulator import Emulator
from provider_auth.accounts.store import ConnectionStatus
from provider_auth.providers import Provider
from provider_auth.vault import KeyRing
from tests.fanout.pipeline.pipeline_support import read_events
from tests.fanout.polling.polling_support import eventually, outcome_is, polled, polling
from tests.paths import REPO_ROOT
from tests.provider_auth.tokens.token_support import (
    CLIENT_ID,
    TokenStack,
    emulator_settings,
    register_clients,
    token_stack,
)
from tests.support import ADMIN_TOKEN, RunningGateway, running_gateway

QB = Provider.QUICKBOOKS
XERO = Provider.XERO
DAY = 86400.0


class Api:
    """The gateway's admin API and the token stack behind the poller, on one database."""

    def __init__(self, gateway: RunningGateway, stack: TokenStack, http: aiohttp.ClientSession) -> None:
        self.gateway, self.stack, self.http = gateway, stack, http

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, Any]:
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        url = f"{self.gateway.base_url}/admin/v1{path}"
        async with self.http.request(method, url, json=body, headers=headers) as response:
            data = await response.json(content_type=None) if await response.read() else None
            return response.status, data, response.headers

    async def sync(self, connection_id: str) -> dict[str, Any]:
        status, data, _ = await self.call("GET", f"/connections/{connection_id}/sync")
        assert status == 200, data
        return data  # type: ignore[no-any-return]


@pytest.fixture
async def api(settings_factory: Any, database_url: str) -> AsyncIterator[Api]:
    async with Emulator() as emu:
        register_clients(emu)
        settings = settings_factory(
            database_url=database_url,
            encryption_keys=f"k1:{KeyRing.generate_key()}",
            poll_interval_seconds=1,
            sweep_interval_seconds=1,
            **emulator_settings(emu),
        )
        async with (
            token_stack(settings, emulator=emu) as stack,
            running_gateway(settings) as gateway,
            aiohttp.ClientSession() as http,
        ):
            yield Api(gateway, stack, http)


def backfill_state(api: Api, connection_id: str, state: str) -> Any:
    async def check() -> bool:
        backfill = (await api.sync(connection_id))["backfill"]
        return backfill is not None and backfill["state"] == state

    return check


async def test_a_backfill_is_queued_then_followed_to_the_end_through_the_api(api: Api) -> None:
    realm = str(uuid.uuid4().int)[:16]
    records = api.stack.emu.book(QB, realm).create_many("Invoice", 5, spacing=DAY)
    connection_id, _, _ = await api.stack.connect(QB, account=realm)

    before = await api.sync(connection_id)
    assert before["polling"] == {
        "mode": "auto",
        "interval_seconds": None,
        "effective_mode": "sweep",
        "effective_interval_seconds": 1,
        "polled": True,
        "account_interval_seconds": None,
    }
    assert before["backfill"] is None
    assert {e["entity"] for e in before["entities"]} >= {"Invoice", "Customer"}
    assert {e["watermark"] for e in before["entities"]} == {None}

    since = (datetime.now(UTC) - timedelta(days=10)).isoformat()
    status, job, headers = await api.call(
        "POST", f"/connections/{connection_id}/backfill", {"since": since, "entities": ["invoice"]}
    )
    assert status == 202, job
    assert headers["location"] == f"/admin/v1/connections/{connection_id}/sync"
    assert (job["state"], job["entities"], job["progress"]["fraction"]) == ("queued", ["Invoice"], 0.0)
    assert (await api.sync(connection_id))["backfill"]["id"] == job["id"]

    async with polling(api.stack):
        await eventually(backfill_state(api, connection_id, "done"))
        await eventually(outcome_is(api.stack, QB, realm, "ok"))
    after = await api.sync(connection_id)
    done = after["backfill"]
    assert done["progress"]["fraction"] == 1.0 and done["progress"]["estimated_seconds_left"] == 0.0
    assert (done["progress"]["pages_done"], done["progress"]["records_read"]) == (1, 5)
    assert done["finished_at"] is not None and done["last_error"] is None
    invoice = next(e for e in after["entities"] if e["entity"] == "Invoice")
    assert invoice["watermark"] is not None and invoice["lag_seconds"] >= 0
    assert invoice["last_poll"]["outcome"] == "ok" and invoice["next_due_at"] is not None
    assert after["polling"]["account_interval_seconds"] == 1
    assert after["requests"]["minute"]["limit"] == 500 and after["requests"]["minute"]["used"] >= 2
    assert after["requests"]["in_flight"]["limit"] == 10
    events = polled(await read_events(api.stack.settings))
    assert sorted(e["entity_id"] for e in events) == sorted(r.id for r in records)


async def test_backfill_requests_are_checked(api: Api) -> None:
    connection_id, _, _ = await api.stack.connect(QB, account=str(uuid.uuid4().int)[:16])
    path = f"/connections/{connection_id}/backfill"
    past = "2026-01-01T00:00:00Z"
    for body, pointer in (
        ({"since": "2026-01-01T00:00:00"}, "#/since"),  # no time zone
        ({"since": (datetime.now(UTC) + timedelta(days=1)).isoformat()}, "#/since"),
        ({"since": "yesterday"}, "#/since"),
        ({}, "#/since"),
        ({"since": past, "entities": ["Widget"]}, "#/entities"),
        ({"since": past, "entities": []}, "#/entities"),
        ({"since": past, "surprise": 1}, "#/surprise"),
    ):
        status, problem, _ = await api.call("POST", path, body)
        assert status == 422, (body, problem)
        assert problem["errors"][0]["pointer"] == pointer, (body, problem)
    status, problem, _ = await api.call("POST", path, ["not", "an", "object"])
    assert status == 422

    status, job, _ = await api.call("POST", path, {"since": "2026-11-01"})
    assert status == 202 and job["since"].startswith("2026-11-01T00:00:00")
    status, problem, _ = await api.call("POST", path, {"since": past})
    assert status == 409 and job["id"] in problem["detail"]

    unknown = str(uuid.uuid4())
    for method, suffix in (("GET", "sync"), ("POST", "backfill")):
        status, problem, _ = await api.call(method, f"/connections/{unknown}/{suffix}", {"since": past})
        assert status == 404, problem
    status, _, _ = await api.call("GET", "/connections/not-a-uuid/sync")
    assert status == 404

    custom = await api.stack.connection(Provider.CUSTOM)
    status, problem, _ = await api.call("POST", f"/connections/{custom}/backfill", {"since": past})
    assert status == 409 and "no change API" in problem["detail"]
    assert (await api.sync(custom))["polling"]["effective_mode"] == "off"

    gone = await api.stack.connection(Provider.XERO)
    await api.stack.connections.update(gone, status=ConnectionStatus.DISCONNECTED)
    status, problem, _ = await api.call("POST", f"/connections/{gone}/backfill", {"since": past})
    assert status == 409 and "disconnected" in problem["detail"]


async def _cli(api: Api, *args: str) -> asyncio.subprocess.Process:
    env = os.environ | {
        "LEDGERHOOK_ADMIN_TOKEN": ADMIN_TOKEN,
        "LEDGERHOOK_ADMIN_URL": api.gateway.base_url,
        "PYTHONPATH": str(REPO_ROOT),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_the_cli_follows_a_backfill_to_the_end_and_prints_the_sync_table(api: Api) -> None:
    tenant = str(uuid.uuid4())
    invoices = api.stack.emu.book(XERO, tenant).create_many("Invoice", xero.PAGE_SIZE + 20, spacing=60.0)
    connection_id, _, _ = await api.stack.connect(XERO, account=tenant)
    api.stack.emu.set_latency(XERO, 0.5, endpoint="Invoices")
    async with polling(api.stack):
        cli = await _cli(api, "backfill", connection_id, "--since", "2026-01-01", "--entities", "Invoice")
        out, err = await asyncio.wait_for(cli.communicate(), 60)
    text = err.decode()
    assert cli.returncode == 0, text
    assert "queued for connection" in text
    assert "done in" in text and f"{len(invoices)} records read" in text
    assert "Traceback" not in text

    table = await _cli(api, "sync", connection_id)
    out, err = await asyncio.wait_for(table.communicate(), 30)
    assert table.returncode == 0, err.decode()
    printed = out.decode()
    assert f"connection {connection_id}" in printed and "xero" in printed
    assert "ENTITY" in printed and "Invoice" in printed and "requests: minute" in printed
    assert "last poll" in printed and "next due" in printed
    assert "backfill" in printed and "done" in printed

    raw = await _cli(api, "sync", connection_id, "--json")
    out, _ = await asyncio.wait_for(raw.communicate(), 30)
    assert raw.returncode == 0 and b'"effective_mode": "sweep"' in out

    missing = await _cli(api, "sync", str(uuid.uuid4()))
    _, err = await asyncio.wait_for(missing.communicate(), 30)
    assert missing.returncode == 1 and err.decode().startswith("ledgerhook sync: 404")


async def test_ctrl_c_stops_following_not_the_backfill(api: Api) -> None:
    tenant = str(uuid.uuid4())
    api.stack.emu.book(XERO, tenant).create_many("Invoice", 2 * xero.PAGE_SIZE, spacing=60.0)
    connection_id, _, _ = await api.stack.connect(XERO, account=tenant)
    api.stack.emu.set_latency(XERO, 1.0, endpoint="Invoices")
    async with polling(api.stack):
        cli = await _cli(api, "backfill", connection_id, "--since", "2026-01-01")
        assert cli.stderr is not None
        first = await asyncio.wait_for(cli.stderr.readline(), 30)
        assert b"queued for connection" in first
        cli.send_signal(signal.SIGINT)
        _, rest = await asyncio.wait_for(cli.communicate(), 30)
        assert cli.returncode == 130
        assert b"stopped following" in rest and b"Traceback" not in rest
        await eventually(backfill_state(api, connection_id, "done"), timeout=60)

    bad = await _cli(api, "backfill", connection_id, "--since", "tomorrow")
    _, err = await asyncio.wait_for(bad.communicate(), 30)
    assert bad.returncode == 1 and b"422" in err and b"since" in err


async def test_tokens_handed_over_make_a_parked_account_due_at_once(api: Api) -> None:
    realm = str(uuid.uuid4().int)[:16]
    connection_id = await api.stack.connection(QB, account=realm)  # no tokens yet
    async with polling(api.stack):
        await eventually(outcome_is(api.stack, QB, realm, "auth"))
        parked = (await api.sync(connection_id))["entities"][0]["next_due_at"]
        assert datetime.fromisoformat(parked) > datetime.now(UTC) + timedelta(minutes=30)

        access, refresh = api.stack.emu.issue_grant(QB, CLIENT_ID, accounts=[realm])
        status, state, _ = await api.call(
            "PUT",
            f"/connections/{connection_id}/credentials",
            {"access_token": access, "refresh_token": refresh, "expires_in": 3600},
        )
        assert status == 200, state
        await eventually(outcome_is(api.stack, QB, realm, "ok"))
