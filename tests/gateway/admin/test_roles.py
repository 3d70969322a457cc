"""Roles of admin tokens on a real gateway: every route of the admin app (read from the app itself,
so an endpoint added later is covered at once) refuses every role below the one it declares with
403 and changes nothing, and lets every role at or above it through; PATCH's own decision; the
OpenAPI document's roles; token entries and their settings errors."""

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from gateway.admin.auth import AdminTokens
from gateway.admin.openapi import ROLE_EXTENSION, with_roles
from gateway.admin.roles import Principal, Role, TokenEntryError
from gateway.admin.routes import AdminRoute
from gateway.settings import SettingsError, load_settings
from provider_auth.vault import KeyRing
from tests.support import RunningGateway, running_gateway

TOKEN = {
    Role.ADMIN: "role-test-admin-token",
    Role.OPERATOR: "role-test-operator-token",
    Role.AUDITOR: "role-test-auditor-token",
}
NAME = {Role.ADMIN: "ada", Role.OPERATOR: "otto", Role.AUDITOR: "aude"}
ENTRIES = ",".join(f"{role.value}:{NAME[role]}:{TOKEN[role]}" for role in Role)
ZOHO_SECRET = "zohoSecretToken123"

# What the issue asks of each route (and HEAD goes with GET).
EXPECTED = {
    ("GET", "/connections"): Role.AUDITOR,
    ("POST", "/connections"): Role.ADMIN,
    ("GET", "/connections/{connection_id}"): Role.AUDITOR,
    ("PATCH", "/connections/{connection_id}"): Role.OPERATOR,
    ("DELETE", "/connections/{connection_id}"): Role.ADMIN,
    ("GET", "/connections/{connection_id}/credentials"): Role.AUDITOR,
    ("PUT", "/connections/{connection_id}/credentials"): Role.ADMIN,
    ("GET", "/connections/{connection_id}/sync"): Role.AUDITOR,
    ("POST", "/connections/{connection_id}/backfill"): Role.OPERATOR,
    ("GET", "/openapi.json"): Role.AUDITOR,
    ("GET", "/quarantine"): Role.AUDITOR,
    ("POST", "/quarantine/redrive"): Role.OPERATOR,
    ("POST", "/quarantine/discard"): Role.OPERATOR,
    ("GET", "/quarantine/{record_id}"): Role.OPERATOR,
    ("GET", "/audit"): Role.AUDITOR,
    ("DELETE", "/tenants/{tenant_id}"): Role.ADMIN,
}

# A request body each route and method can act on (a route added later falls back to `{}`, which is
# enough for the role check: it comes before the body is read).
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/connections"): {"provider": "quickbooks", "provider_account_id": "realm-roles"},
    ("PATCH", "/connections/{connection_id}"): {"status": "paused"},
    ("PUT", "/connections/{connection_id}/credentials"): {"refresh_token": "handed-over-refresh"},
    ("POST", "/connections/{connection_id}/backfill"): {"since": "2026-01-01"},
}


@pytest.fixture
async def gw(settings_factory: Any, database_url: str) -> AsyncIterator[RunningGateway]:
    settings = settings_factory(
        database_url=database_url,
        admin_tokens=ENTRIES + ",bare-legacy-token",
        encryption_keys=f"k1:{KeyRing.generate_key()}",
    )
    async with running_gateway(settings) as running:
        yield running


async def call(
    gw: RunningGateway, method: str, path: str, role: Role | str, body: Any = None
) -> tuple[int, Any, bytes]:
    token = TOKEN[role] if isinstance(role, Role) else role
    headers = {"authorization": f"Bearer {token}"}
    data = orjson.dumps(body) if body is not None else None
    if data is not None:
        headers["content-type"] = "application/json"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, gw.base_url + "/admin/v1" + path, data=data, headers=headers) as response,
    ):
        return response.status, response.headers, await response.read()


def admin_routes(gw: RunningGateway) -> list[AdminRoute]:
    routes = gw.app.state.admin.routes
    assert routes and all(isinstance(route, AdminRoute) for route in routes)
    return list(routes)


async def snapshot(database_url: str) -> dict[str, str]:
    """Every table's rows, hashed: equal snapshots mean nothing changed."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        return {
            table: await conn.fetchval(
                f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {table} t"
            )
            for table in tables
        }
    finally:
        await conn.close()


async def new_connection(gw: RunningGateway, provider: str = "quickbooks") -> str:
    body = {
        "tenant_id": f"t-{uuid.uuid4().hex[:8]}",
        "provider": provider,
        "provider_account_id": uuid.uuid4().hex,
    }
    if provider == "zoho-books":
        body["webhook_secret"] = ZOHO_SECRET
    status, _, answer = await call(gw, "POST", "/connections", Role.ADMIN, body)
    assert status == 201, answer
    return str(orjson.loads(answer)["id"])


def concrete(path: str, connection_id: str) -> str:
    return (
        path.replace("{connection_id}", connection_id)
        .replace("{record_id}", "0-0")
        .replace("{tenant_id}", "tenant-nobody-has")
    )


def methods_of(route: AdminRoute) -> list[str]:
    assert route.methods is not None
    return sorted(method for method in route.methods if method != "HEAD")


async def test_every_route_declares_the_role_the_issue_asks_for(gw: RunningGateway) -> None:
    declared = {
        (method, route.path_format): route.roles[method]
        for route in admin_routes(gw)
        for method in methods_of(route)
    }
    assert declared == EXPECTED
    for route in admin_routes(gw):
        assert set(route.roles) == set(methods_of(route)), route.path_format  # every method declares one


async def test_every_route_refuses_roles_below_its_own_and_changes_nothing(
    gw: RunningGateway, database_url: str
) -> None:
    connection_id = await new_connection(gw)
    for route in admin_routes(gw):
        for method in methods_of(route):
            needed = route.roles[method]
            path = concrete(route.path_format, connection_id)
            body = BODIES.get((method, route.path_format), {} if method != "GET" else None)
            for role in Role:
                if role.allows(needed):
                    continue
                before = await snapshot(database_url)
                for verb in (method, "HEAD") if method == "GET" else (method,):
                    status, headers, answer = await call(gw, verb, path, role, body)
                    assert status == 403, (verb, route.path_format, role)
                    if verb != "HEAD":
                        assert headers["content-type"] == "application/problem+json"
                        problem = orjson.loads(answer)
                        assert problem["status"] == 403 and problem["title"] == "Forbidden"
                        assert problem["detail"] == (
                            f"this needs the {needed.value} role; the token `{NAME[role]}` has {role.value}"
                        )
                assert await snapshot(database_url) == before, (method, route.path_format, role)


async def test_every_route_lets_roles_at_or_above_its_own_through(gw: RunningGateway) -> None:
    for route in admin_routes(gw):
        for method in methods_of(route):
            needed = route.roles[method]
            for role in Role:
                if not role.allows(needed):
                    continue
                connection_id = await new_connection(gw)  # DELETE and PATCH act on one of their own
                body = BODIES.get((method, route.path_format), {} if method != "GET" else None)
                if (method, route.path_format) == ("POST", "/connections"):
                    body = body | {"tenant_id": f"t-{uuid.uuid4().hex[:8]}"}
                status, _, answer = await call(
                    gw, method, concrete(route.path_format, connection_id), role, body
                )
                assert status not in (401, 403), (method, route.path_format, role, answer)


async def test_bare_tokens_are_admins_named_by_position(gw: RunningGateway) -> None:
    body = {"tenant_id": "bare", "provider": "custom", "provider_account_id": "acct-bare"}
    status, _, answer = await call(gw, "POST", "/connections", "bare-legacy-token", body)
    assert status == 201  # an admin's change
    connection_id = orjson.loads(answer)["id"]
    status, _, answer = await call(gw, "GET", f"/audit?target=connection:{connection_id}", Role.AUDITOR)
    [entry] = orjson.loads(answer)["items"]
    assert (entry["actor"], entry["role"], entry["action"]) == ("token-4", "admin", "connection.create")


async def test_patch_needs_admin_for_anything_but_pause_and_resume(
    gw: RunningGateway, database_url: str
) -> None:
    connection_id = await new_connection(gw, "zoho-books")
    path = f"/connections/{connection_id}"
    # An invalid body is 422 whoever sends it: the body is read before the handler decides.
    status, _, _ = await call(gw, "PATCH", path, Role.OPERATOR, {"status": "disconnected"})
    assert status == 422
    for body in (
        {"display_name": "Renamed"},
        {"status": "paused", "display_name": "Renamed"},
        {"webhook_secret": "zohoSecretToken456"},
        {"metadata": {"a": 1}},
        {"polling": {"mode": "off"}},
    ):
        before = await snapshot(database_url)
        status, _, answer = await call(gw, "PATCH", path, Role.OPERATOR, body)
        assert status == 403, body
        assert orjson.loads(answer)["detail"] == "this needs the admin role; the token `otto` has operator"
        assert await snapshot(database_url) == before
        status, _, _ = await call(gw, "PATCH", path, Role.ADMIN, body)
        assert status == 200, body
    for status_value in ("paused", "active", "paused", "active"):
        status, _, answer = await call(gw, "PATCH", path, Role.OPERATOR, {"status": status_value})
        assert status == 200 and orjson.loads(answer)["status"] == status_value
    # Reconnecting a disconnected connection is an admin's.
    assert (await call(gw, "DELETE", path, Role.ADMIN))[0] == 204
    before = await snapshot(database_url)
    for status_value in ("active", "paused"):
        status, _, answer = await call(gw, "PATCH", path, Role.OPERATOR, {"status": status_value})
        assert status == 403 and "needs the admin role" in orjson.loads(answer)["detail"]
    assert await snapshot(database_url) == before
    status, _, answer = await call(gw, "PATCH", path, Role.ADMIN, {"status": "active"})
    assert status == 200 and orjson.loads(answer)["status"] == "active"


async def test_the_openapi_document_states_every_operations_role(gw: RunningGateway) -> None:
    status, _, answer = await call(gw, "GET", "/openapi.json", Role.AUDITOR)
    assert status == 200
    paths = orjson.loads(answer)["paths"]
    operations = {
        (method.upper(), path): operation
        for path, item in paths.items()
        for method, operation in item.items()
        if method != "parameters"
    }
    routes = {
        (method, route.path_format): route.roles[method]
        for route in admin_routes(gw)
        for method in methods_of(route)
    }
    assert set(operations) == set(routes)
    for key, operation in operations.items():
        role = routes[key]
        assert operation[ROLE_EXTENSION] == role.value, key
        assert f"Needs the `{role.value}` role" in operation["description"], key
        assert "application/problem+json" in operation["responses"]["403"]["content"], key


def test_a_route_or_operation_without_a_role_cannot_build_the_document() -> None:
    document = {"paths": {"/things": {"get": {"responses": {}}, "post": {"responses": {}}}}}
    with pytest.raises(ValueError, match="POST /things declares no role"):
        with_roles(orjson.loads(orjson.dumps(document)), {"/things": {"GET": Role.AUDITOR}})
    with pytest.raises(ValueError, match="DELETE /things has no operation"):
        with_roles(
            orjson.loads(orjson.dumps(document)),
            {"/things": {"GET": Role.AUDITOR, "POST": Role.ADMIN, "DELETE": Role.ADMIN}},
        )
    done = with_roles(document, {"/things": {"GET": Role.AUDITOR, "POST": Role.ADMIN}})
    assert done["paths"]["/things"]["post"][ROLE_EXTENSION] == "admin"


def test_token_entries_name_principals_checked_in_constant_time() -> None:
    tokens = AdminTokens(["auditor:aude:tok-a", "bare-one", "operator:otto:tok:with:colons"])
    assert tokens.authenticate("tok-a") == Principal("aude", Role.AUDITOR)
    assert tokens.authenticate("bare-one") == Principal("token-2", Role.ADMIN)
    assert tokens.authenticate("tok:with:colons") == Principal("otto", Role.OPERATOR)
    for wrong in ("", "tok", "auditor:aude:tok-a", "tok-a ", "\ud800"):
        assert tokens.authenticate(wrong) is None
    assert tokens.principal("otto") == Principal("otto", Role.OPERATOR) and tokens.principal("ghost") is None
    digest = tokens.digest("aude")
    assert digest is not None and len(digest) == 32 and b"tok-a" not in digest
    assert tokens.digest("aude") != AdminTokens(["auditor:aude:tok-b"]).digest("aude")
    assert tokens.digest("ghost") is None
    with pytest.raises(TokenEntryError, match="already taken"):
        AdminTokens(["admin:same:one", "auditor:same:two"])


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LEDGERHOOK_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("entries", "secret", "reason"),
    [
        (
            "admin:ada:first-secret,superuser:bob:second-secret",
            "second-secret",
            "entry 2: the word before the first ':' is not a role",
        ),
        ("admin:a d a:first-secret", "first-secret", "entry 1 contains whitespace"),
        ("admin:-ada:first-secret", "first-secret", "entry 1: the name must be"),
        (
            "admin:ada:first-secret,operator:ada:second-secret",
            "second-secret",
            "entries 1 and 2 are both named 'ada'",
        ),
        ("admin:ada:", "no-token-given", "entry 1: the token after admin:ada: is empty"),
        ("admin:ada:first-secret,,other-secret", "other-secret", "entry 2 is empty"),
    ],
)
def test_bad_token_entries_fail_settings_without_the_token(
    clean_environment: None, entries: str, secret: str, reason: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(database_url="postgresql://x", kafka_bootstrap_servers="k:9092", admin_tokens=entries)
    message = str(caught.value)
    assert "LEDGERHOOK_ADMIN_TOKENS" in message and reason in message
    assert secret not in message and "first-secret" not in message and "superuser" not in message


def test_role_entries_and_bare_tokens_load(clean_environment: None) -> None:
    settings = load_settings(
        database_url="postgresql://x",
        kafka_bootstrap_servers="k:9092",
        admin_tokens="admin:ada:one, operator:otto:two,three",
    )
    tokens = AdminTokens(s.get_secret_value() for s in settings.admin_tokens)
    assert [tokens.authenticate(t) for t in ("one", "two", "three")] == [
        Principal("ada", Role.ADMIN),
        Principal("otto", Role.OPERATOR),
        Principal("token-3", Role.ADMIN),
    ]
