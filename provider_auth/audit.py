"""The audit trail, in the `audit_log` table (gateway/runtime/migrations/0009; docs/admin-api.md,
"Audit trail").

Two kinds of entries share it. Admin changes (`record_change`): who (a token's configured name,
never the token), how (api, cli, console), from where, what and the change itself. The token
lifecycle (`record`): credentials stored, refreshed, rotated, failed, lost response, race,
needs_reauth, unavailable, recovered, reconnected, revoked, erased, by the actor `ledgerhook`, as
`token.<action>`. Details hold expiries, versions, error codes, counts and before/after values of
plain members only: never a token, a secret or a fingerprint. Rows older than the retention are
pruned by the refresher (`LEDGERHOOK_AUDIT_RETENTION_DAYS`). `page` reads the trail, newest first,
for the admin API and the console.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg
import orjson

from provider_auth.queries import fetch_planned_per_call

__all__ = [
    "SYSTEM_ACTOR",
    "AuditAction",
    "AuditEntry",
    "AuditFilters",
    "AuditRecord",
    "history",
    "page",
    "prune",
    "record",
    "record_change",
]

log = logging.getLogger("ledgerhook.audit")

SYSTEM_ACTOR = "ledgerhook"  # the actor of what the token layer does on its own

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


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One row of the trail, of either kind, as `page` reads it."""

    id: int
    at: datetime
    actor: str
    role: str | None
    via: str
    client: str | None
    action: str
    target: str
    connection_id: str | None
    grant_id: str | None
    provider: str | None
    changes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """What `page` keeps; None leaves a filter out. `action` ending in `.` is a prefix
    (`connection.`); `connection_id` also finds the token entries of that connection's grant;
    `since` is inclusive, `until` exclusive."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    connection_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


_SECRET_WORDS = ("token", "secret", "assertion", "fingerprint", "password")


def _refuse_secret_keys(keys: Iterable[str]) -> None:
    """A detail key naming a secret is a programming error: a token cannot slip in by accident."""
    for key in keys:
        if any(word in key.lower() for word in _SECRET_WORDS) and not key.endswith(
            ("_at", "_in", "_version", "_changed")
        ):
            raise ValueError(f"audit detail key {key!r} looks like a secret")


async def record_change(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    actor: str,
    role: str | None,
    via: str,
    client: str | None,
    action: str,
    target: str,
    changes: Mapping[str, Any] | None = None,
    connection_id: str | None = None,
    provider: str | None = None,
) -> None:
    """Append one admin change, in the caller's transaction when `conn` is in one.

    `changes` maps a member to `{"from": old, "to": new}` (or another plain value); a secret's key
    must end in `_changed` (`webhook_secrets_changed: true`), so no secret value can be recorded.
    """
    values = dict(changes or {})
    _refuse_secret_keys(values)
    await conn.execute(
        "INSERT INTO audit_log (actor, role, via, client, action, target, connection_id, provider, changes)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)",
        actor,
        role,
        via,
        client,
        action,
        target,
        connection_id,
        provider,
        orjson.dumps(values).decode(),
    )


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
    _refuse_secret_keys(values)
    target = f"connection:{connection_id}" if connection_id else f"grant:{grant_id}"
    await conn.execute(
        "INSERT INTO audit_log (at, actor, via, action, target, grant_id, connection_id, provider, changes)"
        " VALUES (coalesce($1, now()), $2, 'system', $3, $4, $5, $6, $7, $8::jsonb)",
        at,
        SYSTEM_ACTOR,
        f"token.{action.value}",
        target,
        grant_id,
        connection_id,
        provider,
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
        "SELECT at, grant_id, connection_id, provider, substr(action, 7) AS action, changes AS detail"
        " FROM audit_log WHERE action LIKE 'token.%'"
        " AND ($1::uuid IS NULL OR connection_id = $1 OR grant_id IN"
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


_LAST_ID = 2**63 - 1  # above every id (bigserial): where the newest page starts

# Each condition `page` may write, by name: a closed set, so only these texts reach the SQL; $n is
# where its value goes.
_CONDITIONS = {
    "actor": "actor = $n",
    "action": "action = $n",
    "action_prefix": "starts_with(action, $n)",
    "target": "target = $n",
    "connection_id": "(connection_id = $n OR grant_id IN"
    " (SELECT grant_id FROM oauth_connection_grants WHERE connection_id = $n))",
    "since": "at >= $n",
    "until": "at < $n",
}


def page_query(conditions: Sequence[str]) -> str:
    """The SQL text of a page of the trail under `conditions` (names of _CONDITIONS, in that order):
    their values are $1..$n, then the cursor (an id; older rows) and the limit. One text per
    combination, so each is planned as what it is, never one text with optional conditions."""
    unknown = [name for name in conditions if name not in _CONDITIONS]
    if unknown or list(conditions) != sorted(conditions, key=list(_CONDITIONS).index):
        raise ValueError(f"audit conditions must be among {list(_CONDITIONS)}, in that order: {conditions}")
    parts = [_CONDITIONS[name].replace("$n", f"${n}") for n, name in enumerate(conditions, start=1)]
    parts.append(f"id < ${len(conditions) + 1}")
    return (
        "SELECT id, at, actor, role, via, client, action, target,"
        f" connection_id, grant_id, provider, changes FROM audit_log WHERE {' AND '.join(parts)}"
        f" ORDER BY id DESC LIMIT ${len(conditions) + 2}"
    )


def _conditions(filters: AuditFilters) -> dict[str, Any]:
    """The conditions `filters` asks for, in _CONDITIONS order, with their values."""
    action = "action_prefix" if filters.action is not None and filters.action.endswith(".") else "action"
    wanted = {
        "actor": filters.actor,
        action: filters.action,
        "target": filters.target,
        "connection_id": filters.connection_id,
        "since": filters.since,
        "until": filters.until,
    }
    return {name: value for name, value in wanted.items() if value is not None}


async def page(
    pool: asyncpg.Pool | asyncpg.Connection,
    filters: AuditFilters | None = None,
    *,
    after_id: int | None = None,
    limit: int = 50,
) -> list[AuditRecord]:
    """Up to `limit` entries matching `filters`, newest first, all older than the entry `after_id`
    when given (keyset paging: ask for one more than a page to learn whether another follows).

    Each filter combination has a SQL text of its own (`page_query`), planned for the values of
    each call, as the connection list is (docs/architecture.md, "Listing connections")."""
    given = _conditions(filters or AuditFilters())
    cursor = _LAST_ID if after_id is None else after_id
    sql = page_query(tuple(given))
    rows = await fetch_planned_per_call(pool, sql, *given.values(), cursor, limit)
    return [
        AuditRecord(
            id=r["id"],
            at=r["at"],
            actor=r["actor"],
            role=r["role"],
            via=r["via"],
            client=r["client"],
            action=r["action"],
            target=r["target"],
            connection_id=str(r["connection_id"]) if r["connection_id"] else None,
            grant_id=str(r["grant_id"]) if r["grant_id"] else None,
            provider=r["provider"],
            changes=orjson.loads(r["changes"]),
        )
        for r in rows
    ]


async def prune(pool: asyncpg.Pool, older_than: datetime, batch: int = 5000) -> int:
    """Delete entries older than `older_than`, in batches; returns how many went."""
    total = 0
    while True:
        deleted = await pool.fetchval(
            "WITH gone AS (DELETE FROM audit_log WHERE id IN"
            " (SELECT id FROM audit_log WHERE at < $1 ORDER BY id LIMIT $2) RETURNING 1)"
            " SELECT count(*) FROM gone",
            older_than,
            batch,
        )
        total += int(deleted or 0)
        if not deleted or deleted < batch:
            return total


class AuditPruner:
    """Periodic task: delete entries older than `retention` now, then every `interval`, until `stop`
    is set. A failed round is logged and tried again next time."""

    def __init__(self, pool: asyncpg.Pool, retention: timedelta, interval: timedelta) -> None:
        self._pool = pool
        self._retention = retention
        self._interval = interval.total_seconds()

    async def run(self, stop: asyncio.Event) -> None:
        """Prune until `stop` is set."""
        while not stop.is_set():
            try:
                pruned = await prune(self._pool, datetime.now(UTC) - self._retention)
                if pruned:
                    log.info("audit trail pruned", extra={"rows": pruned})
            except Exception as exc:  # best effort: the next round tries again
                log.warning("audit trail prune failed", extra={"error": type(exc).__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
