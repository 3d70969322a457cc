"""The sync resource: `GET /admin/v1/connections/{id}/sync` (where polling stands) and
`POST /admin/v1/connections/{id}/backfill` (replay a period).

The poller and the backfill runner live in `fanout.polling` and run in the worker; this resource
only reads their state and queues jobs (docs/admin-api.md, "Sync and backfill";
docs/architecture.md, "Backfills"). A queued backfill is recorded in the audit trail.
"""

from datetime import UTC, date, datetime, time
from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StringConstraints, WithJsonSchema
from starlette.requests import Request
from starlette.responses import Response

from fanout.polling.backfills import BackfillJob, BackfillJobs, BackfillOpen
from fanout.polling.budget import RateBudgets
from fanout.polling.state import POLLED_PROVIDERS
from fanout.polling.status import SyncStatus, sync_status
from gateway.admin.auth import require_role
from gateway.admin.http import (
    connection_not_found,
    find_connection,
    json_response,
    read_json_object,
    validated,
)
from gateway.admin.openapi import CONNECTION_ID_PARAMETER, REF, add_schemas, problem_responses
from gateway.admin.problems import Problem, validation_problem
from gateway.admin.roles import Actor, Role, actor_of
from provider_auth import audit
from provider_auth.accounts.store import ConnectionStatus, ConnectionStore

__all__ = ["BackfillRequest", "BackfillView", "SyncResource", "SyncView", "with_sync"]

MAX_BODY_BYTES = 4096
EntityName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_/-]+$")]


def _instant(value: Any) -> datetime:
    """A backfill's `since`: an RFC 3339 instant with an offset, or a day (midnight UTC), in the past."""
    if not isinstance(value, str):
        raise ValueError("give a date (2026-11-01) or an instant with an offset (2026-11-01T00:00:00Z)")
    try:
        moment = (
            datetime.combine(date.fromisoformat(value), time(), UTC)
            if len(value) == 10
            else datetime.fromisoformat(value)
        )
    except ValueError:
        raise ValueError(
            "give a date (2026-11-01) or an instant with an offset (2026-11-01T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise ValueError("give a time zone offset (for example 2026-11-01T00:00:00Z), or a date")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is valid text, yet before year 1 in UTC
        raise ValueError("since must be in the year 1 or later, in UTC") from None
    if moment >= datetime.now(UTC):
        raise ValueError("since must be in the past")
    return moment


Since = Annotated[
    datetime,
    PlainValidator(_instant),
    WithJsonSchema(
        {
            "type": "string",
            "description": "Replay changes made at or after this instant (RFC 3339 with an offset) or"
            " day (YYYY-MM-DD, midnight UTC); in the past.",
            "examples": ["2026-11-01", "2026-11-01T09:30:00+01:00"],
        }
    ),
]


class BackfillRequest(BaseModel):
    """What to replay: changes since `since`, of `entities` or all polled ones."""

    model_config = ConfigDict(extra="forbid")

    since: Since
    entities: list[EntityName] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Entities to replay, by the provider's name (`Invoice`) or the unified one"
        " (`invoice`, `contact`); all polled entities when left out.",
    )


class BackfillProgress(BaseModel):
    """How far a backfill got."""

    pages_done: int
    pages_pending: int | None = Field(description="Page requests known to remain (more may follow).")
    records_read: int
    events_published: int = Field(description="Events published (not counting those reconciled away).")
    position: datetime | None = Field(description="The latest record version read so far.")
    fraction: float = Field(description="How far through [since, created_at) the job has read, 0 to 1.")
    estimated_seconds_left: float | None = Field(description="From the pace so far; null until known.")


class BackfillView(BaseModel):
    """One backfill job."""

    id: str
    connection_id: str
    state: str = Field(description="`queued`, `running`, `done` or `failed`.")
    since: datetime
    entities: list[str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    last_error: str | None = Field(description="Why it waits or failed; null while all is well.")
    progress: BackfillProgress

    @classmethod
    def of(cls, job: BackfillJob, now: datetime) -> "BackfillView":
        """The view of `job` at `now`."""
        return cls(
            id=job.id,
            connection_id=job.connection_id,
            state=job.state.value,
            since=job.since,
            entities=list(job.entities),
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            attempts=job.attempts,
            last_error=job.last_error,
            progress=BackfillProgress(
                pages_done=job.pages_done,
                pages_pending=job.pages_pending,
                records_read=job.records_read,
                events_published=job.events_published,
                position=job.position,
                fraction=round(job.progress(), 4),
                estimated_seconds_left=_rounded(job.seconds_left(now)),
            ),
        )


class LastPoll(BaseModel):
    """The account's last poll."""

    at: datetime
    outcome: str


class EntitySync(BaseModel):
    """One polled entity of the connection's account."""

    entity: str
    watermark: datetime | None = Field(description="Where its next poll starts (before the overlap).")
    lag_seconds: float | None = Field(description="Now minus the watermark.")
    last_poll: LastPoll | None = Field(description="One poll reads every entity of the account.")
    next_due_at: datetime | None


class PollingView(BaseModel):
    """The connection's polling setting and what it resolves to."""

    mode: str = Field(description="The setting: `auto`, `poll`, `sweep` or `off`.")
    interval_seconds: int | None = Field(description="The setting's interval (null: the mode's default).")
    effective_mode: str = Field(description="`poll`, `sweep` or `off` (`auto` resolved).")
    effective_interval_seconds: int | None
    polled: bool = Field(description="Polled now: active, not off, and its provider has a change API.")
    account_interval_seconds: int | None = Field(
        description="The account's interval: the shortest its active connections ask for."
    )


class StretchView(BaseModel):
    """How far the account's interval is stretched to fit its provider's app-wide rate limit."""

    factor: float = Field(description="The account's interval is multiplied by this now (1: not stretched).")
    interval_seconds: int | None = Field(
        description="The account's interval times the factor: how often it is polled now."
    )
    kind: str | None = Field(
        description="`poll` or `sweep`: the account's polls are sweeps when every active connection"
        " of it gets webhooks; sweeps stretch first when the limit is short."
    )
    accounts: int | None = Field(description="The provider's accounts of this kind.")
    demand_per_second: float | None = Field(
        description="Requests per second those accounts' intervals ask for."
    )
    budget_per_second: float | None = Field(
        description="Requests per second polls may plan on under the app-wide limit (null: none)."
    )

    @classmethod
    def of(cls, found: SyncStatus) -> "StretchView":
        """The stretch of `found`'s account."""
        account, stretch = found.account, found.stretch
        return cls(
            factor=round(found.stretch_factor, 3),
            interval_seconds=None
            if account is None
            else round(account.interval_seconds * found.stretch_factor),
            kind=None if account is None else ("sweep" if account.sweep else "poll"),
            accounts=None if stretch is None else stretch.accounts,
            demand_per_second=None if stretch is None else round(stretch.demand, 3),
            budget_per_second=None if stretch is None or stretch.budget is None else round(stretch.budget, 3),
        )


class BudgetUse(BaseModel):
    """One rate budget scope of the account."""

    limit: int
    used: int = Field(description="Requests in the current window (in flight, for `in_flight`).")
    parked_seconds: float = Field(description="Seconds the provider asked us to wait (a 429).")


class SyncView(BaseModel):
    """Where polling stands for one connection."""

    connection_id: str
    provider: str
    provider_account_id: str
    status: str
    polling: PollingView
    entities: list[EntitySync]
    stretch: StretchView
    requests: dict[str, BudgetUse] = Field(
        description="The account's rate budget scopes by label: `minute`, `day`, `in_flight`, `app_minute`."
    )
    backfill: BackfillView | None = Field(description="The latest backfill, running or finished.")

    @classmethod
    def of(cls, found: SyncStatus, now: datetime) -> "SyncView":
        """The view of `found` at `now`."""
        connection, account = found.connection, found.account
        last = (
            LastPoll(at=account.last_polled_at, outcome=account.last_outcome or "")
            if account is not None and account.last_polled_at is not None
            else None
        )
        due = account.next_due_at if account is not None and account.enabled else None
        return cls(
            connection_id=connection.id,
            provider=connection.provider.value,
            provider_account_id=connection.provider_account_id,
            status=connection.status.value,
            polling=PollingView(
                mode=connection.polling.mode.value,
                interval_seconds=connection.polling.interval_seconds,
                effective_mode=found.mode.value,
                effective_interval_seconds=found.interval_seconds,
                polled=found.polled,
                account_interval_seconds=account.interval_seconds if account is not None else None,
            ),
            stretch=StretchView.of(found),
            entities=[
                EntitySync(
                    entity=entity,
                    watermark=mark,
                    lag_seconds=None if mark is None else round((now - mark).total_seconds(), 3),
                    last_poll=last,
                    next_due_at=due,
                )
                for entity, mark in found.watermarks.items()
            ],
            requests={
                label: BudgetUse(limit=use.limit, used=use.used, parked_seconds=round(use.parked_seconds, 3))
                for label, use in found.budget.items()
            },
            backfill=None if found.backfill is None else BackfillView.of(found.backfill, now),
        )


class SyncResource:
    """The handlers of the sync resource, on the gateway's pool."""

    def __init__(
        self,
        store: ConnectionStore,
        pool: asyncpg.Pool,
        budgets: RateBudgets,
        *,
        poll_interval_seconds: int,
        sweep_interval_seconds: int,
    ) -> None:
        self._store = store
        self._pool = pool
        self._budgets = budgets
        self._jobs = BackfillJobs(pool)
        self._intervals = {
            "poll_interval_seconds": poll_interval_seconds,
            "sweep_interval_seconds": sweep_interval_seconds,
        }

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool this resource works on."""
        return self._pool

    async def sync(self, request: Request) -> Response:
        """`GET .../sync`: 200 with the status, 404 for an unknown connection."""
        connection = await find_connection(self._store, request)
        found = await sync_status(self._pool, self._budgets, connection, **self._intervals)
        return json_response(SyncView.of(found, datetime.now(UTC)))

    async def backfill(self, request: Request) -> Response:
        """`POST .../backfill`: 202 with the queued job; 409 when one is open, the connection is
        disconnected or its provider has no change API; 422 for invalid members."""
        connection = await find_connection(self._store, request)
        wanted = validated(BackfillRequest, await read_json_object(request, MAX_BODY_BYTES))
        job = await self.queue_backfill(connection.id, wanted.since, wanted.entities, actor_of(request))
        location = f"{request.url.path.rsplit('/', 1)[0]}/sync"
        return json_response(job, 202, headers={"location": location})

    async def queue_backfill(
        self, connection_id: str, since: datetime, entities: list[str] | None, actor: Actor
    ) -> BackfillView:
        """Queue a backfill of the connection from `since` (of `entities`, or all polled ones) on
        behalf of `actor` (operator or above), and record it in the audit trail. Problems: 403, 404,
        409 (one is open, the connection is disconnected, or its provider has no change API), 422."""
        require_role(actor.principal, Role.OPERATOR)
        connection = await self._store.get(connection_id)
        if connection is None:
            raise connection_not_found()
        if connection.provider not in POLLED_PROVIDERS:
            raise Problem(409, f"{connection.provider.value} sources have no change API to backfill from")
        if connection.status is ConnectionStatus.DISCONNECTED:
            raise Problem(409, "the connection is disconnected; register it again to backfill")
        try:
            job = await self._jobs.create(connection, since, entities)
        except BackfillOpen as exc:
            raise Problem(
                409,
                f"backfill {exc.job.id} is {exc.job.state.value} for this connection; follow it with"
                f" GET .../sync, and start another once it finishes",
            ) from None
        except ValueError as exc:
            raise validation_problem([{"pointer": "#/entities", "detail": str(exc)}]) from None
        # The job table offers no transaction to share: the entry follows the queued job at once.
        await audit.record_change(
            self._pool,
            actor=actor.principal.name,
            role=actor.principal.role.value,
            via=actor.via,
            client=actor.client,
            action="sync.backfill",
            target=f"connection:{connection.id}",
            changes={"backfill_id": job.id, "since": job.since.isoformat(), "entities": list(job.entities)},
            connection_id=connection.id,
            provider=connection.provider.value,
        )
        return BackfillView.of(job, datetime.now(UTC))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def with_sync(document: dict[str, Any]) -> dict[str, Any]:
    """The admin OpenAPI document with the sync and backfill paths and their schemas added."""
    add_schemas(
        document,
        [(BackfillRequest, "validation"), (BackfillView, "serialization"), (SyncView, "serialization")],
    )
    reasons = {
        400: "The body is not JSON.",
        401: "Missing or wrong admin token.",
        404: "No connection with this id.",
        409: "A backfill is already queued or running for it, it is disconnected, or its provider has"
        " no change API.",
        413: "The body is too large.",
        422: "Invalid members, listed in `errors`.",
        503: "The database did not answer; retry later.",
    }

    def body(model: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": REF.format(model=model)}}}

    paths = document.setdefault("paths", {})
    paths["/connections/{connection_id}/sync"] = {
        "parameters": [CONNECTION_ID_PARAMETER],
        "get": {
            "operationId": "getConnectionSync",
            "summary": "Where polling stands for a connection",
            "description": "Per entity: watermark, last poll, next due time; the rate budget in use;"
            " the latest backfill with its progress.",
            "responses": {"200": {"description": "The sync status.", "content": body("SyncView")}}
            | problem_responses(reasons, 401, 404, 503),
        },
    }
    paths["/connections/{connection_id}/backfill"] = {
        "parameters": [CONNECTION_ID_PARAMETER],
        "post": {
            "operationId": "startConnectionBackfill",
            "summary": "Replay a connection's changes since a date",
            "description": "Queues a backfill; a worker reads it page by page within the provider's"
            " rate limits, publishing `origin: backfill` events reconciled with what was already"
            " published. Follow it with GET .../sync.",
            "requestBody": {"required": True, "content": body("BackfillRequest")},
            "responses": {
                "202": {
                    "description": "The queued job; `Location` is the sync status to follow it with.",
                    "headers": {"location": {"schema": {"type": "string"}}},
                    "content": body("BackfillView"),
                }
            }
            | problem_responses(reasons, 400, 401, 404, 409, 413, 422, 503),
        },
    }
    return document
