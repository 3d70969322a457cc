"""The credentials endpoint and the disconnect path on a real gateway, against the emulator; the
`ledgerhook credentials` and `ledgerhook keys` commands."""

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.dev.emulator import Emulator
from gateway.settings import Settings
from provider_auth.providers import Provider
from provider_auth.tokens import ReauthRequired
from provider_auth.vault import KeyRing
from tests.paths import REPO_ROOT
from tests.provider_auth.tokens.token_support import (
    CLIENT_ID,
    TokenStack,
    emulator_settings,
    key_entries,
    register_clients,
    token_stack,
)
from tests.support import ADMIN_TOKEN, RunningGateway, running_gateway

AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


class Api:
    """A gateway, its emulator and an HTTP session for the admin API."""

    def __init__(
        self, gateway: RunningGateway, emu: Emulator, http: aiohttp.ClientSession, stack: TokenStack
    ) -> None:
        self.gateway, self.emu, self.http, self.stack = gateway, emu, http, stack

    async def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any, str]:
        headers = kwargs.pop("headers", AUTH)
        async with self.http.request(
            method, f"{self.gateway.base_url}/admin/v1{path}", json=body, headers=headers, **kwargs
        ) as response:
            text = await response.text()
            data = await response.json(content_type=None) if text else None
            return response.status, data, text

    async def connection(self, provider: str, account: str | None = None) -> str:
        status, data, _ = await self.call(
            "POST",
            "/connections",
            {"tenant_id": "acme", "provider": provider, "provider_account_id": account or uuid.uuid4().hex},
        )
        assert status == 201, data
        return str(data["id"])


@pytest.fixture
async def api(token_settings: Settings, settings_factory: Any) -> AsyncIterator[Api]:
    async with Emulator() as emu:
        register_clients(emu)
        settings = settings_factory(
            database_url=token_settings.database_url.get_secret_value(),
            encryption_keys=key_entries(token_settings),
            topic_account_events=token_settings.topic_account_events,
            **emulator_settings(emu, skip=(Provider.SAGE_INTACCT,)),
        )
        async with (
            running_gateway(settings) as gateway,
            token_stack(settings, emulator=emu) as stack,  # another 'process' on the same emulator
            aiohttp.ClientSession() as http,
        ):
            yield Api(gateway, emu, http, stack)


async def test_put_stores_tokens_and_no_answer_ever_shows_one(api: Api) -> None:
    connection_id = await api.connection("quickbooks", "realm-1")
    access, refresh = api.emu.issue_grant(Provider.QUICKBOOKS, CLIENT_ID, accounts=["realm-1"])
    body = {
        "access_token": access,
        "refresh_token": refresh,
        "expires_in": 3600,
        "scope": "com.intuit.quickbooks.accounting",
    }
    status, state, text = await api.call("PUT", f"/connections/{connection_id}/credentials", body)
    assert status == 200, state
    assert state["status"] == "active" and state["grant_type"] == "refresh_token" and not state["reactivated"]
    assert state["access_token_expires_at"] and state["refresh_token_expires_at"] and state["next_refresh_at"]
    status, shown, shown_text = await api.call("GET", f"/connections/{connection_id}/credentials")
    assert status == 200 and shown["connection_id"] == connection_id
    _, _, connection_text = await api.call("GET", f"/connections/{connection_id}")
    for answer in (text, shown_text, connection_text):
        assert access not in answer and refresh not in answer
    # The tokens are usable by any process.
    assert (await api.stack.manager.get_access_token(connection_id)).token == access
    _, document, _ = await api.call("GET", "/openapi.json")
    path = document["paths"]["/connections/{connection_id}/credentials"]
    assert set(path) >= {"get", "put"} and "CredentialsPut" in document["components"]["schemas"]
    async with api.http.get(f"{api.gateway.base_url}/metrics") as response:
        assert "ledgerhook_token_refreshes_total" in await response.text()


async def test_put_refuses_what_it_cannot_store(api: Api) -> None:
    xero = await api.connection("xero")
    path = f"/connections/{xero}/credentials"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"access_token": "a", "expires_in": 60}, "refresh_token is required"),
        ({"refresh_token": "r", "access_token": "a"}, "needs expires_in or expires_at"),
        (
            {
                "refresh_token": "r",
                "access_token": "a",
                "expires_in": 60,
                "expires_at": "2030-01-01T00:00:00Z",
            },
            "not both",
        ),
        ({"refresh_token": "r", "location": "eu"}, "only zoho-books"),
        ({"refresh_token": "r", "grant_type": "client_credentials"}, "no client credentials"),
        ({"refresh_token": "r", "token": "x"}, "Extra inputs"),
    ]
    for body, detail in cases:
        status, problem, _ = await api.call("PUT", path, body)
        assert status == 422, body
        assert any(detail in error["detail"] for error in problem["errors"]), problem
    status, problem, text = await api.call("PUT", path, {"refresh_token": "has a space secret-value"})
    assert status == 422 and "secret-value" not in text
    assert (await api.call("PUT", f"/connections/{uuid.uuid4()}/credentials", {"refresh_token": "r"}))[
        0
    ] == 404
    assert (await api.call("GET", path))[0] == 404  # no credentials yet
    custom = await api.connection("custom")
    status, problem, _ = await api.call("PUT", f"/connections/{custom}/credentials", {"refresh_token": "r"})
    assert status == 409 and "no OAuth" in problem["detail"]
    intacct = await api.connection("sage-intacct")
    status, problem, _ = await api.call("PUT", f"/connections/{intacct}/credentials", {"refresh_token": "r"})
    assert status == 409 and "LEDGERHOOK_SAGE_INTACCT_CLIENT_ID" in problem["detail"]
    assert (await api.call("PUT", path, {"refresh_token": "r"}, headers={}))[0] == 401


async def test_reconnect_through_the_api_reports_reactivated_once(api: Api) -> None:
    connection_id = await api.connection("xero", "org-1")
    access, refresh = api.emu.issue_grant(Provider.XERO, CLIENT_ID, accounts=["org-1"])
    path = f"/connections/{connection_id}/credentials"
    assert (
        await api.call("PUT", path, {"access_token": access, "refresh_token": refresh, "expires_in": 30})
    )[0] == 200
    api.emu.revoke(Provider.XERO, refresh)
    with pytest.raises(ReauthRequired):
        await api.stack.manager.get_access_token(connection_id)
    _, connection, _ = await api.call("GET", f"/connections/{connection_id}")
    assert connection["status"] == "needs_reauth"
    _, state, _ = await api.call("GET", path)
    assert state["status"] == "needs_reauth" and state["last_error"].startswith("invalid_grant")
    access, refresh = api.emu.issue_grant(Provider.XERO, CLIENT_ID, accounts=["org-1"])
    status, state, _ = await api.call(
        "PUT",
        path,
        {
            "access_token": access,
            "refresh_token": refresh,
            "expires_at": (datetime.now(UTC) + timedelta(days=365)).isoformat(),
        },
    )
    assert status == 200 and state["status"] == "active" and state["reactivated"]
    _, connection, _ = await api.call("GET", f"/connections/{connection_id}")
    assert connection["status"] == "active"
    events = await api.stack.account_events(connection_id)
    assert [e["type"] for e in events] == [
        "integrated_account:authentication_error",
        "integrated_account:reactivated",
    ]


async def test_delete_revokes_at_the_provider_and_erases_the_tokens(api: Api) -> None:
    qbo = await api.connection("quickbooks", "realm-9")
    access, refresh = api.emu.issue_grant(Provider.QUICKBOOKS, CLIENT_ID, accounts=["realm-9"])
    body = {"access_token": access, "refresh_token": refresh, "expires_in": 3600}
    assert (await api.call("PUT", f"/connections/{qbo}/credentials", body))[0] == 200
    xero = await api.connection("xero", "org-9")
    x_access, x_refresh = api.emu.issue_grant(Provider.XERO, CLIENT_ID, accounts=["org-9", "org-10"])
    body = {"access_token": x_access, "refresh_token": x_refresh, "expires_in": 1800}
    assert (await api.call("PUT", f"/connections/{xero}/credentials", body))[0] == 200
    grants = await api.stack.pool.fetchval("SELECT count(*) FROM oauth_grants")

    assert (await api.call("DELETE", f"/connections/{qbo}"))[0] == 204
    assert api.emu.events(Provider.QUICKBOOKS, "revoked") == 1  # Intuit's revoke endpoint
    assert not api.emu.validate_access_token(Provider.QUICKBOOKS, access)
    assert (await api.call("DELETE", f"/connections/{xero}"))[0] == 204
    info = api.emu.grant_info(Provider.XERO, x_refresh)
    assert info is not None and [tenant for _, tenant in info.connections] == ["org-10"]  # only org-9 went
    assert await api.stack.pool.fetchval("SELECT count(*) FROM oauth_grants") == grants - 2
    for connection_id in (qbo, xero):
        assert (await api.call("GET", f"/connections/{connection_id}/credentials"))[0] == 404
        status, problem, _ = await api.call(
            "PUT", f"/connections/{connection_id}/credentials", {"refresh_token": "r"}
        )
        assert status == 409 and "disconnected" in problem["detail"]
    actions = [r["action"] for r in await api.stack.pool.fetch("SELECT action FROM audit_log ORDER BY id")]
    assert actions.count("token.revoked") == 2


async def test_the_credentials_and_keys_commands(api: Api, tmp_path: Path) -> None:
    connection_id = await api.connection("freshbooks", "biz-1")
    access, refresh = api.emu.issue_grant(Provider.FRESHBOOKS, CLIENT_ID, accounts=["biz-1"])
    source = tmp_path / "credentials.json"
    source.write_text(f'{{"access_token": "{access}", "refresh_token": "{refresh}", "expires_in": 600}}')
    env = os.environ | {"LEDGERHOOK_ADMIN_URL": api.gateway.base_url, "LEDGERHOOK_ADMIN_TOKEN": ADMIN_TOKEN}

    async def run(
        *args: str, stdin: bytes | None = None, extra: dict[str, str] | None = None
    ) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            *args,
            cwd=REPO_ROOT,
            env=env | (extra or {}),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate(stdin)
        return process.returncode or 0, out.decode()

    code, out = await run("credentials", "put", connection_id, "--file", str(source))
    assert code == 0 and '"status": "active"' in out and access not in out
    code, out = await run("credentials", "show", connection_id)
    assert code == 0 and '"grant_type": "refresh_token"' in out
    code, out = await run("credentials", "put", connection_id, stdin=b"[1, 2]")
    assert code == 2 and "JSON object" in out

    settings = api.gateway.settings
    old = key_entries(settings)
    new = f"k9:{KeyRing.generate_key()}"
    database = {
        "LEDGERHOOK_DATABASE_URL": settings.database_url.get_secret_value(),
        "LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
    }
    code, out = await run("keys", "rotate", extra=database | {"LEDGERHOOK_ENCRYPTION_KEYS": f"{new},{old}"})
    assert code == 0 and "1 OAuth grants" in out and "can be removed" in out
    code, out = await run("keys", "generate", "--id", "k10")
    assert code == 0 and out.startswith("k10:")
