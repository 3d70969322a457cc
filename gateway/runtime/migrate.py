"""Schema migrations: numbered SQL files in `gateway/runtime/migrations`, applied in order, each once.

Safe to run from several processes at once: an advisory lock serialises them.
"""

import importlib.resources
import logging

import asyncpg

log = logging.getLogger("ledgerhook.migrate")

_LOCK_KEY = 0x4C6564676572  # "Ledger": one advisory lock id for migrations


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every migration, in order."""
    folder = importlib.resources.files("gateway.runtime") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; returns the names applied."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["name"] for r in await connection.fetch("SELECT name FROM schema_migrations")}
            applied = []
            for name, sql in migration_files():
                if name in done:
                    continue
                async with connection.transaction():
                    await connection.execute(sql)
                    await connection.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                log.info("migration applied", extra={"migration": name})
                applied.append(name)
            return applied
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await connection.close()
