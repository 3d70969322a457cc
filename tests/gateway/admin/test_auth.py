"""Admin authentication (missing, wrong, each of several tokens, disabled) and routing problems."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from tests.support import RunningGateway, running_gateway

TOKENS = ("first-admin-token", "second-admin-token")


async def request(
    gw: RunningGateway, method: str, path: str, authorization: str | None
) -> tuple[int, Any, bytes]:
    headers = {"authorization": authorization} if authorization is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, gw.base_url + path, headers=headers) as response,
    ):
        return response.status, response.headers, await response.read()


@pytest.fixture
async def gw(settings_factory: Any) -> AsyncIterator[RunningGateway]:
    async with running_gateway(settings_factory(admin_tokens=",".join(TOKENS))) as running:
        yield running


def problem_of(status: int, headers: Any, body: bytes, expected: int) -> dict[str, Any]:
    assert status == expected
    assert headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = orjson.loads(body)
    assert problem["status"] == expected and problem["title"] and problem["detail"]
    return problem


@pytest.mark.parametrize("token", TOKENS)
async def test_each_configured_token_is_accepted(gw: RunningGateway, token: str) -> None:
    status, _, body = await request(gw, "GET", "/admin/v1/connections?limit=1", f"Bearer {token}")
    assert status == 200 and "data" in orjson.loads(body)
    # The scheme name is case-insensitive.
    status, _, _ = await request(gw, "GET", "/admin/v1/connections?limit=1", f"bearer {token}")
    assert status == 200


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {TOKENS[0]}",
        f"{TOKENS[0]}",
        "Bearer wrong-token",
        f"Bearer {TOKENS[0]}x",
        f"Bearer {TOKENS[0][:-1]}",
        f"Bearer {TOKENS[0]},{TOKENS[1]}",
    ],
)
async def test_missing_or_wrong_tokens_are_401(gw: RunningGateway, authorization: str | None) -> None:
    for method, path in (
        ("GET", "/admin/v1/connections"),
        ("POST", "/admin/v1/connections"),
        ("DELETE", "/admin/v1/connections/0190d4d6-0000-7000-8000-000000000000"),
        ("GET", "/admin/v1/openapi.json"),
        ("GET", "/admin/v1/no-such-thing"),
    ):
        status, headers, body = await request(gw, method, path, authorization)
        problem_of(status, headers, body, 401)
        assert headers["www-authenticate"].startswith('Bearer realm="ledgerhook-admin"')
        for token in TOKENS:
            assert token.encode() not in body


async def test_no_configured_token_disables_the_admin_api(settings_factory: Any) -> None:
    async with running_gateway(settings_factory(admin_tokens="")) as gw:
        for authorization in (None, "Bearer ", "Bearer anything", f"Bearer {TOKENS[0]}"):
            status, headers, body = await request(gw, "GET", "/admin/v1/connections", authorization)
            problem = problem_of(status, headers, body, 401)
            assert "disabled" in problem["detail"] and "LEDGERHOOK_ADMIN_TOKENS" in problem["detail"]


async def test_unknown_admin_paths_and_methods_are_problems(gw: RunningGateway) -> None:
    bearer = f"Bearer {TOKENS[1]}"
    problem_of(*await request(gw, "GET", "/admin/v1/no-such-thing", bearer), 404)
    status, headers, body = await request(gw, "PUT", "/admin/v1/connections", bearer)
    problem_of(status, headers, body, 405)
    assert set(headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


async def raw_get(gw: RunningGateway, path: str, authorization: bytes) -> bytes:
    """`GET path` with the `Authorization` line written byte for byte (no client trims it): the answer."""
    address = urlsplit(gw.base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(
            b"GET "
            + path.encode()
            + b" HTTP/1.1\r\nHost: gateway\r\nAuthorization: "
            + authorization
            + b"\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "authorization",
    [
        b"bearer " + TOKENS[0].encode(),  # the scheme is case-insensitive (RFC 9110, section 11.1)
        b"BEARER " + TOKENS[0].encode(),
        b"Bearer " + TOKENS[0].encode() + b" ",  # spaces around the token are ignored
        b"Bearer  " + TOKENS[0].encode() + b"\t ",
        b"  Bearer " + TOKENS[0].encode(),
    ],
)
async def test_the_scheme_in_any_case_and_spaces_around_the_token_are_accepted(
    gw: RunningGateway, authorization: bytes
) -> None:
    answer = await raw_get(gw, "/admin/v1/connections?limit=1", authorization)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer" + TOKENS[0].encode(),  # no space: another scheme
        b"Bearer " + TOKENS[0].encode() + b"x",
        b"Bearer " + TOKENS[0].encode() + b" " + TOKENS[1].encode(),  # two tokens are not one
        b"Bearer\t" + TOKENS[0].encode(),
    ],
)
async def test_a_token_is_still_compared_whole(gw: RunningGateway, authorization: bytes) -> None:
    answer = await raw_get(gw, "/admin/v1/connections?limit=1", authorization)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
