"""What a poll or a backfill does with what it read: one change event per change and recipient,
published once and reconciled; a page the parser refused, quarantined; a history gap, announced.

Shared by the poller (`fanout.polling.poller`) and the backfill runner (`fanout.polling.backfill`);
the events: docs/events.md. A poll traced (tracing on) hands its trace context in: its events and
history gaps carry it as `ce_traceparent`, a page it quarantined as `traceparent`.
"""

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter, Gauge

from fanout.account_events import HistoryGap, history_gap_record
from fanout.change_events import LEDGERHOOK_NAMESPACE, Origin, Recipient, change_events
from fanout.changes import NormalizedChange, ParseError, ProviderChange
from fanout.cloudevents import EventRecord
from fanout.dedupe import Outgoing, Published, publish_once
from fanout.polling.adapters import PollingModule
from fanout.polling.fetcher import RequestOutcome
from fanout.polling.pages import PageRequest, PolledPage, PollTarget
from fanout.quarantine import H_DETAIL, H_QUARANTINED_AT, H_REASON, safe_detail
from fanout.raw import H_PROVIDER
from fanout.reconcile import RecordVersion
from fanout.timestamps import format_timestamp
from fanout.vocabulary import normalize
from provider_auth.accounts.store import Connection
from provider_auth.providers import Provider

__all__ = [
    "POLL_UNPARSEABLE",
    "PageUnparseable",
    "PollOutput",
    "PollTopics",
    "PollerMetrics",
    "poll_outgoing",
    "poll_target",
    "recipient",
]

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
class PollTopics:
    """Where polled events, refused pages and history gaps go."""

    changes: str
    quarantine: str
    account_events: str


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
            "Changed records read from change APIs (polls and backfills).",
            ["provider"],
            registry=registry,
        )
        self.published = Counter(
            "ledgerhook_poll_events_published",
            "Change events published by polls and backfills (repeats dropped by dedupe not counted).",
            ["provider"],
            registry=registry,
        )
        self.superseded = Counter(
            "ledgerhook_poll_events_superseded",
            "Polled change events not published: a webhook or an earlier poll published a later "
            "version of the record.",
            ["provider"],
            registry=registry,
        )
        self.lag = Gauge(
            "ledgerhook_poll_watermark_lag_seconds",
            "Now minus the oldest watermark of the provider's polled accounts (as of the last sync).",
            ["provider"],
            registry=registry,
        )
        self.budget_in_use = Gauge(
            "ledgerhook_poll_budget_in_use",
            "Rate budget entries alive now, summed over the provider's accounts: requests in the"
            " current minute window (`minute`) and requests in flight (`in_flight`); as of the last sync.",
            ["provider", "scope"],
            registry=registry,
        )
        self.backfills = Counter(
            "ledgerhook_poll_backfills",
            "Backfill jobs finished, by provider and outcome.",
            ["provider", "outcome"],
            registry=registry,
        )

    def observe_request(self, provider: Provider, outcome: RequestOutcome) -> None:
        """The fetcher's `observe` hook: one request sent."""
        self.requests.labels(provider.value, outcome).inc()


class PageUnparseable(Exception):
    """A page the provider's parser refused; it went to quarantine."""


def recipient(connection: Connection) -> Recipient:
    """The recipient of a connection's change events."""
    return Recipient(
        connection_id=connection.id,
        tenant_id=connection.tenant_id,
        provider=connection.provider.value,
        provider_account_id=connection.provider_account_id,
    )


def poll_target(account: str, connections: Sequence[Connection]) -> PollTarget:
    """Whose changes a poll of `account` reads, with the account's IANA time zone from its first
    connection that names one (metadata `time_zone`), else UTC; only NetSuite reads it."""
    for connection in connections:
        zone = connection.metadata.get(TIME_ZONE_KEY)
        if isinstance(zone, str) and zone:
            return PollTarget(account, zone)
    return PollTarget(account)


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


class PollOutput:
    """Publishes what polls and backfills read, on the pool and producer handed in."""

    def __init__(
        self,
        topics: PollTopics,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        metrics: PollerMetrics,
        *,
        remember_reconciled: bool = False,
    ) -> None:
        self._topics = topics
        self._pool = pool
        self._producer = producer
        self._metrics = metrics
        self._remember_reconciled = remember_reconciled  # see `fanout.dedupe.publish_once`

    async def parse(
        self,
        provider: Provider,
        module: PollingModule,
        target: PollTarget,
        request: PageRequest,
        body: bytes,
        *,
        trace: Sequence[tuple[str, bytes]] = (),
    ) -> PolledPage:
        """The page `body` answers; PageUnparseable (after quarantining it, with the headers `trace`)
        when the parser refuses it."""
        try:
            return module.parse_page(target, request, body)
        except Exception as exc:
            # A parser bug is quarantined like a refused page, naming only the exception's type.
            reason = str(exc) if isinstance(exc, ParseError) else f"parser error {type(exc).__name__}"
            detail = f"{provider.value}: {reason}"
            await self._quarantine(provider, target.account, request, body, detail, trace)
            raise PageUnparseable(detail) from None

    async def changes(
        self,
        provider: Provider,
        connections: Sequence[Connection],
        changes: Sequence[ProviderChange],
        *,
        origin: Origin,
        received_at: datetime,
        trace: Sequence[tuple[str, bytes]] = (),
    ) -> Published:
        """One page's changes: an event per change and connection (each ending with the headers
        `trace`), published once (reconciled), acked."""
        recipients = [recipient(c) for c in connections]
        outgoing: list[Outgoing] = []
        for change in changes:
            normalized = normalize(provider, change)
            events = change_events(
                recipients, normalized, origin=origin, delivery_id=None, received_at=received_at, trace=trace
            )
            for (ident, event), to in zip(events, recipients, strict=True):
                outgoing.append(
                    poll_outgoing(self._topics.changes, ident, event, normalized, to.connection_id)
                )
        self._metrics.records.labels(provider.value).inc(len(changes))
        if not outgoing:
            return Published(produced=[], superseded=[])
        published = await publish_once(
            self._pool, self._producer, outgoing, remember_reconciled=self._remember_reconciled
        )
        self._metrics.published.labels(provider.value).inc(len(published.produced))
        self._metrics.superseded.labels(provider.value).inc(len(published.superseded))
        return published

    async def history_gaps(self, gaps: Sequence[HistoryGap], trace: Sequence[tuple[str, bytes]] = ()) -> None:
        """One `integrated_account:history_gap` per gap (its headers ending with `trace`), each
        published once (a repeated poll of the same watermark, or a resumed backfill, finds the same id)."""
        records: list[Outgoing] = []
        for gap in gaps:
            ident, event = history_gap_record(gap)
            records.append(
                Outgoing(
                    topic=self._topics.account_events,
                    key=event.key,
                    value=event.value,
                    headers=[*event.headers, *trace],
                    dedupe_id=ident,
                    labels={"type": "integrated_account:history_gap"},
                )
            )
        if records:
            await publish_once(self._pool, self._producer, records)

    async def _quarantine(
        self,
        provider: Provider,
        account: str,
        request: PageRequest,
        body: bytes,
        detail: str,
        trace: Sequence[tuple[str, bytes]],
    ) -> None:
        """The page the parser refused, on the quarantine topic with the reason (once per body)."""
        digest = hashlib.sha256(body).hexdigest()
        headers = [
            (H_REASON, POLL_UNPARSEABLE),
            (H_DETAIL, safe_detail(detail)),
            (H_PROVIDER, provider.value),
            (H_ACCOUNT, account),
            (H_REQUEST, safe_detail(f"{request.method} {request.path}")),
            (H_QUARANTINED_AT, format_timestamp(datetime.now(UTC))),
        ]
        record = Outgoing(
            topic=self._topics.quarantine,
            key=account.encode(),
            value=body,
            headers=[*((name, text.encode()) for name, text in headers), *trace],
            dedupe_id=str(uuid.uuid5(LEDGERHOOK_NAMESPACE, f"poll|{provider.value}|{account}|{digest}")),
            labels={"reason": POLL_UNPARSEABLE},
        )
        await publish_once(self._pool, self._producer, [record])
