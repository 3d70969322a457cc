"""The `integrated_account:*` events of connections, and the interfaces they travel through.

provider_auth decides *when* a connection breaks or comes back (the token manager calls
`ConnectionEvents`); `provider_auth.accounts.status` moves the connection's status and hands each
real transition, as an `AccountEvent`, to an `AccountEventSink` that the wiring (gateway) passes in
(`fanout.account_events` publishes them on Kafka). Schemas and ids: docs/events.md.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

import asyncpg

from provider_auth.providers import Provider

__all__ = [
    "AccountEvent",
    "AccountEventSink",
    "AccountEventType",
    "AuthFailure",
    "AuthFailureReason",
    "ConnectionEvents",
    "ReactivationReason",
]


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


class AccountEventType(StrEnum):
    """The CloudEvents `type` of a connection's status transition."""

    AUTHENTICATION_ERROR = "integrated_account:authentication_error"
    REACTIVATED = "integrated_account:reactivated"


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """A grant that stopped working, as reported for each of its connections."""

    provider: str
    reason: AuthFailureReason
    # The provider's own error code and description, when it gave one (never a token).
    provider_error: str | None
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """One connection's real status transition, to be published."""

    type: AccountEventType
    connection_id: str
    tenant_id: str
    provider: Provider
    provider_account_id: str
    reason: AuthFailureReason | ReactivationReason
    # The provider's own error code and description, when it gave one (never a token).
    provider_error: str | None
    occurred_at: datetime
    # When the connection entered the state this transition leaves. With the type and the connection
    # it identifies the transition: a retry after a failed commit finds the same value again.
    left_at: datetime


class AccountEventSink(Protocol):
    """Where status transitions are published."""

    async def publish(self, event: AccountEvent) -> None:
        """Publish `event`; return only once the broker acknowledged it."""
        ...


class ConnectionEvents(Protocol):
    """Moves connections between working and broken, publishing one event per real transition.

    Both methods are called inside the caller's transaction (the one holding the grant's row lock),
    on that transaction's connection: the status change is made in `conn`, and each event is
    acknowledged before the method returns, so a crash before the commit publishes nothing that the
    database does not also say (at worst an event is published again, with the same id). A
    connection already in the target state yields no event.
    """

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
