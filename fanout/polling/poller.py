"""The change poller: leased provider accounts polled through their change APIs, onto the changes topic.

One task per worker process. It keeps `poll_accounts` in line with the connections, leases the
accounts that are due, and polls up to `concurrency` of them at once: pages fetched, parsed, turned
into one `origin: "poll"` event per change and active connection and published once (dedupe), and
the account's watermarks moved only after every page behind them was acknowledged. A crash at any
instant repeats at most one poll, whose events carry the same ids. Leases and watermarks:
docs/architecture.md, "Polling state"; when a provider's app-wide limit cannot cover every account at
its interval, the intervals stretch fairly (docs/architecture.md, "Interval stretch"); the events:
docs/events.md. With tracing on, each poll is a
span whose trace context its events carry (docs/architecture.md, "Tracing").
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from prometheus_client import CollectorRegistry, Gauge

from fanout.account_events import HistoryGap
from fanout.changes import ProviderChange
from fanout.cloudevents import tracing_extension
from fanout.polling.adapters import ADAPTERS, WEBHOOK_PROVIDERS, PollingModule, oldest_served
from fanout.polling.backfill import BackfillRunner
from fanout.polling.backfills import BackfillJobs, BackfillLeaseLost
from fanout.polling.budget import ProviderLimits, app_budget, backoff_seconds, stretch_intervals
from fanout.polling.fetcher import FetchError, NotAuthorized, PageFetcher, Throttled, Unavailable
from fanout.polling.pages import PageRequest, PollTarget
from fanout.polling.publishing import (
    POLL_UNPARSEABLE,
    PageUnparseable,
    PollerMetrics,
    PollOutput,
    PollTopics,
    poll_target,
)
from fanout.polling.state import (
    POLLED_PROVIDERS,
    AccountLease,
    Demand,
    IntervalStretch,
    LeaseLost,
    PollState,
)
from fanout.quarantine import safe_detail
from fanout.raw import trace_headers
from provider_auth.accounts.store import Connection, ConnectionStatus, ConnectionStore, PollingMode
from provider_auth.providers import Provider

__all__ = [
    "POLL_UNPARSEABLE",
    "Poller",
    "PollerConfig",
    "PollerMetrics",
    "SchedulerMetrics",
    "estimated_requests_per_poll",
    "plan_stretches",
]

log = logging.getLogger("ledgerhook.fanout.poller")


@dataclass(frozen=True, slots=True)
class PollerConfig:
    """Topics and timing of the poller (from the gateway's settings)."""

    changes_topic: str
    quarantine_topic: str
    account_events_topic: str
    # The intervals of connections polled (no webhooks) and swept (webhooks) that name none.
    poll_interval_seconds: int = 300
    sweep_interval_seconds: int = 3600
    # Accounts polled and backfills run at once by this process; backfills take at most half.
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
    # The part of a provider's app-wide limit the intervals are planned on (the rest is headroom
    # for backfills, retries and polls costlier than their mean), and how many times as far swept
    # accounts' intervals stretch as polled ones' when both must (docs/architecture.md,
    # "Interval stretch").
    app_budget_share: float = 0.9
    sweep_yield: float = 4.0
    # Keep the ids of polled changes too, not only their records' versions: webhooks publish the
    # same records without versions (LEDGERHOOK_RECONCILE_WEBHOOKS=false), and only ids meet then.
    remember_reconciled: bool = False

    @property
    def topics(self) -> PollTopics:
        """Where polled events, refused pages and history gaps go."""
        return PollTopics(self.changes_topic, self.quarantine_topic, self.account_events_topic)

    @property
    def backfill_slots(self) -> int:
        """Backfills run at once in this process: half the concurrency (at least one)."""
        return max(1, self.concurrency // 2)


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
    # The poll's trace context (tracing on) as its events' and quarantined pages' headers.
    event_trace: list[tuple[str, bytes]] = field(default_factory=list)
    record_trace: list[tuple[str, bytes]] = field(default_factory=list)
    pages: int = 0
    records: int = 0
    events: int = 0


# Live rate budget entries per provider (scope keys `<provider>/account/<account>/<label>`,
# fanout/polling/budget.py): the account minute windows, and the requests in flight.
_BUDGET_IN_USE = (
    "SELECT split_part(scope_key, '/', 1) AS provider,"
    " count(*) FILTER (WHERE scope_key LIKE '%/account/%/minute') AS minute,"
    " count(*) FILTER (WHERE held) AS in_flight"
    " FROM rate_budget_entries WHERE expires_at > clock_timestamp() GROUP BY 1"
)


class SchedulerMetrics:
    """The scheduler's Prometheus metrics, in a registry handed in by the process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stretch = Gauge(
            "ledgerhook_poll_interval_stretch",
            "The factor polled (`poll`) and swept (`sweep`) accounts' intervals are stretched by to fit"
            " the provider's app-wide rate limit (1: not stretched); as of the last sync.",
            ["provider", "mode"],
            registry=registry,
        )


def estimated_requests_per_poll(provider: Provider) -> float:
    """What a poll of an account never polled yet is assumed to cost: the first request of each of
    its entities (one call per entity, or one for all where the change API reads them together)."""
    module = ADAPTERS[provider]
    return float(len(module.first_requests(PollTarget("estimate"), datetime.now(UTC), module.ENTITIES)))


def plan_stretches(
    demands: Sequence[Demand],
    limits: Callable[[Provider], ProviderLimits],
    *,
    minute: float,
    share: float,
    sweep_yield: float,
    requests_per_poll: Callable[[Provider], float] = estimated_requests_per_poll,
) -> list[IntervalStretch]:
    """Each provider's stretch for its polled and swept accounts, from what they ask for and its
    app-wide limit (`limits`, per `minute` seconds, `share` of it planned on)."""
    by_provider: dict[Provider, dict[bool, Demand]] = {}
    for demand in demands:
        by_provider.setdefault(demand.provider, {})[demand.sweep] = demand
    planned: list[IntervalStretch] = []
    for provider, kinds in sorted(by_provider.items(), key=lambda item: item[0].value):
        cost = requests_per_poll(provider)
        asked = {sweep: d.requests_per_second(cost) for sweep, d in kinds.items()}
        budget = app_budget(limits(provider), minute, share)
        factors = stretch_intervals(asked.get(False, 0.0), asked.get(True, 0.0), budget, sweep_yield)
        for sweep in (False, True):
            found = kinds.get(sweep)
            planned.append(
                IntervalStretch(
                    provider=provider,
                    sweep=sweep,
                    stretch=factors.sweep if sweep else factors.poll,
                    accounts=0 if found is None else found.accounts,
                    demand=asked.get(sweep, 0.0),
                    budget=budget,
                )
            )
    return planned


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
# Connections not usable yet by design (registered before their tokens were handed over, or
# paused): their failed polls are logged at INFO, so they do not read as faults.
EXPECTED_AUTH_REASONS = frozenset({"no_credentials", "paused"})


class Poller:
    """Polls the due provider accounts, and runs backfill jobs, until `stop` is set; see the module
    docstring."""

    def __init__(
        self,
        config: PollerConfig,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        fetcher: PageFetcher,
        metrics: PollerMetrics,
        *,
        owner: str | None = None,
        tracer: Tracer | None = None,
        scheduler_metrics: SchedulerMetrics | None = None,
    ) -> None:
        self._config = config
        self._scheduler_metrics = scheduler_metrics
        self._pool = pool
        self._fetcher = fetcher
        self._metrics = metrics
        self._tracer = tracer  # None: tracing is off
        self._state = PollState(pool)
        self._connections = ConnectionStore(pool, keyring=None)  # reads no secrets
        self._output = PollOutput(
            config.topics, pool, producer, metrics, remember_reconciled=config.remember_reconciled
        )
        self._backfills = BackfillJobs(pool)
        self._backfill = BackfillRunner(
            self._backfills,
            self._connections,
            fetcher,
            self._output,
            metrics,
            retry_seconds=config.error_backoff_seconds,
            retry_cap_seconds=float(config.poll_interval_seconds),
        )
        # Unique per process and per start: a restarted process does not own its predecessor's leases.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._failures: dict[tuple[Provider, str], int] = {}
        self._ready = False
        self._requests_per_poll: dict[Provider, float] = {}

    @property
    def ready(self) -> bool:
        """True once `run` has made its first scheduling pass (synced and leased), until it returns."""
        return self._ready

    async def run(self, stop: asyncio.Event) -> None:
        """Sync, lease and poll until `stop` is set; running polls get `stop_grace_seconds` to finish."""
        polls: set[asyncio.Task[None]] = set()
        backfills: set[asyncio.Task[None]] = set()
        next_sync = 0.0
        log.info("change poller started", extra={"owner": self.owner})
        try:
            while not stop.is_set():
                try:
                    if time.monotonic() >= next_sync:
                        await self._sync()
                        next_sync = time.monotonic() + self._config.sync_seconds
                    # Backfills first, so that a steady stream of due polls cannot keep them from
                    # ever starting; they hold at most `backfill_slots`, and polls the rest.
                    await self._start_backfills(polls, backfills)
                    await self._start_polls(polls, backfills)
                    self._ready = True
                except Exception as exc:  # the database is down, say: look again after the pause
                    log.warning(
                        "poll scheduling failed",
                        extra={"error": type(exc).__name__, "detail": safe_detail(str(exc))},
                    )
                await _wait_any(stop, polls | backfills, self._config.idle_seconds)
            if polls or backfills:
                await asyncio.wait(polls | backfills, timeout=self._config.stop_grace_seconds)
        finally:
            self._ready = False
            # Cancelled, or out of grace: the leases of unfinished work run out and are taken over.
            running = polls | backfills
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            log.info("change poller stopped", extra={"owner": self.owner})

    async def _start_polls(
        self, polls: set["asyncio.Task[None]"], backfills: set["asyncio.Task[None]"]
    ) -> None:
        """Lease the due accounts that fit in the free slots and start polling them."""
        free = self._config.concurrency - len(polls) - len(backfills)
        if free <= 0:
            return
        for lease in await self._state.lease_due(self.owner, free, self._config.lease_seconds):
            renew = _renewer(self._state.renew, lease, self._config.lease_seconds)
            _start(polls, self._holding(self.poll(lease), renew, _where(lease)))

    async def _start_backfills(
        self, polls: set["asyncio.Task[None]"], backfills: set["asyncio.Task[None]"]
    ) -> None:
        """Lease runnable backfill jobs into free slots, up to the backfill share of them."""
        free = min(
            self._config.concurrency - len(polls) - len(backfills),
            self._config.backfill_slots - len(backfills),
        )
        if free <= 0:
            return
        for lease in await self._backfills.lease_due(self.owner, free, self._config.lease_seconds):
            renew = _renewer(self._backfills.renew, lease, self._config.lease_seconds)
            where = {"backfill": lease.job.id, "provider": lease.job.provider.value}
            _start(backfills, self._holding(self._backfill.run(lease), renew, where))

    async def _sync(self) -> None:
        """`poll_accounts` in line with the connections (each account at the shortest interval its
        connections' polling settings ask for), and the watermark lag per provider."""
        await self._state.sync_accounts(
            self._config.poll_interval_seconds,
            self._config.sweep_interval_seconds,
            providers=POLLED_PROVIDERS,
            webhook_providers=WEBHOOK_PROVIDERS,
        )
        await self._restretch()
        rows = await self._pool.fetch(
            "SELECT a.provider, extract(epoch FROM now() - min(w.watermark)) AS lag"
            " FROM poll_accounts a JOIN poll_watermarks w USING (provider, provider_account_id)"
            " WHERE a.enabled GROUP BY a.provider"
        )
        for row in rows:
            self._metrics.lag.labels(row["provider"]).set(float(row["lag"]))
        for row in await self._pool.fetch(_BUDGET_IN_USE):
            self._metrics.budget_in_use.labels(row["provider"], "minute").set(row["minute"])
            self._metrics.budget_in_use.labels(row["provider"], "in_flight").set(row["in_flight"])

    async def _restretch(self) -> None:
        """Each provider's stretch from what its enabled accounts ask for now, stored for every
        worker's next `finish`, and shown by the metric."""
        budgets = self._fetcher.budgets
        stretches = plan_stretches(
            await self._state.demand(),
            lambda provider: budgets.limits.get(provider, ProviderLimits()),
            minute=budgets.minute,
            share=self._config.app_budget_share,
            sweep_yield=self._config.sweep_yield,
            requests_per_poll=self._estimated_requests,
        )
        await self._state.set_stretches(stretches)
        if self._scheduler_metrics is not None:
            for row in stretches:
                mode = PollingMode.SWEEP if row.sweep else PollingMode.POLL
                self._scheduler_metrics.stretch.labels(row.provider.value, mode.value).set(row.stretch)

    def _estimated_requests(self, provider: Provider) -> float:
        """`estimated_requests_per_poll`, worked out once per provider."""
        if provider not in self._requests_per_poll:
            self._requests_per_poll[provider] = estimated_requests_per_poll(provider)
        return self._requests_per_poll[provider]

    async def _holding(
        self, work: Awaitable[None], renew: Callable[[], Awaitable[None]], where: dict[str, str]
    ) -> None:
        """Run `work` while renewing its lease every third of its length; when the lease is lost,
        the work is cancelled. Never raises but to cancellation."""
        task = asyncio.ensure_future(work)

        async def renewing() -> None:
            while True:
                await asyncio.sleep(self._config.lease_seconds / 3)
                try:
                    await renew()
                except (LeaseLost, BackfillLeaseLost) as exc:
                    log.warning("lease lost; work abandoned", extra=where | {"detail": str(exc)})
                    task.cancel()
                    return
                except Exception as exc:  # a database hiccup: the next renewal may go through
                    log.warning("lease renewal failed", extra=where | {"error": type(exc).__name__})

        renewal = asyncio.create_task(renewing())
        try:
            await asyncio.wait({task})
        finally:
            renewal.cancel()
            task.cancel()
            await asyncio.gather(renewal, task, return_exceptions=True)

    async def poll(self, lease: AccountLease) -> None:
        """One poll of a leased account, finished with its outcome; failures are logged, not raised.

        With tracing on, the poll is a span of its own (a token refresh it needs is a child), naming
        the provider, account, entities, pages, records read, events published and outcome."""
        if self._tracer is None:
            await self._poll_once(lease, None)
            return
        with self._tracer.start_as_current_span(
            f"poll {lease.provider.value}",
            context=Context(),
            kind=SpanKind.INTERNAL,
            attributes={"ledgerhook.provider": lease.provider.value, "ledgerhook.account": lease.account},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            await self._poll_once(lease, span)

    async def _poll_once(self, lease: AccountLease, span: Span | None) -> None:
        key = (lease.provider, lease.account)
        outcome, delay, detail = OK, None, ""
        requests: int | None = None
        level = logging.WARNING
        try:
            outcome, requests = await self._poll(lease, span)
        except LeaseLost as exc:
            log.warning("poll lease lost", extra=_where(lease) | {"detail": str(exc)})
            self._metrics.polls.labels(lease.provider.value, "lease_lost").inc()
            if span is not None:
                _note_outcome(span, "lease_lost")
            return
        except NotAuthorized as exc:
            outcome, delay, detail = AUTH, self._config.auth_backoff_seconds, str(exc)
            if exc.reason in EXPECTED_AUTH_REASONS:
                level = logging.INFO
        except (Throttled, Unavailable) as exc:
            outcome = THROTTLED if isinstance(exc, Throttled) else UNAVAILABLE
            delay, detail = exc.retry_after or self._backoff(key), str(exc)
        except FetchError as exc:
            outcome, delay, detail = REFUSED, self._backoff(key), str(exc)
        except PageUnparseable as exc:
            outcome, delay, detail = UNPARSEABLE, self._backoff(key), str(exc)
        except Exception as exc:
            outcome, delay, detail = ERROR, self._backoff(key), type(exc).__name__
        if span is not None:
            _note_outcome(span, outcome)
        if outcome == OK:
            self._failures.pop(key, None)  # due again one interval (the account's) after it started
        else:
            # One line per failed poll: where and why, never a token or a body.
            where = _where(lease) | {"outcome": outcome, "detail": safe_detail(detail)}
            log.log(level, "poll failed", extra=where)
        self._metrics.polls.labels(lease.provider.value, outcome).inc()
        try:
            await self._state.finish(
                lease, outcome, None if delay is None else timedelta(seconds=delay), requests=requests
            )
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

    async def _poll(self, lease: AccountLease, span: Span | None = None) -> tuple[str, int | None]:
        """Read every change since the watermarks, publish them, then move the watermarks; the
        outcome, and the requests (pages) a successful poll made."""
        started = datetime.now(UTC)
        # A connection with polling off gets no polled events, whoever else polls its account.
        connections = [
            c
            for c in await self._connections.by_account(lease.provider, lease.account)
            if c.status is ConnectionStatus.ACTIVE and c.polling.mode is not PollingMode.OFF
        ]
        if not connections:
            return INACTIVE, None  # went inactive or off since the last sync, which disables the account
        module = ADAPTERS[lease.provider]
        target = poll_target(lease.account, connections)
        poll = _Poll(lease, module, target, connections, started)
        if span is not None:
            poll.event_trace = tracing_extension(span)
            poll.record_trace = trace_headers(span)
            span.set_attribute("ledgerhook.poll.entities", len(module.ENTITIES))
        try:
            watermarks = await self._state.watermarks(lease.provider, lease.account)
            queue = deque(await self._first_requests(poll, watermarks))
            while queue:
                request = queue.popleft()
                body = await self._fetch(poll, request)
                page = await self._output.parse(
                    lease.provider, module, target, request, body, trace=poll.record_trace
                )
                poll.pages += 1
                if poll.server_time is None:
                    poll.server_time = page.server_time
                _note_latest(poll, page.changes)
                published = await self._output.changes(
                    lease.provider,
                    connections,
                    page.changes,
                    origin="poll",
                    received_at=started,
                    trace=poll.event_trace,
                )
                poll.records += len(page.changes)
                poll.events += len(published.produced)
                queue.extend(module.next_requests(target, request, page))
        finally:
            if span is not None:
                span.set_attribute("ledgerhook.poll.pages", poll.pages)
                span.set_attribute("ledgerhook.poll.records", poll.records)
                span.set_attribute("ledgerhook.poll.events", poll.events)
        async with self._pool.acquire() as conn, conn.transaction():
            await self._state.advance(conn, lease, _new_watermarks(poll))
        return OK, poll.pages

    async def _first_requests(self, poll: _Poll, watermarks: dict[str, datetime]) -> list[PageRequest]:
        """Each entity from its watermark less the overlap; an account never polled from its earliest
        connection's creation (earlier history is a backfill's). One call per distinct start.

        A watermark older than the provider serves starts at the oldest point it does, and the lost
        window is announced to every connection as a history gap."""
        first = min(c.created_at for c in poll.connections)
        floor = oldest_served(poll.lease.provider, poll.started)
        by_start: dict[datetime, list[str]] = {}
        lost: dict[datetime, list[str]] = {}
        for entity in poll.module.ENTITIES:
            mark = watermarks.get(entity)
            since = mark - poll.module.OVERLAP if mark is not None else first
            if floor is not None and since < floor:
                if mark is not None:  # never polled: nothing was promised before the connection
                    lost.setdefault(mark, []).append(entity)
                since = floor
            by_start.setdefault(since, []).append(entity)
        if lost and floor is not None:
            await self._output.history_gaps(
                [
                    HistoryGap(
                        tenant_id=connection.tenant_id,
                        connection_id=connection.id,
                        provider=poll.lease.provider,
                        provider_account_id=poll.lease.account,
                        entities=entities,
                        lost_from=mark,
                        lost_until=floor,
                        origin="poll",
                        occurred_at=poll.started,
                    )
                    for mark, entities in sorted(lost.items())
                    for connection in poll.connections
                ],
                trace=poll.event_trace,
            )
            log.warning(
                "changes older than the provider serves are out of reach; history gap published",
                extra=_where(poll.lease) | {"entities": ",".join(e for es in lost.values() for e in es)},
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


def _note_outcome(span: Span, outcome: str) -> None:
    """A poll's outcome on its span; anything but `ok` and `inactive` marks it failed."""
    span.set_attribute("ledgerhook.outcome", outcome)
    if outcome not in (OK, INACTIVE):
        span.set_status(Status(StatusCode.ERROR, outcome))


def _note_latest(poll: _Poll, changes: Sequence[ProviderChange]) -> None:
    """Keep the latest change time read per polled entity (the watermark of providers whose answer
    carries no clock)."""
    for change in changes:
        if change.occurred_at is not None and change.entity in poll.module.ENTITIES:
            latest = poll.latest.get(change.entity)
            if latest is None or change.occurred_at > latest:
                poll.latest[change.entity] = change.occurred_at


def _new_watermarks(poll: _Poll) -> dict[str, datetime]:
    """Where each entity's next poll starts: the provider's clock at the first page when it gave
    one, else the latest change read per entity (never past the poll's start); others unchanged."""
    if poll.server_time is not None:
        return dict.fromkeys(poll.module.ENTITIES, poll.server_time)
    return {entity: min(latest, poll.started) for entity, latest in poll.latest.items()}


def _renewer(
    renew: Callable[[Any, float], Awaitable[object]], lease: Any, seconds: float
) -> Callable[[], Awaitable[None]]:
    """A no-argument renewal of `lease` for `seconds`."""

    async def renewing() -> None:
        await renew(lease, seconds)

    return renewing


def _start(tasks: set["asyncio.Task[None]"], work: Awaitable[None]) -> None:
    task = asyncio.ensure_future(work)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


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
