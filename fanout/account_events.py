"""`integrated_account:*` events: provider_auth's `ConnectionEvents`, on the connections table and Kafka.

provider_auth decides when a grant breaks or works again and calls this inside its transaction (the
one holding the grant's row lock). Here each connection's status moves with a conditional UPDATE
(`... WHERE status <> 'needs_reauth' RETURNING`): only a connection that really changes state comes
back, so exactly one event is published per transition however many processes see the same
failure. Each event is produced and acknowledged by the broker (`acks=all` on the process's
producer) before this returns, so before the caller commits: a crash in between can at worst
publish an event again, with the same id (the id is derived from the connection and the state it
leaves, see `_event_id`), never lose one.

Events (CloudEvents binary mode, key = connection id, on `LEDGERHOOK_TOPIC_ACCOUNT_EVENTS`):
`integrated_account:authentication_error` and `integrated_account:reactivated`, data as in
docs/schemas/integrated_account.*.json.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from fanout.cloudevents import binary_record
from fanout.timestamps import format_timestamp
from provider_auth.accounts.events import AuthFailure, ConnectionEvents, ReactivationReason

__all__ = ["AUTHENTICATION_ERROR", "REACTIVATED", "SOURCE", "AccountEvents"]

AUTHENTICATION_ERROR = "integrated_account:authentication_error"
REACTIVATED = "integrated_account:reactivated"
SOURCE = "ledgerhook/provider_auth"
# Namespace of account event ids (uuid5): fixed forever, so a re-published event keeps its id.
_NAMESPACE = uuid.UUID("4c3d1b8e-5a47-4f0e-9a53-2f4d0c6b7e21")

# A connection is broken from any state but these: already broken, or disconnected for good.
_BREAKABLE = "status NOT IN ('needs_reauth', 'disconnected')"


class AccountEvents(ConnectionEvents):
    """Moves connections to `needs_reauth` and back to `active`, one event per transition."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, *, source: str = SOURCE) -> None:
        self._producer = producer
        self._topic = topic
        self._source = source

    async def broken(
        self, conn: asyncpg.Connection, connection_ids: Sequence[str], failure: AuthFailure
    ) -> list[str]:
        """Mark the connections `needs_reauth`; publish authentication_error for those that changed."""
        if not connection_ids:
            return []
        rows = await conn.fetch(
            "WITH before AS ("
            "  SELECT id, updated_at FROM connections"
            f"  WHERE id = ANY($1::uuid[]) AND {_BREAKABLE} ORDER BY id FOR UPDATE)"
            " UPDATE connections c SET status = 'needs_reauth', updated_at = now() FROM before"
            " WHERE c.id = before.id"
            " RETURNING c.id, c.tenant_id, c.provider, c.provider_account_id, before.updated_at AS left_at",
            list(connection_ids),
        )
        for row in rows:
            await self._publish(
                AUTHENTICATION_ERROR,
                row,
                occurred_at=failure.occurred_at,
                reason=failure.reason.value,
                provider_error=failure.provider_error,
            )
        return [str(r["id"]) for r in rows]

    async def reactivated(
        self,
        conn: asyncpg.Connection,
        connection_ids: Sequence[str],
        reason: ReactivationReason,
        occurred_at: datetime,
    ) -> list[str]:
        """Mark `needs_reauth` connections `active` again; publish reactivated for those."""
        if not connection_ids:
            return []
        rows = await conn.fetch(
            "WITH before AS ("
            "  SELECT id, updated_at FROM connections"
            "  WHERE id = ANY($1::uuid[]) AND status = 'needs_reauth' ORDER BY id FOR UPDATE)"
            " UPDATE connections c SET status = 'active', updated_at = now() FROM before"
            " WHERE c.id = before.id"
            " RETURNING c.id, c.tenant_id, c.provider, c.provider_account_id, before.updated_at AS left_at",
            list(connection_ids),
        )
        for row in rows:
            await self._publish(
                REACTIVATED, row, occurred_at=occurred_at, reason=reason.value, provider_error=None
            )
        return [str(r["id"]) for r in rows]

    async def _publish(
        self,
        event_type: str,
        row: asyncpg.Record,
        *,
        occurred_at: datetime,
        reason: str,
        provider_error: str | None,
    ) -> None:
        connection_id = str(row["id"])
        data: dict[str, Any] = {
            "tenant_id": row["tenant_id"],
            "connection_id": connection_id,
            "provider": row["provider"],
            "provider_account_id": row["provider_account_id"],
            "reason": reason,
            "provider_error": provider_error,
            "occurred_at": format_timestamp(occurred_at),
        }
        record = binary_record(
            event_id=_event_id(event_type, connection_id, row["left_at"]),
            source=self._source,
            event_type=event_type,
            subject=connection_id,
            time=occurred_at,
            data=data,
            tenant_id=row["tenant_id"],
            connection_id=connection_id,
            provider=row["provider"],
        )
        await self._producer.send_and_wait(self._topic, record.value, key=record.key, headers=record.headers)


def _event_id(event_type: str, connection_id: str, left_at: datetime) -> str:
    # The connection and the instant of the state it leaves identify the transition: a retry after
    # a failed commit finds the same row state and so publishes the same id.
    return str(uuid.uuid5(_NAMESPACE, f"{event_type}|{connection_id}|{format_timestamp(left_at)}"))
