"""The quarantine resource: the pending quarantine (`GET /admin/v1/quarantine`, one record with its
body at `GET /admin/v1/quarantine/{record_id}`), redrive (`POST /admin/v1/quarantine/redrive`, what
`ledgerhook redrive` calls) and discard (`POST /admin/v1/quarantine/discard`).

Redriven records go back to the raw topic and are processed by the fan-out worker like new
deliveries; discarded ones are never redriven. Every redrive and discard is recorded in the audit
trail. The console calls the same methods (docs/architecture.md, "Quarantine and redrive"; the
requests: docs/admin-api.md, "Quarantine").
"""

import base64
import logging
from typing import Annotated, Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from starlette.requests import Request
from starlette.responses import Response

from fanout.quarantine import Reason
from fanout.quarantine_pending import (
    BODY_LIMIT,
    Discarded,
    PendingCounts,
    PendingPage,
    PendingQuarantine,
    PendingRecord,
)
from fanout.redrive import RedriveResult, redrive
from gateway.admin.auth import require_role
from gateway.admin.http import json_response, read_json_object, validated
from gateway.admin.inputs import page_limit
from gateway.admin.problems import Problem, validation_problem
from gateway.admin.roles import Actor, Role, actor_of
from gateway.runtime.kafka import connection_options, make_producer
from gateway.settings import Settings
from provider_auth import audit

__all__ = [
    "DiscardRequest",
    "QuarantinePage",
    "QuarantineResource",
    "QuarantinedRecord",
    "QuarantinedRecordBody",
    "RedriveRequest",
    "redrive_once",
    "redrive_quarantine",
    "with_quarantine",
]

log = logging.getLogger("ledgerhook.admin")

MAX_BODY_BYTES = 4096
DISCARD_BODY_BYTES = 64 * 1024
MAX_DISCARD_IDS = 1000
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
LIST_PARAMETERS = ("reason", "limit", "cursor")
BROKER_DOWN = "the broker did not answer; try again shortly"

RecordId = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,9}-[0-9]{1,18}$")]


class RedriveRequest(BaseModel):
    """Filters of a redrive; both optional."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason | None = None
    delivery_id: str | None = None


class DiscardRequest(BaseModel):
    """What to discard: the records named by `ids`, or every pending record of `reason`."""

    model_config = ConfigDict(extra="forbid")

    ids: list[RecordId] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_DISCARD_IDS,
        description="Record ids, `<partition>-<offset>`.",
    )
    reason: Reason | None = None

    @model_validator(mode="after")
    def _one_form(self) -> "DiscardRequest":
        if (self.ids is None) == (self.reason is None):
            raise ValueError("give either ids or reason")
        return self


class QuarantinedRecord(BaseModel):
    """A pending quarantine record (never its body in a listing)."""

    id: str = Field(description="`<partition>-<offset>` on the quarantine topic; stable.")
    reason: Reason
    detail: str | None = Field(description="Why, in one line (never the body, never a secret).")
    delivery_id: str | None
    provider: str | None
    connection_id: str | None = Field(description="For a delivery to a per-connection endpoint.")
    quarantined_at: str | None = Field(description="RFC 3339, UTC.")
    redrive_count: int = Field(description="How many times the delivery was redriven before.")
    body_size: int = Field(description="The raw body's size in bytes.")

    @classmethod
    def of(cls, record: PendingRecord) -> "QuarantinedRecord":
        """The view of `record`."""
        return cls(
            id=record.id,
            reason=record.reason,
            detail=record.detail,
            delivery_id=record.delivery_id,
            provider=record.provider,
            connection_id=record.connection_id,
            quarantined_at=record.quarantined_at,
            redrive_count=record.redrive_count,
            body_size=record.body_size,
        )


class QuarantinedRecordBody(QuarantinedRecord):
    """A pending quarantine record with its raw body, at most 64 KiB of it."""

    body: str = Field(description="The raw body: as text when it is UTF-8, else base64.")
    body_encoding: str = Field(description="`text` or `base64`.")
    body_truncated: bool = Field(
        description=f"True when the body is longer than the {BODY_LIMIT} bytes shown."
    )

    @classmethod
    def with_body(cls, record: PendingRecord) -> "QuarantinedRecordBody":
        """The view of `record` with its body."""
        text = record.body_text()
        return cls(
            **QuarantinedRecord.of(record).model_dump(),
            body=text if text is not None else base64.b64encode(record.body or b"").decode(),
            body_encoding="text" if text is not None else "base64",
            body_truncated=record.body_truncated,
        )


class QuarantinePage(BaseModel):
    """A page of the pending quarantine, and the pending records by reason."""

    items: list[QuarantinedRecord]
    next: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")
    counts: dict[str, int] = Field(description="Pending records by reason (every reason).")
    counts_complete: bool = Field(
        description="False when counting stopped at its limit: each count is then that many or more."
    )


class RedriveAnswer(BaseModel):
    """How many records went back to the raw topic, and how many pending ones did not."""

    redriven: int
    skipped: int


class DiscardAnswer(BaseModel):
    """How many records were discarded."""

    discarded: int
    not_pending: list[str] = Field(description="Ids given that name no pending record (already gone).")
    more: bool = Field(description="True when the scan stopped at its limit: discard again for the rest.")


async def redrive_quarantine(
    settings: Settings,
    producer: AIOKafkaProducer,
    pool: asyncpg.Pool,
    reason: Reason | None = None,
    delivery_id: str | None = None,
) -> RedriveResult:
    """Redrive the quarantine topic into the raw topic with the process's producer and pool."""
    return await redrive(
        producer,
        connection_options(settings),
        pool,
        quarantine_topic=settings.topic_quarantine,
        raw_topic=settings.topic_raw,
        group_id=settings.worker_group_id,
        reason=reason,
        delivery_id=delivery_id,
    )


async def redrive_once(
    settings: Settings, reason: Reason | None = None, delivery_id: str | None = None
) -> RedriveResult:
    """The same redrive with a producer and pool of its own, for a caller without the gateway's."""
    producer = make_producer(settings)
    pool = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=0, max_size=2)
    try:
        await producer.start()
        return await redrive_quarantine(settings, producer, pool, reason, delivery_id)
    finally:
        await producer.stop()
        await pool.close()


class QuarantineResource:
    """The quarantine resource: its HTTP handlers and the console's methods, on the process's
    producer (redrive feeds the raw topic with it) and pool (discards and the audit trail)."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer, pool: asyncpg.Pool) -> None:
        self._settings = settings
        self._producer = producer
        self._pool = pool
        self._pending = PendingQuarantine(
            pool,
            connection_options(settings),
            topic=settings.topic_quarantine,
            group_id=settings.worker_group_id,
        )

    # The console's methods; the HTTP handlers below call them too.

    async def pending(
        self, reason: Reason | None = None, limit: int = DEFAULT_LIMIT, cursor: str | None = None
    ) -> PendingPage:
        """A page of pending records, without bodies. ValueError for a cursor no page gave;
        KafkaError or TimeoutError when the broker fails."""
        return await self._pending.page(reason, limit, cursor)

    async def counts(self) -> PendingCounts:
        """Pending records by reason (bounded: see `PendingCounts.complete`)."""
        return await self._pending.counts()

    async def record(self, record_id: str) -> PendingRecord | None:
        """One pending record with its body (capped); None when no pending record has this id.
        Its body is the raw delivery: show it to operators and above only."""
        return await self._pending.record(record_id)

    async def redrive_pending(
        self, actor: Actor, reason: Reason | None = None, delivery_id: str | None = None
    ) -> RedriveResult:
        """Redrive pending records (operator or above) and record it in the audit trail."""
        require_role(actor.principal, Role.OPERATOR)
        result = await redrive_quarantine(self._settings, self._producer, self._pool, reason, delivery_id)
        await audit.record_change(
            self._pool,
            **_who(actor),
            action="quarantine.redrive",
            target="quarantine",
            changes={
                "reason": reason.value if reason else None,
                "delivery_id": delivery_id,
                "redriven": result.redriven,
                "skipped": result.skipped,
            },
        )
        return result

    async def discard(
        self, actor: Actor, ids: list[str] | None = None, reason: Reason | None = None
    ) -> Discarded:
        """Discard pending records by id, or all of a reason (operator or above), recorded in the
        audit trail in the same transaction."""
        require_role(actor.principal, Role.OPERATOR)
        if (ids is None) == (reason is None):
            raise ValueError("give either ids or reason")
        async with self._pool.acquire() as conn, conn.transaction():
            done = await self._pending.discard(conn, actor.principal.name, ids=ids, reason=reason)
            changes: dict[str, Any] = {"discarded": len(done.records)}
            if ids is not None:
                changes["ids"] = [record.id for record in done.records]
            else:
                changes["reason"] = reason.value if reason else None
            one = ids is not None and len(done.records) == 1
            await audit.record_change(
                conn,
                **_who(actor),
                action="quarantine.discard",
                target=f"quarantine:{done.records[0].id}" if one else "quarantine",
                changes=changes,
            )
        return done

    # The HTTP handlers.

    async def collection(self, request: Request) -> Response:
        """`GET /quarantine?reason=&limit=&cursor=`: a page of pending records and the counts by
        reason (parameters checked for their names before)."""
        query = request.query_params
        errors = []
        reason = None
        if "reason" in query:
            try:
                reason = Reason(query["reason"])
            except ValueError:
                errors.append({"parameter": "reason", "detail": f"must be one of {', '.join(Reason)}"})
        limit = page_limit(request, DEFAULT_LIMIT, MAX_LIMIT, errors)
        if errors:
            raise validation_problem(errors)
        try:
            page = await self.pending(reason, limit, query.get("cursor"))
            counts = await self.counts()
        except ValueError:
            raise validation_problem(
                [{"parameter": "cursor", "detail": "must be a `next` from a previous page"}]
            ) from None
        except (KafkaError, TimeoutError) as exc:
            raise _broker_problem("listing", exc) from None
        return json_response(
            QuarantinePage(
                items=[QuarantinedRecord.of(record) for record in page.items],
                next=page.next,
                counts=counts.by_reason,
                counts_complete=counts.complete,
            )
        )

    async def item(self, request: Request) -> Response:
        """`GET /quarantine/{record_id}`: the pending record with its body; 404 when there is none."""
        try:
            found = await self.record(request.path_params["record_id"])
        except (KafkaError, TimeoutError) as exc:
            raise _broker_problem("read", exc) from None
        if found is None:
            raise Problem(404, "no pending quarantine record with this id (redriven, discarded or expired)")
        return json_response(QuarantinedRecordBody.with_body(found))

    async def redrive(self, request: Request) -> Response:
        """`POST /quarantine/redrive`: 200 with the counts, 503 when the broker fails."""
        # No body, or an empty one: no filters, everything pending.
        filters = validated(RedriveRequest, await read_json_object(request, MAX_BODY_BYTES, optional=True))
        try:
            result = await self.redrive_pending(actor_of(request), filters.reason, filters.delivery_id)
        except (KafkaError, TimeoutError) as exc:
            log.warning("redrive failed", extra={"error": type(exc).__name__})
            raise Problem(503, "the quarantine could not be redriven: the broker did not answer") from None
        return json_response(RedriveAnswer(redriven=result.redriven, skipped=result.skipped))

    async def post_discard(self, request: Request) -> Response:
        """`POST /quarantine/discard`: 200 with how many were discarded, 503 when the broker fails."""
        wanted = validated(DiscardRequest, await read_json_object(request, DISCARD_BODY_BYTES))
        try:
            done = await self.discard(actor_of(request), wanted.ids, wanted.reason)
        except (KafkaError, TimeoutError) as exc:
            raise _broker_problem("discard", exc) from None
        return json_response(
            DiscardAnswer(discarded=len(done.records), not_pending=done.not_pending, more=done.more)
        )


def _who(actor: Actor) -> dict[str, Any]:
    """The actor members of an audit entry."""
    return {
        "actor": actor.principal.name,
        "role": actor.principal.role.value,
        "via": actor.via,
        "client": actor.client,
    }


def _broker_problem(what: str, exc: Exception) -> Problem:
    log.warning("quarantine %s failed", what, extra={"error": type(exc).__name__})
    return Problem(503, f"the quarantine could not be read: {BROKER_DOWN}", headers={"retry-after": "5"})


def with_quarantine(document: dict[str, Any]) -> dict[str, Any]:
    """The admin OpenAPI document with every quarantine path, its schemas and roles."""
    # Imported here: gateway.admin.openapi imports this module for RedriveRequest.
    from gateway.admin.openapi import REF, add_schemas, problem_responses

    add_schemas(
        document,
        [
            (RedriveRequest, "validation"),
            (DiscardRequest, "validation"),
            (QuarantinePage, "serialization"),
            (QuarantinedRecordBody, "serialization"),
            (RedriveAnswer, "serialization"),
            (DiscardAnswer, "serialization"),
        ],
    )
    reasons = {
        400: "The body is not JSON.",
        401: "Missing or wrong admin token.",
        404: "No pending quarantine record with this id (redriven, discarded or past retention).",
        413: "The body is too large.",
        422: "Invalid members or query parameters, listed in `errors`.",
        503: "The broker or the database did not answer; retry later.",
    }

    def body(model: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": REF.format(model=model)}}}

    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    paths = document.setdefault("paths", {})
    paths["/quarantine"] = {
        "get": {
            "operationId": "listQuarantine",
            "summary": "Pending quarantine records, in topic order, with counts by reason",
            "description": "Records still to be redriven for their reason and not discarded; no bodies."
            " Each call reads at most 10000 records: a short page with `next` set means read on.",
            "x-ledgerhook-role": Role.AUDITOR.value,
            "parameters": [
                query("reason", {"$ref": REF.format(model="Reason")}, "Only records of this reason."),
                query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                    "Page size.",
                ),
                query("cursor", {"type": "string"}, "`next` of the previous page."),
            ],
            "responses": {"200": {"description": "A page.", "content": body("QuarantinePage")}}
            | problem_responses(reasons, 401, 422, 503),
        }
    }
    paths["/quarantine/{record_id}"] = {
        "parameters": [
            {
                "name": "record_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+-[0-9]+$"},
                "description": "`<partition>-<offset>`, as a listing gives it.",
            }
        ],
        "get": {
            "operationId": "getQuarantineRecord",
            "summary": "One pending quarantine record with its raw body",
            "description": f"The body, at most {BODY_LIMIT} bytes of it, as text when it is UTF-8 and"
            " as base64 otherwise (`body_encoding`).",
            "x-ledgerhook-role": Role.OPERATOR.value,
            "responses": {"200": {"description": "The record.", "content": body("QuarantinedRecordBody")}}
            | problem_responses(reasons, 401, 404, 503),
        },
    }
    paths["/quarantine/redrive"] = {
        "post": {
            "operationId": "redriveQuarantine",
            "summary": "Feed quarantined deliveries back to the fan-out worker",
            "description": "Every pending record, or those of a reason or a delivery; discarded records"
            " are never fed. Recorded in the audit trail as `quarantine.redrive`.",
            "x-ledgerhook-role": Role.OPERATOR.value,
            "requestBody": {"required": False, "content": body("RedriveRequest")},
            "responses": {
                "200": {
                    "description": "How many records went back to the raw topic, and how many not.",
                    "content": body("RedriveAnswer"),
                }
            }
            | problem_responses(reasons, 400, 401, 413, 422, 503),
        }
    }
    paths["/quarantine/discard"] = {
        "post": {
            "operationId": "discardQuarantine",
            "summary": "Discard pending quarantine records: never redriven, no longer listed",
            "description": "The records named by `ids`, or every pending record of `reason`. Recorded in"
            " the audit trail as `quarantine.discard`.",
            "x-ledgerhook-role": Role.OPERATOR.value,
            "requestBody": {"required": True, "content": body("DiscardRequest")},
            "responses": {
                "200": {"description": "How many were discarded.", "content": body("DiscardAnswer")}
            }
            | problem_responses(reasons, 400, 401, 413, 422, 503),
        }
    }
    return document
