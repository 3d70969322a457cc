"""Spans that never carry an exception's message: a failure is recorded by its type only, since a
message may quote a provider's answer or a secret (docs/architecture.md, "Tracing")."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer


@contextmanager
def span_failing_by_type(
    tracer: Tracer,
    name: str,
    kind: SpanKind,
    attributes: Mapping[str, str | bool],
    context: Context | None = None,
) -> Iterator[Span]:
    """A span of `tracer`, current for the block (under `context` when given); an exception escaping
    the block marks it failed with the exception's type, and is re-raised."""
    with tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
