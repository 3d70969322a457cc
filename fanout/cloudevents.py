"""CloudEvents 1.0 in Kafka's binary content mode, the envelope of every event Ledgerhook publishes.

Attributes travel as `ce_*` headers, the data as the record value (JSON), the record key is the
connection id (one connection's events stay in order on one partition). Extensions: `ce_tenantid`,
`ce_connectionid`, `ce_provider`, `ce_partitionkey`, and the distributed tracing extension
(`ce_traceparent`, `ce_tracestate`) when tracing is on. See docs/events.md.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from opentelemetry.trace import Span

from fanout.raw import trace_headers
from fanout.timestamps import format_timestamp

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
# The CloudEvents Distributed Tracing extension in binary mode: W3C trace context.
CE_TRACEPARENT = "ce_traceparent"
CE_TRACESTATE = "ce_tracestate"


def tracing_extension(span: Span) -> list[tuple[str, bytes]]:
    """The distributed tracing extension of events made under `span` (`ce_traceparent`, and
    `ce_tracestate` when it has entries), so a consumer continues the trace; none without a valid
    span context."""
    return trace_headers(span, CE_TRACEPARENT, CE_TRACESTATE)


# Not frozen, for speed (see `fanout.changes.ProviderChange`).
@dataclass(slots=True)
class EventRecord:
    """A Kafka record ready to produce."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str | None:
        """A header's value as text, or None."""
        for key, value in self.headers:
            if key == name:
                return value.decode()
        return None


def binary_record(
    *,
    event_id: str,
    source: str,
    event_type: str,
    subject: str | None,
    time: datetime,
    data: Mapping[str, Any],
    tenant_id: str,
    connection_id: str,
    provider: str,
) -> EventRecord:
    """One CloudEvent as a Kafka record in binary content mode, keyed by connection id."""
    attributes = [
        ("ce_specversion", SPEC_VERSION),
        ("ce_id", event_id),
        ("ce_source", source),
        ("ce_type", event_type),
        ("ce_time", format_timestamp(time)),
        ("ce_subject", subject),
        ("content-type", CONTENT_TYPE),
        ("ce_tenantid", tenant_id),
        ("ce_connectionid", connection_id),
        ("ce_provider", provider),
        ("ce_partitionkey", connection_id),
    ]
    return EventRecord(
        key=connection_id.encode(),
        value=orjson.dumps(data),
        headers=[(name, value.encode()) for name, value in attributes if value is not None],
    )
