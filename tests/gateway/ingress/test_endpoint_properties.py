"""Property: no combination of path, body, headers and content type crashes the webhook handler or
yields an answer outside the HTTP contract (and a correctly signed delivery is always stored)."""

import http.client
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.settings import Settings
from provider_auth.webhooks import BodyHmac
from tests.support import QUICKBOOKS_TOKENS, XERO_KEYS, RunningGateway, gateway_in_thread

CONTRACT = {200, 401, 404, 405, 413, 503}
SIGNERS = {
    "quickbooks": BodyHmac.create("intuit-signature", [QUICKBOOKS_TOKENS[0]]),
    "xero": BodyHmac.create("x-xero-signature", [XERO_KEYS[0]]),
}
# Well-formed HTTP (header names are RFC 9110 tokens): a malformed message is the HTTP server's to
# refuse (400) before any handler runs, so it is outside this property.
TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
header_names = st.text(st.sampled_from(TCHAR), min_size=1, max_size=30)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
content_types = st.sampled_from(
    [
        "application/json",
        "application/cloudevents+json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "multipart/form-data; boundary=x",
    ]
)
paths = st.sampled_from(
    [
        "/webhooks/quickbooks",
        "/webhooks/xero",
        "/webhooks/zoho-books/c1",
        "/webhooks/unknown",
        "/webhooks/quickbooks/extra",
        "/webhooks/%00",
        "/webhooks/",
    ]
)
bodies = st.one_of(
    st.binary(max_size=3000),
    st.just(b"x" * 5000),
    st.sampled_from([b"[]", b"{}", b'{"eventNotifications":[]}', b'{"events":[{}]}', b"null"]),
)


@pytest.fixture(scope="module")
def served(postgres_url: str, broker) -> Iterator[RunningGateway]:  # type: ignore[no-untyped-def]
    from tests.support import make_settings

    settings: Settings = make_settings(postgres_url, broker.bootstrap, max_body_bytes=4096)
    with gateway_in_thread(settings) as running:
        yield running


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=paths,
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
    body=bodies,
    content_type=content_types,
    extra=st.dictionaries(header_names, header_values, max_size=5),
    sign=st.sampled_from(["right", "wrong", "none"]),
)
def test_handler_answers_inside_the_contract(
    served: RunningGateway,
    path: str,
    method: str,
    body: bytes,
    content_type: str,
    extra: dict[str, str],
    sign: str,
) -> None:
    headers = {
        k: v for k, v in extra.items() if k.lower() not in ("content-length", "transfer-encoding", "host")
    }
    if content_type:
        headers["content-type"] = content_type
    provider = path.split("/")[2] if path.count("/") == 2 else None
    signer = SIGNERS.get(provider or "")
    if signer and sign != "none":
        headers[signer.header] = signer.sign(body) if sign == "right" else signer.sign(body + b"!")
    connection = http.client.HTTPConnection(served.base_url.removeprefix("http://"), timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        content = response.read()
    finally:
        connection.close()
    assert response.status in CONTRACT
    assert content == b""
    assert response.getheader("set-cookie") is None
    if signer and method == "POST" and sign == "right" and len(body) <= 4096:
        assert response.status == 200  # signed and within the limit: stored, whatever the body says
    if method != "POST" and response.status != 404:
        assert response.status == 405
    if len(body) > 4096 and method == "POST" and signer:
        assert response.status == 413
