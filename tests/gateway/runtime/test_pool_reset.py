"""The process pool returns connections without asyncpg's reset statement, which is only safe while the
code leaves no session state on a pooled connection: these tests check both halves."""

import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from gateway.runtime.infra import open_pool

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("gateway", "fanout", "provider_auth")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_pool(database_url, max_size=1)  # one connection: every acquire gets it back
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_release_runs_no_statement(pool: asyncpg.Pool) -> None:
    seen: list[str] = []
    async with pool.acquire() as connection:
        connection.add_query_logger(lambda record: seen.append(record.query))
        await connection.fetchval("SELECT 1")
    async with pool.acquire() as connection:
        await connection.fetchval("SELECT 2")
    assert seen == ["SELECT 1", "SELECT 2"]


async def test_an_open_transaction_is_still_rolled_back(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        await connection.execute("CREATE TEMPORARY TABLE IF NOT EXISTS t_reset (n int)")
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("INSERT INTO t_reset VALUES (1)")
        # released with the transaction open, as a bug or a cancelled task would leave it
    async with pool.acquire() as connection:
        assert not connection.is_in_transaction()
        assert await connection.fetchval("SELECT count(*) FROM t_reset") == 0


def sources() -> list[tuple[Path, str]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found.append((path, path.read_text()))
    return found


def test_no_session_state_is_left_on_pooled_connections() -> None:
    """Settings only as SET LOCAL, no LISTEN, no cursor outside a transaction, and session-level
    advisory locks only where a `finally` releases them (or on a connection of their own)."""
    assert sources(), "no package sources found"
    session_locks = {"gateway/runtime/migrate.py", "fanout/dedupe.py"}
    settings = 0
    for path, text in sources():
        relative = path.relative_to(ROOT).as_posix()
        # A statement that starts with SET (an UPDATE's SET clause does not), run or kept in a name.
        for statement in re.findall(r"""(?:execute\(\s*|=\s*)f?["']\s*SET\s+(\w+)""", text):
            settings += 1
            assert statement == "LOCAL", f"{relative}: a session-level SET ({statement})"
        assert not re.search(r"""["']\s*(UN)?LISTEN\b""", text), f"{relative}: LISTEN on a pooled connection"
        assert ".add_listener(" not in text, f"{relative}: a listener on a pooled connection"
        if re.search(r"pg_(try_)?advisory_lock\(", text):
            assert relative in session_locks, f"{relative}: a session-level advisory lock"
            released = "pg_advisory_unlock(" in text and "finally:" in text
            assert released, f"{relative}: the lock is never released"
    assert settings >= 2, "the SET pattern no longer finds the SET LOCAL statements it should"
