"""The connections resource over real HTTP on the real database: every endpoint and status, problem
details, cursor pages with filters, polling settings, and webhook secrets that never come back."""

import uuid
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import aiohttp
import orjson
import pytest

from provider_auth.providers import Provider
from provider_auth.vault import KeyRing
from tests.support import RunningGateway, running_gateway

TOKEN = "admin-token-one"
PUBLIC = "https://hooks.example.test"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ZOHO_SECRET = "zohoSecretToken123"


class Answer:
    """One HTTP answer, read in full."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


async def call(
    gw: RunningGateway,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    token: str | None = TOKEN,
) -> Answer:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
    if data is not None:
        headers["content-type"] = "application/json"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, gw.base_url + path, data=data, headers=headers) as response,
    ):
        return Answer(response.status, response.headers, await response.read())


# The phrases of RFC 9110 and docs/admin-api.md, where Python's HTTPStatus still has the older one.
PHRASES = {422: "Unprocessable Content"}


def assert_problem(answer: Answer, status: int) -> dict[str, Any]:
    assert answer.status == status
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json
    assert problem["status"] == status and problem["type"] == "about:blank"
    assert problem["title"] == PHRASES.get(status, HTTPStatus(status).phrase) and problem["detail"]
    return problem  # type: ignore[no-any-return]


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def gw(settings_factory: Any) -> AsyncIterator[RunningGateway]:
    settings = settings_factory(
        admin_tokens=f"{TOKEN},admin-token-two",
        encryption_keys=f"k1:{KeyRing.generate_key()}",
        public_base_url=PUBLIC + "/",
    )
    async with running_gateway(settings) as running:
        yield running


async def test_create_then_get_a_per_connection_provider(gw: RunningGateway) -> None:
    owner = tenant()
    created = await call(
        gw,
        "POST",
        "/admin/v1/connections",
        {
            "tenant_id": owner,
            "provider": "zoho-books",
            "provider_account_id": "60001234",
            "display_name": "Acme Books",
            "metadata": {"plan": "pro", "seats": 3},
            "webhook_secret": ZOHO_SECRET,
        },
    )
    assert created.status == 201
    assert created.headers["content-type"] == "application/json"
    connection = created.json
    assert set(connection) == {
        "id",
        "tenant_id",
        "provider",
        "provider_account_id",
        "status",
        "display_name",
        "metadata",
        "has_webhook_secret",
        "polling",
        "webhook_url",
        "created_at",
        "updated_at",
    }
    assert connection["tenant_id"] == owner and connection["provider"] == "zoho-books"
    assert connection["status"] == "active" and connection["has_webhook_secret"] is True
    assert connection["metadata"] == {"plan": "pro", "seats": 3}
    assert connection["polling"] == {"mode": "auto", "interval_seconds": None}
    assert connection["webhook_url"] == f"{PUBLIC}/webhooks/zoho-books/{connection['id']}"
    assert created.headers["location"] == f"/admin/v1/connections/{connection['id']}"
    assert ZOHO_SECRET.encode() not in created.body

    fetched = await call(gw, "GET", created.headers["location"])
    assert fetched.status == 200 and fetched.json == connection


async def test_shared_endpoint_providers_have_no_webhook_url(gw: RunningGateway) -> None:
    created = await call(
        gw,
        "POST",
        "/admin/v1/connections",
        {"tenant_id": tenant(), "provider": "quickbooks", "provider_account_id": "9341453908000000"},
    )
    assert created.status == 201
    assert created.json["webhook_url"] is None and created.json["has_webhook_secret"] is False
    assert created.json["display_name"] is None and created.json["metadata"] == {}


async def test_same_tenant_and_account_twice_is_409_naming_the_existing_one(gw: RunningGateway) -> None:
    body = {"tenant_id": tenant(), "provider": "xero", "provider_account_id": "c2cc9b6e-9458"}
    first = await call(gw, "POST", "/admin/v1/connections", body)
    assert first.status == 201
    problem = assert_problem(await call(gw, "POST", "/admin/v1/connections", body), 409)
    assert problem["connection_id"] == first.json["id"]
    # Another tenant may connect the same account.
    other = await call(gw, "POST", "/admin/v1/connections", body | {"tenant_id": tenant()})
    assert other.status == 201


def _valid(**changes: Any) -> dict[str, Any]:
    return {"tenant_id": "t-1", "provider": "netsuite", "provider_account_id": "TSTDRV1"} | changes


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (_valid(provider="sage-business-cloud"), "#/provider"),
        (_valid(tenant_id=""), "#/tenant_id"),
        (_valid(tenant_id="   "), "#/tenant_id"),
        (_valid(tenant_id="tab\there"), "#/tenant_id"),
        (_valid(provider_account_id="x" * 201), "#/provider_account_id"),
        (_valid(provider_account_id=12345), "#/provider_account_id"),
        ({"provider": "netsuite", "provider_account_id": "A"}, "#/tenant_id"),
        (_valid(display_name="n" * 201), "#/display_name"),
        (_valid(metadata=["not", "an", "object"]), "#/metadata"),
        (_valid(metadata={"blob": "x" * 17_000}), "#/metadata"),
        (_valid(metadata={"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {}}}}}}}}}), "#/metadata"),
        (_valid(metadata={"nul": "a\u0000b"}), "#/metadata/nul"),
        (_valid(unknown_member=1), "#/unknown_member"),
        (_valid(webhook_secret="whsec_not base64!"), "#/webhook_secret"),
        (_valid(webhook_secret="c2VjcmV0LWtleS1ieXRlcw=="), "#/webhook_secret"),
        (_valid(webhook_secrets=[WHSEC, "whsec_%%%"]), "#/webhook_secrets/1"),
        (_valid(webhook_secrets=[WHSEC] * 6), "#/webhook_secrets"),
        (_valid(webhook_secrets=WHSEC), "#/webhook_secrets"),
        (_valid(webhook_secret=WHSEC, webhook_secrets=[WHSEC]), "#"),
        (_valid(provider="quickbooks", webhook_secret="qbo-secret-value"), "#/webhook_secret"),
        (_valid(provider="xero", webhook_secrets=["xero-secret-value"]), "#/webhook_secrets"),
        (_valid(provider="sage-intacct", webhook_secret="intacct-secret"), "#/webhook_secret"),
        (_valid(provider="zoho-books", webhook_secret="has space"), "#/webhook_secret"),
        (_valid(polling={"mode": "hourly"}), "#/polling/mode"),
        (_valid(polling={"mode": None}), "#/polling/mode"),
        (_valid(polling={"interval_seconds": 0}), "#/polling/interval_seconds"),
        (_valid(polling={"interval_seconds": -60}), "#/polling/interval_seconds"),
        (_valid(polling={"interval_seconds": 7 * 86_400 + 1}), "#/polling/interval_seconds"),
        (_valid(polling={"interval_seconds": True}), "#/polling/interval_seconds"),
        (_valid(polling={"interval_seconds": 1.5}), "#/polling/interval_seconds"),
        (_valid(polling={"interval_seconds": 60.0}), "#/polling/interval_seconds"),
        (_valid(polling={"interval_seconds": "60"}), "#/polling/interval_seconds"),
        (_valid(polling={"mode": "poll", "every": 60}), "#/polling/every"),
        (_valid(polling="poll"), "#/polling"),
        (_valid(polling=None), "#/polling"),
        (_valid(provider="custom", polling={"mode": "poll"}), "#/polling/mode"),
        (_valid(provider="custom", polling={"mode": "sweep"}), "#/polling/mode"),
        (_valid(provider="custom", polling={"interval_seconds": 60}), "#/polling/interval_seconds"),
    ],
)
async def test_invalid_bodies_are_422_with_pointers_and_no_echo(
    gw: RunningGateway, body: dict[str, Any], pointer: str
) -> None:
    answer = await call(gw, "POST", "/admin/v1/connections", body)
    problem = assert_problem(answer, 422)
    assert pointer in [error["pointer"] for error in problem["errors"]], problem
    assert all(error["detail"] for error in problem["errors"])
    for secret in (WHSEC, "qbo-secret-value", "xero-secret-value", "intacct-secret", "whsec_not base64!"):
        assert secret.encode() not in answer.body


@pytest.mark.parametrize("raw", [b"not json", b"{", b"\xff\xfe", b"", b"NaN"])
async def test_a_body_that_is_not_json_is_400(gw: RunningGateway, raw: bytes) -> None:
    assert_problem(await call(gw, "POST", "/admin/v1/connections", raw=raw), 400)


@pytest.mark.parametrize("raw", [b"[]", b'"text"', b"42", b"null"])
async def test_json_that_is_not_an_object_is_422(gw: RunningGateway, raw: bytes) -> None:
    problem = assert_problem(await call(gw, "POST", "/admin/v1/connections", raw=raw), 422)
    assert problem["errors"][0]["pointer"] == "#"


async def test_an_oversize_body_is_413(gw: RunningGateway) -> None:
    assert_problem(await call(gw, "POST", "/admin/v1/connections", raw=b" " * 70_000), 413)


@pytest.mark.parametrize("connection_id", ["5f0c6b1e-2d3a-4c8e-9a7b-1e2f3a4b5c6d", "not-a-uuid"])
async def test_unknown_ids_are_404_on_every_method(gw: RunningGateway, connection_id: str) -> None:
    path = f"/admin/v1/connections/{connection_id}"
    assert_problem(await call(gw, "GET", path), 404)
    assert_problem(await call(gw, "PATCH", path, {"display_name": "x"}), 404)
    assert_problem(await call(gw, "DELETE", path), 404)


async def test_patch_changes_only_what_is_sent(gw: RunningGateway) -> None:
    created = (
        await call(
            gw,
            "POST",
            "/admin/v1/connections",
            _valid(tenant_id=tenant(), display_name="Before", metadata={"k": 1}),
        )
    ).json
    path = f"/admin/v1/connections/{created['id']}"

    renamed = await call(gw, "PATCH", path, {"display_name": "After"})
    assert renamed.status == 200
    assert renamed.json["display_name"] == "After" and renamed.json["metadata"] == {"k": 1}
    assert renamed.json["updated_at"] >= created["updated_at"]

    paused = (await call(gw, "PATCH", path, {"status": "paused", "metadata": {"k": 2}})).json
    assert paused["status"] == "paused" and paused["metadata"] == {"k": 2}
    assert paused["display_name"] == "After"

    cleared = (await call(gw, "PATCH", path, {"display_name": None})).json
    assert cleared["display_name"] is None

    secret = (await call(gw, "PATCH", path, {"webhook_secrets": [WHSEC]})).json
    assert secret["has_webhook_secret"] is True
    removed = (await call(gw, "PATCH", path, {"webhook_secrets": []})).json
    assert removed["has_webhook_secret"] is False

    unchanged = await call(gw, "PATCH", path, {})
    assert unchanged.status == 200 and unchanged.json["status"] == "paused"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"status": "disconnected"}, "#/status"),
        ({"status": "needs_reauth"}, "#/status"),
        ({"status": None}, "#/status"),
        ({"metadata": None}, "#/metadata"),
        ({"provider": "xero"}, "#/provider"),
        ({"tenant_id": "someone-else"}, "#/tenant_id"),
        ({"webhook_secret": "plain-not-whsec"}, "#/webhook_secret"),
        ({"polling": None}, "#/polling"),
        ({"polling": {"mode": "sometimes"}}, "#/polling/mode"),
        ({"polling": {"interval_seconds": False}}, "#/polling/interval_seconds"),
        ({"polling": {"interval_seconds": 0, "mode": "poll"}}, "#/polling/interval_seconds"),
        ({"polling": {"mode": "off", "interval": 60}}, "#/polling/interval"),
    ],
)
async def test_invalid_patches_are_422(gw: RunningGateway, body: dict[str, Any], pointer: str) -> None:
    created = (await call(gw, "POST", "/admin/v1/connections", _valid(tenant_id=tenant()))).json
    answer = await call(gw, "PATCH", f"/admin/v1/connections/{created['id']}", body)
    problem = assert_problem(answer, 422)
    assert pointer in [error["pointer"] for error in problem["errors"]]
    assert b"plain-not-whsec" not in answer.body
    assert (await call(gw, "GET", f"/admin/v1/connections/{created['id']}")).json == created


async def test_polling_is_set_on_create_replaced_by_patch_and_shown_everywhere(gw: RunningGateway) -> None:
    owner = tenant()
    swept = {"mode": "sweep", "interval_seconds": 900}
    created = await call(gw, "POST", "/admin/v1/connections", _valid(tenant_id=owner, polling=swept))
    assert created.status == 201 and created.json["polling"] == swept
    path = f"/admin/v1/connections/{created.json['id']}"
    assert (await call(gw, "GET", path)).json["polling"] == swept
    # Members left out take their defaults, on create as on update.
    only_mode = _valid(tenant_id=owner, provider_account_id="TSTDRV2", polling={"mode": "off"})
    off = (await call(gw, "POST", "/admin/v1/connections", only_mode)).json
    assert off["polling"] == {"mode": "off", "interval_seconds": None}
    empty = _valid(tenant_id=owner, provider_account_id="TSTDRV3", polling={})
    auto = (await call(gw, "POST", "/admin/v1/connections", empty)).json
    assert auto["polling"] == {"mode": "auto", "interval_seconds": None}

    listed = (await call(gw, "GET", f"/admin/v1/connections?tenant_id={owner}")).json["data"]
    assert [c["polling"] for c in listed] == [swept, off["polling"], auto["polling"]]

    # PATCH replaces the whole setting.
    faster = await call(gw, "PATCH", path, {"polling": {"interval_seconds": 60}})
    assert faster.status == 200 and faster.json["polling"] == {"mode": "auto", "interval_seconds": 60}
    stopped = (await call(gw, "PATCH", path, {"polling": {"mode": "off"}})).json
    assert stopped["polling"] == {"mode": "off", "interval_seconds": None}
    both = {"mode": "poll", "interval_seconds": 7 * 86_400}
    assert (await call(gw, "PATCH", path, {"polling": both})).json["polling"] == both
    # Other changes leave it as it is.
    renamed = (await call(gw, "PATCH", path, {"display_name": "Renamed", "status": "paused"})).json
    assert renamed["polling"] == both and renamed["status"] == "paused"
    reset = (await call(gw, "PATCH", path, {"polling": {}})).json
    assert reset["polling"] == {"mode": "auto", "interval_seconds": None}
    assert (await call(gw, "GET", path)).json == reset


async def test_custom_connections_take_no_polling_but_auto_or_off(gw: RunningGateway) -> None:
    body = _valid(tenant_id=tenant(), provider="custom", polling={"mode": "off"})
    created = await call(gw, "POST", "/admin/v1/connections", body)
    assert created.status == 201 and created.json["polling"]["mode"] == "off"
    path = f"/admin/v1/connections/{created.json['id']}"
    assert (await call(gw, "PATCH", path, {"polling": {"mode": "auto"}})).status == 200
    answer = await call(gw, "PATCH", path, {"polling": {"mode": "poll", "interval_seconds": 60}})
    errors = assert_problem(answer, 422)["errors"]
    assert [error["pointer"] for error in errors] == ["#/polling/mode", "#/polling/interval_seconds"]
    assert errors[0]["detail"] == "custom connections are never polled: they have no change API"
    assert (await call(gw, "GET", path)).json["polling"] == {"mode": "auto", "interval_seconds": None}


@pytest.mark.parametrize("provider", list(Provider))
async def test_which_providers_take_a_connection_secret(gw: RunningGateway, provider: Provider) -> None:
    body = _valid(tenant_id=tenant(), provider=provider.value, webhook_secret=WHSEC)
    answer = await call(gw, "POST", "/admin/v1/connections", body)
    if provider in (Provider.ZOHO_BOOKS, Provider.FRESHBOOKS, Provider.NETSUITE, Provider.CUSTOM):
        assert answer.status == 201 and answer.json["has_webhook_secret"] is True
        return
    # The others are verified with configuration, which the refusal names.
    configured_with = {
        Provider.QUICKBOOKS: "LEDGERHOOK_QUICKBOOKS_* settings",
        Provider.XERO: "LEDGERHOOK_XERO_* settings",
        Provider.SAGE_INTACCT: "LEDGERHOOK_SAGE_INTACCT_JWT_KEYS",
    }[provider]
    (error,) = assert_problem(answer, 422)["errors"]
    assert error["pointer"] == "#/webhook_secret"
    assert error["detail"].startswith(f"{provider.value} connections take no webhook secret: ")
    assert error["detail"].endswith(f" verified with {configured_with}")


async def test_patch_refuses_a_secret_for_a_shared_endpoint_provider(gw: RunningGateway) -> None:
    created = (
        await call(gw, "POST", "/admin/v1/connections", _valid(tenant_id=tenant(), provider="xero"))
    ).json
    answer = await call(gw, "PATCH", f"/admin/v1/connections/{created['id']}", {"webhook_secret": "k" * 20})
    assert_problem(answer, 422)


async def test_patch_and_post_need_a_json_object(gw: RunningGateway) -> None:
    created = (await call(gw, "POST", "/admin/v1/connections", _valid(tenant_id=tenant()))).json
    assert_problem(await call(gw, "PATCH", f"/admin/v1/connections/{created['id']}", raw=b"{oops"), 400)


async def test_delete_disconnects_erases_secrets_and_keeps_the_row(gw: RunningGateway) -> None:
    created = (
        await call(gw, "POST", "/admin/v1/connections", _valid(tenant_id=tenant(), webhook_secret=WHSEC))
    ).json
    path = f"/admin/v1/connections/{created['id']}"
    deleted = await call(gw, "DELETE", path)
    assert deleted.status == 204 and deleted.body == b""
    after = (await call(gw, "GET", path)).json
    assert after["status"] == "disconnected" and after["has_webhook_secret"] is False
    assert (await call(gw, "DELETE", path)).status == 204  # idempotent
    # Reconnecting is a PATCH of the same row (the account stays unique per tenant).
    duplicate = await call(gw, "POST", "/admin/v1/connections", _valid(tenant_id=created["tenant_id"]))
    assert_problem(duplicate, 409)
    again = (await call(gw, "PATCH", path, {"status": "active", "webhook_secret": WHSEC})).json
    assert again["status"] == "active" and again["has_webhook_secret"] is True


async def test_pages_follow_the_cursor_with_filters(gw: RunningGateway) -> None:
    owner, other = tenant(), tenant()
    made = []
    for index in range(7):
        provider = "netsuite" if index % 2 else "custom"
        body = {"tenant_id": owner, "provider": provider, "provider_account_id": f"acct-{index}"}
        made.append((await call(gw, "POST", "/admin/v1/connections", body)).json)
    await call(gw, "POST", "/admin/v1/connections", {**_valid(tenant_id=other)})

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = f"?tenant_id={owner}&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = (await call(gw, "GET", "/admin/v1/connections" + query)).json
        seen += [c["id"] for c in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert cursor == page["data"][-1]["id"]
    assert seen == [c["id"] for c in made] and pages == 3

    netsuite = (await call(gw, "GET", f"/admin/v1/connections?tenant_id={owner}&provider=netsuite")).json
    assert [c["id"] for c in netsuite["data"]] == [c["id"] for c in made if c["provider"] == "netsuite"]
    assert netsuite["next_cursor"] is None

    await call(gw, "PATCH", f"/admin/v1/connections/{made[2]['id']}", {"status": "paused"})
    await call(gw, "DELETE", f"/admin/v1/connections/{made[4]['id']}")
    paused = (await call(gw, "GET", f"/admin/v1/connections?tenant_id={owner}&status=paused")).json
    assert [c["id"] for c in paused["data"]] == [made[2]["id"]]
    gone = (await call(gw, "GET", f"/admin/v1/connections?tenant_id={owner}&status=disconnected")).json
    assert [c["id"] for c in gone["data"]] == [made[4]["id"]]

    # An exactly full last page says so: no cursor to an empty page.
    exact = (await call(gw, "GET", f"/admin/v1/connections?tenant_id={owner}&limit=7")).json
    assert len(exact["data"]) == 7 and exact["next_cursor"] is None
    default = (await call(gw, "GET", f"/admin/v1/connections?tenant_id={owner}")).json
    assert len(default["data"]) == 7


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("provider=myob", "provider"),
        ("status=deleted", "status"),
        ("cursor=page-2", "cursor"),
    ],
)
async def test_invalid_query_parameters_are_422(gw: RunningGateway, query: str, parameter: str) -> None:
    problem = assert_problem(await call(gw, "GET", "/admin/v1/connections?" + query), 422)
    assert [error["parameter"] for error in problem["errors"]] == [parameter]


async def test_secrets_never_appear_in_any_answer(gw: RunningGateway) -> None:
    owner = tenant()
    secrets = {
        "zoho-books": [ZOHO_SECRET],
        "freshbooks": ["fbVerifierCode9876543210"],
        "netsuite": [WHSEC, "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24"],
    }
    bodies = []
    for provider, values in secrets.items():
        created = await call(
            gw,
            "POST",
            "/admin/v1/connections",
            {"tenant_id": owner, "provider": provider, "provider_account_id": "a", "webhook_secrets": values},
        )
        bodies.append(created.body)
        path = f"/admin/v1/connections/{created.json['id']}"
        bodies.append((await call(gw, "GET", path)).body)
        bodies.append((await call(gw, "PATCH", path, {"webhook_secrets": values[::-1]})).body)
        bodies.append((await call(gw, "PATCH", path, {"display_name": "n"})).body)
    bodies.append((await call(gw, "GET", f"/admin/v1/connections?tenant_id={owner}")).body)
    every = [value for values in secrets.values() for value in values]
    for body in bodies:
        assert b"has_webhook_secret" in body
        for secret in every:
            assert secret.encode() not in body


async def test_secrets_need_a_key_ring(settings_factory: Any) -> None:
    settings = settings_factory(admin_tokens=TOKEN)
    async with running_gateway(settings) as gw:
        problem = assert_problem(
            await call(gw, "POST", "/admin/v1/connections", _valid(tenant_id=tenant(), webhook_secret=WHSEC)),
            422,
        )
        assert "LEDGERHOOK_ENCRYPTION_KEYS" in problem["errors"][0]["detail"]
        # Without a secret the connection is accepted.
        assert (await call(gw, "POST", "/admin/v1/connections", _valid(tenant_id=tenant()))).status == 201
