"""The admin API's OpenAPI document, checked against the OpenAPI 3.1 rules and against real answers."""

import importlib.util
from typing import Any

import aiohttp
import jsonschema
import orjson

from tests.support import ADMIN_TOKEN, RunningGateway

BEARER = {"authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_openapi_document_describes_the_api(gateway: RunningGateway) -> None:
    async with (
        aiohttp.ClientSession(headers=BEARER) as session,
        session.get(gateway.base_url + "/admin/v1/openapi.json") as response,
    ):
        assert response.status == 200 and response.headers["content-type"] == "application/json"
        document = orjson.loads(await response.read())
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    assert set(paths["/connections"]) == {"get", "post"}
    assert set(paths["/connections/{connection_id}"]) >= {"get", "patch", "delete"}
    schemas = document["components"]["schemas"]
    for name in ("Connection", "ConnectionCreate", "ConnectionUpdate", "ConnectionPage", "ProblemDetails"):
        assert name in schemas, name
    assert "webhook_secret" not in schemas["Connection"]["properties"]
    assert "has_webhook_secret" in schemas["Connection"]["required"]
    assert set(schemas["ConnectionCreate"]["required"]) == {"tenant_id", "provider", "provider_account_id"}
    assert schemas["Provider"]["enum"] == [
        "quickbooks",
        "xero",
        "zoho-books",
        "freshbooks",
        "sage-intacct",
        "netsuite",
        "custom",
    ]
    problem_media = paths["/connections"]["post"]["responses"]["422"]["content"]
    assert "application/problem+json" in problem_media
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"

    # Every reference resolves, and every schema is valid JSON Schema 2020-12 (OpenAPI 3.1's dialect).
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    if importlib.util.find_spec("openapi_spec_validator") is not None:
        from openapi_spec_validator import validate

        validate(document)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


async def test_a_created_connection_validates_against_its_schema(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession(headers=BEARER) as session:
        async with session.get(gateway.base_url + "/admin/v1/openapi.json") as response:
            document = await response.json()
        body = {"tenant_id": "schema-check", "provider": "custom", "provider_account_id": "acct-schema"}
        async with session.post(gateway.base_url + "/admin/v1/connections", json=body) as response:
            assert response.status in (201, 409)
            answer = await response.json(content_type=None)
        async with session.get(gateway.base_url + "/admin/v1/connections?tenant_id=schema-check") as response:
            page = await response.json()
    registry_root = {"components": document["components"]}

    def check(instance: Any, name: str) -> None:
        schema = {"$ref": f"#/components/schemas/{name}"} | registry_root
        jsonschema.Draft202012Validator(schema).validate(instance)

    check(page, "ConnectionPage")
    check(answer, "Connection" if "id" in answer else "ProblemDetails")
