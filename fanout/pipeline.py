"""The fan-out worker: raw deliveries in, one change event per change and connection out.

One consumer of the raw topic, two batches deep: it routes a batch (parse, normalize, split per
provider account, route to connections, build events or a quarantine record) while the batch
before it is published (`fanout.dedupe.publish_once`: reconciled by record version, deduplicated by
event id) and its offsets committed. Records of one partition are handled strictly in order. The
loop, the routing rules and where a crash can still repeat an event: docs/architecture.md, "The
fan-out worker" and "Reconciliation". With tracing on, each record is processed under a span that
continues its webhook request's trace, and the events carry it (docs/architecture.md, "Tracing").
"""

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from fanout.change_events import Recipient, body_digest, change_events
from fanout.changes import CONNECTION_ACCOUNT, NormalizedChange, ParseError
from fanout.cloudevents import tracing_extension
from fanout.dedupe import Outgoing, publish_once
from fanout.parsers import PARSERS
from fanout.quarantine import H_DETAIL, Reason, quarantine_record
from fanout.raw import H_DELIVERY_ID, RawHeaders, header, trace_headers, trace_parent
from fanout.reconcile import RecordVersion
from fanout.vocabulary import normalize
from provider_auth.accounts.store import Connection, ConnectionStore
from provider_auth.providers import Provider, parse_provider

log = logging.getLogger("ledgerhook.fanout.worker")

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
POLL_TIMEOUT_MS = 500
FETCH_MAX_WAIT_MS = 100  # see FanoutWorker.run
RETRY_BACKOFF = (0.5, 30.0)  # first and longest wait before a failed partition batch is retried

RawRecord: TypeAlias = ConsumerRecord[bytes, bytes]

# How a record's span ends (`ledgerhook.outcome`): its events and quarantine record published; its
# batch failed (it is read again, under a new span); or its batch was set aside unpublished (a
# rebalance, or an earlier record of its partition failed) and is read again.
PUBLISHED, FAILED, SET_ASIDE = "published", "failed", "set_aside"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Topics and group of the fan-out worker (from the gateway's settings)."""

    raw_topic: str
    changes_topic: str
    quarantine_topic: str
    group_id: str
    batch_size: int = 500
    session_timeout_ms: int = 10_000
    # How long a lookup that found receiving connections is reused across batches. Lookups that find
    # none, or a paused one, are never reused, so a new registration or a resume (and a redrive after
    # it) is seen at once; a disconnect or a pause stops events within this many seconds.
    connection_cache_seconds: float = 3.0
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS
    # Reconcile webhook events by record version, as polled events always are (docs/architecture.md,
    # "Reconciliation"); off, a webhook event records no version, so a poll or sweep reporting the
    # same version under another event id publishes it again.
    reconcile_webhooks: bool = True


class WorkerMetrics:
    """The worker's Prometheus metrics, in a registry handed in by the process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumed = Counter(
            "ledgerhook_fanout_records_consumed",
            "Raw records processed, by provider.",
            ["provider"],
            registry=registry,
        )
        self.published = Counter(
            "ledgerhook_fanout_events_published",
            "Change events published, by provider and entity.",
            ["provider", "entity"],
            registry=registry,
        )
        self.duplicates = Counter(
            "ledgerhook_fanout_duplicates_dropped",
            "Events not published because they repeat one already published: the latest version of "
            "its record again (change events), or the same id (the rest).",
            registry=registry,
        )
        self.superseded = Counter(
            "ledgerhook_fanout_events_superseded",
            "Change events dropped by reconciliation (a later version or state of their record was "
            "already published), by provider.",
            ["provider"],
            registry=registry,
        )
        self.quarantined = Counter(
            "ledgerhook_fanout_quarantined",
            "Raw records sent to the quarantine topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.failures = Counter(
            "ledgerhook_fanout_batch_failures",
            "Partition batches that failed and will be retried.",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "ledgerhook_fanout_batch_seconds",
            "Time to process one polled batch, from poll to offset commit.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            "ledgerhook_fanout_consumer_lag",
            "Raw records not yet processed, by partition (as of the last batch).",
            ["partition"],
            registry=registry,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def consumed_for(self, provider: str) -> Any:
        """The `consumed` counter of one provider label (children are bound once)."""
        return self._child(self.consumed, provider)

    def published_for(self, provider: str, entity: str) -> Any:
        """The `published` counter of one provider and entity (children are bound once)."""
        return self._child(self.published, provider, entity)

    def superseded_for(self, provider: str) -> Any:
        """The `superseded` counter of one provider (children are bound once)."""
        return self._child(self.superseded, provider)

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


class Router:
    """Turns one raw record into the records to publish: change events, and a quarantine record."""

    def __init__(self, config: WorkerConfig, connections: ConnectionStore) -> None:
        self._config = config
        self._connections = connections
        self._known: dict[Any, tuple[float, Any]] = {}
        self._recipients: dict[str, Recipient] = {}

    async def _lookup(self, key: tuple[Any, ...], cache: dict[Any, Any]) -> Any:
        """A connection lookup: this batch's answer, else a recent positive one, else PostgreSQL."""
        if key in cache:
            return cache[key]
        now = time.monotonic()
        known = self._known.get(key)
        if known is not None and known[0] > now:
            cache[key] = known[1]
            return known[1]
        if key[0] == "id":
            found: Any = await self._connections.get(key[1])
            connections = [found] if found is not None else []
        else:
            found = await self._connections.by_account(key[1], key[2])
            connections = found
        cache[key] = found
        reusable = any(c.receives_events for c in connections) and not any(c.paused for c in connections)
        if reusable and self._config.connection_cache_seconds > 0:
            if len(self._known) >= _KNOWN_MAX:
                self._known.clear()  # bounded: start over rather than track recency
            self._known[key] = (now + self._config.connection_cache_seconds, found)
        return found

    async def route(
        self,
        record: RawRecord,
        cache: dict[Any, Any],
        raw: RawHeaders | None = None,
        span: Span | None = None,
    ) -> list[Outgoing]:
        """Events (payload order, then connection order) followed by at most one quarantine record.

        `cache` holds connection lookups; one per partition batch, so a registration is seen soon.
        `raw` is the record's headers when the caller has read them already. With `span` (tracing
        on), the events and the quarantine record carry its trace context.
        """
        if raw is None:
            raw = RawHeaders.read(record.headers)
        provider = parse_provider(raw.provider) if raw.provider else None
        if provider is None:
            detail = f"provider {raw.provider!r} is unknown" if raw.provider else "no provider header"
            return [self._quarantine(record, Reason.UNKNOWN_PROVIDER, detail, span)]
        body = record.value or b""
        try:
            changes = PARSERS[provider](body)
        except ParseError as exc:
            return [self._quarantine(record, Reason.UNPARSEABLE, f"{provider.value}: {exc}", span)]
        except Exception as exc:  # a parser bug must not stop the partition: keep the record
            log.exception("parser failed", extra={"provider": provider.value, "delivery_id": raw.delivery_id})
            return [self._quarantine(record, Reason.UNPARSEABLE, f"parser error {type(exc).__name__}", span)]
        if not changes:
            return []  # intent to receive, or an empty batch
        normalized = [normalize(provider, change) for change in changes]

        if raw.connection_id is not None:
            targets, problems = await self._per_connection(provider, raw.connection_id, normalized, cache)
        else:
            targets, problems = await self._shared(provider, normalized, cache)

        received_at = raw.received_at or datetime.fromtimestamp(record.timestamp / 1000, UTC)
        digest = body_digest(body)
        recipients = {
            account: [self._recipient(connection) for connection in connections]
            for account, connections in targets.items()
        }
        topic = self._config.changes_topic
        trace = tracing_extension(span) if span is not None else ()
        out: list[Outgoing] = []
        for change in normalized:
            receivers = recipients.get(change.provider_account_id)
            if not receivers:
                continue
            events = change_events(
                receivers,
                change,
                origin="webhook",
                delivery_id=raw.delivery_id,
                received_at=received_at,
                body_digest=digest,
                trace=trace,
            )
            labels = {"provider": provider.value, "entity": change.entity}  # shared, read only
            reconcile = self._config.reconcile_webhooks
            out.extend(
                Outgoing(
                    topic=topic,
                    key=event.key,
                    value=event.value,
                    headers=event.headers,
                    dedupe_id=ident,
                    labels=labels,
                    version=RecordVersion.of(receiver.connection_id, change) if reconcile else None,
                )
                for receiver, (ident, event) in zip(receivers, events, strict=True)
            )
        if problems:
            # One quarantine record per raw record, under the reason ranked first (see _REASON_RANK).
            reason = min((reason for reason, _ in problems), key=_REASON_RANK.index)
            out.append(self._quarantine(record, reason, "; ".join(detail for _, detail in problems), span))
        return out

    def _recipient(self, connection: Connection) -> Recipient:
        # A connection's tenant, provider and account never change: one Recipient per connection.
        recipient = self._recipients.get(connection.id)
        if recipient is None:
            if len(self._recipients) >= _KNOWN_MAX:
                self._recipients.clear()
            recipient = self._recipients[connection.id] = Recipient(
                connection_id=connection.id,
                tenant_id=connection.tenant_id,
                provider=connection.provider.value,
                provider_account_id=connection.provider_account_id,
            )
        return recipient

    async def _per_connection(
        self,
        provider: Provider,
        connection_id: str,
        changes: Sequence[NormalizedChange],
        cache: dict[Any, Any],
    ) -> tuple[dict[str, list[Connection]], list[tuple[Reason, str]]]:
        connection: Connection | None = await self._lookup(("id", connection_id), cache)
        if connection is None or connection.provider is not provider:
            return {}, [(Reason.UNKNOWN_CONNECTION, f"no {provider.value} connection {connection_id!r}")]
        if not connection.receives_events:
            return {}, [(Reason.DISCONNECTED, f"connection {connection_id!r} is disconnected")]
        if connection.paused:
            return {}, [(Reason.PAUSED, f"connection {connection_id!r} is paused")]
        targets: dict[str, list[Connection]] = {}
        problems: list[tuple[Reason, str]] = []
        for account in _accounts(changes):
            if account in (CONNECTION_ACCOUNT, connection.provider_account_id):
                targets[account] = [connection]
            else:
                # Isolation: a connection's URL never delivers another account's changes.
                problems.append(
                    (
                        Reason.UNKNOWN_ACCOUNT,
                        f"{provider.value} account {account!r} is not the account of connection "
                        f"{connection_id!r}",
                    )
                )
        return targets, problems

    async def _shared(
        self, provider: Provider, changes: Sequence[NormalizedChange], cache: dict[Any, Any]
    ) -> tuple[dict[str, list[Connection]], list[tuple[Reason, str]]]:
        targets: dict[str, list[Connection]] = {}
        problems: list[tuple[Reason, str]] = []
        for account in _accounts(changes):
            connections: list[Connection] = await self._lookup(("account", provider, account), cache)
            receiving = [c for c in connections if c.receives_events]
            active = [c for c in receiving if not c.paused]
            if active:
                targets[account] = active
            if not connections:
                problems.append(
                    (Reason.UNKNOWN_ACCOUNT, f"no connection for {provider.value} account {account!r}")
                )
            elif not receiving:
                problems.append(
                    (
                        Reason.DISCONNECTED,
                        f"every connection of {provider.value} account {account!r} is disconnected",
                    )
                )
            # Held for a redrive: once resumed, a paused connection gets these changes too.
            problems.extend(
                (Reason.PAUSED, f"connection {c.id!r} of {provider.value} account {account!r} is paused")
                for c in receiving
                if c.paused
            )
        return targets, problems

    def _quarantine(self, record: RawRecord, reason: Reason, detail: str, span: Span | None) -> Outgoing:
        return quarantine_record(
            quarantine_topic=self._config.quarantine_topic,
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value or b"",
            headers=record.headers,
            reason=reason,
            detail=detail,
            trace=trace_headers(span) if span is not None else (),
        )


_KNOWN_MAX = 50_000

# A record with several problems is quarantined under the reason ranked first here; its detail names
# them all. `paused` before `disconnected`: a record holding a paused connection's changes must be
# among the `paused` records an operator redrives after resuming it.
_REASON_RANK = [
    Reason.UNKNOWN_PROVIDER,
    Reason.UNPARSEABLE,
    Reason.UNKNOWN_CONNECTION,
    Reason.UNKNOWN_ACCOUNT,
    Reason.PAUSED,
    Reason.DISCONNECTED,
]


def _accounts(changes: Iterable[NormalizedChange]) -> list[str]:
    # Distinct accounts in first-seen order: the split of a mixed delivery.
    return list(dict.fromkeys(change.provider_account_id for change in changes))


class _FinishBatchFirst(ConsumerRebalanceListener):  # type: ignore[misc]
    """Holds a rebalance until the batch being published has committed, so a handover repeats nothing."""

    def __init__(self, worker: "FanoutWorker") -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.hand_over()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._worker.taken_over()


@dataclass(slots=True)
class _Routed:
    """One partition's records of a polled batch and what they publish."""

    records: list[RawRecord]
    outgoing: list[Outgoing]
    providers: list[str | None]
    spans: list[Span] = field(default_factory=list)  # one per record, with tracing on


def _end_spans(part: _Routed, outcome: str, error: BaseException | None = None) -> None:
    """End the spans of a partition batch's records, with how the batch ended."""
    for span in part.spans:
        span.set_attribute("ledgerhook.outcome", outcome)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()
    part.spans.clear()


# Partition -> the offset to read again from: its first record not published.
_Rewind: TypeAlias = dict[TopicPartition, int]


class FanoutWorker:
    """Consumes the raw topic until `stop` is set; see the module docstring."""

    def __init__(
        self,
        config: WorkerConfig,
        consumer_options: dict[str, Any],
        producer: AIOKafkaProducer,
        pool: asyncpg.Pool,
        connections: ConnectionStore,
        metrics: WorkerMetrics,
        tracer: Tracer | None = None,
    ) -> None:
        self._config = config
        self._tracer = tracer  # None: tracing is off, no span is made
        self._consumer_options = consumer_options
        self._producer = producer
        self._pool = pool
        self._router = Router(config, connections)
        self._metrics = metrics
        self._publishing: asyncio.Task[_Rewind] | None = None
        self._committing: asyncio.Task[None] | None = None
        # Bumped when a rebalance starts and when it ends: a batch polled before either is not
        # published, nor one polled in between (its partitions' owners start from the committed offsets).
        self._generation = 0
        self._handing_over = False
        self._backoff = 0.0
        self._ready = False

    @property
    def ready(self) -> bool:
        """True once the consumer has joined its group and been given its partitions (none, when the
        group has more members than the raw topic has partitions), until `run` returns. Later
        rebalances keep it: they are part of the work."""
        return self._ready

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until `stop` is set; the batch being published is finished and committed first."""
        consumer = AIOKafkaConsumer(
            **self._consumer_options,
            group_id=self._config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a new group starts with everything the raw log still holds
            session_timeout_ms=self._config.session_timeout_ms,
            heartbeat_interval_ms=max(100, self._config.session_timeout_ms // 3),
            # A broker answers a waiting fetch as soon as records arrive; some (the dev broker) only
            # when the wait ends, so the wait bounds the worker's share of the end-to-end latency.
            fetch_max_wait_ms=self._config.fetch_max_wait_ms,
        )
        consumer.subscribe([self._config.raw_topic], listener=_FinishBatchFirst(self))
        await consumer.start()
        log.info(
            "fan-out worker started", extra={"topic": self._config.raw_topic, "group": self._config.group_id}
        )
        try:
            while not stop.is_set():
                await self._step(consumer, stop)
        finally:
            self._ready = False
            await self._settle()
            await consumer.stop()
            log.info("fan-out worker stopped")

    async def hand_over(self) -> None:
        """Partitions are being revoked: wait for the batch being published; publish nothing polled before."""
        self._generation += 1
        self._handing_over = True
        await self._settle()

    def taken_over(self) -> None:
        """The rebalance is done: publish again, from polls made from now on."""
        self._generation += 1
        self._handing_over = False
        self._ready = True

    async def _step(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Poll and route one batch while the previous one publishes, then start publishing it."""
        batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=self._config.batch_size)
        generation = self._generation
        started = time.perf_counter()
        routed, rewind = await self._route(batch) if batch else ({}, {})
        if self._publishing is not None:
            for tp, offset in (await self._publishing).items():
                rewind[tp] = min(offset, rewind.get(tp, offset))
            self._publishing = None
        assigned = consumer.assignment()
        for tp, offset in rewind.items():
            aside = routed.pop(tp, None)  # polled after the failed records: read again after them
            if aside is not None:
                _end_spans(aside, SET_ASIDE)
            if tp in assigned:
                consumer.seek(tp, offset)
        # A batch polled before or during a rebalance is dropped: the partitions' owners, this
        # worker included, start again from the committed offsets.
        if routed and generation == self._generation and not self._handing_over:
            self._publishing = asyncio.create_task(self._publish(consumer, routed, started))
        else:
            for part in routed.values():
                _end_spans(part, SET_ASIDE)
        if batch or rewind:
            failed = bool(rewind)
            self._backoff = min(RETRY_BACKOFF[1], max(RETRY_BACKOFF[0], self._backoff * 2)) if failed else 0.0
            if failed:
                await self._wait_before_retry(stop)

    async def _route(
        self, batch: dict[TopicPartition, list[RawRecord]]
    ) -> tuple[dict[TopicPartition, _Routed], _Rewind]:
        """Route every partition's records; a partition whose routing failed is to be read again."""
        results = await asyncio.gather(
            *(self._route_partition(records) for records in batch.values()), return_exceptions=True
        )
        routed: dict[TopicPartition, _Routed] = {}
        rewind: _Rewind = {}
        for (tp, records), result in zip(batch.items(), results, strict=True):
            if isinstance(result, BaseException):
                rewind[tp] = self._failed(tp, records, result)
            else:
                routed[tp] = result
        return routed, rewind

    async def _route_partition(self, records: list[RawRecord]) -> _Routed:
        cache: dict[Any, Any] = {}  # connection lookups of this partition batch
        routed = _Routed(records, [], [])
        if self._tracer is not None:
            return await self._route_traced(self._tracer, routed, cache)
        for record in records:
            raw = RawHeaders.read(record.headers)
            routed.providers.append(raw.provider)
            routed.outgoing.extend(await self._router.route(record, cache, raw))
        return routed

    async def _route_traced(self, tracer: Tracer, routed: _Routed, cache: dict[Any, Any]) -> _Routed:
        """`_route_partition` with a span per record, ended once its batch is published (or not)."""
        try:
            for record in routed.records:
                raw = RawHeaders.read(record.headers)
                routed.providers.append(raw.provider)
                span = self._record_span(tracer, record, raw)
                routed.spans.append(span)
                outgoing = await self._router.route(record, cache, raw, span)
                events = 0
                for item in outgoing:
                    if item.topic == self._config.changes_topic:
                        events += 1
                    else:
                        span.set_attribute("ledgerhook.quarantine.reason", item.labels["reason"])
                span.set_attribute("ledgerhook.events", events)
                routed.outgoing.extend(outgoing)
        except BaseException as exc:
            _end_spans(routed, FAILED, exc)
            raise
        return routed

    def _record_span(self, tracer: Tracer, record: RawRecord, raw: RawHeaders) -> Span:
        """The CONSUMER span of one raw record, a child of its webhook request's span (the record's
        `traceparent`), else the root of a trace of its own."""
        provider = raw.provider if raw.provider and parse_provider(raw.provider) else "unknown"
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
            "messaging.consumer.group.name": self._config.group_id,
            "ledgerhook.provider": provider,
        }
        if raw.delivery_id:
            attributes["ledgerhook.delivery_id"] = raw.delivery_id
        if raw.connection_id:
            attributes["ledgerhook.connection_id"] = raw.connection_id
        if raw.redrive_count:
            attributes["ledgerhook.redrive_count"] = raw.redrive_count
        return tracer.start_span(
            f"process {record.topic}",
            context=trace_parent(record.headers),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )

    async def _publish(
        self, consumer: AIOKafkaConsumer, routed: dict[TopicPartition, _Routed], started: float
    ) -> _Rewind:
        """Publish every partition's records; then commit the offsets of those that made it."""
        results = await asyncio.gather(
            *(self._publish_partition(part) for part in routed.values()), return_exceptions=True
        )
        done: dict[TopicPartition, int] = {}
        rewind: _Rewind = {}
        for (tp, part), result in zip(routed.items(), results, strict=True):
            if isinstance(result, BaseException):
                _end_spans(part, FAILED, result)
                rewind[tp] = self._failed(tp, part.records, result)
            else:
                _end_spans(part, PUBLISHED)
                done[tp] = part.records[-1].offset + 1
        # The next batch may publish as soon as this one's transactions are done; the offset
        # commits follow each other in batch order, off that path.
        self._committing = asyncio.create_task(self._commit(consumer, done, self._committing, started))
        return rewind

    async def _commit(
        self,
        consumer: AIOKafkaConsumer,
        done: dict[TopicPartition, int],
        previous: "asyncio.Task[None] | None",
        started: float,
    ) -> None:
        """Commit the offsets of a published batch, after the batch before it."""
        if previous is not None:
            await asyncio.wait({previous})
        if done:
            try:
                await consumer.commit(done)
            except (CommitFailedError, IllegalStateError) as exc:
                # The partitions moved to another worker: it redoes the batch, dedupe drops the repeats.
                log.warning("offset commit failed after a rebalance", extra={"error": type(exc).__name__})
            except Exception as exc:  # a later batch's commit covers these offsets; else they are redone
                log.warning("offset commit failed", extra={"error": type(exc).__name__})
        for tp, next_offset in done.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                self._metrics.lag.labels(str(tp.partition)).set(max(0, highwater - next_offset))
        self._metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _settle(self) -> None:
        """Wait for the batch being published and every offset commit before it to finish."""
        if self._publishing is not None:
            await asyncio.wait({self._publishing})
        if self._committing is not None:
            await asyncio.wait({self._committing})

    def _failed(self, tp: TopicPartition, records: list[RawRecord], error: BaseException) -> int:
        """Count and log a failed partition batch; the offset to read it again from."""
        if not isinstance(error, Exception):
            raise error  # cancellation and the like are not ours to swallow
        self._metrics.failures.inc()
        log.warning(
            "partition batch failed, will retry",
            extra={"partition": tp.partition, "offset": records[0].offset, "error": repr(error)},
        )
        return int(records[0].offset)  # nothing of it is marked seen: redo from its start

    async def _publish_partition(self, part: _Routed) -> None:
        """One partition's records, in order, published as one deduplicated transaction."""
        outgoing = part.outgoing
        published = await publish_once(self._pool, self._producer, outgoing)
        # Counted per label set, not per record: a batch holds thousands of events and few labels.
        for provider, count in collections.Counter(part.providers).items():
            label = provider if provider and parse_provider(provider) else "unknown"
            self._metrics.consumed_for(label).inc(count)
        changes_topic = self._config.changes_topic
        published_by: collections.Counter[tuple[str, str]] = collections.Counter()
        for item in published.produced:
            if item.topic == changes_topic:
                published_by[item.labels["provider"], item.labels["entity"]] += 1
            elif item.topic == self._config.quarantine_topic:
                self._metrics.quarantined.labels(item.labels["reason"]).inc()
                log.warning(
                    "raw record quarantined",
                    extra={
                        "reason": item.labels["reason"],
                        "detail": header(item.headers, H_DETAIL),
                        "delivery_id": header(item.headers, H_DELIVERY_ID),
                    },
                )
        for (provider, entity), count in published_by.items():
            self._metrics.published_for(provider, entity).inc(count)
        # Only change events carry a version, so only they are superseded.
        superseded_by = collections.Counter(item.labels["provider"] for item in published.superseded)
        for provider, count in superseded_by.items():
            self._metrics.superseded_for(provider).inc(count)
        events = sum(1 for item in outgoing if item.topic == changes_topic)
        self._metrics.duplicates.inc(events - published_by.total() - superseded_by.total())

    async def _wait_before_retry(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self._backoff)
