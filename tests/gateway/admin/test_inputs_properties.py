"""Property: whatever text, over the whole Unicode range (NUL and lone surrogates included), goes into
the admin API's text members, query parameters and path, every answer is 2xx or a 4xx problem, never
a 5xx; text PostgreSQL cannot store is refused with a pointer at it; and what was accepted is stored
exactly as sent."""

import http.client
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admin.connections import LIST_PARAMETERS
from gateway.admin.problems import pointer
from gateway.dev.embedded import free_port
from provider_auth.vault import KeyRing
from tests.support import RunningGateway, gateway_in_thread, make_settings

TOKEN = "text-property-admin-token"
EXAMPLES = settings(max_examples=60, deadline=None)

# Every code point, surrogates included, with the ones PostgreSQL refuses drawn often.
characters = st.one_of(
    st.characters(exclude_categories=()), st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff"])
)
# And text that is mostly printable ASCII, which more often passes the other rules and is stored.
plain = st.one_of(st.characters(min_codepoint=32, max_codepoint=126), st.sampled_from(["\x00", "\ud800"]))
texts = st.one_of(st.text(alphabet=characters, max_size=24), st.text(alphabet=plain, max_size=24))


def unstorable(text: str) -> bool:
    """PostgreSQL cannot store it: a NUL, or a lone surrogate (no UTF-8 form)."""
    return "\x00" in text or any("\ud800" <= char <= "\udfff" for char in text)


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.json: Any = json.loads(body) if body else None

    def is_problem_or_success(self) -> None:
        assert self.status < 500, self.body
        if self.status >= 400:
            assert self.headers["content-type"] == "application/problem+json", self.headers
            assert self.json["status"] == self.status and self.json["detail"]
        assert "location" not in self.headers or self.headers["location"].startswith("/admin/v1/")

    def pointers(self) -> set[str]:
        return {error.get("pointer") or error.get("parameter") for error in self.json.get("errors") or []}


def call(gw: RunningGateway, method: str, path: str, body: Any = None, *, admin: bool = True) -> Answer:
    """One request; `path` is sent as written. JSON escapes lone surrogates (`\\ud800`) as a client
    that means them would. `admin`: the answer comes from the admin API, so an error is a problem."""
    address = urlsplit(gw.base_url)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=15)
    headers = {"authorization": f"Bearer {TOKEN}"}
    data = None if body is None else json.dumps(body, ensure_ascii=True).encode()
    if data is not None:
        headers["content-type"] = "application/json"
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        answer = Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()
    if admin:
        answer.is_problem_or_success()
    assert answer.status < 500
    return answer


def escaped(text: str) -> str:
    """`text` percent-encoded for a URL; a lone surrogate as the bytes it would take in UTF-8."""
    return quote(text, safe="", errors="surrogatepass")


def as_received(text: str) -> str:
    """`escaped(text)` as the server decodes it (bytes that are not UTF-8 become U+FFFD)."""
    return unquote(escaped(text))


@pytest.fixture(scope="module")
def served(postgres_url: str, broker: Any) -> Iterator[RunningGateway]:
    nowhere = f"http://127.0.0.1:{free_port()}/token"  # nothing here asks a provider for anything
    config = make_settings(
        postgres_url,
        broker.bootstrap,
        admin_tokens=TOKEN,
        encryption_keys=f"k1:{KeyRing.generate_key()}",
        xero_client_id="xero-client",
        xero_client_secret="xero-secret",
        xero_token_url=nowhere,
    )
    with gateway_in_thread(config) as running:
        yield running


def new_connection(gw: RunningGateway, provider: str = "xero") -> str:
    body = {"tenant_id": f"t-{uuid.uuid4().hex}", "provider": provider, "provider_account_id": "acct"}
    created = call(gw, "POST", "/admin/v1/connections", body)
    assert created.status == 201
    return str(created.json["id"])


@EXAMPLES
@given(tenant=texts, account=texts, name=texts, key=texts, value=texts)
def test_connection_text_is_refused_or_stored_as_sent(
    served: RunningGateway, tenant: str, account: str, name: str, key: str, value: str
) -> None:
    tenant = tenant + uuid.uuid4().hex  # never a 409 for an earlier example's tenant
    body = {
        "tenant_id": tenant,
        "provider": "custom",
        "provider_account_id": account,
        "display_name": name,
        "metadata": {key: value},
    }
    answer = call(served, "POST", "/admin/v1/connections", body)
    refused = {
        where
        for where, text in (
            ("#/tenant_id", tenant),
            ("#/provider_account_id", account),
            ("#/display_name", name),
            (pointer(("metadata", key)), key),
            (pointer(("metadata", key)), value),
        )
        if unstorable(text)
    }
    if refused:
        assert answer.status == 422 and refused <= answer.pointers(), (refused, answer.json)
        return
    assert answer.status in {201, 422}, answer.json
    if answer.status == 201:
        stored = call(served, "GET", f"/admin/v1/connections/{answer.json['id']}").json
        assert (stored["tenant_id"], stored["provider_account_id"], stored["display_name"]) == (
            tenant,
            account,
            name,
        )
        assert stored["metadata"] == {key: value}


@EXAMPLES
@given(name=texts, key=texts, value=texts)
def test_an_update_is_refused_or_stored_as_sent(
    served: RunningGateway, name: str, key: str, value: str
) -> None:
    path = f"/admin/v1/connections/{new_connection(served)}"
    metadata = {"note": value, key: 1}
    answer = call(served, "PATCH", path, {"display_name": name, "metadata": metadata})
    sent = [name, *metadata, *(text for text in metadata.values() if isinstance(text, str))]
    assert answer.status in {200, 422}, answer.json
    if any(unstorable(text) for text in sent):
        assert answer.status == 422
    stored = call(served, "GET", path).json
    if answer.status == 200:
        assert stored["display_name"] == name and stored["metadata"] == metadata
    else:
        assert stored["display_name"] is None and stored["metadata"] == {}  # nothing changed


@EXAMPLES
@given(scope=texts, location=texts, account_id=texts, token=texts, expires_at=texts)
def test_credentials_text_is_refused_or_stored_as_sent(
    served: RunningGateway, scope: str, location: str, account_id: str, token: str, expires_at: str
) -> None:
    path = f"/admin/v1/connections/{new_connection(served)}/credentials"
    members: list[dict[str, Any]] = [
        {"scope": scope},
        {"location": location},
        {"account_id": account_id},
        {"access_token": token, "expires_in": 60},
        {"access_token": "a", "expires_at": expires_at},
    ]
    for extra in members:
        answer = call(served, "PUT", path, {"refresh_token": "r-" + uuid.uuid4().hex} | extra)
        (member, text), *_ = extra.items()
        if unstorable(text):
            assert answer.status == 422 and f"#/{member}" in answer.pointers(), answer.json
        assert answer.status in {200, 422}, answer.json
        if answer.status == 200 and member == "scope":
            assert call(served, "GET", path).json["scope"] == scope


@EXAMPLES
@given(since=texts, entity=texts)
def test_backfill_text_never_fails_the_server(served: RunningGateway, since: str, entity: str) -> None:
    path = f"/admin/v1/connections/{new_connection(served)}/backfill"
    answer = call(served, "POST", path, {"since": since, "entities": [entity]})
    assert answer.status in {202, 422}, answer.json
    if unstorable(since) or unstorable(entity):
        assert answer.status == 422


parameters = st.lists(st.tuples(st.one_of(st.sampled_from(LIST_PARAMETERS), texts), texts), max_size=4)


@EXAMPLES
@given(query=parameters)
def test_query_parameters_are_checked_whatever_they_hold(
    served: RunningGateway, query: list[tuple[str, str]]
) -> None:
    encoded = "&".join(f"{escaped(name)}={escaped(value)}" for name, value in query)
    answer = call(served, "GET", "/admin/v1/connections?" + encoded)
    assert answer.status in {200, 422}, answer.json
    received = [(as_received(name), as_received(value)) for name, value in query]
    names = [name for name, _ in received]
    for name, value in received:
        if name not in LIST_PARAMETERS or not value or "\x00" in value or names.count(name) > 1:
            assert answer.status == 422 and name in answer.pointers(), (name, answer.json)


@EXAMPLES
@given(segment=texts)
def test_any_connection_id_in_the_path_is_404_or_422(served: RunningGateway, segment: str) -> None:
    for suffix in ("", "/credentials", "/sync"):
        # A path holding a newline is beyond the gateway's `/admin/v1` mount (Starlette's path
        # pattern stops at one): a 404 from the gateway's router, plain or a problem.
        beyond = "\n" in segment
        answer = call(served, "GET", f"/admin/v1/connections/{escaped(segment)}{suffix}", admin=not beyond)
        assert answer.status in {404, 422}, answer.body
        if "\x00" in segment and "/" not in segment and not beyond:
            assert answer.status == 422 and answer.pointers() == {"connection_id"}
