"""The audit resource: `GET /admin/v1/audit`, the trail of admin changes and of the token lifecycle.

This module reads the query parameters and renders pages; the reading itself is
`provider_auth.audit.page`, which the console calls too. What is recorded and what never is:
docs/admin-api.md, "Audit trail".
"""

import base64
import binascii
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.admin.http import json_response
from gateway.admin.inputs import page_limit
from gateway.admin.openapi import REF, add_schemas, problem_responses
from gateway.admin.problems import validation_problem
from provider_auth import audit
from provider_auth.ids import canonical_uuid

__all__ = ["PARAMETERS", "AuditItem", "AuditPage", "AuditResource", "decode_cursor", "encode_cursor"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_FILTER_LENGTH = 200
# The query parameters of `GET /admin/v1/audit`; any other is 422 (gateway.admin.inputs).
PARAMETERS = ("actor", "action", "target", "connection_id", "since", "until", "limit", "cursor")
_CURSOR_PREFIX = "audit:"


class AuditItem(BaseModel):
    """One entry of the audit trail."""

    model_config = ConfigDict(title="AuditItem")

    id: int = Field(description="Grows with every entry.")
    at: datetime
    actor: str = Field(
        description="The admin token's configured name (never the token); `ledgerhook` for the token layer."
    )
    role: str | None = Field(description="The actor's role then; null for the token layer.")
    via: str = Field(description="`api`, `cli`, `console`, or `system` for the token layer.")
    client: str | None = Field(description="The client's address as the gateway saw it.")
    action: str = Field(description="`connection.create`, `credentials.put`, `token.refreshed`, ...")
    target: str = Field(description="`connection:<id>`, `grant:<id>`, `tenant:<digest>`, `quarantine`, ...")
    changes: dict[str, Any] = Field(
        description="`{member: {from, to}}` for plain members; a secret or token only as"
        " `<member>_changed: true`."
    )

    @classmethod
    def of(cls, entry: audit.AuditRecord) -> "AuditItem":
        """The public view of a stored entry."""
        return cls(
            id=entry.id,
            at=entry.at,
            actor=entry.actor,
            role=entry.role,
            via=entry.via,
            client=entry.client,
            action=entry.action,
            target=entry.target,
            changes=entry.changes,
        )


class AuditPage(BaseModel):
    """One page of `GET /admin/v1/audit`, newest first."""

    model_config = ConfigDict(title="AuditPage")

    items: list[AuditItem]
    next: str | None = Field(description="Pass as `cursor` for the next (older) page; null on the last.")


def encode_cursor(entry_id: int) -> str:
    """The opaque cursor of the page after the entry `entry_id`."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int | None:
    """The entry id a cursor from `encode_cursor` holds, or None for any other text."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    number = text.removeprefix(_CURSOR_PREFIX)
    if not text.startswith(_CURSOR_PREFIX) or not number.isascii() or not number.isdigit():
        return None
    value = int(number)
    return value if 0 < value < 2**63 else None


def _instant(value: str) -> datetime | None:
    """An RFC 3339 timestamp with an offset, or None."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if "T" in value.upper() and moment.tzinfo is not None else None


class AuditResource:
    """The handler of the audit resource, on the gateway's pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list(self, request: Request) -> Response:
        """A page of entries, newest first, filtered. The parameters are PARAMETERS, each once and
        not empty (checked before)."""
        query = request.query_params
        errors: list[dict[str, str]] = []
        limit = page_limit(request, DEFAULT_LIMIT, MAX_LIMIT, errors)
        for name in ("actor", "action", "target"):
            if len(query.get(name) or "") > MAX_FILTER_LENGTH:
                errors.append(
                    {"parameter": name, "detail": f"must be at most {MAX_FILTER_LENGTH} characters"}
                )
        connection_id = query.get("connection_id")
        if connection_id is not None:
            connection_id = canonical_uuid(connection_id)
            if connection_id is None:
                errors.append({"parameter": "connection_id", "detail": "must be a connection id (a UUID)"})
        moments: dict[str, datetime | None] = {}
        for name in ("since", "until"):
            given = query.get(name)
            moments[name] = None if given is None else _instant(given)
            if given is not None and moments[name] is None:
                errors.append(
                    {
                        "parameter": name,
                        "detail": "must be an RFC 3339 timestamp with an offset, e.g. 2026-12-01T10:00:00Z",
                    }
                )
        after_id = None
        cursor = query.get("cursor")
        if cursor is not None:
            after_id = decode_cursor(cursor)
            if after_id is None:
                errors.append({"parameter": "cursor", "detail": "must be a `next` from a previous page"})
        if errors:
            raise validation_problem(errors, "the query parameters are not valid")
        filters = audit.AuditFilters(
            actor=query.get("actor"),
            action=query.get("action"),
            target=query.get("target"),
            connection_id=connection_id,
            since=moments["since"],
            until=moments["until"],
        )
        rows = await audit.page(self._pool, filters, after_id=after_id, limit=limit + 1)
        entries = rows[:limit]
        following = encode_cursor(entries[-1].id) if len(rows) > limit else None
        return json_response(AuditPage(items=[AuditItem.of(entry) for entry in entries], next=following))


def with_audit(document: dict[str, Any]) -> dict[str, Any]:
    """The admin OpenAPI document with the audit path and its schemas added."""
    add_schemas(document, [(AuditPage, "serialization")])
    reasons = {
        401: "Missing or wrong admin token.",
        422: "Invalid query parameters (a bad cursor too), listed in `errors`.",
        503: "The database did not answer; retry later.",
    }

    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    instant = {"type": "string", "format": "date-time"}
    document.setdefault("paths", {})["/audit"] = {
        "get": {
            "operationId": "listAuditEntries",
            "summary": "The audit trail, newest first, one page at a time",
            "description": "Every admin change (API, command line, console) and the token lifecycle"
            " (actor `ledgerhook`, via `system`). Never a token or a secret: only that one changed.",
            "parameters": [
                query("actor", {"type": "string"}, "Only this actor's entries (a token's configured name)."),
                query(
                    "action",
                    {"type": "string"},
                    "Only this action (`connection.pause`), or those starting with a prefix that ends"
                    " in `.` (`connection.`, `token.`).",
                ),
                query("target", {"type": "string"}, "Only entries about this target (`connection:<id>`)."),
                query(
                    "connection_id",
                    {"type": "string", "format": "uuid"},
                    "Only entries about this connection, its grant's token entries included.",
                ),
                query("since", instant, "Only entries at or after this instant (RFC 3339 with an offset)."),
                query("until", instant, "Only entries before this instant (RFC 3339 with an offset)."),
                query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                    "Page size.",
                ),
                query("cursor", {"type": "string"}, "`next` of the previous page."),
            ],
            "responses": {
                "200": {
                    "description": "A page of entries.",
                    "content": {"application/json": {"schema": {"$ref": REF.format(model="AuditPage")}}},
                }
            }
            | problem_responses(reasons, 401, 422, 503),
        }
    }
    return document
