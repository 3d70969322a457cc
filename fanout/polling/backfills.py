"""Backfill jobs in PostgreSQL: what to replay for a connection, how far each job got, who runs it.

A job is planned into page requests on its first lease and saved after every published page (the
requests still to make, the counts, the latest version read), so a worker that dies hands the job
over and it resumes at the page it was on. Table (migration 0007) and lifecycle:
docs/architecture.md, "Backfills".
"""

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg
import orjson

from fanout.polling.adapters import ADAPTERS
from fanout.polling.pages import PageRequest
from fanout.vocabulary import entity_name
from provider_auth.accounts.store import Connection
from provider_auth.ids import canonical_uuid, uuid7
from provider_auth.providers import Provider

__all__ = [
    "BackfillJob",
    "BackfillJobs",
    "BackfillLease",
    "BackfillLeaseLost",
    "BackfillOpen",
    "BackfillState",
    "requests_from_json",
    "requests_to_json",
    "resolve_entities",
]


class BackfillState(StrEnum):
    """Where a job is: waiting for a worker, being read, or finished."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class BackfillJob:
    """One backfill and how far it got."""

    id: str
    connection_id: str
    provider: Provider
    account: str
    entities: tuple[str, ...]
    since: datetime
    until: datetime
    state: BackfillState
    pages_done: int
    # Page requests still to make; None before the job was planned.
    pages_pending: int | None
    records_read: int
    events_published: int
    position: datetime | None
    last_error: str | None
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        """Done or failed: nothing more happens to it."""
        return self.state in (BackfillState.DONE, BackfillState.FAILED)

    def progress(self) -> float:
        """How far through [since, until) the job has read, from 0 to 1 (1 once done)."""
        if self.state is BackfillState.DONE:
            return 1.0
        if self.position is None:
            return 0.0
        span = (self.until - self.since).total_seconds()
        if span <= 0:
            return 0.0
        return min(1.0, max(0.0, (self.position - self.since).total_seconds() / span))

    def seconds_left(self, now: datetime) -> float | None:
        """An estimate of the running time left, from the pace so far; None until there is one."""
        if self.finished:
            return 0.0 if self.state is BackfillState.DONE else None
        done = self.progress()
        if self.started_at is None or done <= 0:
            return None
        elapsed = max(0.0, (now - self.started_at).total_seconds())
        return elapsed * (1 - done) / done


@dataclass(frozen=True, slots=True)
class BackfillLease:
    """One worker's right to run one job until `lease_until` (PostgreSQL's clock)."""

    job: BackfillJob
    owner: str
    lease_id: str
    lease_until: datetime
    # The page requests still to make; None when the job was never planned.
    pending: list[PageRequest] | None


class BackfillOpen(Exception):
    """The connection already has a queued or running backfill (`job`)."""

    def __init__(self, job: BackfillJob) -> None:
        super().__init__(f"connection {job.connection_id} already has backfill {job.id} ({job.state})")
        self.job = job


class BackfillLeaseLost(Exception):
    """The job's lease is no longer the caller's (expired, or taken over)."""


def resolve_entities(provider: Provider, names: Sequence[str] | None) -> tuple[str, ...]:
    """The provider entity names a backfill of `names` reads: every polled entity for None; each name
    is a polled entity of the provider (`Invoice`) or a unified name (`invoice`, `contact`), which
    stands for every polled entity it covers. ValueError names what is not one."""
    polled = ADAPTERS[provider].ENTITIES
    if names is None:
        return polled
    chosen: list[str] = []
    for name in names:
        matches = [e for e in polled if e == name or entity_name(provider, e)[0] == name]
        if not matches:
            unified = sorted({entity_name(provider, e)[0] for e in polled})
            raise ValueError(
                f"{name!r} is not an entity {provider.value} polling reads; use one of"
                f" {', '.join(polled)} (or a unified name: {', '.join(unified)})"
            )
        chosen.extend(m for m in matches if m not in chosen)
    if not chosen:
        raise ValueError("name at least one entity, or leave `entities` out for all of them")
    return tuple(e for e in polled if e in chosen)


def requests_to_json(requests: Sequence[PageRequest]) -> str:
    """Page requests as JSON text (bodies in base64)."""
    return orjson.dumps(
        [
            {
                "method": r.method,
                "path": r.path,
                "params": [list(p) for p in r.params],
                "headers": [list(h) for h in r.headers],
                "body": None if r.body is None else base64.b64encode(r.body).decode(),
            }
            for r in requests
        ]
    ).decode()


def requests_from_json(text: str | bytes) -> list[PageRequest]:
    """The page requests `requests_to_json` wrote."""
    return [
        PageRequest(
            method=item["method"],
            path=item["path"],
            params=tuple((str(k), str(v)) for k, v in item["params"]),
            headers=tuple((str(k), str(v)) for k, v in item["headers"]),
            body=None if item["body"] is None else base64.b64decode(item["body"]),
        )
        for item in orjson.loads(text)
    ]


_OPEN = ("queued", "running")
_JOB_COLUMNS = (
    "id::text AS id, connection_id::text AS connection_id, provider, provider_account_id, entities,"
    " since, until, state, pages_done, jsonb_array_length(pending) AS pages_pending, records_read,"
    " events_published, position, last_error, attempts, next_attempt_at, created_at, started_at,"
    " finished_at"
)
_CREATE = (
    "INSERT INTO poll_backfills (id, connection_id, provider, provider_account_id, entities, since, until)"
    " VALUES ($1::uuid, $2::uuid, $3, $4, $5::text[], $6, now())"
    " ON CONFLICT (connection_id) WHERE state IN ('queued', 'running') DO NOTHING"
    f" RETURNING {_JOB_COLUMNS}"
)
# Runnable jobs in order, SKIP LOCKED past those another worker is leasing in this instant.
_LEASE_DUE = (
    "UPDATE poll_backfills b SET lease_owner = $1, lease_id = gen_random_uuid(),"
    " lease_until = now() + $3::double precision * interval '1 second',"
    " state = 'running', started_at = COALESCE(b.started_at, now())"
    " FROM (SELECT id AS due_id FROM poll_backfills"
    "  WHERE state IN ('queued', 'running') AND next_attempt_at <= now()"
    "  AND (lease_until IS NULL OR lease_until <= now())"
    "  ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) due"
    f" WHERE b.id = due.due_id RETURNING {_JOB_COLUMNS},"
    " lease_owner, lease_id::text AS lease_id, lease_until, pending"
)
_HELD = "id = $1::uuid AND lease_owner = $2 AND lease_id = $3::uuid AND lease_until > clock_timestamp()"
_RENEW = (
    "UPDATE poll_backfills SET lease_until = now() + $4::double precision * interval '1 second'"
    f" WHERE {_HELD} RETURNING lease_until"
)
_PLAN = f"UPDATE poll_backfills SET pending = $4::jsonb WHERE {_HELD} RETURNING id"
_PAGE_DONE = (
    "UPDATE poll_backfills SET pending = $4::jsonb, pages_done = pages_done + 1,"
    " records_read = records_read + $5, events_published = events_published + $6,"
    " position = GREATEST(position, $7::timestamptz), last_error = NULL"
    f" WHERE {_HELD} RETURNING id"
)
# Stopped for now (throttled, provider down, no usable token): tried again after `$5` seconds.
_RELEASE = (
    "UPDATE poll_backfills SET lease_owner = NULL, lease_id = NULL, lease_until = NULL,"
    " attempts = attempts + 1, last_error = $4,"
    " next_attempt_at = now() + $5::double precision * interval '1 second'"
    f" WHERE {_HELD} RETURNING id"
)
_FINISH = (
    "UPDATE poll_backfills SET lease_owner = NULL, lease_id = NULL, lease_until = NULL, state = $4,"
    " last_error = $5, finished_at = now(), pending = '[]'::jsonb"
    f" WHERE {_HELD} RETURNING id"
)


def _job(row: Mapping[str, Any]) -> BackfillJob:
    return BackfillJob(
        id=row["id"],
        connection_id=row["connection_id"],
        provider=Provider(row["provider"]),
        account=row["provider_account_id"],
        entities=tuple(row["entities"]),
        since=row["since"],
        until=row["until"],
        state=BackfillState(row["state"]),
        pages_done=row["pages_done"],
        pages_pending=row["pages_pending"],
        records_read=row["records_read"],
        events_published=row["events_published"],
        position=row["position"],
        last_error=row["last_error"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


class BackfillJobs:
    """The `poll_backfills` table, on a pool handed in by the caller."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self, connection: Connection, since: datetime, entities: Sequence[str] | None = None
    ) -> BackfillJob:
        """Queue a backfill of `connection` from `since` to now (of `entities`, provider or unified
        names; all polled ones by default). BackfillOpen when one is queued or running already;
        ValueError for an entity polling does not read or a `since` without a time zone."""
        if since.tzinfo is None:
            raise ValueError("since needs a time zone")
        chosen = resolve_entities(connection.provider, entities)
        row = await self._pool.fetchrow(
            _CREATE,
            str(uuid7()),
            connection.id,
            connection.provider.value,
            connection.provider_account_id,
            list(chosen),
            since,
        )
        if row is None:
            open_job = await self.latest(connection.id)
            if open_job is None or open_job.finished:  # finished in between: try once more
                return await self.create(connection, since, entities)
            raise BackfillOpen(open_job)
        return _job(row)

    async def get(self, job_id: str) -> BackfillJob | None:
        """One job, or None (also for ids that are not UUIDs)."""
        key = canonical_uuid(job_id)
        if key is None:
            return None
        row = await self._pool.fetchrow(f"SELECT {_JOB_COLUMNS} FROM poll_backfills WHERE id = $1", key)
        return _job(row) if row else None

    async def latest(self, connection_id: str) -> BackfillJob | None:
        """The connection's most recent job, or None."""
        key = canonical_uuid(connection_id)
        if key is None:
            return None
        row = await self._pool.fetchrow(
            f"SELECT {_JOB_COLUMNS} FROM poll_backfills WHERE connection_id = $1"
            " ORDER BY created_at DESC, id DESC LIMIT 1",
            key,
        )
        return _job(row) if row else None

    async def lease_due(self, owner: str, limit: int, lease_seconds: float) -> list[BackfillLease]:
        """Lease up to `limit` runnable jobs (queued, or running under an expired lease), oldest due
        first, for `lease_seconds`."""
        if limit <= 0:
            return []
        rows = await self._pool.fetch(_LEASE_DUE, owner, limit, lease_seconds)
        leases = [
            BackfillLease(
                job=_job(row),
                owner=row["lease_owner"],
                lease_id=row["lease_id"],
                lease_until=row["lease_until"],
                pending=None if row["pending"] is None else requests_from_json(row["pending"]),
            )
            for row in rows
        ]
        return sorted(leases, key=lambda lease: lease.job.next_attempt_at)

    async def renew(self, lease: BackfillLease, lease_seconds: float) -> None:
        """Extend a live lease; BackfillLeaseLost when it is no longer held."""
        await self._write(_RENEW, lease, lease_seconds)

    async def plan(self, lease: BackfillLease, requests: Sequence[PageRequest]) -> None:
        """Save the job's first page requests."""
        await self._write(_PLAN, lease, requests_to_json(requests))

    async def page_done(
        self,
        lease: BackfillLease,
        pending: Sequence[PageRequest],
        *,
        records: int,
        events: int,
        position: datetime | None,
    ) -> None:
        """One page read and its events acknowledged: save what is left and the counts."""
        await self._write(_PAGE_DONE, lease, requests_to_json(pending), records, events, position)

    async def release(self, lease: BackfillLease, error: str, retry_in: timedelta) -> None:
        """Stop for now, saying why; the job is runnable again after `retry_in`."""
        await self._write(_RELEASE, lease, error, retry_in.total_seconds())

    async def finish(self, lease: BackfillLease, state: BackfillState, error: str | None = None) -> None:
        """The job is done, or failed for good (`error` says why)."""
        if state not in (BackfillState.DONE, BackfillState.FAILED):
            raise ValueError(f"a job finishes done or failed, not {state}")
        await self._write(_FINISH, lease, state.value, error)

    async def _write(self, query: str, lease: BackfillLease, *args: Any) -> None:
        if await self._pool.fetchval(query, lease.job.id, lease.owner, lease.lease_id, *args) is None:
            raise BackfillLeaseLost(f"backfill {lease.job.id}: the lease of {lease.owner!r} is lost")
