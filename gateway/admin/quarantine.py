"""The quarantine resource: `POST /admin/v1/quarantine/redrive`, and the same redrive for the CLI.

Body (optional, JSON object): `{"reason": "<quarantine reason>", "delivery_id": "<delivery id>"}`;
answer `{"redriven": n, "skipped": m}`. Redriven records go back to the raw topic and are processed
by the fan-out worker like new deliveries (see fanout.redrive for what "once" means).
"""

import logging

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from fanout.quarantine import Reason
from fanout.redrive import RedriveResult, redrive
from gateway.admin.problems import Problem, pointer, validation_problem
from gateway.ingress.body import read_limited
from gateway.runtime.kafka import connection_options, make_producer
from gateway.settings import Settings

log = logging.getLogger("ledgerhook.admin")

MAX_BODY_BYTES = 4096


class RedriveRequest(BaseModel):
    """Filters of a redrive; both optional."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason | None = None
    delivery_id: str | None = None


async def run_redrive(
    settings: Settings,
    producer: AIOKafkaProducer,
    reason: Reason | None = None,
    delivery_id: str | None = None,
) -> RedriveResult:
    """Redrive the quarantine topic into the raw topic with the process's producer."""
    return await redrive(
        producer,
        connection_options(settings),
        quarantine_topic=settings.topic_quarantine,
        raw_topic=settings.topic_raw,
        group_id=settings.worker_group_id,
        reason=reason,
        delivery_id=delivery_id,
    )


async def redrive_once(
    settings: Settings, reason: Reason | None = None, delivery_id: str | None = None
) -> RedriveResult:
    """`ledgerhook redrive`: the same, with a producer of its own."""
    producer = make_producer(settings)
    await producer.start()
    try:
        return await run_redrive(settings, producer, reason, delivery_id)
    finally:
        await producer.stop()


class QuarantineResource:
    """The handlers of the quarantine resource, holding the producer they feed the raw topic with."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self._settings = settings
        self._producer = producer

    async def redrive(self, request: Request) -> Response:
        """`POST /admin/v1/quarantine/redrive`: 200 with the counts, 503 when the broker fails."""
        filters = await _filters(request)
        try:
            result = await run_redrive(self._settings, self._producer, filters.reason, filters.delivery_id)
        except (KafkaError, TimeoutError) as exc:
            log.warning("redrive failed", extra={"error": type(exc).__name__})
            raise Problem(503, "the quarantine could not be redriven: the broker did not answer") from None
        return Response(
            orjson.dumps({"redriven": result.redriven, "skipped": result.skipped}),
            media_type="application/json",
        )


async def _filters(request: Request) -> RedriveRequest:
    try:
        body = await read_limited(request, MAX_BODY_BYTES)
    except ClientDisconnect:
        raise Problem(400, "the request body was not received in full") from None
    if body is None:
        raise Problem(413, f"the request body must be at most {MAX_BODY_BYTES} bytes")
    if not body.strip():
        return RedriveRequest()  # no filters: everything pending
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Problem(400, "the request body must be JSON") from None
    if not isinstance(document, dict):
        raise validation_problem([{"pointer": "#", "detail": "the body must be a JSON object"}])
    try:
        return RedriveRequest.model_validate(document)
    except ValidationError as exc:
        errors = [
            {"pointer": pointer(tuple(error["loc"])), "detail": error["msg"].removeprefix("Value error, ")}
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise validation_problem(errors) from None
