"""Running list queries so each call is planned for its own values (a custom plan), whatever
PostgreSQL's plan cache would otherwise settle on: the connection list and the audit trail use it."""

from typing import Any

import asyncpg

__all__ = ["fetch_planned_per_call"]


async def fetch_planned_per_call(
    db: asyncpg.Pool | asyncpg.Connection, sql: str, *args: Any
) -> list[asyncpg.Record]:
    """The rows of `sql`, planned for these very `args`, in a transaction of its own (in a caller's
    transaction, the setting lasts until that one ends).

    After five calls of a prepared statement PostgreSQL may keep one generic plan for every value:
    for a list query that is the plan of a common value (walk the primary key, keep what matches),
    which reads most of the table for a rare one (a status few connections have). A custom plan
    costs a planning per call, small next to such a page.
    """
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await fetch_planned_per_call(conn, sql, *args)
    async with db.transaction():
        await db.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        records: list[asyncpg.Record] = await db.fetch(sql, *args)
        return records
