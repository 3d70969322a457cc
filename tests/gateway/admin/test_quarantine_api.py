"""The quarantine resource over real HTTP: the pending list (auditor), one record with its body
(operator), redrive and discard (operator), each change in the audit trail; and its OpenAPI paths.

The admin app's routing is assembled in gateway.admin.routes; these tests serve the resource's
handlers behind the same token check and role declarations, on loopback."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fanout.quarantine import Reason, quarantine_record
from gateway.admin.auth import AdminTokens, RequireAdminToken, require
from gateway.admin.inputs import check_parameters
from gateway.admin.openapi import openapi_document
from gateway.admin.problems import Problem
from gateway.admin.quarantine import LIST_PARAMETERS, QuarantineResource, with_quarantine
from gateway.admin.roles import Role
from gateway.dev.embedded import free_port
from gateway.runtime.infra import Infrastructure, open_infrastructure
from gateway.settings import Settings
from tests.fanout.pipeline.pipeline_support import read_records
from tests.support import migrate_and_create_topics

Endpoint = Callable[[Request], Awaitable[Response]]


def routes(resource: QuarantineResource) -> list[Route]:
    """The quarantine routes as gateway.admin.routes declares them: role, then parameters."""

    def route(path: str, endpoint: Endpoint, method: str, role: Role, query: Collection[str] = ()) -> Route:
        async def checked(request: Request) -> Response:
            require(request, role)
            check_parameters(request, query)
            return await endpoint(request)

        return Route(path, checked, methods=[method])

    return [
        route("/quarantine", resource.collection, "GET", Role.AUDITOR, LIST_PARAMETERS),
        route("/quarantine/redrive", resource.redrive, "POST", Role.OPERATOR),
        route("/quarantine/discard", resource.post_discard, "POST", Role.OPERATOR),
        route("/quarantine/{record_id}", resource.item, "GET", Role.OPERATOR),
    ]


async def problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response()


@dataclass
class Api:
    settings: Settings
    infra: Infrastructure
    http: aiohttp.ClientSession
    base_url: str
    names: Mapping[str, str]  # role -> the principal's name

    async def call(
        self, role: str, method: str, path: str, body: Any = None, agent: str = "curl/8"
    ) -> tuple[int, Any]:
        headers = {"authorization": f"Bearer {role}-token", "user-agent": agent}
        async with self.http.request(method, self.base_url + path, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    async def quarantine(self, reason: Reason, value: bytes = b"{}") -> str:
        delivery_id = str(uuid.uuid4())
        record = quarantine_record(
            quarantine_topic=self.settings.topic_quarantine,
            source_topic=self.settings.topic_raw,
            partition=0,
            offset=0,
            key=b"realm",
            value=value,
            headers=[("ledgerhook-delivery-id", delivery_id.encode())],
            reason=reason,
            detail="why",
        )
        sent = await self.infra.producer.send(
            self.settings.topic_quarantine, record.value, key=record.key, headers=record.headers, partition=0
        )
        await sent
        return delivery_id

    async def audit(self, role: str) -> list[dict[str, Any]]:
        rows = await self.infra.pool.fetch(
            "SELECT actor, role, via, action, target, changes FROM audit_log WHERE actor = $1 ORDER BY id",
            self.names[role],
        )
        return [dict(row) | {"changes": orjson.loads(row["changes"])} for row in rows]


@pytest.fixture
async def api(settings_factory: Any) -> AsyncIterator[Api]:
    settings = settings_factory(topic_partitions=1, worker_group_id=f"fanout-{uuid.uuid4().hex[:8]}")
    await migrate_and_create_topics(settings)
    suffix = uuid.uuid4().hex[:8]
    names = {role.value: f"{role.value}-{suffix}" for role in Role}
    tokens = AdminTokens([f"{role}:{name}:{role}-token" for role, name in names.items()])
    async with open_infrastructure(settings) as infra, aiohttp.ClientSession() as http:
        app = Starlette(
            routes=routes(QuarantineResource(settings, infra.producer, infra.pool)),
            middleware=[Middleware(RequireAdminToken, tokens=tokens)],
            exception_handlers={Problem: problem},
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        try:
            yield Api(settings, infra, http, f"http://127.0.0.1:{port}", names)
        finally:
            server.should_exit = True
            await task


async def test_auditors_list_the_pending_quarantine_without_bodies(api: Api) -> None:
    first = await api.quarantine(Reason.UNKNOWN_ACCOUNT, b'{"secret-ish": "body"}')
    await api.quarantine(Reason.PAUSED)
    await api.quarantine(Reason.PAUSED)

    status, page = await api.call("auditor", "GET", "/quarantine?limit=2")
    assert status == 200
    assert [item["id"] for item in page["items"]] == ["0-0", "0-1"]
    assert page["items"][0] == page["items"][0] | {
        "reason": "unknown_account",
        "detail": "why",
        "delivery_id": first,
        "body_size": 22,
        "redrive_count": 0,
    }
    assert "body" not in page["items"][0]
    assert page["counts"] == {"unknown_account": 1, "paused": 2} and page["counts_complete"] is True
    status, rest = await api.call("auditor", "GET", f"/quarantine?limit=2&cursor={page['next']}")
    assert [item["id"] for item in rest["items"]] == ["0-2"] and rest["next"] is None
    status, paused = await api.call("auditor", "GET", "/quarantine?reason=paused")
    assert [item["id"] for item in paused["items"]] == ["0-1", "0-2"]

    for query, parameter in [
        ("reason=gone", "reason"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("cursor=zz", "cursor"),
        ("tenant_id=acme", "tenant_id"),
    ]:
        status, problem = await api.call("auditor", "GET", f"/quarantine?{query}")
        assert status == 422, query
        assert [error["parameter"] for error in problem["errors"]] == [parameter]


async def test_operators_read_a_record_with_its_body(api: Api) -> None:
    await api.quarantine(Reason.UNPARSEABLE, b"<not json & \xe2\x9c\x93>")
    await api.quarantine(Reason.UNPARSEABLE, b"\x00\xff")
    status, record = await api.call("operator", "GET", "/quarantine/0-0")
    assert status == 200
    assert (record["body"], record["body_encoding"], record["body_truncated"]) == (
        "<not json & \u2713>",
        "text",
        False,
    )
    status, binary = await api.call("admin", "GET", "/quarantine/0-1")
    assert (binary["body"], binary["body_encoding"]) == ("AP8=", "base64")
    status, problem = await api.call("auditor", "GET", "/quarantine/0-0")
    assert status == 403 and "body" not in problem
    for missing in ("0-7", "5-0", "first"):
        status, problem = await api.call("operator", "GET", f"/quarantine/{missing}")
        assert (status, problem["status"]) == (404, 404), missing


async def test_discard_and_redrive_are_audited(api: Api) -> None:
    await api.quarantine(Reason.DISCONNECTED)
    kept = await api.quarantine(Reason.DISCONNECTED)
    await api.quarantine(Reason.PAUSED)
    await api.quarantine(Reason.PAUSED)

    status, _ = await api.call("auditor", "POST", "/quarantine/discard", {"ids": ["0-0"]})
    assert status == 403
    for body in ({}, {"ids": ["0-0"], "reason": "paused"}, {"ids": ["first"]}, {"reason": "gone"}):
        status, problem = await api.call("operator", "POST", "/quarantine/discard", body)
        assert status == 422 and problem["errors"], body
    status, answer = await api.call("operator", "POST", "/quarantine/discard", {"ids": ["0-0", "0-9"]})
    assert (status, answer) == (200, {"discarded": 1, "not_pending": ["0-9"], "more": False})
    status, answer = await api.call(
        "operator", "POST", "/quarantine/discard", {"reason": "paused"}, agent="ledgerhook-cli/1.0"
    )
    assert (status, answer) == (200, {"discarded": 2, "not_pending": [], "more": False})
    status, page = await api.call("auditor", "GET", "/quarantine")
    assert [item["id"] for item in page["items"]] == ["0-1"] and page["counts"] == {"disconnected": 1}

    status, _ = await api.call("auditor", "POST", "/quarantine/redrive")
    assert status == 403
    status, answer = await api.call("admin", "POST", "/quarantine/redrive", {"reason": "disconnected"})
    assert (status, answer) == (200, {"redriven": 1, "skipped": 0})
    [redriven] = await read_records(api.settings.kafka_bootstrap_servers, api.settings.topic_raw)
    assert redriven.header("ledgerhook-delivery-id") == kept

    operator = {"actor": api.names["operator"], "role": "operator"}
    assert await api.audit("operator") == [
        operator
        | {
            "via": "api",
            "action": "quarantine.discard",
            "target": "quarantine:0-0",
            "changes": {"discarded": 1, "ids": ["0-0"]},
        },
        operator
        | {
            "via": "cli",
            "action": "quarantine.discard",
            "target": "quarantine",
            "changes": {"discarded": 2, "reason": "paused"},
        },
    ]
    assert await api.audit("admin") == [
        {
            "actor": api.names["admin"],
            "role": "admin",
            "via": "api",
            "action": "quarantine.redrive",
            "target": "quarantine",
            "changes": {"reason": "disconnected", "delivery_id": None, "redriven": 1, "skipped": 0},
        }
    ]
    assert await api.audit("auditor") == []


def test_the_openapi_document_has_every_quarantine_operation_with_its_role() -> None:
    document = with_quarantine(openapi_document())
    paths = document["paths"]
    roles = {
        (path, method): operation["x-ledgerhook-role"]
        for path, operations in paths.items()
        if path.startswith("/quarantine")
        for method, operation in operations.items()
        if method != "parameters"
    }
    assert roles == {
        ("/quarantine", "get"): "auditor",
        ("/quarantine/{record_id}", "get"): "operator",
        ("/quarantine/redrive", "post"): "operator",
        ("/quarantine/discard", "post"): "operator",
    }
    # Every schema referred to is in the document.
    text = orjson.dumps(document).decode()
    schemas = document["components"]["schemas"]
    for name in ("QuarantinePage", "QuarantinedRecordBody", "DiscardRequest", "DiscardAnswer", "Reason"):
        assert f'"#/components/schemas/{name}"' in text and name in schemas
    assert set(schemas["QuarantinedRecordBody"]["properties"]) >= {"body", "body_encoding", "body_truncated"}
