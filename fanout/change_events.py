"""Change events: the data of `accounting.<entity>.<operation>` CloudEvents and their deterministic ids.

The same change for the same connection gets the same id whether it arrives once, is retried by the
provider, is replayed from the raw log or is found by polling; the formula, which consumers rely on
to drop repeats, is in docs/events.md, "Event ids and what consumers should do".
"""

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

import orjson

from fanout.changes import NormalizedChange
from fanout.cloudevents import CONTENT_TYPE, SPEC_VERSION, EventRecord
from fanout.timestamps import format_timestamp

# Fixed forever: changing it changes every event id.
LEDGERHOOK_NAMESPACE = uuid.UUID("6f1d2c3a-8b4e-5a7f-9c0d-1e2f3a4b5c6d")

Origin = Literal["webhook", "poll", "backfill"]


@dataclass(frozen=True, slots=True)
class Recipient:
    """The connection an event is for."""

    connection_id: str
    tenant_id: str
    provider: str
    provider_account_id: str


# RFC 4122 name-based UUID, version 5: the namespace's SHA-1 state is computed once.
_NAMESPACE_SHA1 = hashlib.sha1(LEDGERHOOK_NAMESPACE.bytes, usedforsecurity=False)


# The RFC 4122 variant bits (10xx) set on the high nibble of byte 8, by its hex digit.
_VARIANT = {digit: "89ab"[int(digit, 16) & 0x3] for digit in "0123456789abcdef"}


def _uuid5(name: str) -> str:
    """`str(uuid.uuid5(LEDGERHOOK_NAMESPACE, name))` without building UUID objects."""
    digest = _NAMESPACE_SHA1.copy()
    digest.update(name.encode())
    text = digest.hexdigest()
    # Version 5 replaces the high nibble of byte 6 (hex digit 12); the variant, that of byte 8.
    return f"{text[:8]}-{text[8:12]}-5{text[13:16]}-{_VARIANT[text[16]]}{text[17:20]}-{text[20:32]}"


def _version(change: NormalizedChange, body_digest: str | None) -> str:
    if change.occurred_at is not None:
        return change.occurred_at.isoformat(timespec="microseconds")
    return change.event_id or body_digest or ""


def _occurred_and_version(change: NormalizedChange, body_digest: str | None) -> tuple[str | None, str]:
    """`(format_timestamp(occurred_at), _version(...))`, from one isoformat when the time is UTC."""
    occurred = change.occurred_at
    if occurred is None:
        return None, change.event_id or body_digest or ""
    version = occurred.isoformat(timespec="microseconds")
    if occurred.tzinfo is not UTC:
        return format_timestamp(occurred), version
    text = version[:-6]  # without +00:00
    return (text if occurred.microsecond % 1000 else text[:-3]) + "Z", version


def event_id(recipient: Recipient, change: NormalizedChange, body_digest: str | None = None) -> str:
    """The deterministic id of one change for one connection (see the module docstring)."""
    name = "|".join(
        [
            recipient.connection_id,
            recipient.provider,
            recipient.provider_account_id,
            change.entity,
            change.entity_id,
            change.operation,
            _version(change, body_digest),
        ]
    )
    return _uuid5(name)


def body_digest(body: bytes) -> str:
    """The version of last resort: a hash of the delivery, identical when the provider retries it."""
    return hashlib.sha256(body).hexdigest()


def _recipient_data(recipient: Recipient) -> dict[str, Any]:
    # The leading fields of the data: the part that depends on the connection only.
    return {
        "tenant_id": recipient.tenant_id,
        "connection_id": recipient.connection_id,
        "provider": recipient.provider,
        "provider_account_id": recipient.provider_account_id,
    }


def _change_data(
    change: NormalizedChange,
    origin: Origin,
    delivery_id: str | None,
    record: dict[str, Any] | None,
    occurred_at: str | None,
) -> dict[str, Any]:
    # The rest of the data: the part that depends on the change only.
    data: dict[str, Any] = {
        "entity": change.entity,
        "provider_entity": change.provider_entity,
        "entity_id": change.entity_id,
        "operation": change.operation,
        "occurred_at": occurred_at,
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


@dataclass(frozen=True, slots=True)
class _RecipientParts:
    """What every event for one connection shares, encoded once."""

    id_prefix: str
    key: bytes
    data_prefix: bytes  # the JSON object of `_recipient_data` without its closing brace
    source: tuple[str, bytes]
    tenant_id: tuple[str, bytes]
    connection_id: tuple[str, bytes]
    provider: tuple[str, bytes]
    partition_key: tuple[str, bytes]


@lru_cache(maxsize=16_384)
def _recipient_parts(recipient: Recipient) -> _RecipientParts:
    connection_id = recipient.connection_id.encode()
    return _RecipientParts(
        id_prefix=f"{recipient.connection_id}|{recipient.provider}|{recipient.provider_account_id}|",
        key=connection_id,
        data_prefix=orjson.dumps(_recipient_data(recipient))[:-1],
        source=("ce_source", f"/ledgerhook/{recipient.provider}/{recipient.provider_account_id}".encode()),
        tenant_id=("ce_tenantid", recipient.tenant_id.encode()),
        connection_id=("ce_connectionid", connection_id),
        provider=("ce_provider", recipient.provider.encode()),
        partition_key=("ce_partitionkey", connection_id),
    )


_SPEC_VERSION = ("ce_specversion", SPEC_VERSION.encode())
_CONTENT_TYPE = ("content-type", CONTENT_TYPE.encode())


def change_events(
    recipients: Sequence[Recipient],
    change: NormalizedChange,
    *,
    origin: Origin,
    delivery_id: str | None,
    received_at: datetime,
    body_digest: str | None = None,
    record: dict[str, Any] | None = None,
    trace: Sequence[tuple[str, bytes]] = (),
) -> list[tuple[str, EventRecord]]:
    """`(event id, CloudEvent record)` for each recipient, in order (binary content mode, as
    `fanout.cloudevents.binary_record` builds one); `trace` (`fanout.cloudevents.tracing_extension`)
    ends every record's headers.

    What depends on the change only (its id suffix, time, type, subject, most of the data) is built
    once for all recipients.
    """
    occurred_at, version = _occurred_and_version(change, body_digest)
    id_suffix = "|".join([change.entity, change.entity_id, change.operation, version])
    event_type = ("ce_type", f"accounting.{change.entity}.{change.operation}".encode())
    time = ("ce_time", (occurred_at or format_timestamp(received_at)).encode())
    subject = ("ce_subject", f"{change.entity}/{change.entity_id}".encode())
    # `,` then the change's fields and the closing brace: appended to a recipient's data prefix.
    data_suffix = b"," + orjson.dumps(_change_data(change, origin, delivery_id, record, occurred_at))[1:]
    events: list[tuple[str, EventRecord]] = []
    for recipient in recipients:
        parts = _recipient_parts(recipient)
        ident = _uuid5(parts.id_prefix + id_suffix)
        headers = [
            _SPEC_VERSION,
            ("ce_id", ident.encode()),
            parts.source,
            event_type,
            time,
            subject,
            _CONTENT_TYPE,
            parts.tenant_id,
            parts.connection_id,
            parts.provider,
            parts.partition_key,
        ]
        if trace:
            headers.extend(trace)
        events.append((ident, EventRecord(parts.key, parts.data_prefix + data_suffix, headers)))
    return events
