"""The raw topic's record format, shared by the writer (gateway ingress) and the reader (fan-out worker).

A raw record is one verified webhook delivery: the body exactly as received, keyed by the provider
account it names (else by its delivery id), with these headers (see docs/architecture.md):

| header | value |
|---|---|
| `ledgerhook-delivery-id` | UUIDv7 given at ingress, returned to the sender as `x-ledgerhook-delivery-id` |
| `ledgerhook-provider` | provider slug (`quickbooks`, `xero`, ...) |
| `ledgerhook-connection-id` | only for per-connection endpoints: the connection the URL belongs to |
| `ledgerhook-received-at` | RFC 3339 UTC time of arrival |
| `content-type` | the request's content type, when it had one |
| `ledgerhook-provider-event-id` | the provider's event id, when the delivery carries exactly one |
| `ledgerhook-redrive-count` | how many times the record was re-fed from quarantine (absent: never) |
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from fanout.timestamps import parse_timestamp

H_DELIVERY_ID = "ledgerhook-delivery-id"
H_PROVIDER = "ledgerhook-provider"
H_CONNECTION_ID = "ledgerhook-connection-id"
H_RECEIVED_AT = "ledgerhook-received-at"
H_CONTENT_TYPE = "content-type"
H_PROVIDER_EVENT_ID = "ledgerhook-provider-event-id"
H_REDRIVE_COUNT = "ledgerhook-redrive-count"

Headers = Sequence[tuple[str, bytes]]


def header(headers: Iterable[tuple[str, bytes]], name: str) -> str | None:
    """The first value of header `name` as text (undecodable bytes replaced), or None."""
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", "replace")
    return None


@dataclass(frozen=True, slots=True)
class RawHeaders:
    """What the worker reads from a raw record's headers; every field may be missing or malformed."""

    delivery_id: str | None
    provider: str | None
    connection_id: str | None
    received_at: datetime | None
    redrive_count: int

    @classmethod
    def read(cls, headers: Iterable[tuple[str, bytes]]) -> "RawHeaders":
        """Read the headers, tolerating anything: a bad value reads as absent (or 0)."""
        pairs = list(headers)
        received = header(pairs, H_RECEIVED_AT)
        try:
            received_at = parse_timestamp(received) if received else None
        except ValueError:
            received_at = None
        return cls(
            delivery_id=header(pairs, H_DELIVERY_ID) or None,
            provider=header(pairs, H_PROVIDER) or None,
            connection_id=header(pairs, H_CONNECTION_ID) or None,
            received_at=received_at,
            redrive_count=redrive_count(pairs),
        )


def redrive_count(headers: Iterable[tuple[str, bytes]]) -> int:
    """The record's `ledgerhook-redrive-count`, 0 when absent or unreadable."""
    value = header(headers, H_REDRIVE_COUNT)
    try:
        return max(0, int(value)) if value else 0
    except ValueError:
        return 0
