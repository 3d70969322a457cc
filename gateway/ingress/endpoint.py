"""`POST /webhooks/{provider}[/{connection_id}]`: limit, verify, append to the raw log, answer.

The request path does the least it can, so acks are fast and never wait on PostgreSQL:
404 unknown URL -> 413 over the body limit -> 401 bad signature -> durable append -> 200, or 503
with `Retry-After` when the raw log cannot take it. Every answer has an empty body and no cookie, as
Xero requires (docs/providers.md, Xero). A signed body that does not parse is still stored: nothing
verified gets a 400.

With tracing on, each request is a SERVER span (a new trace: a provider's own `traceparent` is not
followed) whose context the raw record carries; docs/architecture.md, "Tracing".
"""

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from fanout.partition_key import summarize
from fanout.raw import trace_headers
from gateway.ingress.body import read_limited, receive_limited
from gateway.ingress.delivery import DELIVERY_ID_HEADER, RawDelivery, new_delivery_id, utcnow
from gateway.ingress.rawlog import RawLog, RawLogUnavailable
from gateway.ingress.verification import SourceResolver
from gateway.runtime.metrics import Metrics, ProviderMetrics
from provider_auth.providers import Provider, parse_provider
from provider_auth.tracing import span_failing_by_type

log = logging.getLogger("ledgerhook.ingress")

SHARED_PREFIX = "/webhooks/"
# The routes, as span names and `http.route` say them.
SHARED_ROUTE = "/webhooks/{provider}"
CONNECTION_ROUTE = "/webhooks/{provider}/{connection_id}"
# Methods a span names as such; any other is `_OTHER` (OpenTelemetry's HTTP conventions), so a client
# cannot make up span names.
HTTP_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})

# (status, headers) of an answer; every answer has an empty body.
Answer = tuple[int, dict[str, str] | None]
# Reads the body under a byte limit: None when over it (see gateway.ingress.body).
BodyReader = Callable[[int], Awaitable[bytes | None]]


def empty(status: int, headers: dict[str, str] | None = None) -> Response:
    """A response with no body, as every webhook answer is."""
    return Response(status_code=status, headers=headers)


def shared_provider(scope: Scope) -> str | None:
    """The provider of a shared-endpoint URL (`/webhooks/{provider}`), else None.

    Only for the plain case, no root path: anything else is left to Starlette's routing.
    """
    path: str = scope["path"]
    if not path.startswith(SHARED_PREFIX) or scope.get("root_path"):
        return None
    provider = path[len(SHARED_PREFIX) :]
    return provider if provider and "/" not in provider else None


@contextmanager
def request_span(tracer: Tracer, method: str, route: str) -> Iterator[Span]:
    """The SERVER span of one webhook request, the root of a new trace.

    A provider's `traceparent` is not followed: providers do not share their traces, and anyone may
    send one (signatures are checked later), forcing sampling or joining our spans to a foreign trace.
    Attributes name the provider, outcome, body size and delivery id; never a header value, a body or
    a secret (an exception is recorded by its type only).
    """
    known = method in HTTP_METHODS
    with span_failing_by_type(
        tracer,
        f"{method if known else 'HTTP'} {route}",
        SpanKind.SERVER,
        {"http.request.method": method if known else "_OTHER", "http.route": route},
        context=Context(),
    ) as span:
        yield span


def note_answer(span: Span, status: int, outcome: str) -> None:
    """Record a request's answer on its span: the status, and the outcome the metrics count."""
    span.set_attribute("http.response.status_code", status)
    span.set_attribute("ledgerhook.outcome", outcome)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, outcome))


class Ingress:
    """The webhook endpoint, holding everything it needs (no globals)."""

    def __init__(
        self,
        sources: SourceResolver,
        rawlog: RawLog,
        metrics: Metrics,
        max_body_bytes: int,
        retry_after_seconds: int,
        tracer: Tracer | None = None,
    ) -> None:
        self._sources = sources
        self._rawlog = rawlog
        self._metrics = metrics
        self._max_body = max_body_bytes
        self._retry_after = str(retry_after_seconds)
        self._tracer = tracer

    @property
    def tracer(self) -> Tracer | None:
        """The tracer of webhook requests; None when tracing is off."""
        return self._tracer

    async def __call__(self, request: Request) -> Response:
        """Answer one webhook request routed by Starlette (per-connection URLs)."""
        return await self.respond(request)

    async def respond(self, request: Request, span: Span | None = None) -> Response:
        """Answer one webhook request routed by Starlette; `span` is its span when the caller
        opened it (`ConnectionEndpoint`), else the ingress opens one (with tracing on)."""
        status, headers = await self.answer(
            request.path_params["provider"],
            request.path_params.get("connection_id"),
            request.method,
            request.headers,
            lambda limit: read_limited(request, limit),
            span,
        )
        return empty(status, headers)

    async def serve_shared(self, scope: Scope, receive: Receive, send: Send, provider: str) -> None:
        """Answer one shared-endpoint request as a bare ASGI app.

        The busiest path of the gateway skips Starlette's middleware, routing and request and
        response objects: about a fifth of its CPU per delivery. The answers are the same.
        """
        headers = Headers(scope=scope)
        content_length = headers.get("content-length")
        status, extra = await self.answer(
            provider,
            None,
            scope["method"],
            headers,
            lambda limit: receive_limited(receive, content_length, limit),
        )
        raw_headers = [(b"content-length", b"0")]
        if extra:
            raw_headers.extend((name.encode(), value.encode()) for name, value in extra.items())
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": b""})

    async def answer(
        self,
        provider_slug: str,
        connection_id: str | None,
        method: str,
        headers: Mapping[str, str],
        read_body: BodyReader,
        span: Span | None = None,
    ) -> Answer:
        """The answer to one webhook request, once its delivery is stored (or refused); with
        tracing on, under `span` or a span of its own."""
        if self._tracer is None or span is not None:
            return await self._answer(provider_slug, connection_id, method, headers, read_body, span)
        route = SHARED_ROUTE if connection_id is None else CONNECTION_ROUTE
        with request_span(self._tracer, method, route) as own:
            return await self._answer(provider_slug, connection_id, method, headers, read_body, own)

    async def _answer(
        self,
        provider_slug: str,
        connection_id: str | None,
        method: str,
        headers: Mapping[str, str],
        read_body: BodyReader,
        span: Span | None,
    ) -> Answer:
        provider = parse_provider(provider_slug)
        label = provider.value if provider else "unknown"
        counted = self._metrics.provider(label)
        if span is not None:
            span.set_attribute("ledgerhook.provider", label)
        if method != "POST":
            counted.outcome("method_not_allowed")
            if span is not None:
                note_answer(span, 405, "method_not_allowed")
            return 405, {"allow": "POST"}
        started = time.perf_counter()
        self._metrics.in_flight += 1
        try:
            answer, outcome = await self._handle(
                provider, connection_id, headers, read_body, counted, started, span
            )
        finally:
            self._metrics.in_flight -= 1
        counted.outcome(outcome)
        if span is not None:
            note_answer(span, answer[0], outcome)
        return answer

    async def _handle(
        self,
        provider: Provider | None,
        connection_id: str | None,
        headers: Mapping[str, str],
        read_body: BodyReader,
        counted: ProviderMetrics,
        started: float,
        span: Span | None,
    ) -> tuple[Answer, str]:
        source = await self._sources.resolve(provider, connection_id) if provider else None
        if provider is None or source is None:
            return (404, None), "not_found"
        if span is not None and source.connection_id is not None:
            span.set_attribute("ledgerhook.connection_id", source.connection_id)  # a known one only
        try:
            body = await read_body(self._max_body)
        except ClientDisconnect:
            return (400, None), "client_disconnected"
        if body is None:
            return (413, None), "too_large"
        counted.body_bytes.inc(len(body))
        if span is not None:
            span.set_attribute("http.request.body.size", len(body))

        verdict = source.scheme.verify(body, headers)
        if not verdict.ok:
            counted.signature_failure(verdict.value)
            log.warning(
                "webhook signature refused",
                extra={"provider": provider.value, "reason": verdict.value, "bytes": len(body)},
            )
            return (401, None), "unauthorized"

        summary = summarize(provider, body) if connection_id is None else None
        delivery = RawDelivery(
            delivery_id=new_delivery_id(),
            provider=provider.value,
            body=body,
            received_at=utcnow(),
            content_type=headers.get("content-type"),
            connection_id=source.connection_id,
            provider_event_id=summary.event_id if summary else headers.get("webhook-id"),
            account_key=summary.account_id if summary else source.provider_account_id,
        )
        trace = None
        if span is not None:
            span.set_attribute("ledgerhook.delivery_id", delivery.delivery_id)
            trace = trace_headers(span)
        try:
            await self._rawlog.append(delivery, trace)
        except RawLogUnavailable as exc:
            log.error(
                "raw log unavailable, answering 503",
                extra={"provider": provider.value, "delivery_id": delivery.delivery_id, "error": str(exc)},
            )
            return (503, {"retry-after": self._retry_after}), "unavailable"
        counted.ack_seconds.observe(time.perf_counter() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "webhook stored",
                extra={"provider": provider.value, "delivery_id": delivery.delivery_id, "bytes": len(body)},
            )
        return (200, {DELIVERY_ID_HEADER: delivery.delivery_id}), "stored"
