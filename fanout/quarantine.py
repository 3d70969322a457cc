"""Quarantine: raw records the worker could not (fully) route, kept with the reason, re-drivable.

A quarantine record is the original raw record (same key, value and headers) plus the
`ledgerhook-quarantine-*` headers that say why, from where and when (docs/events.md,
"`ledgerhook.quarantine`"); with tracing on, its `traceparent` is the worker's span that quarantined
it. `fanout.redrive` strips the quarantine headers and feeds the record back to the raw topic, where
it continues that trace.
"""

import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import StrEnum

from fanout.change_events import LEDGERHOOK_NAMESPACE
from fanout.dedupe import Outgoing
from fanout.raw import H_TRACEPARENT, H_TRACESTATE
from fanout.timestamps import format_timestamp

H_REASON = "ledgerhook-quarantine-reason"
H_DETAIL = "ledgerhook-quarantine-detail"
H_SOURCE_TOPIC = "ledgerhook-quarantine-topic"
H_SOURCE_PARTITION = "ledgerhook-quarantine-partition"
H_SOURCE_OFFSET = "ledgerhook-quarantine-offset"
H_QUARANTINED_AT = "ledgerhook-quarantined-at"
QUARANTINE_HEADERS = frozenset(
    {H_REASON, H_DETAIL, H_SOURCE_TOPIC, H_SOURCE_PARTITION, H_SOURCE_OFFSET, H_QUARANTINED_AT}
)

_TRACE_HEADERS = frozenset({H_TRACEPARENT, H_TRACESTATE})

DETAIL_LIMIT = 500
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


class Reason(StrEnum):
    """Why a raw record was quarantined."""

    UNPARSEABLE = "unparseable"  # the body is not the provider's format
    UNKNOWN_ACCOUNT = "unknown_account"  # a provider account no connection is registered for
    DISCONNECTED = "disconnected"  # every connection of the account is disconnected
    UNKNOWN_CONNECTION = "unknown_connection"  # the connection id header names no connection
    UNKNOWN_PROVIDER = "unknown_provider"  # the provider header is missing or names no provider
    PAUSED = "paused"  # changes for a paused connection, held until it is resumed


def safe_detail(text: str) -> str:
    """Printable ASCII only, bounded: a detail may quote ids from the payload, never run on."""
    cleaned = _UNPRINTABLE.sub("?", text).strip()
    return cleaned if len(cleaned) <= DETAIL_LIMIT else cleaned[: DETAIL_LIMIT - 3] + "..."


def quarantine_id(topic: str, partition: int, offset: int) -> str:
    """The dedupe id of a quarantine record: its source position, so a reprocessed batch adds none."""
    return str(uuid.uuid5(LEDGERHOOK_NAMESPACE, f"quarantine|{topic}|{partition}|{offset}"))


def quarantine_record(
    *,
    quarantine_topic: str,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    headers: Iterable[tuple[str, bytes]],
    reason: Reason,
    detail: str,
    now: datetime | None = None,
    trace: Sequence[tuple[str, bytes]] = (),
) -> Outgoing:
    """The quarantine record for one raw record: the original plus the quarantine headers; `trace`
    (`fanout.raw.trace_headers`), when given, replaces the record's own trace context."""
    # A record quarantined again after a redrive gets fresh quarantine headers, not a second set.
    dropped = QUARANTINE_HEADERS | _TRACE_HEADERS if trace else QUARANTINE_HEADERS
    kept = [(name, value) for name, value in headers if name not in dropped]
    added = [
        (H_REASON, reason.value),
        (H_DETAIL, safe_detail(detail)),
        (H_SOURCE_TOPIC, source_topic),
        (H_SOURCE_PARTITION, str(partition)),
        (H_SOURCE_OFFSET, str(offset)),
        (H_QUARANTINED_AT, format_timestamp(now or datetime.now(UTC))),
    ]
    return Outgoing(
        topic=quarantine_topic,
        key=key,
        value=value,
        headers=kept + [*trace] + [(name, text.encode()) for name, text in added],
        dedupe_id=quarantine_id(source_topic, partition, offset),
        labels={"reason": reason.value},
    )
