"""The gateway server's HTTP/1.1 connections: uvicorn's httptools protocol, with the bounds it lacks.

uvicorn closes a connection left idle between requests and nothing else: a client may take as long
as it likes over its headers or its body, httptools buffers an unfinished header line whole, and
uvicorn's own `limit_concurrency` counts idle connections too and answers 503 without `Retry-After`.
Here every connection, webhooks and admin API alike, is held to a `ConnectionLimits`: time limits on
the request head and body (408), a size and count limit on the head (431), and a per-process cap on
requests in flight (503 with `Retry-After`, before the body is read). docs/architecture.md,
"Connection limits", says what each one answers and why.
"""

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import httptools
from uvicorn import Config
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from gateway.settings import Settings

log = logging.getLogger("ledgerhook.server")

# Probes are answered whatever the load: a liveness probe refused under load would restart a busy pod.
UNCAPPED_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
# After an error answer, how long the connection still reads (and drops) what the client sends: a
# socket closed with unread bytes sends a reset, which can destroy the answer before the client reads it.
LINGER_SECONDS = 2.0
# The first refusal is logged at once; later ones are summed into one line at most this often.
LOG_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds every connection of the gateway's server is held to."""

    header_timeout: float  # the head is due within this of the connection opening or of its first byte
    body_timeout: float  # the body is due within this of the head
    max_header_bytes: int  # request line and headers, with their line ends
    max_header_count: int
    max_in_flight: int  # requests the process serves at once
    retry_after_seconds: int  # sent with the 503 over `max_in_flight`


class Refusals:
    """What a server's connections refused, logged without flooding the log during an attack."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._logged_at = float("-inf")

    def note(self, reason: str) -> None:
        """Count one refusal; log the counts if the last line is old enough."""
        self._counts[reason] += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            log.warning("requests refused by the connection limits", extra={"refused": dict(self._counts)})
            self._counts.clear()
            self._logged_at = now


class _Phase(Enum):
    BETWEEN = "between requests"  # the next byte that is not a line end begins a request
    HEAD = "head"  # request line and headers
    BODY = "body"


class _HeadTooLarge(Exception):
    """Raised into the parser to stop it at a head over the limits."""


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol held to `LIMITS`; `protocol_class` binds them."""

    LIMITS: ClassVar[ConnectionLimits]
    REFUSALS: ClassVar[Refusals]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._phase = _Phase.BETWEEN
        self._head_bytes = 0  # of the current head, as fed to the parser
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._ended = False  # an error answer is due or sent: nothing more is parsed
        self._answer_after_response: int | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start serving a connection; its first head is due within the header timeout."""
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.LIMITS.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: its timers with it."""
        self._cancel_timers()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse what arrived (never more than the header limit of one head), then start the timer of
        the part of the request still to come."""
        if self._ended:
            return  # read and dropped: see LINGER_SECONDS
        try:
            self._feed(data)
        except _HeadTooLarge:
            self._end(431, "headers_too_large")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
                return
            self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            # An exception raised in a parser callback comes back as the context of the parser's own.
            too_large = isinstance(exc.__context__, _HeadTooLarge)
            self._end(431 if too_large else 400, "headers_too_large" if too_large else "bad_request")
            return
        if self._phase is _Phase.HEAD and self._header_timer is None:
            self._header_timer = self.loop.call_later(self.LIMITS.header_timeout, self._head_timed_out)
        elif self._phase is _Phase.BODY and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.LIMITS.body_timeout, self._body_timed_out)

    def _feed(self, data: bytes) -> None:
        # httptools keeps an unfinished header line in memory whole, so it is never given more than
        # `max_header_bytes` of one head. Bytes of a head that begins in the same read as the previous
        # request's body ends are not counted: the excess is bounded by one read (at most 256 KiB).
        view: bytes | memoryview = data
        while True:
            if self._phase is _Phase.BODY:
                self.parser.feed_data(view)
                return
            room = self.LIMITS.max_header_bytes - self._head_bytes
            if len(view) <= room:
                self._head_bytes += len(view)
                self.parser.feed_data(view)
                return
            if room <= 0:
                raise _HeadTooLarge
            view = memoryview(view)
            self._head_bytes += room
            self.parser.feed_data(view[:room])
            view = view[room:]  # a body after the head, or the next request; else the head is too large

    # Parser callbacks.

    def on_message_begin(self) -> None:
        """A request's first byte: the keep-alive clock stops (bytes that begin no request, such as
        line ends, do not keep an idle connection open)."""
        super().on_message_begin()
        self._phase = _Phase.HEAD
        self._unset_keepalive_if_required()

    def on_headers_complete(self) -> None:
        """The head is whole: its timer stops, the body's starts if one is still to come. Too many
        headers end the request with 431 (counted here: the byte limit already bounds the list)."""
        if len(self.headers) > self.LIMITS.max_header_count:
            raise _HeadTooLarge
        self._phase = _Phase.BODY
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The body is whole."""
        self._phase = _Phase.BETWEEN
        self._head_bytes = 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """A response is sent: a refusal waiting for it goes next, else the next request or keep-alive."""
        if self._answer_after_response is not None:
            self.server_state.total_requests += 1
            self._answer_and_close(self._answer_after_response)
            return
        super().on_response_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # Tasks are the requests the process is serving, on every connection; an idle connection is
        # not one. Over the cap, the request is answered without the app, so its body is never read.
        if len(self.tasks) >= self.LIMITS.max_in_flight and cycle.scope["path"] not in UNCAPPED_PATHS:
            self.REFUSALS.note("over_capacity")
            app = self._over_capacity
        super()._start_asgi_task(cycle, app)

    async def _over_capacity(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        retry_after = str(self.LIMITS.retry_after_seconds).encode()
        headers = [(b"content-length", b"0"), (b"retry-after", retry_after)]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # Timers and refusals.

    def _head_timed_out(self) -> None:
        self._header_timer = None
        if self._phase is _Phase.HEAD:
            self._end(408, "header_timeout")
        else:
            self.transport.close()  # opened, and no request begun since

    def _body_timed_out(self) -> None:
        self._body_timer = None
        self._end(408, "body_timeout")

    def _end(self, status: int, reason: str) -> None:
        """Answer `status` and close, keeping the answers in order: a request that arrived whole and is
        still being answered gets its own answer first."""
        self.REFUSALS.note(reason)
        self._ended = True
        self._cancel_timers()
        self._unset_keepalive_if_required()
        cycle = self.cycle
        if self.pipeline:
            self.transport.close()  # requests queued behind the one being served: no order can hold
        elif self._phase is _Phase.BODY and cycle is not None:
            # The body is cut short: the request is abandoned, whatever the app read of it. Its
            # receive() says the client is gone, so nothing of it is stored, and its answer is dropped.
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
            else:
                self._answer_and_close(status)
        elif cycle is not None and not cycle.response_complete:
            # The request before these bytes arrived whole: it keeps its answer, this one comes after.
            self._answer_after_response = status
        else:
            self._answer_and_close(status)

    def _answer_and_close(self, status: int) -> None:
        if self.transport.is_closing():
            return
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.append(b"content-length: 0\r\nconnection: close\r\n\r\n")
        self.transport.write(b"".join(content))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None


def protocol_class(limits: ConnectionLimits) -> type[LimitedHttpProtocol]:
    """The protocol uvicorn builds each connection with (`uvicorn.Config(http=...)`), held to `limits`."""

    class Limited(LimitedHttpProtocol):
        LIMITS = limits
        REFUSALS = Refusals()

    return Limited


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The bounds on each connection, from the settings."""
    return ConnectionLimits(
        header_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        max_in_flight=settings.max_in_flight,
        retry_after_seconds=settings.retry_after_seconds,
    )
