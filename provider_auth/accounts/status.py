"""Connection status transitions driven by credentials: broken (`needs_reauth`) and working again.

Each transition is a conditional UPDATE under the row lock: only a connection that really changes
state comes back, so exactly one event is handed to the sink per transition however many processes
see the same failure. See docs/events.md for the events and docs/tokens.md for when they happen.
"""

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from provider_auth.accounts.events import (
    AccountEvent,
    AccountEventSink,
    AccountEventType,
    AuthFailure,
    AuthFailureReason,
    ConnectionEvents,
    ReactivationReason,
)
from provider_auth.providers import Provider

__all__ = ["StatusTransitions"]

# A connection is broken from any state but these: already broken, or disconnected.
_BREAKABLE = "status NOT IN ('needs_reauth', 'disconnected')"

# Each returns the connections that changed, with `left_at`: when they entered the state they leave.
_BREAK = (
    "WITH before AS ("
    "  SELECT id, updated_at FROM connections"
    f"  WHERE id = ANY($1::uuid[]) AND {_BREAKABLE} ORDER BY id FOR UPDATE)"
    " UPDATE connections c SET status = 'needs_reauth', updated_at = now() FROM before"
    " WHERE c.id = before.id"
    " RETURNING c.id, c.tenant_id, c.provider, c.provider_account_id, before.updated_at AS left_at"
)
_REACTIVATE = (
    "WITH before AS ("
    "  SELECT id, updated_at FROM connections"
    "  WHERE id = ANY($1::uuid[]) AND status = 'needs_reauth' ORDER BY id FOR UPDATE)"
    " UPDATE connections c SET status = 'active', updated_at = now() FROM before"
    " WHERE c.id = before.id"
    " RETURNING c.id, c.tenant_id, c.provider, c.provider_account_id, before.updated_at AS left_at"
)


class StatusTransitions(ConnectionEvents):
    """Moves connections to `needs_reauth` and back to `active`, one event per transition."""

    def __init__(self, sink: AccountEventSink) -> None:
        self._sink = sink

    async def broken(
        self, conn: asyncpg.Connection, connection_ids: Sequence[str], failure: AuthFailure
    ) -> list[str]:
        """Mark the connections `needs_reauth`; an authentication_error for each that changed."""
        if not connection_ids:
            return []
        rows = await conn.fetch(_BREAK, list(connection_ids))
        for row in rows:
            await self._sink.publish(
                _event(
                    AccountEventType.AUTHENTICATION_ERROR,
                    row,
                    failure.reason,
                    failure.provider_error,
                    failure.occurred_at,
                )
            )
        return [str(row["id"]) for row in rows]

    async def reactivated(
        self,
        conn: asyncpg.Connection,
        connection_ids: Sequence[str],
        reason: ReactivationReason,
        occurred_at: datetime,
    ) -> list[str]:
        """Mark `needs_reauth` connections `active` again; a reactivated event for each of them."""
        if not connection_ids:
            return []
        rows = await conn.fetch(_REACTIVATE, list(connection_ids))
        for row in rows:
            await self._sink.publish(_event(AccountEventType.REACTIVATED, row, reason, None, occurred_at))
        return [str(row["id"]) for row in rows]


def _event(
    event_type: AccountEventType,
    row: asyncpg.Record,
    reason: AuthFailureReason | ReactivationReason,
    provider_error: str | None,
    occurred_at: datetime,
) -> AccountEvent:
    return AccountEvent(
        type=event_type,
        connection_id=str(row["id"]),
        tenant_id=row["tenant_id"],
        provider=Provider(row["provider"]),
        provider_account_id=row["provider_account_id"],
        reason=reason,
        provider_error=provider_error,
        occurred_at=occurred_at,
        left_at=row["left_at"],
    )
