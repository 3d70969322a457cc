"""The backfill runner: one leased backfill job read page by page, its events published with
`origin: "backfill"` to its connection and reconciled like polls.

The poller (`fanout.polling.poller`) leases jobs beside its accounts and hands each to `run`. Every
request goes through the rate budgets as a backfill, which keeps to its share so that regular polls
are never starved. After each page's events are acknowledged, the requests still to make are saved:
a worker that dies hands the job over, and at most one page is read again (same event ids). See
docs/architecture.md, "Backfills".
"""

import logging
from datetime import UTC, datetime, timedelta

from fanout.account_events import HistoryGap
from fanout.polling.adapters import ADAPTERS, CLAMPS, SEND_SPARE, oldest_served
from fanout.polling.backfills import (
    BackfillJob,
    BackfillJobs,
    BackfillLease,
    BackfillLeaseLost,
    BackfillState,
)
from fanout.polling.budget import backoff_seconds
from fanout.polling.fetcher import FetchError, NotAuthorized, PageFetcher, Throttled, Unavailable
from fanout.polling.pages import PageRequest, PollTarget
from fanout.polling.publishing import PageUnparseable, PollerMetrics, PollOutput, poll_target
from fanout.quarantine import safe_detail
from provider_auth.accounts.store import Connection, ConnectionStatus, ConnectionStore

__all__ = ["BackfillRunner"]

log = logging.getLogger("ledgerhook.fanout.backfill")


class BackfillRunner:
    """Runs leased backfill jobs; see the module docstring."""

    def __init__(
        self,
        jobs: BackfillJobs,
        connections: ConnectionStore,
        fetcher: PageFetcher,
        output: PollOutput,
        metrics: PollerMetrics,
        *,
        retry_seconds: float = 5.0,
        retry_cap_seconds: float = 300.0,
        inactive_retry_seconds: float = 60.0,
    ) -> None:
        self._jobs = jobs
        self._connections = connections
        self._fetcher = fetcher
        self._output = output
        self._metrics = metrics
        self._retry_seconds = retry_seconds
        self._retry_cap_seconds = retry_cap_seconds
        self._inactive_retry_seconds = inactive_retry_seconds

    async def run(self, lease: BackfillLease) -> None:
        """Read the job until it is done, fails, or must wait; never raises but to cancellation."""
        job = lease.job
        try:
            finished = await self._run(lease)
        except BackfillLeaseLost as exc:
            log.warning("backfill lease lost", extra=_where(job) | {"detail": str(exc)})
            return
        except NotAuthorized as exc:
            await self._stop(lease, f"not authorized: {exc}", self._inactive_retry_seconds)
            return
        except (Throttled, Unavailable) as exc:
            await self._stop(lease, str(exc), exc.retry_after or self._backoff(job))
            return
        except FetchError as exc:
            # The provider refuses the request itself (a 4xx other than 401 and 429): asking again
            # gets the same answer.
            await self._fail(lease, f"the provider refused a request: {exc}")
            return
        except PageUnparseable as exc:
            await self._fail(lease, f"a page could not be read and was quarantined ({exc})")
            return
        except Exception as exc:  # the database or the broker: try again later
            await self._stop(lease, f"error {type(exc).__name__}", self._backoff(job))
            return
        if finished:
            self._metrics.backfills.labels(job.provider.value, "done").inc()
            log.info("backfill done", extra=_where(job))

    async def _run(self, lease: BackfillLease) -> bool:
        """Read and publish the job's pages; True once done, False when it stopped on its connection."""
        job = lease.job
        connection = await self._connections.get(job.connection_id)
        if connection is None or connection.status is ConnectionStatus.DISCONNECTED:
            await self._fail(lease, "the connection was disconnected")
            return False
        if connection.status is not ConnectionStatus.ACTIVE:
            # needs_reauth or paused: the job waits, as polls do, and goes on once it is active.
            await self._stop(
                lease, f"the connection is {connection.status.value}", self._inactive_retry_seconds
            )
            return False
        module = ADAPTERS[job.provider]
        target = poll_target(job.account, [connection])
        pending = lease.pending
        if pending is None:
            pending = await self._plan(lease, connection, target)
        while pending:
            request = await self._served(lease, connection, pending[0])
            body = await self._fetcher.fetch(job.provider, connection.id, target, request, kind="backfill")
            page = await self._output.parse(job.provider, module, target, request, body)
            published = await self._output.changes(
                job.provider, [connection], page.changes, origin="backfill", received_at=datetime.now(UTC)
            )
            pending = pending[1:] + module.next_requests(target, request, page)
            versions = [c.occurred_at for c in page.changes if c.occurred_at is not None]
            await self._jobs.page_done(
                lease,
                pending,
                records=len(page.changes),
                events=len(published.produced),
                position=max(versions, default=None),
            )
        await self._jobs.finish(lease, BackfillState.DONE)
        return True

    async def _plan(
        self, lease: BackfillLease, connection: Connection, target: PollTarget
    ) -> list[PageRequest]:
        """The job's first requests, from `since` or from the oldest change the provider still serves
        (announcing the lost window as a history gap)."""
        job = lease.job
        now = datetime.now(UTC)
        since = job.since
        floor = oldest_served(job.provider, now)
        if floor is not None and since < floor:
            await self._output.history_gaps([self._gap(job, connection, since, floor)])
            since = floor
        requests = ADAPTERS[job.provider].first_requests(target, since, job.entities)
        await self._jobs.plan(lease, requests)
        return requests

    async def _served(
        self, lease: BackfillLease, connection: Connection, request: PageRequest
    ) -> PageRequest:
        """`request` moved up to the oldest point the provider serves now, when it was planned at that
        edge and the job waited since (a 429, a handover, a paused connection); the window it skips
        is announced as a history gap."""
        job = lease.job
        clamp = CLAMPS.get(job.provider)
        now = datetime.now(UTC)
        floor, close = oldest_served(job.provider, now), oldest_served(job.provider, now, SEND_SPARE)
        if clamp is None or floor is None or close is None or clamp(request, close)[1] is None:
            return request  # still served, with its permit wait and travel ahead
        served, skipped_from = clamp(request, floor)
        if skipped_from is not None:
            await self._output.history_gaps([self._gap(job, connection, skipped_from, floor)])
        return served

    def _gap(
        self, job: BackfillJob, connection: Connection, lost_from: datetime, lost_until: datetime
    ) -> HistoryGap:
        """The history gap of `job` from `lost_from` to `lost_until`."""
        return HistoryGap(
            tenant_id=connection.tenant_id,
            connection_id=connection.id,
            provider=job.provider,
            provider_account_id=job.account,
            entities=job.entities,
            lost_from=lost_from,
            lost_until=lost_until,
            origin="backfill",
            occurred_at=datetime.now(UTC),
            job_id=job.id,
        )

    async def _stop(self, lease: BackfillLease, reason: str, retry_in: float) -> None:
        """Let the job wait `retry_in` seconds, saying why (logged once, never a token or a body)."""
        detail = safe_detail(reason)
        log.warning("backfill waits", extra=_where(lease.job) | {"detail": detail, "retry_in": retry_in})
        try:
            await self._jobs.release(lease, detail, timedelta(seconds=retry_in))
        except Exception as exc:  # lost or unreachable: the lease runs out and the job is due again
            log.warning("backfill not released", extra=_where(lease.job) | {"error": type(exc).__name__})

    async def _fail(self, lease: BackfillLease, reason: str) -> None:
        detail = safe_detail(reason)
        log.warning("backfill failed", extra=_where(lease.job) | {"detail": detail})
        self._metrics.backfills.labels(lease.job.provider.value, "failed").inc()
        try:
            await self._jobs.finish(lease, BackfillState.FAILED, detail)
        except Exception as exc:
            log.warning("backfill not recorded", extra=_where(lease.job) | {"error": type(exc).__name__})

    def _backoff(self, job: BackfillJob) -> float:
        return backoff_seconds(job.attempts, base=self._retry_seconds, cap=self._retry_cap_seconds)


def _where(job: BackfillJob) -> dict[str, str]:
    return {"backfill": job.id, "connection": job.connection_id, "provider": job.provider.value}
