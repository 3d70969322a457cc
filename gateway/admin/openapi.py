"""The OpenAPI 3.1 document of the admin API, served at `GET /admin/v1/openapi.json`.

Schemas come from the pydantic models that validate requests and shape answers (pydantic writes
JSON Schema 2020-12, the dialect of OpenAPI 3.1), so the document cannot drift from the code. The
role each operation needs comes from the routes' declarations (`with_roles`), as
`x-ledgerhook-role`, a sentence of its description and its 403.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway.admin.connections import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Connection,
    ConnectionCreate,
    ConnectionPage,
    ConnectionUpdate,
)
from gateway.admin.problems import MEDIA_TYPE, ProblemDetails
from gateway.admin.quarantine import RedriveRequest
from gateway.admin.roles import Role

REF = "#/components/schemas/{model}"
VERSION = "1.0.0"
ROLE_EXTENSION = "x-ledgerhook-role"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


# The connection id of every `/connections/{connection_id}/...` path.
CONNECTION_ID_PARAMETER: dict[str, Any] = {
    "name": "connection_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
    "description": "The connection's id.",
}


def problem_responses(reasons: Mapping[int, str], *statuses: int) -> dict[str, Any]:
    """The problem+json responses of `statuses`, each described by `reasons`."""
    problem = _ref("ProblemDetails")
    return {
        str(status): {"description": reasons[status], "content": {MEDIA_TYPE: {"schema": problem}}}
        for status in statuses
    }


def add_schemas(document: dict[str, Any], models: Sequence[tuple[type[BaseModel], JsonSchemaMode]]) -> None:
    """Add the JSON Schemas of `models` (and what they use) to the document's components."""
    _, definitions = models_json_schema(list(models), ref_template=REF)
    document.setdefault("components", {}).setdefault("schemas", {}).update(definitions["$defs"])


def with_parameter_problems(document: dict[str, Any]) -> dict[str, Any]:
    """The document with a 422 on every operation: any request may hold a parameter it does not take,
    or text PostgreSQL cannot store (gateway.admin.inputs)."""
    reason = {422: "Invalid members or parameters (unknown, empty, repeated, or holding NUL), in `errors`."}
    for operations in document.get("paths", {}).values():
        for method, operation in operations.items():
            if method != "parameters":
                operation.setdefault("responses", {}).setdefault("422", problem_responses(reason, 422)["422"])
    return document


def with_roles(document: dict[str, Any], roles: Mapping[str, Mapping[str, Role]]) -> dict[str, Any]:
    """The document with the role each operation needs: `roles` maps a path to the role of each
    of its methods, as the routes declare them. ValueError when a route's method has no operation in
    the document, or an operation no declared role: neither can be left undocumented."""
    paths = document.get("paths", {})
    for path, methods in roles.items():
        for method in methods:
            if method.lower() not in paths.get(path, {}):
                raise ValueError(f"{method} {path} has no operation in the OpenAPI document")
    for path, operations in paths.items():
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            role = roles.get(path, {}).get(method.upper())
            if role is None:
                raise ValueError(f"{method.upper()} {path} declares no role")
            operation[ROLE_EXTENSION] = role.value
            sentence = f'Needs the `{role.value}` role or above (docs/admin-api.md, "Roles").'
            description = operation.get("description")
            operation["description"] = f"{description} {sentence}" if description else sentence
            reason = {403: f"The token's role falls short of `{role.value}`."}
            operation.setdefault("responses", {})["403"] = problem_responses(reason, 403)["403"]
    return document


def _problems(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "The body is not JSON.",
        401: "Missing or wrong admin token, or the admin API is disabled.",
        404: "No connection with this id.",
        409: "The tenant already has a connection to this provider account (`connection_id` names it).",
        413: "The body is too large.",
        422: "Invalid members or query parameters, listed in `errors`.",
        503: "A dependency (database or broker) did not answer; retry later.",
    }
    return problem_responses(reasons, *statuses)


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def openapi_document() -> dict[str, Any]:
    """The whole document, as a JSON-ready dict."""
    _, definitions = models_json_schema(
        [
            (ConnectionCreate, "validation"),
            (ConnectionUpdate, "validation"),
            (Connection, "serialization"),
            (ConnectionPage, "serialization"),
            (ProblemDetails, "serialization"),
            (RedriveRequest, "validation"),
        ],
        ref_template=REF,
    )
    connection_id = {
        "name": "connection_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Ledgerhook admin API",
            "version": VERSION,
            "description": "Register and manage connections. Every request needs "
            "`Authorization: Bearer <admin token>`; errors are `application/problem+json` (RFC 9457).",
        },
        "servers": [{"url": "/admin/v1"}],
        "security": [{"bearerAuth": []}],
        "paths": {
            "/connections": {
                "get": {
                    "operationId": "listConnections",
                    "summary": "List connections, oldest first, one page at a time",
                    "parameters": [
                        _query("tenant_id", {"type": "string"}, "Only this tenant's connections."),
                        _query("provider", _ref("Provider"), "Only this provider's connections."),
                        _query("status", _ref("ConnectionStatus"), "Only connections in this status."),
                        _query(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                            "Page size.",
                        ),
                        _query("cursor", {"type": "string"}, "`next_cursor` of the previous page."),
                    ],
                    "responses": {"200": _json("ConnectionPage", "A page of connections.")}
                    | _problems(401, 422),
                },
                "post": {
                    "operationId": "createConnection",
                    "summary": "Register a connection",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ConnectionCreate")}},
                    },
                    "responses": {
                        "201": _json("Connection", "Created.")
                        | {
                            "headers": {
                                "Location": {
                                    "description": "The new connection's URL.",
                                    "schema": {"type": "string"},
                                }
                            }
                        }
                    }
                    | _problems(400, 401, 409, 413, 422),
                },
            },
            "/connections/{connection_id}": {
                "parameters": [connection_id],
                "get": {
                    "operationId": "getConnection",
                    "summary": "Get a connection",
                    "responses": {"200": _json("Connection", "The connection.")} | _problems(401, 404),
                },
                "patch": {
                    "operationId": "updateConnection",
                    "summary": "Change a connection's name, metadata, status, webhook secrets or polling",
                    "description": "A body that only pauses or resumes a connection that is not"
                    " disconnected needs the `operator` role; any other change, or reconnecting a"
                    " disconnected connection, needs `admin` (403 otherwise, after the body is checked).",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ConnectionUpdate")}},
                    },
                    "responses": {"200": _json("Connection", "The updated connection.")}
                    | _problems(400, 401, 404, 413, 422),
                },
                "delete": {
                    "operationId": "deleteConnection",
                    "summary": "Disconnect: status disconnected, secrets erased, the record kept",
                    "responses": {"204": {"description": "Disconnected."}} | _problems(401, 404),
                },
            },
            "/quarantine/redrive": {
                "post": {
                    "operationId": "redriveQuarantine",
                    "summary": "Feed quarantined deliveries back to the fan-out worker",
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("RedriveRequest")}},
                    },
                    "responses": {
                        "200": {
                            "description": "How many records went back to the raw topic, and how many not.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "redriven": {"type": "integer"},
                                            "skipped": {"type": "integer"},
                                        },
                                        "required": ["redriven", "skipped"],
                                    }
                                }
                            },
                        }
                    }
                    | _problems(400, 401, 413, 422, 503),
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApiDocument",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "The OpenAPI 3.1 document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    }
                    | _problems(401),
                }
            },
        },
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
