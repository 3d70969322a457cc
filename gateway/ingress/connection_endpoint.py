"""`/webhooks/{provider}/{connection_id}`: the ingress, plus what only per-connection URLs need.

The connection is looked up first (the ingress then hits the cache), so an unreachable database
answers 503 with `Retry-After` rather than 404. A FreshBooks connection without a verifier yet takes
the `callback.verify` handshake: the post is stored like any delivery, its verifier becomes the
connection's webhook secret, and only then is the answer 200 (docs/admin-api.md, "The FreshBooks
verify handshake"). With tracing on, the request's one span is opened here and covers every answer.
"""

import logging
from collections.abc import MutableMapping
from typing import Any

from opentelemetry.trace import Span
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message

from fanout.parsers.freshbooks import verification_code
from gateway.ingress.body import read_limited
from gateway.ingress.endpoint import CONNECTION_ROUTE, Ingress, note_answer, request_span
from gateway.ingress.verification import ConnectionSources, FreshBooksHandshake, Source, SourceUnavailable
from gateway.runtime.infra import DATABASE_ERRORS
from gateway.runtime.metrics import Metrics
from provider_auth.accounts.store import ConnectionStore
from provider_auth.providers import Provider, parse_provider

log = logging.getLogger("ledgerhook.sources")


class ConnectionEndpoint:
    """Answers per-connection webhook requests, handing every delivery to the ingress."""

    def __init__(
        self,
        ingress: Ingress,
        sources: ConnectionSources,
        store: ConnectionStore,
        metrics: Metrics,
        max_body_bytes: int,
        retry_after_seconds: int,
    ) -> None:
        self._ingress = ingress
        self._sources = sources
        self._store = store
        self._metrics = metrics
        self._max_body = max_body_bytes
        self._retry_after = str(retry_after_seconds)

    async def __call__(self, request: Request) -> Response:
        """Answer one per-connection webhook request."""
        tracer = self._ingress.tracer
        if tracer is None:
            return await self._answer(request, None)
        with request_span(tracer, request.method, CONNECTION_ROUTE) as span:
            return await self._answer(request, span)

    async def _answer(self, request: Request, span: Span | None) -> Response:
        provider = parse_provider(request.path_params["provider"])
        if provider is None or request.method != "POST":
            return await self._ingress.respond(request, span)
        try:
            source = await self._sources.resolve(provider, request.path_params["connection_id"])
        except SourceUnavailable:
            return self._unavailable(provider, span)
        if source is not None and isinstance(source.scheme, FreshBooksHandshake):
            return await self._handshake(request, source, span)
        return await self._ingress.respond(request, span)

    def _unavailable(self, provider: Provider, span: Span | None) -> Response:
        self._metrics.requests.labels(provider.value, "unavailable").inc()
        if span is not None:
            span.set_attribute("ledgerhook.provider", provider.value)
            note_answer(span, 503, "unavailable")
        return Response(status_code=503, headers={"retry-after": self._retry_after})

    async def _handshake(self, request: Request, source: Source, span: Span | None) -> Response:
        assert source.connection_id is not None
        if span is not None:
            span.set_attribute("ledgerhook.provider", source.provider.value)
            span.set_attribute("ledgerhook.connection_id", source.connection_id)
        try:
            body = await read_limited(request, self._max_body)
        except ClientDisconnect:
            if span is not None:
                note_answer(span, 400, "client_disconnected")
            return Response(status_code=400)
        if body is None:
            self._metrics.requests.labels(source.provider.value, "too_large").inc()
            if span is not None:
                note_answer(span, 413, "too_large")
            return Response(status_code=413)
        replay = _replayed(request, body)
        verifier = verification_code(body)
        if verifier is None:
            return await self._ingress.respond(replay, span)  # the handshake scheme refuses it: 401
        try:
            current = await self._store.get(source.connection_id)
        except DATABASE_ERRORS:
            return self._unavailable(source.provider, span)
        if current is None or current.has_webhook_secret or not current.receives_events:
            # Changed since it was cached (another process completed the handshake): look again.
            self._sources.invalidate(source.connection_id)
            return await self._ingress.respond(replay, span)
        response = await self._ingress.respond(replay, span)
        if response.status_code != 200:
            return response
        try:
            await self._store.update(source.connection_id, webhook_secrets=[verifier])
        except DATABASE_ERRORS:
            # Stored on the raw topic but not remembered: 503 makes FreshBooks post it again.
            log.error("freshbooks verifier could not be saved", extra={"connection_id": source.connection_id})
            return self._unavailable(source.provider, span)
        finally:
            self._sources.invalidate(source.connection_id)
        log.info("freshbooks callback verified", extra={"connection_id": source.connection_id})
        return response


def _replayed(request: Request, body: bytes) -> Request:
    """The same request with its body, already read, served again to the next reader."""
    pending = True

    async def receive() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()

    scope: MutableMapping[str, Any] = request.scope
    return Request(scope, receive)
