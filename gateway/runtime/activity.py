"""Recent activity for the console's charts: per-minute totals of a few of the process's metrics,
kept in PostgreSQL (`activity_minutes`) and summed over every process that records them.

Each process runs one `ActivityRecorder` on its own metrics registry (the worker, and the gateway
when no worker runs in its process), which adds what its counters gained since its last flush and
the largest value of a gauge to the minute; `ActivityHistory` reads a metric's minutes back
(docs/architecture.md, "Recent activity").
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import asyncpg
from prometheus_client import CollectorRegistry

__all__ = [
    "ACTIVITY_METRICS",
    "EVENTS_PUBLISHED",
    "POLL_WATERMARK_LAG",
    "RECORDS_QUARANTINED",
    "RETENTION",
    "TOKEN_REFRESH_FAILURES",
    "WEBHOOK_DELIVERIES",
    "ActivityHistory",
    "ActivityMetric",
    "ActivityRecorder",
    "Kind",
    "Source",
    "recording_activity",
]

log = logging.getLogger("ledgerhook.activity")

MINUTE = timedelta(minutes=1)
RETENTION = timedelta(hours=48)
PRUNE_EVERY = timedelta(hours=1)
FLUSH_TIMEOUT_SECONDS = 10.0
# After a minute ends, wait this long before flushing it, so increments made right at the boundary
# are counted in the minute they belong to.
SETTLE_SECONDS = 1.0


class Kind(StrEnum):
    """How a metric's minutes combine: counters add their increase, gauges keep the largest value."""

    COUNTER = "counter"
    GAUGE = "gauge"


@dataclass(frozen=True, slots=True)
class Source:
    """Samples of one Prometheus series family: `only` labels must match, `excluding` must not."""

    sample: str
    only: Mapping[str, str] = field(default_factory=dict)
    excluding: Mapping[str, str] = field(default_factory=dict)

    def takes(self, name: str, labels: Mapping[str, str]) -> bool:
        """True for a sample of this source."""
        return (
            name == self.sample
            and all(labels.get(k) == v for k, v in self.only.items())
            and not any(labels.get(k) == v for k, v in self.excluding.items())
        )


@dataclass(frozen=True, slots=True)
class ActivityMetric:
    """One recorded metric: its name in `activity_minutes` and the samples it is made of."""

    name: str
    kind: Kind
    sources: tuple[Source, ...]


WEBHOOK_DELIVERIES = "webhook_deliveries"
EVENTS_PUBLISHED = "events_published"
RECORDS_QUARANTINED = "records_quarantined"
TOKEN_REFRESH_FAILURES = "token_refresh_failures"  # noqa: S105 - a metric name
POLL_WATERMARK_LAG = "poll_watermark_lag_seconds"

ACTIVITY_METRICS = (
    # Deliveries stored in the raw log and answered 200 (gateway.runtime.metrics).
    ActivityMetric(
        WEBHOOK_DELIVERIES,
        Kind.COUNTER,
        (Source("ledgerhook_webhook_requests_total", {"outcome": "stored"}),),
    ),
    # Change events published by the fan-out worker and by polls and backfills.
    ActivityMetric(
        EVENTS_PUBLISHED,
        Kind.COUNTER,
        (
            Source("ledgerhook_fanout_events_published_total"),
            Source("ledgerhook_poll_events_published_total"),
        ),
    ),
    ActivityMetric(RECORDS_QUARANTINED, Kind.COUNTER, (Source("ledgerhook_fanout_quarantined_total"),)),
    # Token endpoint calls that did not renew the grant, whatever the reason.
    ActivityMetric(
        TOKEN_REFRESH_FAILURES,
        Kind.COUNTER,
        (Source("ledgerhook_token_refreshes_total", excluding={"outcome": "success"}),),
    ),
    # The oldest watermark's age, over every polled provider.
    ActivityMetric(POLL_WATERMARK_LAG, Kind.GAUGE, (Source("ledgerhook_poll_watermark_lag_seconds"),)),
)
_BY_NAME = {metric.name: metric for metric in ACTIVITY_METRICS}

SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]  # activity metric, sample, labels


def minute_of(moment: datetime) -> datetime:
    """The start of the minute holding `moment`."""
    return moment.replace(second=0, microsecond=0)


class ActivityRecorder:
    """Periodic task: after each minute, add what the registry's metrics did in it to
    `activity_minutes`, in one statement; delete rows past the retention once an hour."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        registry: CollectorRegistry,
        metrics: tuple[ActivityMetric, ...] = ACTIVITY_METRICS,
        retention: timedelta = RETENTION,
    ) -> None:
        self._pool = pool
        self._registry = registry
        self._metrics = metrics
        self._retention = retention
        # The counter values last written, per series; a process's counters start at 0.
        self._written: dict[SeriesKey, float] = {}
        self._pruned_at: datetime | None = None

    def _read(self) -> tuple[dict[SeriesKey, float], dict[str, float]]:
        """The counters' values per series and each gauge's largest value, from the registry now."""
        counters: dict[SeriesKey, float] = {}
        gauges: dict[str, float] = {}
        for family in self._registry.collect():
            for sample in family.samples:
                for metric in self._metrics:
                    if not any(source.takes(sample.name, sample.labels) for source in metric.sources):
                        continue
                    if metric.kind is Kind.GAUGE:
                        gauges[metric.name] = max(gauges.get(metric.name, sample.value), sample.value)
                    else:
                        key = (metric.name, sample.name, tuple(sorted(sample.labels.items())))
                        counters[key] = sample.value
        return counters, gauges

    def _deltas(self, counters: dict[SeriesKey, float]) -> dict[str, float]:
        """What each counter metric gained since the last flush; a series that went down was reset
        (it restarted from 0), so all of its current value is new."""
        deltas: dict[str, float] = {}
        for key, value in counters.items():
            before = self._written.get(key, 0.0)
            gained = value - before if value >= before else value
            if gained > 0:
                deltas[key[0]] = deltas.get(key[0], 0.0) + gained
        return deltas

    async def flush(self, minute: datetime) -> None:
        """Add the counters' increase since the last flush, and the gauges' values, to `minute`: one
        statement, nothing when there is nothing to add. Progress is kept only once it is stored, so a
        failed flush is retried by the next one."""
        counters, gauges = self._read()
        values = self._deltas(counters) | gauges
        if values:
            names = sorted(values)
            await self._pool.execute(
                "INSERT INTO activity_minutes (minute, metric, value)"
                " SELECT $1, * FROM unnest($2::text[], $3::float8[])"
                " ON CONFLICT (minute, metric) DO UPDATE SET value = CASE"
                " WHEN EXCLUDED.metric = ANY($4::text[])"
                " THEN GREATEST(activity_minutes.value, EXCLUDED.value)"
                " ELSE activity_minutes.value + EXCLUDED.value END",
                minute_of(minute),
                names,
                [values[name] for name in names],
                [metric.name for metric in self._metrics if metric.kind is Kind.GAUGE],
            )
        self._written = counters

    async def prune(self, now: datetime) -> None:
        """Delete the minutes older than the retention (a range of the primary key)."""
        await self._pool.execute("DELETE FROM activity_minutes WHERE minute < $1", now - self._retention)
        self._pruned_at = now

    async def run(self, stop: asyncio.Event) -> None:
        """Flush each minute just after it ends, until `stop` is set; then flush the minute in
        progress. A failed flush is logged and retried with the next minute's."""
        while not stop.is_set():
            now = datetime.now(UTC)
            ends = minute_of(now) + MINUTE
            wait = (ends - now).total_seconds() + SETTLE_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            if stop.is_set():
                break
            await self._guarded(ends - MINUTE)
        await self._guarded(datetime.now(UTC))

    async def _guarded(self, minute: datetime) -> None:
        try:
            async with asyncio.timeout(FLUSH_TIMEOUT_SECONDS):
                await self.flush(minute)
                now = datetime.now(UTC)
                if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
                    await self.prune(now)
        except Exception as exc:  # best effort: the next minute's flush carries this one's increase
            log.warning("activity flush failed", extra={"error": type(exc).__name__})


@contextlib.asynccontextmanager
async def recording_activity(pool: asyncpg.Pool, registry: CollectorRegistry) -> AsyncIterator[None]:
    """An `ActivityRecorder` running in the current loop for the block; on exit it flushes what is
    left and stops."""
    stop = asyncio.Event()
    task = asyncio.create_task(ActivityRecorder(pool, registry).run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


class ActivityHistory:
    """Reads recorded activity back, for the console."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def series(
        self, metric: str, hours: int, now: datetime | None = None
    ) -> list[tuple[datetime, float | None]]:
        """Every minute of the last `hours` (1 to 48), oldest first, ending with the current one: a
        counter's missing minutes are 0, a gauge's None (nothing was measured)."""
        known = _BY_NAME.get(metric)
        if known is None:
            raise ValueError(f"unknown activity metric {metric!r}; one of {', '.join(_BY_NAME)}")
        if not 1 <= hours <= RETENTION // timedelta(hours=1):
            raise ValueError("hours must be from 1 to 48")
        last = minute_of(now or datetime.now(UTC))
        first = last - timedelta(hours=hours) + MINUTE
        rows = await self._pool.fetch(
            "SELECT minute, value FROM activity_minutes WHERE minute >= $1 AND minute <= $2 AND metric = $3",
            first,
            last,
            metric,
        )
        found: dict[datetime, float] = {row["minute"]: row["value"] for row in rows}
        missing = 0.0 if known.kind is Kind.COUNTER else None
        return [(first + i * MINUTE, found.get(first + i * MINUTE, missing)) for i in range(hours * 60)]
