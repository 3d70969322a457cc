"""The raw topic's record format, shared by its writer (the gateway's ingress) and its reader (the worker).

A raw record is one verified webhook delivery: the body exactly as received, keyed by the provider
account it names (else by its delivery id), with the `ledgerhook-*` headers named here, and the W3C
trace context of its webhook request when tracing is on. What each header holds:
docs/architecture.md, "The raw record".
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from opentelemetry.context import Context
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from fanout.timestamps import parse_timestamp

H_DELIVERY_ID = "ledgerhook-delivery-id"
H_PROVIDER = "ledgerhook-provider"
H_CONNECTION_ID = "ledgerhook-connection-id"
H_RECEIVED_AT = "ledgerhook-received-at"
H_CONTENT_TYPE = "content-type"
H_PROVIDER_EVENT_ID = "ledgerhook-provider-event-id"
H_REDRIVE_COUNT = "ledgerhook-redrive-count"
# W3C trace context (https://www.w3.org/TR/trace-context/), under the names OpenTelemetry's Kafka
# instrumentations use.
H_TRACEPARENT = "traceparent"
H_TRACESTATE = "tracestate"


def header(headers: Iterable[tuple[str, bytes]], name: str) -> str | None:
    """The first value of header `name` as text (undecodable bytes replaced), or None."""
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", "replace")
    return None


# Not frozen, for speed (see `fanout.changes.ProviderChange`).
@dataclass(slots=True)
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
        first: dict[str, bytes] = {}
        for key, value in headers:  # one pass; the first value of a repeated header counts
            if key in _READ and key not in first:
                first[key] = value
        delivery_id = first.get(H_DELIVERY_ID)
        provider = first.get(H_PROVIDER)
        connection_id = first.get(H_CONNECTION_ID)
        received = first.get(H_RECEIVED_AT)
        try:
            received_at = parse_timestamp(received.decode("utf-8", "replace")) if received else None
        except ValueError:
            received_at = None
        count = first.get(H_REDRIVE_COUNT)
        return cls(
            delivery_id=delivery_id.decode("utf-8", "replace") if delivery_id else None,
            provider=provider.decode("utf-8", "replace") if provider else None,
            connection_id=connection_id.decode("utf-8", "replace") if connection_id else None,
            received_at=received_at,
            redrive_count=_count(count.decode("utf-8", "replace")) if count else 0,
        )


_READ = frozenset((H_DELIVERY_ID, H_PROVIDER, H_CONNECTION_ID, H_RECEIVED_AT, H_REDRIVE_COUNT))


def trace_headers(
    span: Span, traceparent: str = H_TRACEPARENT, tracestate: str = H_TRACESTATE
) -> list[tuple[str, bytes]]:
    """The W3C trace context of `span` as record headers: `traceparent`, and `tracestate` when it
    has entries (under the names given); none for a span without a valid context."""
    context = span.get_span_context()
    if not context.is_valid:
        return []
    parent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    headers = [(traceparent, parent.encode())]
    if context.trace_state:
        headers.append((tracestate, context.trace_state.to_header().encode()))
    return headers


def trace_parent(headers: Iterable[tuple[str, bytes]]) -> Context:
    """The trace context a record's `traceparent` (and `tracestate`) headers carry, to continue its
    trace; an empty context when it carries none, or one that is not valid."""
    carrier: dict[str, str] = {}
    for key, value in headers:
        if key in (H_TRACEPARENT, H_TRACESTATE) and key not in carrier:
            carrier[key] = value.decode("utf-8", "replace")
    if H_TRACEPARENT not in carrier:
        return Context()
    return TraceContextTextMapPropagator().extract(carrier, Context())


def redrive_count(headers: Iterable[tuple[str, bytes]]) -> int:
    """The record's `ledgerhook-redrive-count`, 0 when absent or unreadable."""
    value = header(headers, H_REDRIVE_COUNT)
    return _count(value) if value else 0


def _count(value: str) -> int:
    try:
        return max(0, int(value))
    except ValueError:
        return 0
