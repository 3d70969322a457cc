"""`integrated_account:*` events on Kafka: the `AccountEventSink` that provider_auth's status
transitions (`provider_auth.accounts.status`) publish through.

One CloudEvent per transition, binary content mode, key = connection id, on
`LEDGERHOOK_TOPIC_ACCOUNT_EVENTS`; data as in docs/schemas/integrated_account.*.json (docs/events.md,
"Account events").
"""

import uuid
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from fanout.cloudevents import binary_record
from fanout.timestamps import format_timestamp
from provider_auth.accounts.events import AccountEvent, AccountEventSink

__all__ = ["AccountEventPublisher"]

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
