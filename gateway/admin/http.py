"""What every admin resource does with HTTP: read a JSON body, validate it, answer JSON, find the
connection a path names. Failures are raised as problems (gateway.admin.problems)."""

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway.admin.inputs import lone_surrogate_document, text_errors
from gateway.admin.problems import Problem, pointer, validation_problem
from gateway.ingress.body import read_limited
from provider_auth.accounts.store import Connection, ConnectionStore
from provider_auth.ids import canonical_uuid

Model = TypeVar("Model", bound=BaseModel)


async def read_json_object(request: Request, max_bytes: int, *, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object: 413 over `max_bytes`, 400 not JSON, 422 not an object or
    holding text PostgreSQL cannot store (gateway.admin.inputs), pointing at each such string.

    `optional`: a blank body reads as `{}` instead of failing.
    """
    try:
        body = await read_limited(request, max_bytes)
    except ClientDisconnect:
        raise Problem(400, "the request body was not received in full") from None
    if body is None:
        raise Problem(413, f"the request body must be at most {max_bytes} bytes")
    if optional and not body.strip():
        return {}
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = lone_surrogate_document(body)
        if document is None:
            raise Problem(400, "the request body must be JSON") from None
    if not isinstance(document, dict):
        raise validation_problem([{"pointer": "#", "detail": "the body must be a JSON object"}])
    errors = text_errors(document)
    if errors:
        raise validation_problem(errors)
    return document


def validated(model: type[Model], document: dict[str, Any]) -> Model:
    """`document` as `model`, or a 422 pointing at each invalid member (never echoing a value)."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        errors = [
            {"pointer": pointer(tuple(error["loc"])), "detail": error["msg"].removeprefix("Value error, ")}
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise validation_problem(errors) from None


def json_response(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`model` as an `application/json` answer."""
    return Response(
        orjson.dumps(model.model_dump(mode="json")),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


async def find_connection(store: ConnectionStore, request: Request) -> Connection:
    """The connection named by the `{connection_id}` path parameter, or 404."""
    connection_id = canonical_uuid(request.path_params["connection_id"])
    connection = await store.get(connection_id) if connection_id else None
    if connection is None:
        raise connection_not_found()
    return connection


def connection_not_found() -> Problem:
    """The 404 for a connection id that names no connection."""
    return Problem(404, "no connection with this id")
