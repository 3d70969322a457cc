"""List queries at 100,000 rows stay index-driven whatever PostgreSQL's switch to generic plans does.

For every filter combination of the connection list (and the audit trail's conditions), the store is
called more than ten times on one pooled connection, so its prepared statement is reused past the
point where PostgreSQL may switch to a generic plan. Then the statement's own text, taken from
`pg_prepared_statements`, is planned both ways with EXPLAIN: generic (the worst case, as if the
switch had happened) and custom (what the store runs). Neither may read the table from end to end,
and a page deep in the table may cost no more buffers than the first one.
"""

import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import combinations
from typing import Any

import asyncpg
import orjson
import pytest

from provider_auth import audit
from provider_auth.accounts.store import PAGE_FILTERS, ConnectionStatus, ConnectionStore, page_query
from provider_auth.providers import Provider

ROWS = 100_000
PAGE = 50  # what the store is asked for; the admin API asks for its limit + 1 the same way
CALLS = 12  # PostgreSQL considers a generic plan from the sixth call of a statement on
FIRST_ID = "00000000-0000-0000-0000-000000000000"
BIG_TENANTS = ("tenant-big-0", "tenant-big-1", "tenant-big-2")  # 5 % of the rows each
PROVIDER_WEIGHTS = {
    Provider.QUICKBOOKS: 30,
    Provider.XERO: 30,
    Provider.ZOHO_BOOKS: 12,
    Provider.FRESHBOOKS: 10,
    Provider.NETSUITE: 8,
    Provider.CUSTOM: 6,
    Provider.SAGE_INTACCT: 4,
}
STATUS_WEIGHTS = {
    ConnectionStatus.ACTIVE: 90,
    ConnectionStatus.PAUSED: 5,
    ConnectionStatus.NEEDS_REAUTH: 4,
    ConnectionStatus.DISCONNECTED: 1,
}
# One value per filter: a large tenant and the rarest provider and status, where a plan made for
# other values (walk the primary key, keep what matches) costs the most.
VALUES: dict[str, str] = {
    "tenant_id": BIG_TENANTS[1],
    "provider": Provider.SAGE_INTACCT.value,
    "status": ConnectionStatus.DISCONNECTED.value,
}
# The index a custom plan must use where the primary key would read most of the table for a page.
MATCHING_INDEX = {
    ("status",): "connections_by_status",
    ("provider", "status"): "connections_by_provider_status",
}


def time_ordered_ids(count: int, start: datetime) -> Iterator[uuid.UUID]:
    """UUIDv7s one millisecond apart from `start`, as connections created one after another get."""
    rng = random.Random(count)
    base = int(start.timestamp() * 1000)
    for n in range(count):
        rand = rng.getrandbits(74)
        value = ((base + n) << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & (2**62 - 1))
        yield uuid.UUID(int=value)


def connection_rows(count: int) -> list[tuple[Any, ...]]:
    """Mixed tenants (three with many rows, the rest with a few), providers and statuses, in id
    order as they would have been created."""
    rng = random.Random(14)
    providers, provider_weights = zip(*PROVIDER_WEIGHTS.items(), strict=True)
    statuses, status_weights = zip(*STATUS_WEIGHTS.items(), strict=True)
    rows = []
    start = datetime.now(UTC) - timedelta(days=30)
    for n, connection_id in enumerate(time_ordered_ids(count, start)):
        big = rng.random() < 0.15
        tenant = BIG_TENANTS[n % 3] if big else f"tenant-{rng.randrange(count // 3)}"
        provider = rng.choices(providers, provider_weights)[0]
        status = rng.choices(statuses, status_weights)[0]
        rows.append((connection_id, tenant, provider.value, f"account-{n}", status.value))
    return rows


@pytest.fixture
async def loaded(database_url: str) -> AsyncIterator[tuple[asyncpg.Pool, list[tuple[Any, ...]]]]:
    """A pool of one connection (so every call reuses the same prepared statement) on a database
    holding ROWS connections, analyzed."""
    rows = connection_rows(ROWS)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "connections",
            records=rows,
            columns=["id", "tenant_id", "provider", "provider_account_id", "status"],
        )
        await conn.execute("ANALYZE connections")
    yield pool, rows
    await pool.close()


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan."""
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def buffers(plan: dict[str, Any]) -> int:
    """Shared buffers the whole plan touched."""
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


def literal(value: Any) -> str:
    """`value` as an SQL literal."""
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def explain(conn: asyncpg.Connection, statement: str, mode: str, args: Sequence[Any]) -> dict[str, Any]:
    """The executed plan of `statement` (a text the store prepared) with `args`, under
    plan_cache_mode `mode`, as PREPARE and EXECUTE run it."""
    await conn.execute(f"PREPARE probe AS {statement}")
    try:
        await conn.execute(f"SET plan_cache_mode = {mode}")
        # EXECUTE takes no bound parameters: the test's own values, as literals.
        literals = ", ".join(literal(value) for value in args)
        document = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE probe({literals})")
    finally:
        await conn.execute("RESET plan_cache_mode")
        await conn.execute("DEALLOCATE probe")
    plan: dict[str, Any] = orjson.loads(document)[0]["Plan"]
    return plan


async def reused_statement(conn: asyncpg.Connection, text: str) -> asyncpg.Record:
    """The prepared statement of `text` on this connection, with its plan counts."""
    record = await conn.fetchrow(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
        text,
    )
    assert record is not None, f"the store did not prepare {text!r}"
    return record


def assert_index_driven(plan: dict[str, Any], table: str, what: str) -> None:
    scans = [n for n in nodes(plan) if n.get("Relation Name") == table]
    assert scans, f"{what}: {table} not read at all?"
    assert all(n["Node Type"] != "Seq Scan" for n in scans), f"{what}: a sequential scan of {table}"
    # (A bitmap heap scan's index is named in its child, which names no relation.)
    indexes = {n["Index Name"] for n in nodes(plan) if "Index Name" in n}
    assert any(name.startswith(table) for name in indexes), f"{what}: no index of {table} used"


def deep_cursor(matching: list[str]) -> str:
    """A cursor a few pages before the end of the rows that match: a page deep in the table."""
    return matching[-4 * PAGE] if len(matching) > 8 * PAGE else matching[len(matching) // 2]


async def test_every_connection_filter_stays_on_an_index_after_repeated_calls(
    loaded: tuple[asyncpg.Pool, list[tuple[Any, ...]]],
) -> None:
    pool, rows = loaded
    store = ConnectionStore(pool, None)
    combos = [combo for size in range(len(PAGE_FILTERS) + 1) for combo in combinations(PAGE_FILTERS, size)]
    assert len(combos) == 8
    column_of = {"tenant_id": 1, "provider": 2, "status": 4}
    for combo in combos:
        filters = {name: VALUES[name] for name in combo}
        matching = [
            str(row[0]) for row in rows if all(row[column_of[name]] == VALUES[name] for name in combo)
        ]
        assert matching, combo
        keywords: dict[str, Any] = {
            "tenant_id": filters.get("tenant_id"),
            "provider": Provider(filters["provider"]) if "provider" in filters else None,
            "status": ConnectionStatus(filters["status"]) if "status" in filters else None,
        }

        # Walk the pages, starting over at the end, CALLS times in all: every page is the next
        # PAGE matching rows in id order.
        seen: list[str] = []
        after: str | None = None
        for _ in range(CALLS):
            page = await store.page(**keywords, after=after, limit=PAGE)
            assert [c.id for c in page] == matching[len(seen) : len(seen) + PAGE], combo
            seen = [*seen, *(c.id for c in page)] if len(page) == PAGE else []
            after = page[-1].id if len(page) == PAGE else None

        async with pool.acquire() as conn:
            text = page_query(combo)
            statement = await reused_statement(conn, text)
            assert statement["custom_plans"] >= CALLS and statement["generic_plans"] == 0, combo
            values = [filters[name] for name in combo]
            for mode in ("force_generic_plan", "force_custom_plan"):
                first = await explain(conn, statement["statement"], mode, [*values, FIRST_ID, PAGE])
                deep = await explain(
                    conn, statement["statement"], mode, [*values, deep_cursor(matching), PAGE]
                )
                for plan in (first, deep):
                    assert_index_driven(plan, "connections", f"{combo} {mode}")
                # Flat: a page deep in the table reads what the first one does, not what lies before it.
                assert buffers(deep) <= 2 * buffers(first) + 20, (combo, mode, buffers(first), buffers(deep))
            if combo in MATCHING_INDEX:
                used = {n.get("Index Name") for n in nodes(first)}
                assert MATCHING_INDEX[combo] in used, (combo, used)


AUDIT_ROWS = 100_000
ACTORS = {"ops-alice": 20, "ops-bob": 9, "rare-auditor": 1, audit.SYSTEM_ACTOR: 70}
ACTIONS = {"token.refreshed": 70, "connection.update": 20, "connection.create": 9, "tenant.erase": 1}


def audit_rows(count: int, connection_ids: Sequence[uuid.UUID]) -> list[tuple[Any, ...]]:
    """Entries of many connections, oldest first, one second apart."""
    rng = random.Random(9)
    actors, actor_weights = zip(*ACTORS.items(), strict=True)
    actions, action_weights = zip(*ACTIONS.items(), strict=True)
    start = datetime.now(UTC) - timedelta(seconds=count)
    rows = []
    for n in range(count):
        connection_id = rng.choice(connection_ids)
        action = rng.choices(actions, action_weights)[0]
        rows.append(
            (
                n + 1,
                start + timedelta(seconds=n),
                rng.choices(actors, actor_weights)[0],
                "system" if action.startswith("token.") else "api",
                action,
                f"connection:{connection_id}",
                connection_id,
            )
        )
    return rows


async def test_every_audit_condition_stays_on_an_index_after_repeated_calls(database_url: str) -> None:
    connection_ids = [uuid.UUID(int=random.Random(n).getrandbits(128)) for n in range(2000)]
    rows = audit_rows(AUDIT_ROWS, connection_ids)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.copy_records_to_table(
                "audit_log",
                records=rows,
                columns=["id", "at", "actor", "via", "action", "target", "connection_id"],
            )
            await conn.execute("ANALYZE audit_log")
        busy = connection_ids[0]
        early = rows[AUDIT_ROWS // 10][1]  # entries before it: a tenth of the trail
        Case = tuple[audit.AuditFilters, tuple[str, ...], list[Any], Callable[[tuple[Any, ...]], bool]]
        cases: list[Case] = [
            (audit.AuditFilters(), (), [], lambda row: True),
            (
                audit.AuditFilters(actor="rare-auditor"),
                ("actor",),
                ["rare-auditor"],
                lambda row: row[2] == "rare-auditor",
            ),
            (
                audit.AuditFilters(action="tenant.erase"),
                ("action",),
                ["tenant.erase"],
                lambda row: row[4] == "tenant.erase",
            ),
            (
                audit.AuditFilters(action="tenant."),
                ("action_prefix",),
                ["tenant."],
                lambda row: row[4].startswith("tenant."),
            ),
            (
                audit.AuditFilters(target=f"connection:{busy}"),
                ("target",),
                [f"connection:{busy}"],
                lambda row: row[5] == f"connection:{busy}",
            ),
            (
                audit.AuditFilters(connection_id=str(busy)),
                ("connection_id",),
                [busy],
                lambda row: row[6] == busy,
            ),
            (
                audit.AuditFilters(actor="ops-bob", action="connection.update"),
                ("actor", "action"),
                ["ops-bob", "connection.update"],
                lambda row: row[2] == "ops-bob" and row[4] == "connection.update",
            ),
            (audit.AuditFilters(until=early), ("until",), [early], lambda row: row[1] < early),
        ]
        for filters, conditions, values, wanted in cases:
            matching = [row[0] for row in reversed(rows) if wanted(row)]
            after: int | None = None
            for _ in range(CALLS):
                entries = await audit.page(pool, filters, after_id=after, limit=PAGE)
                start = 0 if after is None else matching.index(after) + 1
                assert [e.id for e in entries] == matching[start : start + PAGE], conditions
                after = entries[-1].id if len(entries) == PAGE else None
            async with pool.acquire() as conn:
                statement = await reused_statement(conn, audit.page_query(conditions))
                assert statement["custom_plans"] >= CALLS and statement["generic_plans"] == 0
                deep = matching[-4 * PAGE] if len(matching) > 8 * PAGE else matching[len(matching) // 2]
                for mode in ("force_generic_plan", "force_custom_plan"):
                    first = await explain(conn, statement["statement"], mode, [*values, 2**63 - 1, PAGE])
                    later = await explain(conn, statement["statement"], mode, [*values, deep, PAGE])
                    for plan in (first, later):
                        assert_index_driven(plan, "audit_log", f"{conditions} {mode}")
                    assert buffers(later) <= 2 * buffers(first) + 20, (conditions, mode)
    finally:
        await pool.close()
