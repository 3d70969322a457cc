"""Change events: the data of `accounting.<entity>.<operation>` CloudEvents and their deterministic ids.

Event id formula (documented in docs/events.md; consumers dedupe by it):

    uuid5(LEDGERHOOK_NAMESPACE,
          "<connection id>|<provider>|<provider account id>|<entity>|<entity id>|<operation>|<version>")

where <version> is the change's own timestamp (`occurred_at`, RFC 3339 UTC with microseconds) when the
provider gives one, else the provider's event id, else the SHA-256 of the raw delivery body. The same
change for the same connection therefore gets the same id whether it arrives once, is retried by the
provider, is replayed from the raw log, or is found by CDC (which reads the same record timestamp).
"""

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from fanout.changes import NormalizedChange
from fanout.cloudevents import EventRecord, binary_record
from fanout.timestamps import format_timestamp

# Fixed forever: changing it changes every event id.
LEDGERHOOK_NAMESPACE = uuid.UUID("6f1d2c3a-8b4e-5a7f-9c0d-1e2f3a4b5c6d")

Origin = Literal["webhook", "cdc"]


@dataclass(frozen=True, slots=True)
class Recipient:
    """The connection an event is for."""

    connection_id: str
    tenant_id: str
    provider: str
    provider_account_id: str


def event_id(recipient: Recipient, change: NormalizedChange, body_digest: str | None = None) -> str:
    """The deterministic id of one change for one connection (see the module docstring)."""
    if change.occurred_at is not None:
        version = change.occurred_at.isoformat(timespec="microseconds")
    else:
        version = change.event_id or body_digest or ""
    name = "|".join(
        [
            recipient.connection_id,
            recipient.provider,
            recipient.provider_account_id,
            change.entity,
            change.entity_id,
            change.operation,
            version,
        ]
    )
    return str(uuid.uuid5(LEDGERHOOK_NAMESPACE, name))


def body_digest(body: bytes) -> str:
    """The version of last resort: a hash of the delivery, identical when the provider retries it."""
    return hashlib.sha256(body).hexdigest()


def change_data(
    recipient: Recipient,
    change: NormalizedChange,
    origin: Origin,
    delivery_id: str | None,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON data of a change event (schema: docs/schemas/accounting.change.json)."""
    data: dict[str, Any] = {
        "tenant_id": recipient.tenant_id,
        "connection_id": recipient.connection_id,
        "provider": recipient.provider,
        "provider_account_id": recipient.provider_account_id,
        "entity": change.entity,
        "provider_entity": change.provider_entity,
        "entity_id": change.entity_id,
        "operation": change.operation,
        "occurred_at": format_timestamp(change.occurred_at) if change.occurred_at else None,
        "origin": origin,
        "delivery_id": delivery_id,
    }
    if change.merged_into is not None:
        data["merged_into"] = change.merged_into
    if change.contact_type is not None:
        data["contact_type"] = change.contact_type
    if change.attributes:
        data["attributes"] = dict(change.attributes)
    if record is not None:
        data["record"] = record
    return data


def change_event(
    recipient: Recipient,
    change: NormalizedChange,
    *,
    origin: Origin,
    delivery_id: str | None,
    received_at: datetime,
    body_digest: str | None = None,
    record: dict[str, Any] | None = None,
) -> EventRecord:
    """The CloudEvent record for one change and one connection."""
    return binary_record(
        event_id=event_id(recipient, change, body_digest),
        source=f"/ledgerhook/{recipient.provider}/{recipient.provider_account_id}",
        event_type=f"accounting.{change.entity}.{change.operation}",
        subject=f"{change.entity}/{change.entity_id}",
        time=change.occurred_at or received_at,
        data=change_data(recipient, change, origin, delivery_id, record),
        tenant_id=recipient.tenant_id,
        connection_id=recipient.connection_id,
        provider=recipient.provider,
    )
