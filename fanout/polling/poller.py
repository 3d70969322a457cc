"""The change poller: leased provider accounts polled through their change APIs, onto the changes topic.

One task per worker process. It keeps `poll_accounts` in line with the connections, leases the
accounts that are due, and polls up to `concurrency` of them at once: pages fetched, parsed, turned
into one `origin: "poll"` event per change and active connection and published once (dedupe), and
the account's watermarks moved only after every page behind them was acknowledged. A crash at any
instant repeats at most one poll, whose events carry the same ids. Leases and watermarks:
docs/architecture.md, "Polling state"; the events: docs/events.md.
"""

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter, Gauge

from fanout.change_events import LEDGERHOOK_NAMESPACE, Recipient, change_events
from fanout.changes import NormalizedChange, ParseError, ProviderChange
from fanout.cloudevents import EventRecord
from fanout.dedupe import Outgoing, publish_once
from fanout.polling.adapters import ADAPTERS, MAX_LOOKBACK, WEBHOOK_PROVIDERS, PollingModule
from fanout.polling.budget import backoff_seconds
from fanout.polling.fetcher import (
    FetchError,
    NotAuthorized,
    PageFetcher,
    RequestOutcome,
    Throttled,
    Unavailable,
)
from fanout.polling.pages import PageRequest, PollTarget
from fanout.polling.state import POLLED_PROVIDERS, AccountLease, LeaseLost, PollState
from fanout.quarantine import H_DETAIL, H_QUARANTINED_AT, H_REASON, safe_detail
from fanout.raw import H_PROVIDER
from fanout.reconcile import RecordVersion
from fanout.timestamps import format_timestamp
from fanout.vocabulary import normalize
from provider_auth.accounts.store import Connection, ConnectionStatus, ConnectionStore
from provider_auth.providers import Provider

__all__ = ["POLL_UNPARSEABLE", "Poller", "PollerConfig", "PollerMetrics", "poll_outgoing"]

log = logging.getLogger("ledgerhook.fanout.poller")

# The quarantine reason of a page the provider's parser refused. Not a raw delivery, so never
# redriven: the next poll reads the same changes again once the parser is fixed (docs/events.md).
POLL_UNPARSEABLE = "poll_unparseable"
# Where a quarantined page was asked for: its method and path (never its headers: they hold no
# token, but the fetcher adds the token there).
H_REQUEST = "ledgerhook-quarantine-request"
H_ACCOUNT = "ledgerhook-provider-account-id"

# The connection metadata key naming a NetSuite account's IANA time zone, which SuiteQL answers in.
TIME_ZONE_KEY = "time_zone"


@dataclass(frozen=True, slots=True)
class PollerConfig:
    """Topics and timing of the poller (from the gateway's settings)."""

    changes_topic: str
    quarantine_topic: str
    # Accounts of providers without webhooks are polled this often.
    poll_interval_seconds: int = 300
    # Accounts of providers with webhooks (WEBHOOK_PROVIDERS) are swept this often.
    sweep_interval_seconds: int = 3600
    # Accounts polled at once by this process.
    concurrency: int = 8
    # A lease lasts this long and is renewed every third of it while its poll runs.
    lease_seconds: float = 120.0
    # How often `poll_accounts` is brought in line with the connections.
    sync_seconds: float = 30.0
    # The longest pause between two looks for due accounts.
    idle_seconds: float = 1.0
    # A failed poll is tried again after an exponential back-off from this, up to the interval.
    error_backoff_seconds: float = 5.0
    # No connection of the account has a usable token: try again after this long (a reconnect
    # makes the account due at once anyway).
    auth_backoff_seconds: float = 3600.0
    # On stop, running polls get this long to finish before they are cancelled.
    stop_grace_seconds: float = 10.0


class PollerMetrics:
    """The poller's Prometheus metrics, in a registry handed in by the process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.polls = Counter(
            "ledgerhook_poll_polls",
            "Account polls finished, by provider and outcome.",
            ["provider", "outcome"],
            registry=registry,
        )
        self.requests = Counter(
            "ledgerhook_poll_requests",
            "Change API requests sent, by provider and outcome (429s are `throttled`).",
            ["provider", "outcome"],
            registry=registry,
        )
        self.records = Counter(
            "ledgerhook_poll_records_read",
            "Changed records read from change APIs.",
            ["provider"],
            registry=registry,
        )
        self.published = Counter(
            "ledgerhook_poll_events_published",
            "Change events published by polls (repeats dropped by dedupe not counted).",
            ["provider"],
            registry=registry,
        )
        self.superseded = Counter(
            "ledgerhook_poll_events_superseded",
            "Polled change events not published: a webhook or an earlier poll published that version.",
            ["provider"],
            registry=registry,
        )
        self.lag = Gauge(
            "ledgerhook_poll_watermark_lag_seconds",
            "Now minus the oldest watermark of the provider's polled accounts (as of the last sync).",
            ["provider"],
            registry=registry,
        )

    def observe_request(self, provider: Provider, outcome: RequestOutcome) -> None:
        """The fetcher's `observe` hook: one request sent."""
        self.requests.labels(provider.value, outcome).inc()


class _PageUnparseable(Exception):
    """A page the provider's parser refused; it went to quarantine."""


@dataclass(slots=True)
class _Poll:
    """What one account's poll learnt as it went."""

    lease: AccountLease
    module: PollingModule
    target: PollTarget
    connections: list[Connection]
    started: datetime
    # The connection whose token the requests carry (index in `connections`).
    using: int = 0
    server_time: datetime | None = None
    latest: dict[str, datetime] = field(default_factory=dict)


# Outcomes a poll finishes with (the `last_outcome` of its account and the metric label).
OK, INACTIVE, AUTH, THROTTLED, UNAVAILABLE, REFUSED, UNPARSEABLE, ERROR = (
    "ok",
    "inactive",
    "auth",
    "throttled",
    "unavailable",
    "refused",
    "unparseable",
    "error",
)


def poll_outgoing(
    topic: str, ident: str, event: EventRecord, change: NormalizedChange, connection_id: str
) -> Outgoing:
    """The record to publish for one polled change event (the one place every such `Outgoing` is
    built), with the record version reconciliation compares."""
    return Outgoing(
        topic=topic,
        key=event.key,
        value=event.value,
        headers=event.headers,
        dedupe_id=ident,
        labels={"provider": event_provider(event), "entity": change.entity},
        version=RecordVersion.of(connection_id, change),
    )


def event_provider(event: EventRecord) -> str:
    """The `ce_provider` header of a change event."""
    return next(value.decode() for name, value in event.headers if name == "ce_provider")


class Poller:
    """Polls the due provider accounts until `stop` is set; see the module docstring."""

    def __init__(
        self,
        config: PollerConfig,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        fetcher: PageFetcher,
        metrics: PollerMetrics,
        *,
        owner: str | None = None,
    ) -> None:
        self._config = config
        self._pool = pool
        self._producer = producer
        self._fetcher = fetcher
        self._metrics = metrics
        self._state = PollState(pool)
        self._connections = ConnectionStore(pool, keyring=None)  # reads no secrets
        # Unique per process and per start: a restarted process does not own its predecessor's leases.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._failures: dict[tuple[Provider, str], int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Sync, lease and poll until `stop` is set; running polls get `stop_grace_seconds` to finish."""
        running: set[asyncio.Task[None]] = set()
        next_sync = 0.0
        log.info("change poller started", extra={"owner": self.owner})
        try:
            while not stop.is_set():
                try:
                    if time.monotonic() >= next_sync:
                        await self._sync()
                        next_sync = time.monotonic() + self._config.sync_seconds
                    free = self._config.concurrency - len(running)
                    if free > 0:
                        for lease in await self._state.lease_due(
                            self.owner, free, self._config.lease_seconds
                        ):
                            task = asyncio.create_task(self._poll_leased(lease))
                            running.add(task)
                            task.add_done_callback(running.discard)
                except Exception as exc:  # the database is down, say: look again after the pause
                    log.warning("poll scheduling failed", extra={"error": type(exc).__name__})
                await _wait_any(stop, running, self._config.idle_seconds)
            if running:
                await asyncio.wait(running, timeout=self._config.stop_grace_seconds)
        finally:
            # Cancelled, or out of grace: the leases of unfinished polls run out and are taken over.
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            log.info("change poller stopped", extra={"owner": self.owner})

    async def _sync(self) -> None:
        """`poll_accounts` in line with the connections, and the watermark lag per provider."""
        # One interval for every account: a sweep's longer one is applied when it finishes
        # (`_next_poll_in`), since a sync per interval would reschedule the other's accounts.
        await self._state.sync_accounts(self._config.poll_interval_seconds, providers=POLLED_PROVIDERS)
        rows = await self._pool.fetch(
            "SELECT a.provider, extract(epoch FROM now() - min(w.watermark)) AS lag"
            " FROM poll_accounts a JOIN poll_watermarks w USING (provider, provider_account_id)"
            " WHERE a.enabled GROUP BY a.provider"
        )
        for row in rows:
            self._metrics.lag.labels(row["provider"]).set(float(row["lag"]))

    async def _poll_leased(self, lease: AccountLease) -> None:
        """Poll one leased account, renewing the lease meanwhile; never raises but to cancellation."""
        poll = asyncio.create_task(self.poll(lease))
        renewing = asyncio.create_task(self._renew(lease, poll))
        try:
            await asyncio.wait({poll})
        finally:
            renewing.cancel()
            poll.cancel()
            await asyncio.gather(renewing, poll, return_exceptions=True)

    async def _renew(self, lease: AccountLease, poll: "asyncio.Task[None]") -> None:
        """Renew the lease every third of its length; when it is lost, the poll is cancelled."""
        while True:
            await asyncio.sleep(self._config.lease_seconds / 3)
            try:
                await self._state.renew(lease, self._config.lease_seconds)
            except LeaseLost as exc:
                log.warning("poll lease lost; poll abandoned", extra=_where(lease) | {"detail": str(exc)})
                poll.cancel()
                return
            except Exception as exc:  # a database hiccup: the next renewal may go through
                log.warning("poll lease renewal failed", extra=_where(lease) | {"error": type(exc).__name__})

    async def poll(self, lease: AccountLease) -> None:
        """One poll of a leased account, finished with its outcome; failures are logged, not raised."""
        key = (lease.provider, lease.account)
        outcome, delay, detail = OK, None, ""
        try:
            outcome = await self._poll(lease)
        except LeaseLost as exc:
            log.warning("poll lease lost", extra=_where(lease) | {"detail": str(exc)})
            self._metrics.polls.labels(lease.provider.value, "lease_lost").inc()
            return
        except NotAuthorized as exc:
            outcome, delay, detail = AUTH, self._config.auth_backoff_seconds, str(exc)
        except (Throttled, Unavailable) as exc:
            outcome = THROTTLED if isinstance(exc, Throttled) else UNAVAILABLE
            delay, detail = exc.retry_after or self._backoff(key), str(exc)
        except FetchError as exc:
            outcome, delay, detail = REFUSED, self._backoff(key), str(exc)
        except _PageUnparseable as exc:
            outcome, delay, detail = UNPARSEABLE, self._backoff(key), str(exc)
        except Exception as exc:
            outcome, delay, detail = ERROR, self._backoff(key), type(exc).__name__
        if outcome == OK:
            self._failures.pop(key, None)
            if lease.provider in WEBHOOK_PROVIDERS:
                delay = float(self._config.sweep_interval_seconds)
        else:
            # One line per failed poll: where and why, never a token or a body.
            log.warning(
                "poll failed", extra=_where(lease) | {"outcome": outcome, "detail": safe_detail(detail)}
            )
        self._metrics.polls.labels(lease.provider.value, outcome).inc()
        try:
            await self._state.finish(lease, outcome, None if delay is None else timedelta(seconds=delay))
        except Exception as exc:  # lost or unreachable: the lease runs out and the account is due again
            log.warning("poll not recorded", extra=_where(lease) | {"error": type(exc).__name__})

    def _backoff(self, key: tuple[Provider, str]) -> float:
        """The delay before a failed account is polled again, doubling per failure in a row."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        if len(self._failures) > 100_000:
            self._failures.clear()  # bounded: forget streaks rather than track recency
        return backoff_seconds(
            failures - 1,
            base=self._config.error_backoff_seconds,
            cap=float(self._config.poll_interval_seconds),
        )

    async def _poll(self, lease: AccountLease) -> str:
        """Read every change since the watermarks, publish them, then move the watermarks."""
        started = datetime.now(UTC)
        connections = [
            c
            for c in await self._connections.by_account(lease.provider, lease.account)
            if c.status is ConnectionStatus.ACTIVE
        ]
        if not connections:
            return INACTIVE  # went inactive since the last sync, which disables the account
        module = ADAPTERS[lease.provider]
        target = PollTarget(lease.account, _time_zone(connections))
        poll = _Poll(lease, module, target, connections, started)
        queue = deque(self._first_requests(poll, await self._state.watermarks(lease.provider, lease.account)))
        while queue:
            request = queue.popleft()
            body = await self._fetch(poll, request)
            try:
                page = module.parse_page(target, request, body)
            except Exception as exc:
                # A parser bug is quarantined like a refused page, naming only the exception's type.
                reason = str(exc) if isinstance(exc, ParseError) else f"parser error {type(exc).__name__}"
                detail = f"{lease.provider.value}: {reason}"
                await self._quarantine(poll, request, body, detail)
                raise _PageUnparseable(detail) from None
            if poll.server_time is None:
                poll.server_time = page.server_time
            await self._publish(poll, page.changes)
            queue.extend(module.next_requests(target, request, page))
        async with self._pool.acquire() as conn, conn.transaction():
            await self._state.advance(conn, lease, _new_watermarks(poll))
        return OK

    def _first_requests(self, poll: _Poll, watermarks: dict[str, datetime]) -> list[PageRequest]:
        """Each entity from its watermark less the overlap; an account never polled from its earliest
        connection's creation (earlier history is a backfill's). One call per distinct start."""
        first = min(c.created_at for c in poll.connections)
        floor = None
        lookback = MAX_LOOKBACK.get(poll.lease.provider)
        if lookback is not None:
            # Older than the provider answers for: start at the oldest point it serves.
            floor = poll.started - lookback + timedelta(minutes=1)
        by_start: dict[datetime, list[str]] = {}
        clipped: list[str] = []
        for entity in poll.module.ENTITIES:
            mark = watermarks.get(entity)
            since = mark - poll.module.OVERLAP if mark is not None else first
            if floor is not None and since < floor:
                clipped.append(entity)
                since = floor
            by_start.setdefault(since, []).append(entity)
        if clipped:
            # Reported as an `integrated_account:history_gap` event once that exists; logged until then.
            log.warning(
                "changes older than the provider serves are out of reach",
                extra=_where(poll.lease) | {"entities": ",".join(clipped)},
            )
        requests: list[PageRequest] = []
        for since, entities in sorted(by_start.items()):
            requests.extend(poll.module.first_requests(poll.target, since, entities))
        return requests

    async def _fetch(self, poll: _Poll, request: PageRequest) -> bytes:
        """A page, with the token of one active connection after another until one is authorized."""
        while True:
            connection = poll.connections[poll.using]
            try:
                return await self._fetcher.fetch(poll.lease.provider, connection.id, poll.target, request)
            except NotAuthorized:
                # Connections of one account share the grant for shared-app providers; another
                # connection may still hold a good one.
                if poll.using + 1 >= len(poll.connections):
                    raise
                poll.using += 1

    async def _publish(self, poll: _Poll, changes: Sequence[ProviderChange]) -> None:
        """One page's changes: an event per change and active connection, published once, acked."""
        provider = poll.lease.provider
        recipients = [_recipient(c) for c in poll.connections]
        outgoing: list[Outgoing] = []
        for change in changes:
            if change.occurred_at is not None and change.entity in poll.module.ENTITIES:
                latest = poll.latest.get(change.entity)
                if latest is None or change.occurred_at > latest:
                    poll.latest[change.entity] = change.occurred_at
            normalized = normalize(provider, change)
            events = change_events(
                recipients, normalized, origin="poll", delivery_id=None, received_at=poll.started
            )
            for (ident, event), recipient in zip(events, recipients, strict=True):
                outgoing.append(
                    poll_outgoing(
                        self._config.changes_topic, ident, event, normalized, recipient.connection_id
                    )
                )
        self._metrics.records.labels(provider.value).inc(len(changes))
        if outgoing:
            published = await publish_once(self._pool, self._producer, outgoing)
            self._metrics.published.labels(provider.value).inc(len(published.produced))
            self._metrics.superseded.labels(provider.value).inc(len(published.superseded))

    async def _quarantine(self, poll: _Poll, request: PageRequest, body: bytes, detail: str) -> None:
        """The page the parser refused, on the quarantine topic with the reason (once per body)."""
        digest = hashlib.sha256(body).hexdigest()
        lease = poll.lease
        headers = [
            (H_REASON, POLL_UNPARSEABLE),
            (H_DETAIL, safe_detail(detail)),
            (H_PROVIDER, lease.provider.value),
            (H_ACCOUNT, lease.account),
            (H_REQUEST, safe_detail(f"{request.method} {request.path}")),
            (H_QUARANTINED_AT, format_timestamp(datetime.now(UTC))),
        ]
        record = Outgoing(
            topic=self._config.quarantine_topic,
            key=lease.account.encode(),
            value=body,
            headers=[(name, text.encode()) for name, text in headers],
            dedupe_id=str(
                uuid.uuid5(LEDGERHOOK_NAMESPACE, f"poll|{lease.provider.value}|{lease.account}|{digest}")
            ),
            labels={"reason": POLL_UNPARSEABLE},
        )
        await publish_once(self._pool, self._producer, [record])


def _new_watermarks(poll: _Poll) -> dict[str, datetime]:
    """Where each entity's next poll starts: the provider's clock at the first page when it gave
    one, else the latest change read per entity (never past the poll's start); others unchanged."""
    if poll.server_time is not None:
        return dict.fromkeys(poll.module.ENTITIES, poll.server_time)
    return {entity: min(latest, poll.started) for entity, latest in poll.latest.items()}


def _recipient(connection: Connection) -> Recipient:
    return Recipient(
        connection_id=connection.id,
        tenant_id=connection.tenant_id,
        provider=connection.provider.value,
        provider_account_id=connection.provider_account_id,
    )


def _time_zone(connections: Sequence[Connection]) -> str:
    """The account's IANA time zone from its first connection that names one (metadata
    `time_zone`), else UTC; only NetSuite reads it."""
    for connection in connections:
        zone = connection.metadata.get(TIME_ZONE_KEY)
        if isinstance(zone, str) and zone:
            return zone
    return "UTC"


def _where(lease: AccountLease) -> dict[str, str]:
    return {"provider": lease.provider.value, "account": lease.account}


async def _wait_any(stop: asyncio.Event, running: set["asyncio.Task[None]"], seconds: float) -> None:
    """Until `stop` is set, a poll ends, or `seconds` pass."""
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopping, *running}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopping
