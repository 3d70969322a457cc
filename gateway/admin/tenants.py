"""The tenants resource: `DELETE /admin/v1/tenants/{tenant_id}` erases a tenant (admin role).

Every connection of the tenant, whatever its status, has its OAuth grant given back at the provider
where it has an endpoint (as a connection's DELETE does); then one transaction erases the
connection rows, their grants no other connection uses, their backfills, record versions, and the
polling state of the provider accounts nobody else connected, makes the audit trail's earlier
entries about them forget the tenant's values, and records one `tenant.erase` entry holding counts
only. What stays elsewhere (topics, consumers' copies): docs/operations.md, "Erasing a tenant".
"""

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from fanout.polling import erasure as polling_erasure
from gateway.admin.auth import require_role
from gateway.admin.connections import Identifier
from gateway.admin.http import json_response
from gateway.admin.inputs import unstorable
from gateway.admin.openapi import REF, add_schemas, problem_responses
from gateway.admin.problems import Problem, validation_problem
from gateway.admin.roles import Actor, Role, actor_of
from provider_auth import audit
from provider_auth.accounts import erasure as accounts_erasure
from provider_auth.accounts.erasure import TenantConnection

__all__ = ["HANDLED_TABLES", "ErasureResult", "TenantsResource", "tenant_target", "with_tenants"]

log = logging.getLogger("ledgerhook.admin")

# Every table erasure deletes from or scrubs; tests/gateway/admin/test_tenants.py checks that each
# table of the schema holding a tenant, connection or provider account id is among them.
HANDLED_TABLES = accounts_erasure.ERASED_TABLES | polling_erasure.ERASED_TABLES
ACTION = "tenant.erase"
# Tries to give back every connection's grant before the erasing transaction finds no new
# connection of the tenant; a connection added in between after the last try is erased with its
# tokens, without a call to its provider.
ATTEMPTS = 3

_TENANT_ID = TypeAdapter(Identifier)


class ErasureResult(BaseModel):
    """What erasing a tenant removed."""

    model_config = ConfigDict(title="ErasureResult")

    tenant_id: str
    connections: int = Field(description="Connections erased, whatever their status.")
    grants: int = Field(
        description="OAuth grants erased with their tokens: those no other tenant's connection uses."
    )
    accounts: int = Field(
        description="Provider accounts no connection uses any more, whose polling state was erased."
    )


def tenant_target(tenant_id: str) -> str:
    """The audit target of a tenant: a digest, so the trail never holds the tenant id itself."""
    return "tenant:" + hashlib.sha256(tenant_id.encode()).hexdigest()[:16]


def _checked(tenant_id: str) -> str:
    """`tenant_id` if it is one a connection can have, else a 422 naming the parameter."""
    reason = unstorable(tenant_id)
    if reason is None:
        try:
            return _TENANT_ID.validate_python(tenant_id)
        except ValidationError as exc:
            reason = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
    raise validation_problem([{"parameter": "tenant_id", "detail": reason}], "the tenant id is not valid")


class TenantsResource:
    """Tenant erasure, over HTTP (`item`) and for the console (`erase`)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        revoke: Callable[[str], Awaitable[None]],
        on_change: Callable[[str], None],
    ) -> None:
        """`revoke(connection_id)` gives a connection's grant back at the provider and erases its
        tokens (`CredentialsResource.disconnect`); `on_change(connection_id)` runs for every erased
        connection once the erasure is committed (the webhook scheme cache listens)."""
        self._pool = pool
        self._revoke = revoke
        self._on_change = on_change

    async def item(self, request: Request) -> Response:
        """`DELETE`: 200 with the counts; 404 when the tenant has no connection."""
        result = await self.erase(request.path_params["tenant_id"], actor_of(request))
        return json_response(result)

    async def erase(self, tenant_id: str, actor: Actor) -> ErasureResult:
        """Erase every connection of the tenant and what hangs on them; Problem 403 below the admin
        role, 422 for an id no connection can have, 404 when the tenant has no connection."""
        require_role(actor.principal, Role.ADMIN)
        tenant_id = _checked(tenant_id)
        revoked: set[str] = set()
        grants: set[str] = set()
        for attempt in range(ATTEMPTS):
            pending = [
                c
                for c in await accounts_erasure.tenant_connections(self._pool, tenant_id)
                if c.id not in revoked
            ]
            grants |= await accounts_erasure.linked_grants(self._pool, [c.id for c in pending])
            for connection in pending:
                await self._revoke(connection.id)
                revoked.add(connection.id)
            result = await self._erase_revoked(
                tenant_id, revoked, grants, actor, last=attempt == ATTEMPTS - 1
            )
            if result is not None:
                return result
        raise AssertionError("the last attempt always erases")  # pragma: no cover

    async def _erase_revoked(
        self, tenant_id: str, revoked: set[str], grants: set[str], actor: Actor, *, last: bool
    ) -> ErasureResult | None:
        """Erase in one transaction; None (nothing written) when a connection was added since its
        grant could be given back, unless this is the `last` try."""
        async with self._pool.acquire() as conn, conn.transaction():
            connections, locked_grants = await accounts_erasure.lock_tenant(conn, tenant_id)
            if not connections:
                raise Problem(404, "no connection has this tenant id")
            if not last and any(c.id not in revoked for c in connections):
                return None
            accounts = await polling_erasure.erase_polling(conn, connections)
            erased = await accounts_erasure.erase_connections(conn, connections, grants | locked_grants)
            counts = {"connections": erased.connections, "grants": erased.grants, "accounts": accounts}
            await audit.record_change(
                conn,
                actor=actor.principal.name,
                role=actor.principal.role.value,
                via=actor.via,
                client=actor.client,
                action=ACTION,
                target=tenant_target(tenant_id),
                changes=counts,
            )
        self._forget(connections)
        log.info("tenant erased", extra={"tenant": tenant_target(tenant_id), **counts})
        return ErasureResult(tenant_id=tenant_id, **counts)

    def _forget(self, connections: list[TenantConnection]) -> None:
        for connection in connections:
            self._on_change(connection.id)


def with_tenants(document: dict[str, Any]) -> dict[str, Any]:
    """The admin OpenAPI document with the tenant erasure path and its schema added."""
    add_schemas(document, [(ErasureResult, "serialization")])
    reasons = {
        401: "Missing or wrong admin token.",
        403: "The token's role is not admin.",
        404: "No connection has this tenant id (or it was erased already).",
        422: "The tenant id is not one a connection can have.",
        503: "The database did not answer; retry later (nothing was erased that a retry would not).",
    }
    document.setdefault("paths", {})["/tenants/{tenant_id}"] = {
        "parameters": [
            {
                "name": "tenant_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                "description": "The tenant id its connections were created with.",
            }
        ],
        "delete": {
            "operationId": "eraseTenant",
            "summary": "Erase a tenant: every connection, its tokens, secrets and sync state",
            "description": "Every connection of the tenant, whatever its status,"
            " has its OAuth grant given back at the provider where it has an endpoint; then the"
            " connections, their webhook secrets, the grants no other connection uses, backfills,"
            " record versions, and the polling state of provider accounts no other connection uses are"
            " erased in one transaction. Earlier audit entries about the connections keep their ids but"
            " not the tenant id, display name or metadata; the erasure is recorded as `tenant.erase`"
            " with counts only. Topics and consumers keep what was published: see the operations guide,"
            ' "Erasing a tenant".',
            "x-ledgerhook-role": Role.ADMIN.value,
            "responses": {
                "200": {
                    "description": "Erased; the counts.",
                    "content": {"application/json": {"schema": {"$ref": REF.format(model="ErasureResult")}}},
                }
            }
            | problem_responses(reasons, 401, 403, 404, 422, 503),
        },
    }
    return document
