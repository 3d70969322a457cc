"""The interface through which provider_auth reports connection state changes.

provider_auth decides *when* a connection breaks or comes back; it does not know how connections
are stored or how events are published. Whoever wires it (gateway) passes an implementation
(`fanout.account_events.AccountEvents`) that moves the connections' status and publishes
`integrated_account:authentication_error` / `integrated_account:reactivated`.

Both methods are called inside provider_auth's own transaction (the one holding the grant's row
lock), on that transaction's connection: the implementation must do its status change in `conn`
and return only once any event it publishes is acknowledged by the broker, so that a crash before
the commit publishes nothing that the database does not also say (at worst an event is published
again with the same id). Each must be idempotent per transition: a connection already in the target
state yields no event.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

import asyncpg

__all__ = ["AuthFailure", "AuthFailureReason", "ConnectionEvents", "ReactivationReason"]


class AuthFailureReason(StrEnum):
    """Why a connection's credentials stopped working (the event's `reason`)."""

    INVALID_GRANT = "invalid_grant"
    INVALID_CLIENT = "invalid_client"
    UNAUTHORIZED_CLIENT = "unauthorized_client"
    REFRESH_UNAVAILABLE = "refresh_unavailable"


class ReactivationReason(StrEnum):
    """Why a connection works again (the event's `reason`)."""

    RECONNECTED = "reconnected"  # new credentials were handed over
    RECOVERED = "recovered"  # the provider answered again after a `refresh_unavailable` outage


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """A grant that stopped working, as reported for each of its connections."""

    provider: str
    reason: AuthFailureReason
    # The provider's own error code and description, when it gave one (never a token).
    provider_error: str | None
    occurred_at: datetime


class ConnectionEvents(Protocol):
    """Moves connections between working and broken, publishing one event per real transition."""

    async def broken(
        self, conn: asyncpg.Connection, connection_ids: Sequence[str], failure: AuthFailure
    ) -> list[str]:
        """Mark the connections broken; returns the ids that changed state (and got an event)."""
        ...

    async def reactivated(
        self,
        conn: asyncpg.Connection,
        connection_ids: Sequence[str],
        reason: ReactivationReason,
        occurred_at: datetime,
    ) -> list[str]:
        """Mark broken connections working again; returns the ids that changed (and got an event)."""
        ...
