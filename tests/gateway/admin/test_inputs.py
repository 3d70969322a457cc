"""What every admin request must pass before its handler, over real HTTP on the real database: text
PostgreSQL cannot store (NUL, lone surrogates) is 422 with a pointer, never 503; unknown, empty or
repeated query parameters are 422 naming them, on every endpoint; a trailing slash is 404 with no
redirect; credentials refuse numbers and dates out of range."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from gateway.dev.embedded import free_port
from provider_auth.vault import KeyRing
from tests.support import RunningGateway, running_gateway

TOKEN = "inputs-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


class Answer:
    """One HTTP answer, read in full."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    def problem(self, status: int) -> dict[str, Any]:
        assert self.status == status, self.body
        assert self.headers["content-type"] == "application/problem+json"
        document: dict[str, Any] = self.json
        assert document["status"] == status and document["detail"]
        return document

    def pointers(self) -> list[str]:
        return [error["pointer"] for error in self.problem(422)["errors"]]

    def parameters(self) -> list[str]:
        return [error["parameter"] for error in self.problem(422)["errors"]]


async def call(
    gw: RunningGateway, method: str, path: str, body: Any = None, *, raw: bytes | None = None
) -> Answer:
    """`method path` with the admin token; `path` is sent as written (percent-escapes included)."""
    data = raw if raw is not None else orjson.dumps(body) if body is not None else None
    headers = AUTH | ({"content-type": "application/json"} if data is not None else {})
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            gw.base_url + path,
            data=data,
            headers=headers,
            allow_redirects=False,
            skip_auto_headers=(),
        ) as response,
    ):
        return Answer(response.status, response.headers, await response.read())


async def raw_request(gw: RunningGateway, lines: list[str]) -> bytes:
    """An HTTP/1.1 request written byte for byte (no client tidies it); the whole answer."""
    address = urlsplit(gw.base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write("\r\n".join([*lines, "Connection: close", "", ""]).encode("latin-1"))
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.fixture
async def gw(settings_factory: Any) -> AsyncIterator[RunningGateway]:
    # Xero and NetSuite apps configured, so credentials reach the store; their token URLs lead
    # nowhere (nothing here asks the provider for anything).
    nowhere = f"http://127.0.0.1:{free_port()}/token"
    settings = settings_factory(
        admin_tokens=TOKEN,
        encryption_keys=f"k1:{KeyRing.generate_key()}",
        xero_client_id="xero-client",
        xero_client_secret="xero-secret",
        xero_token_url=nowhere,
        netsuite_client_id="netsuite-client",
        netsuite_client_secret="netsuite-secret",
        netsuite_token_url=nowhere,
    )
    async with running_gateway(settings) as running:
        yield running


async def connection(gw: RunningGateway, provider: str = "xero", account: str = "acct-1") -> str:
    body = {"tenant_id": f"t-{uuid.uuid4().hex[:10]}", "provider": provider, "provider_account_id": account}
    created = await call(gw, "POST", "/admin/v1/connections", body)
    assert created.status == 201, created.body
    return str(created.json["id"])


def every_endpoint(connection_id: str) -> list[tuple[str, str, Any]]:
    """Each admin endpoint as (method, path, a body it would accept or at least read)."""
    item = f"/admin/v1/connections/{connection_id}"
    return [
        ("GET", "/admin/v1/connections", None),
        (
            "POST",
            "/admin/v1/connections",
            {"tenant_id": "t", "provider": "custom", "provider_account_id": "a"},
        ),
        ("GET", item, None),
        ("PATCH", item, {"display_name": "n"}),
        ("DELETE", item, None),
        ("GET", item + "/credentials", None),
        ("PUT", item + "/credentials", {"refresh_token": "r"}),
        ("GET", item + "/sync", None),
        ("POST", item + "/backfill", {"since": "2026-11-01"}),
        ("GET", "/admin/v1/openapi.json", None),
        ("POST", "/admin/v1/quarantine/redrive", {}),
    ]


# --- Text PostgreSQL cannot store ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["%00", "acme%00", "%00%00"])
async def test_a_nul_in_a_query_parameter_is_422_not_503(gw: RunningGateway, value: str) -> None:
    answer = await call(gw, "GET", f"/admin/v1/connections?tenant_id={value}")
    assert answer.parameters() == ["tenant_id"]
    assert "NUL" in answer.json["errors"][0]["detail"]


async def test_a_nul_in_the_path_is_422_naming_the_parameter(gw: RunningGateway) -> None:
    for method, suffix in (
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("GET", "/credentials"),
        ("GET", "/sync"),
    ):
        answer = await call(gw, method, f"/admin/v1/connections/abc%00def{suffix}")
        assert answer.parameters() == ["connection_id"], (method, suffix)


async def test_a_nul_in_credentials_is_422_with_a_pointer(gw: RunningGateway) -> None:
    path = f"/admin/v1/connections/{await connection(gw)}/credentials"
    # The case: a scope holding NUL answered 503 "the database is unavailable".
    answer = await call(gw, "PUT", path, {"refresh_token": "r-1", "scope": "x\u0000y"})
    assert answer.pointers() == ["#/scope"]
    netsuite = f"/admin/v1/connections/{await connection(gw, 'netsuite', 'TSTDRV123')}/credentials"
    answer = await call(gw, "PUT", netsuite, {"refresh_token": "r-1", "account_id": "TSTDRV\u0000"})
    assert answer.pointers() == ["#/account_id"]
    assert (await call(gw, "GET", path)).status == 404  # nothing was stored


@pytest.mark.parametrize(
    ("body", "pointers"),
    [
        ({"tenant_id": "a\u0000"}, ["#/tenant_id"]),
        ({"provider_account_id": "\u0000"}, ["#/provider_account_id"]),
        ({"display_name": "Acme \u0000 Books"}, ["#/display_name"]),
        ({"metadata": {"plan": "pro\u0000"}}, ["#/metadata/plan"]),
        ({"metadata": {"k\u0000": 1}}, ["#/metadata/k%00"]),
        ({"metadata": {"list": ["ok", ["\u0000"]]}}, ["#/metadata/list/1/0"]),
        ({"tenant_id": "\u0000", "display_name": "\u0000"}, ["#/display_name", "#/tenant_id"]),
    ],
)
async def test_a_nul_in_a_body_is_422_with_its_pointer(
    gw: RunningGateway, body: dict[str, Any], pointers: list[str]
) -> None:
    owner = f"t-{uuid.uuid4().hex[:10]}"
    sent = {"tenant_id": owner, "provider": "custom", "provider_account_id": "a"} | body
    answer = await call(gw, "POST", "/admin/v1/connections", sent)
    assert answer.pointers() == pointers
    assert b"\\u0000" not in answer.body  # the value is not echoed
    assert (await call(gw, "GET", f"/admin/v1/connections?tenant_id={owner}")).json["data"] == []


@pytest.mark.parametrize(
    ("raw", "pointer"),
    [
        (rb'"tenant_id": "a\ud800"', "#/tenant_id"),
        (rb'"display_name": "\udfff"', "#/display_name"),
        (rb'"display_name": "x\udc00\ud800y"', "#/display_name"),
        (rb'"metadata": {"a": ["\ud83d"]}', "#/metadata/a/0"),
        (rb'"metadata": {"\ud800": 1}', "#/metadata/%ED%A0%80"),
    ],
)
async def test_a_lone_surrogate_in_a_body_is_422_with_its_pointer(
    gw: RunningGateway, raw: bytes, pointer: str
) -> None:
    # Lone surrogates have no UTF-8 form: PostgreSQL could not store them. (A pair is fine.)
    body = b'{"tenant_id": "t", "provider": "custom", "provider_account_id": "a", ' + raw + b"}"
    assert (await call(gw, "POST", "/admin/v1/connections", raw=body)).pointers() == [pointer]


async def test_a_surrogate_pair_is_stored_as_the_character_it_makes(gw: RunningGateway) -> None:
    owner = f"t-{uuid.uuid4().hex}".encode()
    body = (
        b'{"tenant_id": "' + owner + rb'", "provider": "custom", "provider_account_id": "a", "display_name": '
    )
    body += rb'"\ud83d\ude00"}'
    created = await call(gw, "POST", "/admin/v1/connections", raw=body)
    assert created.status == 201 and created.json["display_name"] == "\U0001f600"


async def test_other_bodies_refuse_the_same_text(gw: RunningGateway) -> None:
    item = f"/admin/v1/connections/{await connection(gw)}"
    assert (await call(gw, "PATCH", item, {"metadata": {"a": "\u0000"}})).pointers() == ["#/metadata/a"]
    assert (await call(gw, "POST", item + "/backfill", {"since": "2026-11-01\u0000"})).pointers() == [
        "#/since"
    ]
    assert (
        await call(gw, "POST", item + "/backfill", {"since": "2026-11-01", "entities": ["\u0000"]})
    ).pointers() == ["#/entities/0"]
    redrive = await call(gw, "POST", "/admin/v1/quarantine/redrive", {"delivery_id": "\u0000"})
    assert redrive.pointers() == ["#/delivery_id"]


async def test_json_that_is_not_json_stays_400(gw: RunningGateway) -> None:
    # The surrogate reading never turns a body orjson refuses for another reason into a 422.
    for raw in (b'{"tenant_id": NaN}', b'{"a": "\xed\xa0\x80"}', b'{"a": "\\ud800"', b'{"a": Infinity}'):
        assert (await call(gw, "POST", "/admin/v1/connections", raw=raw)).status == 400, raw


# --- Query parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("unknown=1", "unknown"),
        ("provider=", "provider"),
        ("tenant_id=", "tenant_id"),
        ("status=", "status"),
        ("limit=", "limit"),
        ("cursor=", "cursor"),
        ("provider", "provider"),
        ("provider=xero&provider=quickbooks", "provider"),
        ("limit=5&Limit=5", "Limit"),
    ],
)
async def test_unknown_empty_or_repeated_list_parameters_are_422(
    gw: RunningGateway, query: str, parameter: str
) -> None:
    assert (await call(gw, "GET", "/admin/v1/connections?" + query)).parameters() == [parameter]


async def test_every_problem_in_the_query_is_named(gw: RunningGateway) -> None:
    answer = await call(gw, "GET", "/admin/v1/connections?unknown=1&provider=&tenant_id=a%00&limit=5")
    assert sorted(answer.parameters()) == ["provider", "tenant_id", "unknown"]


async def test_every_endpoint_refuses_parameters_it_does_not_take(gw: RunningGateway) -> None:
    connection_id = await connection(gw)
    for method, path, body in every_endpoint(connection_id):
        answer = await call(gw, method, path + "?unknown=1", body)
        assert answer.parameters() == ["unknown"], (method, path)
        assert "unknown parameter" in answer.json["errors"][0]["detail"]
    # Nothing was done: the connection is still there, unchanged.
    kept = await call(gw, "GET", f"/admin/v1/connections/{connection_id}")
    assert kept.status == 200 and kept.json["status"] == "active" and kept.json["display_name"] is None


async def test_the_list_parameters_still_work(gw: RunningGateway) -> None:
    connection_id = await connection(gw)
    owner = (await call(gw, "GET", f"/admin/v1/connections/{connection_id}")).json["tenant_id"]
    page = await call(
        gw, "GET", f"/admin/v1/connections?tenant_id={owner}&provider=xero&status=active&limit=5"
    )
    assert page.status == 200 and [c["id"] for c in page.json["data"]] == [connection_id]


# --- No redirect built from Host ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/admin/v1/connections/",
        "/admin/v1/openapi.json/",
        "/admin/v1/quarantine/redrive/",
        "/admin/v1/connections/0190d4d6-0000-7000-8000-000000000000/",
        "/admin/v1/connections/0190d4d6-0000-7000-8000-000000000000/sync/",
    ],
)
async def test_a_trailing_slash_is_404_never_a_redirect(gw: RunningGateway, path: str) -> None:
    answer = await raw_request(
        gw, [f"GET {path} HTTP/1.1", "Host: attacker.example", f"Authorization: Bearer {TOKEN}"]
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 "), head
    assert b"location:" not in head.lower() and b"attacker.example" not in answer
    problem = orjson.loads(body)
    assert problem["status"] == 404 and "without a slash" in problem["detail"]


# --- Credentials: numbers and dates -------------------------------------------------------------


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def timestamps(members: dict[str, Any]) -> dict[str, Any]:
    """`members` with each time offset written as the timestamp that far from now (taken when the
    test runs, not when it is collected: a suite may take minutes to get there)."""
    return {name: _at(value) if isinstance(value, timedelta) else value for name, value in members.items()}


@pytest.mark.parametrize(
    ("members", "pointer"),
    [
        ({"expires_in": 0.5}, "#/expires_in"),
        ({"expires_in": 60.5}, "#/expires_in"),
        ({"expires_in": True}, "#/expires_in"),
        ({"expires_in": "3600"}, "#/expires_in"),
        ({"expires_in": 0}, "#/expires_in"),
        ({"expires_in": -60}, "#/expires_in"),
        ({"expires_in": 3650 * 86_400 + 1}, "#/expires_in"),
        ({"expires_at": "9999-12-31T23:59:59Z"}, "#/expires_at"),
        ({"expires_at": timedelta(days=3651)}, "#/expires_at"),
        ({"expires_at": -timedelta(hours=1)}, "#/expires_at"),
        ({"expires_at": "0001-01-01T00:00:00+01:00"}, "#/expires_at"),
        ({"expires_at": "2030-01-01T00:00:00"}, "#/expires_at"),
        ({"expires_at": 1_900_000_000}, "#/expires_at"),
        ({"expires_at": True}, "#/expires_at"),
        ({"expires_at": "next week"}, "#/expires_at"),
        (
            {"expires_in": 3600, "refresh_token_expires_at": "2000-01-01T00:00:00Z"},
            "#/refresh_token_expires_at",
        ),
        (
            {"expires_in": 3600, "refresh_token_expires_at": -timedelta(seconds=5)},
            "#/refresh_token_expires_at",
        ),
        (
            {"expires_in": 3600, "refresh_token_expires_at": "9999-12-31T00:00:00Z"},
            "#/refresh_token_expires_at",
        ),
        ({"expires_in": 3600, "scope": "accounting.transactions\toffline_access"}, "#/scope"),
        ({"expires_in": 3600, "scope": "compta\u00e9"}, "#/scope"),
    ],
)
async def test_credentials_refuse_numbers_and_dates_out_of_range(
    gw: RunningGateway, members: dict[str, Any], pointer: str
) -> None:
    path = f"/admin/v1/connections/{await connection(gw)}/credentials"
    answer = await call(
        gw, "PUT", path, {"access_token": "a-1", "refresh_token": "r-1"} | timestamps(members)
    )
    assert answer.pointers() == [pointer]
    assert (await call(gw, "GET", path)).status == 404  # nothing was stored


@pytest.mark.parametrize(
    "members",
    [
        {"expires_in": 1},
        {"expires_in": 3600.0},  # a whole number, as some encoders write every number
        {"expires_in": 3650 * 86_400},
        {"expires_at": timedelta(hours=1)},
        {"expires_at": -timedelta(minutes=2)},  # a little behind: clocks differ
        {"expires_at": timedelta(days=3649)},
        {
            "expires_in": 3600,
            "refresh_token_expires_at": timedelta(days=100),
            "scope": "openid offline_access",
        },
    ],
)
async def test_credentials_in_range_are_stored(gw: RunningGateway, members: dict[str, Any]) -> None:
    path = f"/admin/v1/connections/{await connection(gw)}/credentials"
    answer = await call(
        gw,
        "PUT",
        path,
        {"access_token": "a-1", "refresh_token": "r-" + uuid.uuid4().hex} | timestamps(members),
    )
    assert answer.status == 200, answer.body
    stored = (await call(gw, "GET", path)).json
    assert stored["access_token_expires_at"] is not None and stored["scope"] == members.get("scope")


async def test_an_expired_access_token_is_left_out_and_the_refresh_token_kept(gw: RunningGateway) -> None:
    path = f"/admin/v1/connections/{await connection(gw)}/credentials"
    refused = await call(
        gw,
        "PUT",
        path,
        {"access_token": "a-1", "refresh_token": "r-1", "expires_at": _at(-timedelta(days=2))},
    )
    assert "leave access_token and expires_at out" in refused.problem(422)["errors"][0]["detail"]
    # As the detail says: the refresh token alone is stored, due for a refresh at once.
    stored = await call(gw, "PUT", path, {"refresh_token": "r-" + uuid.uuid4().hex})
    assert stored.status == 200 and stored.json["access_token_expires_at"] is None


async def test_a_netsuite_account_id_must_be_one(gw: RunningGateway) -> None:
    # It becomes part of the token endpoint's host name.
    good = f"/admin/v1/connections/{await connection(gw, 'netsuite', 'TSTDRV1234567')}/credentials"
    for account_id in ("attacker.example/x#", "1234567 SB1", "", "-1234567"):
        answer = await call(gw, "PUT", good, {"refresh_token": "r-1", "account_id": account_id})
        assert answer.pointers() == ["#/account_id"], account_id
    assert (
        await call(gw, "PUT", good, {"refresh_token": "r-" + uuid.uuid4().hex, "account_id": "1234567_SB1"})
    ).status == 200
    # Without account_id, the connection's provider account id must be one.
    odd = f"/admin/v1/connections/{await connection(gw, 'netsuite', 'attacker.example/x#')}/credentials"
    assert (await call(gw, "PUT", odd, {"refresh_token": "r-1"})).pointers() == ["#/account_id"]


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+01:00", "0001-01-01T00:59:59+01:00"])
async def test_a_backfill_since_before_year_one_in_utc_is_422(gw: RunningGateway, since: str) -> None:
    # Valid RFC 3339 text, yet no UTC instant: it never reaches the database.
    path = f"/admin/v1/connections/{await connection(gw)}/backfill"
    assert (await call(gw, "POST", path, {"since": since})).pointers() == ["#/since"]
