"""Tenant erasure on the real database, broker and provider emulator: two tenants share a QuickBooks
realm, each also has a realm of its own and a Zoho Books connection with a webhook secret, tokens,
polling state written by a real poller, a backfill and audit entries; erasing one leaves the other
as it was and nothing of the erased one behind. The endpoint is served on loopback by a small app
around the resource (the admin app's routes name it with its role)."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from fanout.polling.backfills import BackfillJobs
from fanout.polling.budget import RateBudgets
from fanout.polling.erasure import ACCOUNT_SCOPE_LABELS, account_scope_keys
from gateway.admin.credentials import CredentialsResource
from gateway.admin.openapi import openapi_document
from gateway.admin.problems import Problem
from gateway.admin.roles import PRINCIPAL_SCOPE_KEY, Actor, Principal, Role
from gateway.admin.tenants import HANDLED_TABLES, TenantsResource, tenant_target, with_tenants
from gateway.dev.embedded import free_port
from gateway.dev.emulator import Emulator
from provider_auth import audit
from provider_auth.accounts.store import ConnectionStatus, Polling, PollingMode
from provider_auth.providers import Provider
from provider_auth.tokens import ConnectionRef, Credentials
from provider_auth.vault import KeyRing
from tests.fanout.polling.polling_support import eventually, outcome_is, polling
from tests.provider_auth.tokens.token_support import (
    CLIENT_ID,
    TokenStack,
    emulator_settings,
    register_clients,
    token_stack,
)
from tests.support import fresh_database

QB = Provider.QUICKBOOKS
ZOHO = Provider.ZOHO_BOOKS
ADMIN = Actor(Principal("erin", Role.ADMIN), "127.0.0.1", "console")
# Columns that tie a row to a tenant, a connection or a provider account.
IDENTIFYING_COLUMNS = ("tenant_id", "connection_id", "provider_account_id")


class AsPrincipal:
    """Puts a principal where the admin token check leaves it, with the role the `x-role` header
    names (admin by default)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", []))
        role = Role(headers.get(b"x-role", b"admin").decode())
        scope[PRINCIPAL_SCOPE_KEY] = Principal("erin", role)
        await self._app(scope, receive, send)


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response()


@dataclass
class Tenant:
    """One tenant's connections and what identifies it."""

    id: str
    display_name: str
    crm_ref: str  # a metadata value
    shared: str  # its connection to the shared realm
    own: str  # its connection to a realm of its own
    hooks: str  # its Zoho Books connection with a webhook secret
    own_realm: str
    hooks_org: str
    shared_access: str
    own_access: str

    @property
    def connections(self) -> list[str]:
        return [self.shared, self.own, self.hooks]


@dataclass
class Erasure:
    """The resource on a token stack, served on loopback."""

    stack: TokenStack
    resource: TenantsResource
    changed: list[str]
    base_url: str
    http: aiohttp.ClientSession

    async def delete(self, tenant_id: str, role: str = "admin") -> tuple[int, Any]:
        url = f"{self.base_url}/admin/v1/tenants/{quote(tenant_id, safe='')}"
        async with self.http.delete(url, headers={"x-role": role}) as response:
            return response.status, orjson.loads(await response.read())


@pytest.fixture
async def erasure(settings_factory: Any, database_url: str) -> AsyncIterator[Erasure]:
    async with Emulator() as emu:
        register_clients(emu)
        settings = settings_factory(
            database_url=database_url,
            encryption_keys=f"k1:{KeyRing.generate_key()}",
            poll_interval_seconds=1,
            sweep_interval_seconds=1,
            **emulator_settings(emu),
        )
        async with token_stack(settings, emulator=emu) as stack, aiohttp.ClientSession() as http:
            credentials = CredentialsResource(stack.connections, stack.manager)
            changed: list[str] = []
            resource = TenantsResource(stack.pool, credentials.disconnect, changed.append)
            app = Starlette(
                routes=[Route("/admin/v1/tenants/{tenant_id:path}", resource.item, methods=["DELETE"])],
                exception_handlers={Problem: _problem},
            )
            port = free_port()
            server = uvicorn.Server(
                uvicorn.Config(
                    AsPrincipal(app), host="127.0.0.1", port=port, lifespan="off", log_level="warning"
                )
            )
            task = asyncio.create_task(server.serve())
            while not server.started:
                assert not task.done(), "the test app did not start"
                await asyncio.sleep(0.02)
            try:
                yield Erasure(stack, resource, changed, f"http://127.0.0.1:{port}", http)
            finally:
                server.should_exit = True
                await task


async def _tokens(stack: TokenStack, connection_id: str, provider: Provider, account: str) -> str:
    access, refresh = stack.emu.issue_grant(provider, CLIENT_ID, accounts=[account])
    await stack.manager.put_credentials(
        ConnectionRef(connection_id, provider, account),
        Credentials(access_token=access, refresh_token=refresh, expires_at=time.time() + 3600),
    )
    return access


async def _connection(
    stack: TokenStack, tenant_id: str, provider: Provider, account: str, **more: Any
) -> str:
    connection = await stack.connections.create(tenant_id, provider, account, **more)
    # What the connections resource records on creation: the tenant's own values among them.
    await audit.record_change(
        stack.pool,
        actor="alice",
        role="admin",
        via="api",
        client="127.0.0.1",
        action="connection.create",
        target=f"connection:{connection.id}",
        changes={
            "tenant_id": {"from": None, "to": tenant_id},
            "provider": {"from": None, "to": provider.value},
            "display_name": {"from": None, "to": more.get("display_name")},
            "metadata": {"from": None, "to": more.get("metadata", {})},
            "webhook_secrets_changed": bool(more.get("webhook_secrets")),
        },
        connection_id=connection.id,
        provider=provider.value,
    )
    return connection.id


async def _tenant(stack: TokenStack, tenant_id: str, shared_realm: str) -> Tenant:
    label = uuid.uuid4().hex[:10]
    display_name, crm_ref = f"Books of {label}", f"crm-{label}"
    facts: dict[str, Any] = {"display_name": display_name, "metadata": {"crm": crm_ref, "tier": "gold"}}
    own_realm, hooks_org = str(uuid.uuid4().int)[:16], f"org-{label}"
    shared = await _connection(stack, tenant_id, QB, shared_realm, **facts)
    own = await _connection(stack, tenant_id, QB, own_realm, **facts)
    hooks = await _connection(
        stack,
        tenant_id,
        ZOHO,
        hooks_org,
        webhook_secrets=[f"zohoSecret{label}"],
        polling=Polling(PollingMode.OFF),
        **facts,
    )
    return Tenant(
        id=tenant_id,
        display_name=display_name,
        crm_ref=crm_ref,
        shared=shared,
        own=own,
        hooks=hooks,
        own_realm=own_realm,
        hooks_org=hooks_org,
        shared_access=await _tokens(stack, shared, QB, shared_realm),
        own_access=await _tokens(stack, own, QB, own_realm),
    )


async def two_tenants(stack: TokenStack) -> tuple[Tenant, Tenant, str]:
    """Tenants a and b on one shared realm, each with a realm and a Zoho organisation of its own;
    every realm polled by a real poller (watermarks, record versions, rate budgets), a backfill
    queued for each tenant's shared-realm connection."""
    shared_realm = str(uuid.uuid4().int)[:16]
    a = await _tenant(stack, f"acme/{uuid.uuid4().hex[:8]} GmbH", shared_realm)
    b = await _tenant(stack, f"globex-{uuid.uuid4().hex[:8]}", shared_realm)
    for realm in (shared_realm, a.own_realm, b.own_realm):
        stack.emu.book(QB, realm).create("Invoice", TotalAmt=120)
    async with polling(stack):
        for realm in (shared_realm, a.own_realm, b.own_realm):
            await eventually(outcome_is(stack, QB, realm, "ok"))
    jobs = BackfillJobs(stack.pool)
    for connection_id in (a.shared, b.shared):
        connection = await stack.connections.get(connection_id)
        assert connection is not None
        await jobs.create(connection, datetime.now(UTC) - timedelta(days=3))
    return a, b, shared_realm


async def rows_of(pool: asyncpg.Pool, tenant: Tenant) -> dict[str, int]:
    """How many rows each table holds of the tenant alone (its own realm and organisation)."""
    ids = tenant.connections
    own = [tenant.own_realm, tenant.hooks_org]
    scopes = [key for realm in own for key in account_scope_keys(QB, realm)]
    queries = {
        "connections": ("SELECT count(*) FROM connections WHERE id = ANY($1::uuid[]) OR tenant_id = $2", ids),
        "oauth_connection_grants": (
            "SELECT count(*) FROM oauth_connection_grants WHERE connection_id = ANY($1::uuid[])",
            ids,
        ),
        "record_versions": (
            "SELECT count(*) FROM record_versions WHERE connection_id = ANY($1::uuid[])",
            ids,
        ),
        "poll_backfills": ("SELECT count(*) FROM poll_backfills WHERE connection_id = ANY($1::uuid[])", ids),
        "poll_accounts": ("SELECT count(*) FROM poll_accounts WHERE provider_account_id = ANY($1)", own),
        "poll_watermarks": ("SELECT count(*) FROM poll_watermarks WHERE provider_account_id = ANY($1)", own),
        "rate_budget_entries": ("SELECT count(*) FROM rate_budget_entries WHERE scope_key = ANY($1)", scopes),
        "rate_budget_scopes": ("SELECT count(*) FROM rate_budget_scopes WHERE scope_key = ANY($1)", scopes),
    }
    counts = {}
    for table, (query, values) in queries.items():
        extra = (tenant.id,) if table == "connections" else ()
        counts[table] = int(await pool.fetchval(query, values, *extra))
    return counts


async def snapshot(pool: asyncpg.Pool, tenant: Tenant, shared_realm: str) -> dict[str, Any]:
    """Every row of the tenant's connections and of the shared realm, as text, to compare."""
    ids = tenant.connections
    queries = {
        "connections": "SELECT c::text FROM connections c WHERE id = ANY($1::uuid[]) ORDER BY id",
        "grants": "SELECT g::text FROM oauth_grants g WHERE id IN"
        " (SELECT grant_id FROM oauth_connection_grants WHERE connection_id = ANY($1::uuid[])) ORDER BY id",
        "links": "SELECT l::text FROM oauth_connection_grants l WHERE connection_id = ANY($1::uuid[])"
        " ORDER BY connection_id",
        "versions": "SELECT v::text FROM record_versions v WHERE connection_id = ANY($1::uuid[])"
        " ORDER BY connection_id, entity, entity_id",
        "backfills": "SELECT b::text FROM poll_backfills b WHERE connection_id = ANY($1::uuid[]) ORDER BY id",
        "audit": "SELECT a::text FROM audit_log a WHERE connection_id = ANY($1::uuid[]) ORDER BY id",
    }
    found: dict[str, Any] = {name: [r[0] for r in await pool.fetch(q, ids)] for name, q in queries.items()}
    shared = [
        ("accounts", "SELECT a::text FROM poll_accounts a WHERE provider_account_id = $1"),
        (
            "watermarks",
            "SELECT w::text FROM poll_watermarks w WHERE provider_account_id = $1 ORDER BY entity",
        ),
        (
            "scopes",
            "SELECT s::text FROM rate_budget_scopes s"
            " WHERE scope_key LIKE 'quickbooks/account/' || $1 || '/%'",
        ),
    ]
    for name, query in shared:
        found[name] = [r[0] for r in await pool.fetch(query, shared_realm)]
    return found


async def audit_text(pool: asyncpg.Pool) -> str:
    return str(await pool.fetchval("SELECT coalesce(string_agg(a::text, '\n'), '') FROM audit_log a"))


async def test_erasing_a_tenant_leaves_nothing_of_it_and_the_other_tenant_as_it_was(erasure: Erasure) -> None:
    stack = erasure.stack
    a, b, shared_realm = await two_tenants(stack)
    before = await rows_of(stack.pool, a)
    # Every kind of state exists for the erased tenant, so its absence afterwards means something.
    assert all(before.values()), before
    assert before["rate_budget_entries"] and before["poll_watermarks"]
    assert (await rows_of(stack.pool, b))["record_versions"] > 0
    kept = await snapshot(stack.pool, b, shared_realm)
    assert kept["accounts"] and kept["watermarks"] and kept["versions"] and kept["grants"] and kept["scopes"]
    shared_versions_of_a = await stack.pool.fetchval(
        "SELECT count(*) FROM record_versions WHERE connection_id = $1", a.shared
    )
    assert shared_versions_of_a > 0  # the shared realm's change reached both tenants
    await stack.connections.update(a.hooks, status=ConnectionStatus.PAUSED)  # any status is erased
    revoked_before = stack.emu.events(QB, "revoked")

    status, body = await erasure.delete(a.id)

    assert status == 200, body
    assert body == {"tenant_id": a.id, "connections": 3, "grants": 2, "accounts": 2}
    # Both of its QuickBooks grants were given back at Intuit's revoke endpoint; b's still works.
    assert stack.emu.events(QB, "revoked") == revoked_before + 2
    assert not stack.emu.validate_access_token(QB, a.shared_access)
    assert not stack.emu.validate_access_token(QB, a.own_access)
    assert stack.emu.validate_access_token(QB, b.shared_access)
    # Nothing of a is left in any table; b's rows and the shared realm's state are untouched.
    assert await rows_of(stack.pool, a) == dict.fromkeys(before, 0)
    assert await stack.pool.fetchval("SELECT count(*) FROM connections WHERE tenant_id = $1", a.id) == 0
    assert await stack.pool.fetchval("SELECT count(*) FROM oauth_grants") == 2  # b's two
    assert await snapshot(stack.pool, b, shared_realm) == kept
    assert (await stack.manager.get_access_token(b.shared)).token == b.shared_access
    # The webhook scheme cache was told about each erased connection.
    assert sorted(erasure.changed) == sorted(a.connections)

    # The trail: one entry without personal data, and a's earlier entries without its values.
    entry = await stack.pool.fetchrow("SELECT * FROM audit_log WHERE action = 'tenant.erase'")
    assert entry is not None
    assert (entry["actor"], entry["role"], entry["target"]) == ("erin", "admin", tenant_target(a.id))
    assert len(entry["target"]) == len("tenant:") + 16
    assert orjson.loads(entry["changes"]) == {"connections": 3, "grants": 2, "accounts": 2}
    trail = await audit_text(stack.pool)
    for personal in (a.id, a.display_name, a.crm_ref):
        assert personal not in trail
    for personal in (b.id, b.display_name, b.crm_ref):
        assert personal in trail  # b's entries keep their values
    earlier = await stack.pool.fetch(
        "SELECT changes FROM audit_log WHERE connection_id = $1 AND action = 'connection.create'", a.own
    )
    assert [orjson.loads(r["changes"]) for r in earlier] == [
        {
            "tenant_id": "[erased]",
            "provider": {"from": None, "to": "quickbooks"},
            "display_name": "[erased]",
            "metadata": "[erased]",
            "webhook_secrets_changed": False,
        }
    ]
    tokens = await stack.pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE connection_id = ANY($1::uuid[]) AND action LIKE 'token.%'",
        a.connections,
    )
    assert tokens >= 4  # their token history stays (stored and revoked, per grant), by id only

    # The same erasure again: the tenant has no connection any more.
    status, problem = await erasure.delete(a.id)
    assert status == 404 and problem["detail"] == "no connection has this tenant id"
    assert await stack.pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'tenant.erase'") == 1


async def test_unknown_tenants_bad_ids_and_short_roles_erase_nothing(erasure: Erasure) -> None:
    stack = erasure.stack
    connection_id = await _connection(stack, "initech", QB, "realm-kept", display_name="Initech")
    status, problem = await erasure.delete(f"nobody-{uuid.uuid4().hex}")
    assert status == 404 and problem["status"] == 404
    for bad, detail in (("bad\x01id", "control characters"), ("x" * 201, "at most 200"), (" ", "blank")):
        status, problem = await erasure.delete(bad)
        assert status == 422, problem
        assert problem["errors"][0]["parameter"] == "tenant_id" and detail in problem["errors"][0]["detail"]
    for role in ("operator", "auditor"):
        status, problem = await erasure.delete("initech", role)
        assert (
            status == 403 and problem["detail"] == f"this needs the admin role; the token `erin` has {role}"
        )
    with pytest.raises(Problem) as refused:
        await erasure.resource.erase("initech", Actor(Principal("olga", Role.OPERATOR), None, "console"))
    assert refused.value.status == 403
    assert await stack.connections.get(connection_id) is not None
    assert await stack.pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'tenant.erase'") == 0
    # The console's way in erases as the endpoint does, recorded with its actor.
    result = await erasure.resource.erase("initech", ADMIN)
    assert (result.connections, result.grants, result.accounts) == (1, 0, 1)
    entry = await stack.pool.fetchrow("SELECT via, client FROM audit_log WHERE action = 'tenant.erase'")
    assert entry is not None and (entry["via"], entry["client"]) == ("console", "127.0.0.1")


async def test_a_failure_in_the_transaction_leaves_nothing_half_erased(erasure: Erasure) -> None:
    stack = erasure.stack
    a, b, _ = await two_tenants(stack)
    # The erasure's last write fails: everything before it in the transaction must roll back.
    await stack.pool.execute(
        "CREATE FUNCTION refuse_erase() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;"
        " CREATE TRIGGER refuse_erase BEFORE INSERT ON audit_log FOR EACH ROW"
        " WHEN (NEW.action = 'tenant.erase') EXECUTE FUNCTION refuse_erase()"
    )
    state = await rows_of(stack.pool, a)
    with pytest.raises(asyncpg.RaiseError):
        await erasure.resource.erase(a.id, ADMIN)
    after = await rows_of(stack.pool, a)
    # The grants were given back and erased before the transaction (as a connection's DELETE does);
    # every other row is still there, and so are the trail's values.
    assert after == state | {"oauth_connection_grants": 0}
    assert a.display_name in await audit_text(stack.pool)
    assert erasure.changed == []

    await stack.pool.execute("DROP TRIGGER refuse_erase ON audit_log; DROP FUNCTION refuse_erase()")
    result = await erasure.resource.erase(a.id, ADMIN)
    assert (result.connections, result.accounts) == (3, 2)
    assert await rows_of(stack.pool, a) == dict.fromkeys(state, 0)
    assert (await rows_of(stack.pool, b))["connections"] == 3


async def test_every_table_holding_a_tenant_connection_or_account_is_erased_from(postgres_url: str) -> None:
    # The catalogue of the migrated schema: a later migration adding such a table fails here until
    # erasure handles it (and HANDLED_TABLES names it).
    async with fresh_database(postgres_url, "catalogue", migrated=True) as url:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT DISTINCT table_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND column_name = ANY($1::text[])",
                list(IDENTIFYING_COLUMNS),
            )
            tables = {
                r["table_name"]
                for r in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            }
        finally:
            await conn.close()
    identifying = {r["table_name"] for r in rows}
    assert identifying >= {"connections", "oauth_connection_grants", "record_versions", "poll_accounts"}
    assert identifying <= HANDLED_TABLES, f"erasure does not handle {sorted(identifying - HANDLED_TABLES)}"
    assert tables >= HANDLED_TABLES, f"no such tables: {sorted(HANDLED_TABLES - tables)}"


def test_account_scope_keys_are_the_rate_budgets_own() -> None:
    budgets = RateBudgets(pool=None)  # scope_key reads no database
    for provider in (QB, Provider.XERO):
        assert account_scope_keys(provider, "a/b") == [
            budgets.scope_key(provider, "a/b", label) for label in ACCOUNT_SCOPE_LABELS
        ]


def test_the_openapi_document_says_the_role_and_the_answer() -> None:
    document: Mapping[str, Any] = with_tenants(openapi_document())
    operation = document["paths"]["/tenants/{tenant_id}"]["delete"]
    assert operation["x-ledgerhook-role"] == "admin" and "Erasing a tenant" in operation["description"]
    assert set(operation["responses"]) == {"200", "401", "403", "404", "422", "503"}
    schema = document["components"]["schemas"]["ErasureResult"]
    assert set(schema["properties"]) == {"tenant_id", "connections", "grants", "accounts"}
