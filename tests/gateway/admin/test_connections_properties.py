"""Property: whatever JSON (or not-JSON) is posted to create a connection, the answer is one of the
documented statuses with a JSON body, never a 500, and never echoes a secret-looking member."""

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provider_auth.vault import KeyRing
from tests.support import RunningGateway, gateway_in_thread, make_settings

TOKEN = "property-admin-token"
FIELDS = [
    "tenant_id",
    "provider",
    "provider_account_id",
    "display_name",
    "metadata",
    "webhook_secret",
    "webhook_secrets",
]
PROVIDERS = ["quickbooks", "xero", "zoho-books", "freshbooks", "sage-intacct", "netsuite", "custom", "myob"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["", " ", "\u0000", "whsec_", "whsec_c2VjcmV0", "a" * 250, "\u202e\ud7ff"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
field_values = st.one_of(json_values, st.sampled_from(PROVIDERS), st.lists(st.text(max_size=30), max_size=7))
objects = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=12)), field_values, max_size=8)
near_valid = st.fixed_dictionaries(
    {
        "tenant_id": st.one_of(st.text(min_size=1, max_size=30), json_values),
        "provider": st.sampled_from(PROVIDERS),
        "provider_account_id": st.one_of(st.text(max_size=30), json_values),
    },
    optional=dict.fromkeys(("display_name", "metadata", "webhook_secret", "webhook_secrets"), field_values),
)
bodies = st.one_of(
    near_valid.map(lambda value: json.dumps(value).encode()),
    objects.map(lambda value: json.dumps(value).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=600).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(min_value=1, max_value=600).map(
        lambda depth: (
            b'{"tenant_id":"t","provider":"custom","provider_account_id":"a","metadata":'
            + b'{"a":' * depth
            + b"1"
            + b"}" * depth
            + b"}"
        )
    ),
)


@pytest.fixture(scope="module")
def served(postgres_url: str, broker: Any) -> Iterator[RunningGateway]:
    config = make_settings(
        postgres_url,
        broker.bootstrap,
        admin_tokens=TOKEN,
        encryption_keys=f"k1:{KeyRing.generate_key()}",
    )
    with gateway_in_thread(config) as running:
        yield running


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_create_never_fails_with_a_server_error(served: RunningGateway, body: bytes) -> None:
    address = urlsplit(served.base_url)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=10)
    try:
        connection.request(
            "POST",
            "/admin/v1/connections",
            body=body,
            headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
        )
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    assert response.status in {201, 400, 409, 422}, answer
    document = json.loads(answer)
    if response.status == 201:
        assert response.getheader("content-type") == "application/json"
        assert {"id", "tenant_id", "provider", "has_webhook_secret"} <= set(document)
        assert "webhook_secret" not in document and "webhook_secrets" not in document
    else:
        assert response.getheader("content-type") == "application/problem+json"
        assert document["status"] == response.status and document["detail"]
