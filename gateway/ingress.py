"""`POST /webhooks/{provider}[/{connection_id}]`: limit, verify, append to the raw log, answer.

The request path does the least it can, so acks are fast and never wait on PostgreSQL:
404 unknown URL -> 413 over the body limit -> 401 bad signature -> durable append -> 200, or 503
with `Retry-After` when the raw log cannot take it. Every answer has an empty body and no cookie
(Xero requires both). A signed body that does not parse is still stored: nothing verified gets a 400.
"""

import logging
import time

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from fanout.peek import summarize
from gateway.body import read_limited
from gateway.delivery import RawDelivery, new_delivery_id, utcnow
from gateway.metrics import Metrics, ProviderMetrics
from gateway.rawlog import RawLog, RawLogUnavailable
from gateway.sources import SourceResolver
from provider_auth.providers import Provider, parse_provider

log = logging.getLogger("ledgerhook.ingress")

DELIVERY_ID_HEADER = "x-ledgerhook-delivery-id"


def empty(status: int, headers: dict[str, str] | None = None) -> Response:
    """A response with no body, as every webhook answer is."""
    return Response(status_code=status, headers=headers)


class Ingress:
    """The webhook endpoint, holding everything it needs (no globals)."""

    def __init__(
        self,
        sources: SourceResolver,
        rawlog: RawLog,
        metrics: Metrics,
        max_body_bytes: int,
        retry_after_seconds: int,
    ) -> None:
        self._sources = sources
        self._rawlog = rawlog
        self._metrics = metrics
        self._max_body = max_body_bytes
        self._retry_after = str(retry_after_seconds)

    async def __call__(self, request: Request) -> Response:
        """Answer one webhook request."""
        provider = parse_provider(request.path_params["provider"])
        counted = self._metrics.provider(provider.value if provider else "unknown")
        if request.method != "POST":
            counted.outcome("method_not_allowed")
            return empty(405, {"allow": "POST"})
        started = time.perf_counter()
        self._metrics.in_flight.inc()
        try:
            response, outcome = await self._handle(request, provider, counted, started)
        finally:
            self._metrics.in_flight.dec()
        counted.outcome(outcome)
        return response

    async def _handle(
        self, request: Request, provider: Provider | None, counted: ProviderMetrics, started: float
    ) -> tuple[Response, str]:
        connection_id = request.path_params.get("connection_id")
        source = await self._sources.resolve(provider, connection_id) if provider else None
        if provider is None or source is None:
            return empty(404), "not_found"
        try:
            body = await read_limited(request, self._max_body)
        except ClientDisconnect:
            return empty(400), "client_disconnected"
        if body is None:
            return empty(413), "too_large"
        counted.body_bytes.inc(len(body))

        verdict = source.scheme.verify(body, request.headers)
        if not verdict.ok:
            counted.signature_failure(verdict.value)
            log.warning(
                "webhook signature refused",
                extra={"provider": provider.value, "reason": verdict.value, "bytes": len(body)},
            )
            return empty(401), "unauthorized"

        summary = summarize(provider, body) if connection_id is None else None
        delivery = RawDelivery(
            delivery_id=new_delivery_id(),
            provider=provider.value,
            body=body,
            received_at=utcnow(),
            content_type=request.headers.get("content-type"),
            connection_id=source.connection_id,
            provider_event_id=summary.event_id if summary else request.headers.get("webhook-id"),
            account_key=summary.account_id if summary else source.provider_account_id,
        )
        try:
            await self._rawlog.append(delivery)
        except RawLogUnavailable as exc:
            log.error(
                "raw log unavailable, answering 503",
                extra={"provider": provider.value, "delivery_id": delivery.delivery_id, "error": str(exc)},
            )
            return empty(503, {"retry-after": self._retry_after}), "unavailable"
        counted.ack_seconds.observe(time.perf_counter() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "webhook stored",
                extra={"provider": provider.value, "delivery_id": delivery.delivery_id, "bytes": len(body)},
            )
        return empty(200, {DELIVERY_ID_HEADER: delivery.delivery_id}), "stored"
