"""The quarantine resource: `POST /admin/v1/quarantine/redrive` (what `ledgerhook redrive` calls).

Redriven records go back to the raw topic and are processed by the fan-out worker like new
deliveries (docs/architecture.md, "Quarantine and redrive"; the request: docs/admin-api.md).
"""

import logging

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from fanout.quarantine import Reason
from fanout.redrive import RedriveResult, redrive
from gateway.admin.http import read_json_object, validated
from gateway.admin.problems import Problem
from gateway.runtime.kafka import connection_options, make_producer
from gateway.settings import Settings

log = logging.getLogger("ledgerhook.admin")

MAX_BODY_BYTES = 4096


class RedriveRequest(BaseModel):
    """Filters of a redrive; both optional."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason | None = None
    delivery_id: str | None = None


async def redrive_quarantine(
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
    """The same redrive with a producer of its own, for a caller without the gateway's."""
    producer = make_producer(settings)
    await producer.start()
    try:
        return await redrive_quarantine(settings, producer, reason, delivery_id)
    finally:
        await producer.stop()


class QuarantineResource:
    """The handlers of the quarantine resource, holding the producer they feed the raw topic with."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self._settings = settings
        self._producer = producer

    async def redrive(self, request: Request) -> Response:
        """`POST /admin/v1/quarantine/redrive`: 200 with the counts, 503 when the broker fails."""
        # No body, or an empty one: no filters, everything pending.
        filters = validated(RedriveRequest, await read_json_object(request, MAX_BODY_BYTES, optional=True))
        try:
            result = await redrive_quarantine(
                self._settings, self._producer, filters.reason, filters.delivery_id
            )
        except (KafkaError, TimeoutError) as exc:
            log.warning("redrive failed", extra={"error": type(exc).__name__})
            raise Problem(503, "the quarantine could not be redriven: the broker did not answer") from None
        return Response(
            orjson.dumps({"redriven": result.redriven, "skipped": result.skipped}),
            media_type="application/json",
        )
