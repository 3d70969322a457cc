"""The audit trail on a real gateway and database: each kind of admin change leaves exactly one entry
with who, how, from where, what and the change; no secret or token ever reaches the table; the
connection's filter shows its token lifecycle too; filters and cursor paging; retention."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from prometheus_client import CollectorRegistry

from gateway.dev.emulator import Emulator
from gateway.runtime.infra import open_infrastructure
from gateway.runtime.worker import worker_tasks
from gateway.settings import Settings
from provider_auth import audit
from provider_auth.providers import Provider
from provider_auth.vault import KeyRing
from tests.provider_auth.tokens.token_support import (
    CLIENT_ID,
    emulator_settings,
    register_clients,
)
from tests.support import RunningGateway, migrate_and_create_topics, running_gateway

ADMIN, OPERATOR, AUDITOR = "audit-admin-token", "audit-operator-token", "audit-auditor-token"
ENTRIES = f"admin:ada:{ADMIN},operator:otto:{OPERATOR},auditor:aude:{AUDITOR}"
SECRETS = ("zohoSecretFirst123", "zohoSecretSecond456")


@dataclass
class Trail:
    gateway: RunningGateway
    emu: Emulator
    pool: asyncpg.Pool
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        headers = {"authorization": f"Bearer {token}"}
        async with self.http.request(
            method, f"{self.gateway.base_url}/admin/v1{path}", json=body, headers=headers
        ) as response:
            text = await response.text()
            return response.status, orjson.loads(text) if text else None

    async def entries(self, action: str, target: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM audit_log WHERE action = $1 AND target = $2 ORDER BY id", action, target
        )

    async def one(self, action: str, target: str, actor: str, role: str) -> dict[str, Any]:
        """The single entry of `action` on `target`, checked for who, how and from where."""
        [entry] = await self.entries(action, target)
        assert (entry["actor"], entry["role"], entry["via"], entry["client"]) == (
            actor,
            role,
            "api",
            "127.0.0.1",
        )
        changes: dict[str, Any] = orjson.loads(entry["changes"])
        return changes


@pytest.fixture
async def trail(settings_factory: Any, database_url: str) -> AsyncIterator[Trail]:
    async with Emulator() as emu:
        register_clients(emu)
        settings = settings_factory(
            database_url=database_url,
            admin_tokens=ENTRIES,
            encryption_keys=f"k1:{KeyRing.generate_key()}",
            **emulator_settings(emu, skip=(Provider.SAGE_INTACCT,)),
        )
        async with (
            running_gateway(settings) as gateway,
            aiohttp.ClientSession() as http,
        ):
            pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
            try:
                yield Trail(gateway, emu, pool, http)
            finally:
                await pool.close()


async def test_each_change_leaves_one_entry_and_no_secret(trail: Trail) -> None:
    # Create, with a secret.
    body = {
        "tenant_id": "acme",
        "provider": "zoho-books",
        "provider_account_id": "60001",
        "display_name": "Acme",
        "metadata": {"plan": "pro"},
        "webhook_secret": SECRETS[0],
    }
    status, zoho = await trail.call("POST", "/connections", ADMIN, body)
    assert status == 201
    target = f"connection:{zoho['id']}"
    created = await trail.one("connection.create", target, "ada", "admin")
    assert created["tenant_id"] == {"from": None, "to": "acme"}
    assert created["provider"]["to"] == "zoho-books" and created["metadata"]["to"] == {"plan": "pro"}
    assert created["webhook_secrets_changed"] is True

    # Update name and secrets: only what changed, the secret only as changed.
    change = {"display_name": "Acme Ltd", "metadata": {"plan": "pro"}, "webhook_secrets": [SECRETS[1]]}
    status, _ = await trail.call("PATCH", f"/connections/{zoho['id']}", ADMIN, change)
    assert status == 200
    updated = await trail.one("connection.update", target, "ada", "admin")
    assert updated == {"display_name": {"from": "Acme", "to": "Acme Ltd"}, "webhook_secrets_changed": True}

    # Pause and resume by an operator.
    assert (await trail.call("PATCH", f"/connections/{zoho['id']}", OPERATOR, {"status": "paused"}))[0] == 200
    paused = await trail.one("connection.pause", target, "otto", "operator")
    assert paused == {"status": {"from": "active", "to": "paused"}}
    assert (await trail.call("PATCH", f"/connections/{zoho['id']}", OPERATOR, {"status": "active"}))[0] == 200
    resumed = await trail.one("connection.resume", target, "otto", "operator")
    assert resumed == {"status": {"from": "paused", "to": "active"}}

    # Credentials handed over for a QuickBooks connection, a backfill, then a disconnect.
    qb_body = {"tenant_id": "acme", "provider": "quickbooks", "provider_account_id": "realm-7"}
    status, qb = await trail.call("POST", "/connections", ADMIN, qb_body)
    assert status == 201
    qb_target = f"connection:{qb['id']}"
    access, refresh = trail.emu.issue_grant(Provider.QUICKBOOKS, CLIENT_ID, accounts=["realm-7"])
    handed = {"access_token": access, "refresh_token": refresh, "expires_in": 3600, "scope": "accounting"}
    status, state = await trail.call("PUT", f"/connections/{qb['id']}/credentials", ADMIN, handed)
    assert status == 200, state
    put = await trail.one("credentials.put", qb_target, "ada", "admin")
    assert put["grant_type"] == {"from": None, "to": "refresh_token"}
    assert put["access_token_changed"] is True and put["refresh_token_changed"] is True
    assert put["access_token_expires_at"]["to"] and put["scope"] == {"from": None, "to": "accounting"}

    status, job = await trail.call(
        "POST", f"/connections/{qb['id']}/backfill", OPERATOR, {"since": "2026-01-01"}
    )
    assert status == 202, job
    backfill = await trail.one("sync.backfill", qb_target, "otto", "operator")
    assert backfill["backfill_id"] == job["id"] and backfill["since"].startswith("2026-01-01T00:00:00")
    assert backfill["entities"] == job["entities"]

    assert (await trail.call("DELETE", f"/connections/{qb['id']}", ADMIN))[0] == 204
    gone = await trail.one("connection.disconnect", qb_target, "ada", "admin")
    assert gone == {"status": {"from": "active", "to": "disconnected"}}

    # Refused requests leave nothing.
    count = await trail.pool.fetchval("SELECT count(*) FROM audit_log")
    assert (await trail.call("DELETE", f"/connections/{zoho['id']}", OPERATOR))[0] == 403
    assert (await trail.call("PATCH", f"/connections/{zoho['id']}", OPERATOR, {"display_name": "x"}))[
        0
    ] == 403
    assert (await trail.call("POST", "/connections", ADMIN, {"provider": "custom"}))[0] == 422
    assert (await trail.call("POST", "/connections", ADMIN, body))[0] == 409
    assert await trail.pool.fetchval("SELECT count(*) FROM audit_log") == count

    # The connection's trail holds the admin changes and the token lifecycle of its grant.
    status, page = await trail.call("GET", f"/audit?connection_id={qb['id']}", AUDITOR)
    assert status == 200
    actions = [item["action"] for item in page["items"]]
    assert {"connection.create", "credentials.put", "sync.backfill", "connection.disconnect"} <= set(actions)
    tokens = [item for item in page["items"] if item["action"].startswith("token.")]
    assert tokens and all(
        (item["actor"], item["via"], item["role"]) == ("ledgerhook", "system", None) for item in tokens
    )
    assert "token.stored" in actions
    assert [item["id"] for item in page["items"]] == sorted(
        (item["id"] for item in page["items"]), reverse=True
    )

    # No secret or token anywhere in the table, nor in what the endpoint shows.
    for secret in (*SECRETS, access, refresh, ADMIN, OPERATOR, AUDITOR):
        found = await trail.pool.fetchval(
            "SELECT count(*) FROM audit_log a WHERE strpos(a::text, $1) > 0", secret
        )
        assert found == 0
        status, everything = await trail.call("GET", "/audit?limit=200", AUDITOR)
        assert secret not in orjson.dumps(everything).decode()


async def seed(pool: asyncpg.Pool, count: int) -> list[int]:
    """`count` admin entries, one a minute into the past (the newest now); their ids, newest first."""
    for index in range(count):
        await audit.record_change(
            pool,
            actor=("ada", "otto", "aude")[index % 3],
            role="admin",
            via="api",
            client="10.0.0.1",
            action=("connection.pause", "connection.resume", "sync.backfill")[index % 3],
            target=f"connection:{uuid.UUID(int=index % 4)}",
        )
    await pool.execute(
        "UPDATE audit_log SET at = now() - (max_id.value - id) * interval '1 minute'"
        " FROM (SELECT max(id) AS value FROM audit_log) max_id"
    )
    return [row["id"] for row in await pool.fetch("SELECT id FROM audit_log ORDER BY id DESC")]


async def walk(trail: Trail, query: str, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        path = (
            f"/audit?limit={limit}" + (f"&{query}" if query else "") + (f"&cursor={cursor}" if cursor else "")
        )
        status, page = await trail.call("GET", path, AUDITOR)
        assert status == 200, page
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next"]
        if cursor is None:
            return items


async def test_a_change_whose_entry_cannot_be_written_does_not_happen(trail: Trail) -> None:
    """A change and its entry commit together: while the trail refuses new entries, a create, an
    update, a pause and a disconnect each fail whole (503, as for any database failure), and the
    connection stays as it was."""
    body = {
        "tenant_id": "acme",
        "provider": "zoho-books",
        "provider_account_id": "60002",
        "display_name": "Before",
    }
    status, zoho = await trail.call("POST", "/connections", ADMIN, body)
    assert status == 201
    path, target = f"/connections/{zoho['id']}", f"connection:{zoho['id']}"
    refusal = f"refuse_{uuid.uuid4().hex[:8]}"
    await trail.pool.execute(f"ALTER TABLE audit_log ADD CONSTRAINT {refusal} CHECK (false) NOT VALID")
    try:
        another = {**body, "provider_account_id": "60003"}
        assert (await trail.call("POST", "/connections", ADMIN, another))[0] == 503
        assert (await trail.call("PATCH", path, ADMIN, {"display_name": "After"}))[0] == 503
        assert (await trail.call("PATCH", path, OPERATOR, {"status": "paused"}))[0] == 503
        assert (await trail.call("DELETE", path, ADMIN))[0] == 503
    finally:
        await trail.pool.execute(f"ALTER TABLE audit_log DROP CONSTRAINT {refusal}")
    status, now = await trail.call("GET", path, ADMIN)
    assert (status, now["display_name"], now["status"]) == (200, "Before", "active")
    assert (await trail.call("GET", "/connections?tenant_id=acme&provider=zoho-books", ADMIN))[1]["data"] == [
        now
    ]
    assert [
        entry["action"]
        for entry in await trail.pool.fetch("SELECT action FROM audit_log WHERE target = $1", target)
    ] == ["connection.create"]
    # With the trail writable again, the same change goes through with its entry.
    assert (await trail.call("PATCH", path, ADMIN, {"display_name": "After"}))[0] == 200
    assert await trail.one("connection.update", target, "ada", "admin") == {
        "display_name": {"from": "Before", "to": "After"}
    }


async def test_filters_and_cursor_paging(trail: Trail) -> None:
    ids = await seed(trail.pool, 60)
    every = await walk(trail, "", 7)
    assert [item["id"] for item in every] == ids  # newest first, no duplicate, no gap
    assert set(every[0]) == {"id", "at", "actor", "role", "via", "client", "action", "target", "changes"}
    assert [item["id"] for item in await walk(trail, "", 60)] == ids
    assert [item["id"] for item in await walk(trail, "", 200)] == ids

    by_actor = await walk(trail, "actor=otto", 5)
    assert by_actor and all(item["actor"] == "otto" for item in by_actor) and len(by_actor) == 20
    exact = await walk(trail, "action=connection.pause", 6)
    assert len(exact) == 20 and {item["action"] for item in exact} == {"connection.pause"}
    prefix = await walk(trail, "action=connection.", 6)
    assert len(prefix) == 40 and {item["action"] for item in prefix} == {
        "connection.pause",
        "connection.resume",
    }
    assert await walk(trail, "action=connection", 6) == []  # no dot: exact
    target = f"connection:{uuid.UUID(int=1)}"
    by_target = await walk(trail, f"target={target}", 4)
    assert len(by_target) == 15 and {item["target"] for item in by_target} == {target}
    by_connection = await walk(trail, f"connection_id={uuid.UUID(int=1)}", 4)
    assert by_connection == []  # seeded entries name no connection_id column

    newest = datetime.fromisoformat(every[0]["at"])
    since = (newest - timedelta(minutes=9, seconds=30)).isoformat()
    until = (newest - timedelta(minutes=4, seconds=30)).isoformat()
    window = await walk(trail, f"since={since.replace('+', '%2B')}&until={until.replace('+', '%2B')}", 2)
    assert [item["id"] for item in window] == ids[5:10]

    for query, parameter in (
        ("cursor=bm9wZQ", "cursor"),
        ("cursor=not-a-cursor", "cursor"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("since=2026-01-01", "since"),
        ("until=2026-01-01T00:00:00", "until"),
        ("connection_id=nope", "connection_id"),
        ("colour=red", "colour"),
    ):
        status, problem = await trail.call("GET", f"/audit?{query}", AUDITOR)
        assert status == 422 and [error["parameter"] for error in problem["errors"]] == [parameter], query


async def test_the_worker_prunes_past_the_configured_retention(
    settings_factory: Any, database_url: str
) -> None:
    settings: Settings = settings_factory(database_url=database_url, audit_retention_days=10)
    await migrate_and_create_topics(settings)
    async with open_infrastructure(settings) as infra:
        pool = infra.pool
        now = datetime.now(UTC)
        async with pool.acquire() as conn:
            for days in (30, 11, 9, 1):
                await audit.record(
                    conn,
                    provider="quickbooks",
                    action=audit.AuditAction.REFRESHED,
                    at=now - timedelta(days=days),
                )
                await audit.record_change(
                    conn,
                    actor="ada",
                    role="admin",
                    via="api",
                    client=None,
                    action="connection.pause",
                    target=f"old:{days}",
                )
                await conn.execute(
                    "UPDATE audit_log SET at = $1 WHERE target = $2",
                    now - timedelta(days=days),
                    f"old:{days}",
                )
        # The worker's own task, present whether or not tokens are configured (no key ring here).
        [task] = [t for t in worker_tasks(settings, infra, CollectorRegistry()) if t.name == "audit-prune"]
        stop = asyncio.Event()
        running = asyncio.create_task(task.run(stop))
        try:
            for _ in range(200):
                if not await pool.fetchval(
                    "SELECT count(*) FROM audit_log WHERE at < $1", now - timedelta(days=10)
                ):
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await running
        ages = sorted(
            round((now - row["at"]).total_seconds() / 86400)
            for row in await pool.fetch("SELECT at FROM audit_log")
        )
        assert ages == [1, 1, 9, 9]
