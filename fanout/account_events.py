"""`integrated_account:*` events on Kafka: the `AccountEventSink` that provider_auth's status
transitions (`provider_auth.accounts.status`) publish through, and the `history_gap` events of the
change poller.

One CloudEvent per event, binary content mode, key = connection id, on
`LEDGERHOOK_TOPIC_ACCOUNT_EVENTS`; data as in docs/schemas/integrated_account.*.json (docs/events.md,
"Account events").
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aiokafka import AIOKafkaProducer

from fanout.cloudevents import EventRecord, binary_record
from fanout.timestamps import format_timestamp
from fanout.vocabulary import entity_name
from provider_auth.accounts.events import AccountEvent, AccountEventSink
from provider_auth.providers import Provider

__all__ = ["HISTORY_GAP", "AccountEventPublisher", "HistoryGap", "history_gap_record"]

HISTORY_GAP = "integrated_account:history_gap"

# Namespace of account event ids (uuid5): fixed forever, so a re-published event keeps its id.
_NAMESPACE = uuid.UUID("4c3d1b8e-5a47-4f0e-9a53-2f4d0c6b7e21")


class AccountEventPublisher(AccountEventSink):
    """Produces each account event and waits for the broker's acknowledgement (`acks=all`)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def publish(self, event: AccountEvent) -> None:
        """Produce `event`; return once the broker acknowledged it."""
        data: dict[str, Any] = {
            "tenant_id": event.tenant_id,
            "connection_id": event.connection_id,
            "provider": event.provider.value,
            "provider_account_id": event.provider_account_id,
            "reason": event.reason.value,
            "provider_error": event.provider_error,
            "occurred_at": format_timestamp(event.occurred_at),
        }
        record = binary_record(
            event_id=_event_id(event.type.value, event.connection_id, event.left_at),
            # The same source as the account's change events, and the subject docs/events.md names.
            source=f"/ledgerhook/{event.provider.value}/{event.provider_account_id}",
            event_type=event.type.value,
            subject=f"connection/{event.connection_id}",
            time=event.occurred_at,
            data=data,
            tenant_id=event.tenant_id,
            connection_id=event.connection_id,
            provider=event.provider.value,
        )
        await self._producer.send_and_wait(self._topic, record.value, key=record.key, headers=record.headers)


def _event_id(event_type: str, connection_id: str, left_at: datetime) -> str:
    # The connection and the instant of the state it leaves identify the transition: a retry after
    # a failed commit finds the same row state and so publishes the same id.
    return str(uuid.uuid5(_NAMESPACE, f"{event_type}|{connection_id}|{format_timestamp(left_at)}"))


@dataclass(frozen=True, slots=True)
class HistoryGap:
    """Changes of `entities` made in [lost_from, lost_until) that the provider no longer serves."""

    tenant_id: str
    connection_id: str
    provider: Provider
    provider_account_id: str
    # The provider's entity names; the event names their unified entities.
    entities: Sequence[str]
    lost_from: datetime
    lost_until: datetime
    # What asked for the lost window: a poll whose watermark was too old, or a backfill.
    origin: Literal["poll", "backfill"]
    occurred_at: datetime
    # Told apart from another gap of the same window (a backfill job's id; "" for a poll).
    job_id: str = ""


def history_gap_record(gap: HistoryGap) -> tuple[str, EventRecord]:
    """The event id and the CloudEvent of a history gap.

    The id comes from the connection, the origin, the job and the window's start: a poll repeated
    from the same watermark, or a resumed backfill, publishes the same id (dropped by dedupe).
    """
    entities = sorted({entity_name(gap.provider, entity)[0] for entity in gap.entities})
    ident = str(
        uuid.uuid5(
            _NAMESPACE,
            f"{HISTORY_GAP}|{gap.connection_id}|{gap.origin}|{gap.job_id}|{format_timestamp(gap.lost_from)}",
        )
    )
    data: dict[str, Any] = {
        "tenant_id": gap.tenant_id,
        "connection_id": gap.connection_id,
        "provider": gap.provider.value,
        "provider_account_id": gap.provider_account_id,
        "entities": entities,
        "lost_from": format_timestamp(gap.lost_from),
        "lost_until": format_timestamp(gap.lost_until),
        "origin": gap.origin,
        "occurred_at": format_timestamp(gap.occurred_at),
    }
    record = binary_record(
        event_id=ident,
        source=f"/ledgerhook/{gap.provider.value}/{gap.provider_account_id}",
        event_type=HISTORY_GAP,
        subject=f"connection/{gap.connection_id}",
        time=gap.occurred_at,
        data=data,
        tenant_id=gap.tenant_id,
        connection_id=gap.connection_id,
        provider=gap.provider.value,
    )
    return ident, record
