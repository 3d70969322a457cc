"""The audit log of the token lifecycle, in the `oauth_audit` table (gateway/runtime/migrations/0002).

One row per thing that happened to a grant: credentials stored, refreshed, rotated, failed, lost
response, race, needs_reauth, unavailable, recovered, reconnected, revoked, erased. The detail
holds expiries, versions, error codes and counts only: never a token, a secret or a fingerprint.
Rows older than the retention are pruned by the refresher.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
import orjson

__all__ = ["AuditAction", "AuditEntry", "history", "prune", "record"]

DetailValue = str | int | float | bool | None


class AuditAction(StrEnum):
    """What happened to a grant."""

    STORED = "stored"
    LINKED = "linked"
    REFRESHED = "refreshed"
    ROTATED = "rotated"
    FAILED = "failed"
    LOST_RESPONSE = "lost_response"
    RACE = "race"
    NEEDS_REAUTH = "needs_reauth"
    UNAVAILABLE = "unavailable"
    RECOVERED = "recovered"
    RECONNECTED = "reconnected"
    REVOKED = "revoked"
    ERASED = "erased"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit row."""

    at: datetime
    grant_id: str | None
    connection_id: str | None
    provider: str
    action: AuditAction
    detail: dict[str, Any]


_SECRET_WORDS = ("token", "secret", "assertion", "fingerprint", "password")


async def record(
    conn: asyncpg.Connection,
    *,
    provider: str,
    action: AuditAction,
    grant_id: str | None = None,
    connection_id: str | None = None,
    detail: Mapping[str, DetailValue] | None = None,
    at: datetime | None = None,
) -> None:
    """Append one entry, in the caller's transaction when there is one.

    Detail keys naming a secret are refused (a programming error), so a token cannot slip in by
    accident under an innocent-looking call.
    """
    values = dict(detail or {})
    for key in values:
        if any(word in key.lower() for word in _SECRET_WORDS) and not key.endswith(
            ("_at", "_in", "_version")
        ):
            raise ValueError(f"audit detail key {key!r} looks like a secret")
    await conn.execute(
        "INSERT INTO oauth_audit (at, grant_id, connection_id, provider, action, detail)"
        " VALUES (coalesce($1, now()), $2, $3, $4, $5, $6::jsonb)",
        at,
        grant_id,
        connection_id,
        provider,
        action.value,
        orjson.dumps(values).decode(),
    )


async def history(
    pool: asyncpg.Pool,
    *,
    connection_id: str | None = None,
    grant_id: str | None = None,
    limit: int = 50,
) -> list[AuditEntry]:
    """The newest entries (newest first) of a connection, a grant, or everything."""
    rows = await pool.fetch(
        "SELECT at, grant_id, connection_id, provider, action, detail FROM oauth_audit"
        " WHERE ($1::uuid IS NULL OR connection_id = $1 OR grant_id IN"
        "        (SELECT grant_id FROM oauth_connection_grants WHERE connection_id = $1))"
        " AND ($2::uuid IS NULL OR grant_id = $2)"
        " ORDER BY id DESC LIMIT $3",
        connection_id,
        grant_id,
        limit,
    )
    return [
        AuditEntry(
            at=r["at"],
            grant_id=str(r["grant_id"]) if r["grant_id"] else None,
            connection_id=str(r["connection_id"]) if r["connection_id"] else None,
            provider=r["provider"],
            action=AuditAction(r["action"]),
            detail=orjson.loads(r["detail"]),
        )
        for r in rows
    ]


async def prune(pool: asyncpg.Pool, older_than: datetime, batch: int = 5000) -> int:
    """Delete entries older than `older_than`, in batches; returns how many went."""
    total = 0
    while True:
        deleted = await pool.fetchval(
            "WITH gone AS (DELETE FROM oauth_audit WHERE id IN"
            " (SELECT id FROM oauth_audit WHERE at < $1 ORDER BY id LIMIT $2) RETURNING 1)"
            " SELECT count(*) FROM gone",
            older_than,
            batch,
        )
        total += int(deleted or 0)
        if not deleted or deleted < batch:
            return total
