"""`ledgerhook connections add|list|show|rm`, each a real process talking to a running gateway."""

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.cli.admin_client import admin_client
from provider_auth.vault import KeyRing
from tests.support import RunningGateway, running_gateway

LEDGERHOOK = [sys.executable, "-m", "gateway.cli"]
TOKENS = ("cli-token-one", "cli-token-two")
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
async def gw(settings_factory: Any) -> AsyncIterator[RunningGateway]:
    settings = settings_factory(
        admin_tokens=",".join(TOKENS),
        encryption_keys=f"k1:{KeyRing.generate_key()}",
        public_base_url="https://hooks.example.test",
    )
    async with running_gateway(settings) as running:
        yield running


async def cli(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERHOOK_")} | env
    # In a thread: the gateway under test answers from this test's event loop.
    return await asyncio.to_thread(
        subprocess.run,
        [*LEDGERHOOK, "connections", *args],
        env=clean,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_add_list_show_rm(gw: RunningGateway) -> None:
    env = {"LEDGERHOOK_ADMIN_URL": gw.base_url, "LEDGERHOOK_ADMIN_TOKEN": TOKENS[1]}
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    added = await cli(
        "add",
        "--tenant",
        tenant,
        "--provider",
        "netsuite",
        "--account",
        "TSTDRV123",
        "--name",
        "NetSuite sandbox",
        "--secret",
        "-",
        "--metadata",
        '{"region": "eu"}',
        stdin=WHSEC + "\n",
        **env,
    )
    assert added.returncode == 0, added.stderr
    connection = json.loads(added.stdout)
    assert connection["webhook_url"] == f"https://hooks.example.test/webhooks/netsuite/{connection['id']}"
    assert connection["has_webhook_secret"] is True and connection["metadata"] == {"region": "eu"}
    assert WHSEC not in added.stdout + added.stderr

    second = await cli("add", "--tenant", tenant, "--provider", "xero", "--account", "org-1", **env)
    inline = await cli(
        "add", "--tenant", tenant, "--provider", "custom", "--account", "c", "--secret", WHSEC, **env
    )
    assert inline.returncode == 0 and json.loads(inline.stdout)["has_webhook_secret"] is True
    assert second.returncode == 0, second.stderr

    listed = await cli("list", "--tenant", tenant, **env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "TENANT", "PROVIDER", "ACCOUNT", "STATUS", "SECRET", "POLLING", "NAME"]
    ids = [connection["id"], json.loads(second.stdout)["id"], json.loads(inline.stdout)["id"]]
    assert [line.split()[0] for line in lines[1:]] == ids
    assert "NetSuite sandbox" in lines[1] and "yes" in lines[1]
    assert all("auto" in line.split() for line in lines[1:])

    only = await cli("list", "--tenant", tenant, "--provider", "xero", **env)
    assert [line.split()[2] for line in only.stdout.splitlines()[1:]] == ["xero"]

    shown = await cli("show", connection["id"], **env)
    assert shown.returncode == 0 and json.loads(shown.stdout) == connection

    removed = await cli("rm", connection["id"], **env)
    assert removed.returncode == 0 and connection["id"] in removed.stdout
    after = json.loads((await cli("show", connection["id"], **env)).stdout)
    assert after["status"] == "disconnected" and after["has_webhook_secret"] is False

    gone = await cli("list", "--tenant", tenant, "--status", "disconnected", "--url", gw.base_url, **env)
    assert [line.split()[0] for line in gone.stdout.splitlines()[1:]] == [connection["id"]]


async def test_add_sets_the_polling_mode_and_interval(gw: RunningGateway) -> None:
    env = {"LEDGERHOOK_ADMIN_URL": gw.base_url, "LEDGERHOOK_ADMIN_TOKEN": TOKENS[0]}
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    args = ("add", "--tenant", tenant, "--provider", "zoho-books")
    swept = await cli(*args, "--account", "org-1", "--polling", "sweep", "--poll-interval", "900", **env)
    assert swept.returncode == 0, swept.stderr
    assert json.loads(swept.stdout)["polling"] == {"mode": "sweep", "interval_seconds": 900}
    # The interval alone keeps the default mode; the mode alone, the mode's interval.
    faster = await cli(*args, "--account", "org-2", "--poll-interval", "60", **env)
    assert json.loads(faster.stdout)["polling"] == {"mode": "auto", "interval_seconds": 60}
    off = await cli(*args, "--account", "org-3", "--polling", "off", **env)
    assert json.loads(off.stdout)["polling"] == {"mode": "off", "interval_seconds": None}
    plain = await cli(*args, "--account", "org-4", **env)
    assert json.loads(plain.stdout)["polling"] == {"mode": "auto", "interval_seconds": None}

    listed = await cli("list", "--tenant", tenant, **env)
    assert [line.split()[5] for line in listed.stdout.splitlines()[1:]] == ["sweep", "auto", "off", "auto"]
    assert [line.split()[6] for line in listed.stdout.splitlines()[1:3]] == ["900s", "60s"]

    # The API's bounds, said as the API says them; a mode that is none, a usage error.
    zero = await cli(*args, "--account", "org-5", "--poll-interval", "0", **env)
    assert zero.returncode == 1 and "422" in zero.stderr
    assert "polling/interval_seconds: Input should be greater than or equal to 1" in zero.stderr
    custom = await cli(
        "add", "--tenant", tenant, "--provider", "custom", "--account", "c", "--polling", "poll", **env
    )
    assert custom.returncode == 1 and "polling/mode: custom connections are never polled" in custom.stderr
    wrong = await cli(*args, "--account", "org-6", "--polling", "hourly", **env)
    assert wrong.returncode == 2 and "invalid choice: 'hourly'" in wrong.stderr
    not_a_number = await cli(*args, "--account", "org-7", "--poll-interval", "5m", **env)
    assert not_a_number.returncode == 2 and "--poll-interval" in not_a_number.stderr
    assert "Traceback" not in zero.stderr + custom.stderr + wrong.stderr + not_a_number.stderr


async def test_errors_show_the_problem_detail_and_exit_nonzero(gw: RunningGateway) -> None:
    # The first of LEDGERHOOK_ADMIN_TOKENS is used when LEDGERHOOK_ADMIN_TOKEN is unset.
    env = {"LEDGERHOOK_ADMIN_URL": gw.base_url, "LEDGERHOOK_ADMIN_TOKENS": ",".join(TOKENS)}
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    args = ("add", "--tenant", tenant, "--provider", "custom", "--account", "a1")
    assert (await cli(*args, **env)).returncode == 0
    duplicate = await cli(*args, **env)
    assert duplicate.returncode == 1
    assert "409" in duplicate.stderr and "already has a custom connection" in duplicate.stderr

    invalid = await cli(
        "add", "--tenant", tenant, "--provider", "custom", "--account", "a2", "--secret", "x1", **env
    )
    assert invalid.returncode == 1
    assert "422" in invalid.stderr and "webhook_secret: a Standard Webhooks secret" in invalid.stderr
    assert "x1" not in invalid.stderr.replace("a1", "")

    missing = await cli("show", str(uuid.uuid4()), **env)
    assert missing.returncode == 1 and "404" in missing.stderr

    wrong = await cli("list", **(env | {"LEDGERHOOK_ADMIN_TOKEN": "not-the-token"}))
    assert wrong.returncode == 1 and "401" in wrong.stderr and "not-the-token" not in wrong.stderr

    bad_metadata = await cli(*args[:-1], "a3", "--metadata", "[1]", **env)
    assert bad_metadata.returncode == 2 and "--metadata must be a JSON object" in bad_metadata.stderr


async def test_unreachable_gateway_is_a_clear_error() -> None:
    from gateway.dev.embedded import free_port

    result = await cli("list", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1 and "cannot reach" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_admin_url_and_token_fall_back_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LEDGERHOOK_"):
            monkeypatch.delenv(name)
    client = admin_client(None)
    assert (client.base_url, client.token) == ("http://127.0.0.1:8000", "dev-admin-token")
    # Blank variables count as unset.
    monkeypatch.setenv("LEDGERHOOK_ADMIN_URL", "")
    monkeypatch.setenv("LEDGERHOOK_ADMIN_TOKEN", "  ")
    monkeypatch.setenv("LEDGERHOOK_ADMIN_TOKENS", " , first , second")
    client = admin_client(None)
    assert (client.base_url, client.token) == ("http://127.0.0.1:8000", "first")
    monkeypatch.setenv("LEDGERHOOK_ADMIN_URL", "http://gateway.example.test")
    monkeypatch.setenv("LEDGERHOOK_ADMIN_TOKEN", " own-token ")
    client = admin_client(None)
    assert (client.base_url, client.token) == ("http://gateway.example.test", "own-token")
    assert admin_client("http://flag.example.test").base_url == "http://flag.example.test"
    # Of a `<role>:<name>:<token>` entry, the token.
    monkeypatch.delenv("LEDGERHOOK_ADMIN_TOKEN")
    monkeypatch.setenv("LEDGERHOOK_ADMIN_TOKENS", "operator:otto:the-token:with-colon,admin:ada:other")
    assert admin_client(None).token == "the-token:with-colon"


ROLE_TOKENS = {"admin": "cli-role-admin-token", "auditor": "cli-role-auditor-token"}


@pytest.fixture
async def roles_gw(settings_factory: Any) -> AsyncIterator[RunningGateway]:
    entries = ",".join(f"{role}:cli-{role}:{token}" for role, token in ROLE_TOKENS.items())
    settings = settings_factory(admin_tokens=entries, encryption_keys=f"k1:{KeyRing.generate_key()}")
    async with running_gateway(settings) as running:
        yield running


async def test_changes_through_the_cli_are_audited_as_cli(roles_gw: RunningGateway) -> None:
    # The token is the last part of the first `<role>:<name>:<token>` entry.
    env = {
        "LEDGERHOOK_ADMIN_URL": roles_gw.base_url,
        "LEDGERHOOK_ADMIN_TOKENS": f"admin:someone:{ROLE_TOKENS['admin']},auditor:x:y",
    }
    tenant = f"cli-audit-{uuid.uuid4().hex[:6]}"
    added = await cli("add", "--tenant", tenant, "--provider", "custom", "--account", "a1", **env)
    assert added.returncode == 0, added.stderr
    connection_id = json.loads(added.stdout)["id"]
    async with (
        aiohttp.ClientSession(headers={"authorization": f"Bearer {ROLE_TOKENS['auditor']}"}) as session,
        session.get(
            f"{roles_gw.base_url}/admin/v1/audit", params={"target": f"connection:{connection_id}"}
        ) as response,
    ):
        page = await response.json()
    [entry] = page["items"]
    assert (entry["actor"], entry["role"], entry["via"], entry["action"]) == (
        "cli-admin",
        "admin",
        "cli",
        "connection.create",
    )
    assert entry["client"] == "127.0.0.1"


async def test_a_role_that_falls_short_is_one_line_and_exit_1(roles_gw: RunningGateway) -> None:
    env = {"LEDGERHOOK_ADMIN_URL": roles_gw.base_url, "LEDGERHOOK_ADMIN_TOKEN": ROLE_TOKENS["auditor"]}
    refused = await cli("add", "--tenant", "t", "--provider", "custom", "--account", "a1", **env)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        next(line for line in refused.stderr.splitlines() if "403" in line)
    ]
    assert "this needs the admin role; the token `cli-auditor` has auditor" in refused.stderr
    assert ROLE_TOKENS["auditor"] not in refused.stderr and "Traceback" not in refused.stderr
    listed = await cli("list", **env)
    assert listed.returncode == 0, listed.stderr


def test_the_cli_names_itself_as_the_gateway_expects() -> None:
    from gateway.admin.roles import CLI_USER_AGENT
    from gateway.cli.admin_client import user_agent

    assert user_agent().startswith(CLI_USER_AGENT + "/") and len(user_agent()) > len(CLI_USER_AGENT) + 1
