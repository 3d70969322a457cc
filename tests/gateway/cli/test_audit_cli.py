"""`ledgerhook audit` and `ledgerhook tenants erase`, each a real process talking to a running gateway."""

import asyncio
import hashlib
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from gateway.cli.audit import changes_summary, parse_instant, parse_limit
from provider_auth.vault import KeyRing
from tests.support import RunningGateway, running_gateway

LEDGERHOOK = [sys.executable, "-m", "gateway.cli"]
# `ledgerhook audit`'s table: AT is two words (date and time), then one word per column to TARGET.
ACTOR, ROLE, VIA, CLIENT, ACTION, TARGET, CHANGES = 2, 3, 4, 5, 6, 7, 8


@dataclass
class Stack:
    """A gateway with an admin and an auditor token, named for this test alone (the trail is shared)."""

    gateway: RunningGateway
    admin: str
    auditor: str
    admin_token: str
    auditor_token: str

    def env(self, token: str | None = None) -> dict[str, str]:
        return {
            "LEDGERHOOK_ADMIN_URL": self.gateway.base_url,
            "LEDGERHOOK_ADMIN_TOKEN": token or self.admin_token,
        }

    async def api(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        """The admin API as the admin token (via api)."""
        async with (
            aiohttp.ClientSession(headers={"authorization": f"Bearer {self.admin_token}"}) as session,
            session.request(
                method, f"{self.gateway.base_url}/admin/v1{path}", json=body, params=params
            ) as response,
        ):
            assert response.status < 300, await response.text()
            return await response.json() if response.status != 204 else None

    async def connection(self, tenant: str, account: str | None = None) -> str:
        """A custom connection, to an account of its own unless `account` (the database is shared)."""
        body = {"tenant_id": tenant, "provider": "custom", "provider_account_id": account or uuid.uuid4().hex}
        created = await self.api("POST", "/connections", body)
        return str(created["id"])

    async def trail(self, **filters: str) -> list[dict[str, Any]]:
        """Every entry of the admin's, newest first, straight from the API."""
        page = await self.api("GET", "/audit", actor=self.admin, limit="200", **filters)
        assert page["next"] is None
        return list(page["items"])


@pytest.fixture
async def stack(settings_factory: Any) -> AsyncIterator[Stack]:
    suffix = uuid.uuid4().hex[:8]
    admin, auditor = f"ops-{suffix}", f"reader-{suffix}"
    admin_token, auditor_token = f"admin-token-{suffix}", f"auditor-token-{suffix}"
    settings = settings_factory(
        admin_tokens=f"admin:{admin}:{admin_token},auditor:{auditor}:{auditor_token}",
        encryption_keys=f"k1:{KeyRing.generate_key()}",
    )
    async with running_gateway(settings) as running:
        yield Stack(running, admin, auditor, admin_token, auditor_token)


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LEDGERHOOK_")} | env


async def cli(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    # In a thread: the gateway under test answers from this test's event loop.
    return await asyncio.to_thread(
        subprocess.run,
        [*LEDGERHOOK, *args],
        env=_clean_env(env),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
    )


def rows(table: str) -> list[list[str]]:
    """The table's rows (its header left out), each split into words."""
    lines = table.splitlines()
    assert lines[0].split() == ["AT", "ACTOR", "ROLE", "VIA", "CLIENT", "ACTION", "TARGET", "CHANGES"]
    return [line.split() for line in lines[1:]]


async def test_changes_made_through_the_cli_are_listed_newest_first(stack: Stack) -> None:
    env = stack.env()
    tenant = f"t-{uuid.uuid4().hex[:6]}"  # short, to be seen whole in the changes column
    added = await cli(
        "connections", "add", "--tenant", tenant, "--provider", "custom", "--account", "a1", **env
    )
    assert added.returncode == 0, added.stderr
    connection_id = json.loads(added.stdout)["id"]
    removed = await cli("connections", "rm", connection_id, **env)
    assert removed.returncode == 0, removed.stderr

    listed = await cli("audit", "--actor", stack.admin, **env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr == ""
    [disconnect, create] = rows(listed.stdout)
    for row in (disconnect, create):
        assert row[ACTOR:ACTION] == [stack.admin, "admin", "cli", "127.0.0.1"]
        assert row[TARGET] == f"connection:{connection_id}"
        assert datetime.strptime(" ".join(row[:2]), "%Y-%m-%d %H:%M:%SZ")  # the time in UTC
    assert (disconnect[ACTION], create[ACTION]) == ("connection.disconnect", "connection.create")
    assert " ".join(disconnect[CHANGES:]) == "status: active -> disconnected"
    created = " ".join(create[CHANGES:])
    assert "status: active, " in created and f"tenant_id: {tenant}, " in created
    assert "polling: mode=auto, " in created and "metadata" not in created  # nothing from nothing


async def test_pages_stream_every_entry_once_in_order(stack: Stack) -> None:
    connection_id = await stack.connection(f"audit-paging-{uuid.uuid4().hex[:6]}")
    for status in ("paused", "active", "paused", "active", "paused", "active"):
        await stack.api("PATCH", f"/connections/{connection_id}", {"status": status})
    expected = await stack.trail()
    assert len(expected) == 7

    # Two per request: four requests for seven entries.
    as_json = await cli(
        "audit", "--actor", stack.admin, "--page-size", "2", "--limit", "all", "--json", **stack.env()
    )
    assert as_json.returncode == 0, as_json.stderr
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == expected

    table = await cli("audit", "--actor", stack.admin, "--page-size", "2", "--limit", "0", **stack.env())
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert [row[ACTION] for row in rows(table.stdout)] == [entry["action"] for entry in expected]
    assert [" ".join(row[CHANGES:]) for row in rows(table.stdout)[:2]] == [
        "status: paused -> active",
        "status: active -> paused",
    ]
    # One header, and the pages line up under it.
    column = lines[0].index("ACTION")
    assert all(line[column:].startswith("connection.") for line in lines[1:])

    # --limit caps the entries in all, across pages, and says that more are there.
    capped = await cli(
        "audit", "--actor", stack.admin, "--page-size", "2", "--limit", "5", "--json", **stack.env()
    )
    assert [json.loads(line)["id"] for line in capped.stdout.splitlines()] == [e["id"] for e in expected[:5]]
    assert "the newest 5 entries" in capped.stderr and "--limit all" in capped.stderr
    default = await cli("audit", "--actor", stack.admin, "--json", **stack.env())
    assert len(default.stdout.splitlines()) == 7 and default.stderr == ""


async def test_filters_reach_the_api(stack: Stack) -> None:
    env = stack.env()
    first = await stack.connection(f"audit-filters-{uuid.uuid4().hex[:6]}")
    second = await stack.connection(f"audit-filters-{uuid.uuid4().hex[:6]}")
    await stack.api("PATCH", f"/connections/{first}", {"status": "paused"})
    await stack.api("PATCH", f"/connections/{second}", {"status": "paused"})
    await stack.api("PATCH", f"/connections/{second}", {"status": "active"})

    async def listed(*args: str) -> list[dict[str, Any]]:
        result = await cli("audit", "--actor", stack.admin, "--json", *args, **env)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    pauses = await listed("--action", "connection.pause")
    assert [(e["action"], e["target"]) for e in pauses] == [
        ("connection.pause", f"connection:{second}"),
        ("connection.pause", f"connection:{first}"),
    ]
    assert {e["action"] for e in await listed("--action", "connection.")} == {
        "connection.create",
        "connection.pause",
        "connection.resume",
    }
    assert [e["action"] for e in await listed("--target", f"connection:{first}")] == [
        "connection.pause",
        "connection.create",
    ]
    assert [e["action"] for e in await listed("--connection", second)] == [
        "connection.resume",
        "connection.pause",
        "connection.create",
    ]
    assert len(await listed("--since", "1h", "--until", "2999-01-01")) == 5
    assert await listed("--until", "2000-01-01T00:00:00+02:00") == []
    assert await listed("--actor", f"nobody-{uuid.uuid4().hex}") == []
    # The time of the middle entry splits the trail: since is inclusive, until exclusive.
    everything = await stack.trail()
    middle = everything[2]["at"]
    assert [e["id"] for e in await listed("--since", middle)] == [e["id"] for e in everything[:3]]
    assert [e["id"] for e in await listed("--until", middle)] == [e["id"] for e in everything[3:]]

    empty = await cli("audit", "--actor", stack.admin, "--since", "2999-01-01", **env)
    assert empty.returncode == 0 and empty.stdout == ""
    assert empty.stderr.strip() == "ledgerhook audit: no entries match"


async def test_wrong_input_is_one_line_naming_the_option(stack: Stack) -> None:
    env = stack.env()
    bad_time = await cli("audit", "--since", "yesterday", **env)
    assert bad_time.returncode == 2
    assert bad_time.stderr.startswith("ledgerhook audit: --since 'yesterday' is not a time: give ")
    assert len(bad_time.stderr.strip().splitlines()) == 1
    naive = await cli("audit", "--until", "2026-12-01T10:00:00", **env)
    assert naive.returncode == 2 and "--until '2026-12-01T10:00:00' needs an offset" in naive.stderr
    limit = await cli("audit", "--limit", "-3", **env)
    assert limit.returncode == 2 and "--limit must be a number of entries" in limit.stderr
    page_size = await cli("audit", "--page-size", "500", **env)
    assert page_size.returncode == 2 and "--page-size must be from 1 to 200" in page_size.stderr
    unknown = await cli("audit", "--actors", "x", **env)
    assert unknown.returncode == 2 and "unrecognized arguments: --actors x" in unknown.stderr

    # What only the server can judge: its 422 detail, said by the option's name.
    not_an_id = await cli("audit", "--connection", "not-a-uuid", **env)
    assert not_an_id.returncode == 1
    assert not_an_id.stderr.strip() == "ledgerhook audit: 422 --connection: must be a connection id (a UUID)"
    long_actor = await cli("audit", "--actor", "x" * 201, **env)
    assert long_actor.returncode == 1 and "--actor: must be at most 200 characters" in long_actor.stderr

    unauthorized = await cli("audit", **stack.env("not-a-token"))
    assert unauthorized.returncode == 1 and unauthorized.stderr.startswith("ledgerhook audit: 401 ")
    for result in (bad_time, naive, limit, page_size, unknown, not_an_id, long_actor, unauthorized):
        assert "Traceback" not in result.stderr and result.stdout == ""


async def test_an_auditor_reads_the_trail_and_cannot_erase(stack: Stack) -> None:
    tenant = f"audit-auditor-{uuid.uuid4().hex[:6]}"
    connection_id = await stack.connection(tenant)
    reader = stack.env(stack.auditor_token)
    listed = await cli("audit", "--connection", connection_id, "--json", **reader)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["action"] for line in listed.stdout.splitlines()] == ["connection.create"]

    refused = await cli("tenants", "erase", tenant, "--yes", **reader)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"ledgerhook tenants erase: 403 this needs the admin role; the token `{stack.auditor}` has auditor"
    ]
    assert stack.auditor_token not in refused.stderr
    assert [c["id"] for c in (await stack.api("GET", "/connections", tenant_id=tenant))["data"]] == [
        connection_id
    ]


async def test_erase_with_yes_removes_every_connection_of_the_tenant(stack: Stack) -> None:
    # A `/` travels percent-encoded in the path.
    tenant = f"acme/{uuid.uuid4().hex[:6]} eu"
    other = f"other-{uuid.uuid4().hex[:6]}"
    shared, own = uuid.uuid4().hex, uuid.uuid4().hex
    ids = [await stack.connection(tenant, shared), await stack.connection(tenant, own)]
    kept = await stack.connection(other, shared)  # the shared account keeps its polling state
    await stack.api("DELETE", f"/connections/{ids[1]}")  # a disconnected one goes too

    erased = await cli("tenants", "erase", tenant, "--yes", **stack.env())
    assert erased.returncode == 0, erased.stderr
    assert erased.stdout.strip() == (
        f"erased tenant {tenant!r}: 2 connections, 0 OAuth grants with their tokens,"
        " polling state of 1 provider account"
    )
    assert (await stack.api("GET", "/connections", tenant_id=tenant))["data"] == []
    assert [c["id"] for c in (await stack.api("GET", "/connections", tenant_id=other))["data"]] == [kept]

    digest = hashlib.sha256(tenant.encode()).hexdigest()[:16]
    [entry] = await stack.trail(action="tenant.erase")
    assert (entry["target"], entry["via"], entry["changes"]) == (
        f"tenant:{digest}",
        "cli",
        {"connections": 2, "grants": 0, "accounts": 1},
    )

    again = await cli("tenants", "erase", tenant, "--yes", **stack.env())
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"ledgerhook tenants erase: tenant {tenant!r} has no connections (erased already, or a different"
        " id): nothing erased"
    )


async def test_erase_without_a_terminal_needs_yes(stack: Stack) -> None:
    tenant = f"audit-noterm-{uuid.uuid4().hex[:6]}"
    connection_id = await stack.connection(tenant)
    refused = await cli("tenants", "erase", tenant, stdin=f"{tenant}\n", **stack.env())
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "ledgerhook tenants erase: nothing erased: standard input is not a terminal, so the tenant id"
        " cannot be typed to confirm; add --yes to erase without asking"
    ]
    assert [c["id"] for c in (await stack.api("GET", "/connections", tenant_id=tenant))["data"]] == [
        connection_id
    ]
    blank = await cli("tenants", "erase", " ", "--yes", **stack.env())
    assert (blank.returncode, blank.stderr) == (2, "ledgerhook tenants erase: TENANT_ID must not be blank\n")


def in_terminal(args: list[str], env: dict[str, str], typed: str | None) -> tuple[int, str, str]:
    """Run the CLI with a pseudo-terminal as standard input: type `typed` once the prompt shows, or
    press Ctrl-C there when it is None (unless it ends without asking). The exit code, standard
    output and standard error."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*LEDGERHOOK, *args],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_clean_env(env),
        text=True,
    )
    os.close(terminal)
    assert process.stderr is not None and process.stdout is not None
    prompt = "Type the tenant id to erase it: "
    shown = ""
    try:
        while not shown.endswith(prompt) and (char := process.stderr.read(1)):
            shown += char
        asked = shown.endswith(prompt)
        if asked and typed is None:
            process.send_signal(signal.SIGINT)
        elif asked and typed is not None:
            os.write(controller, typed.encode())
        # The terminal echoes what was typed; read it off so it never fills up.
        threading.Thread(target=_drain, args=(controller,), daemon=True).start()
        output = process.stdout.read()
        shown += process.stderr.read()
        return process.wait(timeout=60), output, shown
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
        process.stderr.close()
        os.close(controller)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 1024):
            pass
    except OSError:
        pass


async def test_erase_asks_for_the_tenant_id_in_a_terminal(stack: Stack) -> None:
    tenant = f"audit-term-{uuid.uuid4().hex[:6]}"
    connection_id = await stack.connection(tenant)
    await stack.connection(tenant)
    await stack.api("PATCH", f"/connections/{connection_id}", {"status": "paused"})
    args = ["tenants", "erase", tenant]

    code, out, err = await asyncio.to_thread(in_terminal, args, stack.env(), tenant[:-1] + "\n")
    assert code == 1 and out == ""
    assert f"Tenant {tenant!r} has 2 connections (1 active, 1 paused): custom." in err
    assert err.rstrip().endswith(
        "ledgerhook tenants erase: nothing erased: what was typed is not the tenant id"
    )
    assert len((await stack.api("GET", "/connections", tenant_id=tenant))["data"]) == 2

    code, out, err = await asyncio.to_thread(in_terminal, args, stack.env(), None)
    assert code == 130 and out == "" and "Traceback" not in err
    assert err.endswith("Type the tenant id to erase it: \n")
    assert len((await stack.api("GET", "/connections", tenant_id=tenant))["data"]) == 2

    code, out, err = await asyncio.to_thread(in_terminal, args, stack.env(), tenant + "\n")
    assert code == 0, err
    assert out.startswith(f"erased tenant {tenant!r}: 2 connections,")
    assert (await stack.api("GET", "/connections", tenant_id=tenant))["data"] == []

    # Nothing to erase: said before anything is asked.
    code, out, err = await asyncio.to_thread(in_terminal, args, stack.env(), tenant + "\n")
    assert code == 1 and "has no connections" in err and "Type the tenant id" not in err


def test_times_are_instants_dates_or_spans_back_from_now() -> None:
    now = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    assert parse_instant("2026-12-01T10:00:00+02:00", "--since") == "2026-12-01T08:00:00Z"
    assert parse_instant("2026-12-01", "--since") == "2026-12-01T00:00:00Z"
    assert parse_instant("90m", "--since", now) == "2026-12-02T08:00:00Z"
    assert parse_instant("7d", "--until", now) == "2026-11-25T09:30:00Z"
    for wrong in ("yesterday", "7 days", "-1h", "2026-13-01"):
        with pytest.raises(ValueError, match="is not a time"):
            parse_instant(wrong, "--since", now)
    assert (parse_limit("all"), parse_limit("0"), parse_limit("12")) == (None, None, 12)


def test_changes_are_summed_up_on_one_short_line() -> None:
    assert changes_summary({"status": {"from": "active", "to": "paused"}}) == "status: active -> paused"
    assert (
        changes_summary({"access_token_changed": True, "scope": {"from": None, "to": ["a", "b"]}, "count": 3})
        == 'access_token changed, scope: ["a","b"], count: 3'
    )
    created = {
        "metadata": {"from": None, "to": {}},
        "polling": {"from": None, "to": {"mode": "auto", "s": None}},
    }
    assert changes_summary(created) == "polling: mode=auto"
    long = changes_summary({"metadata": {"from": None, "to": {"notes": "x" * 200}}})
    assert len(long) == 80 and long.endswith("…")
