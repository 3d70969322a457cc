"""Per-connection webhook endpoints over real HTTP, with connections registered through the admin API:
each provider's scheme (right 200 + raw record keyed by the account with the connection header,
wrong 401), unknown and disconnected connections (404), rotation, the FreshBooks verify handshake,
Sage Intacct's Bearer JWT, the cache across processes, and a database outage."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from standardwebhooks.webhooks import Webhook

from gateway.dev.embedded import free_port
from gateway.ingress.delivery import H_CONNECTION_ID, H_PROVIDER, H_PROVIDER_EVENT_ID
from provider_auth.vault import KeyRing
from tests.support import RunningGateway, read_topic, record_header, running_gateway

TOKEN = "endpoint-admin-token"
ZOHO_SECRET = "ZohoSecretToken2026"
WHSEC = "whsec_" + base64.b64encode(b"netsuite-suitescript-signing-key").decode()
WHSEC_NEXT = "whsec_" + base64.b64encode(b"the-rotated-signing-key-material").decode()
ISSUER = "https://intacct.example.test"
AUDIENCE = "ledgerhook-tests"

EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


KEYRING = f"k1:{KeyRing.generate_key()}"


@pytest.fixture
async def gw(settings_factory: Any) -> AsyncIterator[RunningGateway]:
    settings = settings_factory(
        admin_tokens=TOKEN,
        encryption_keys=KEYRING,
        public_base_url="https://hooks.example.test",
        sage_intacct_jwt_keys=json.dumps([public_pem(EC_KEY), public_pem(RSA_KEY)]),
        sage_intacct_jwt_issuer=ISSUER,
        sage_intacct_jwt_audience=AUDIENCE,
    )
    async with running_gateway(settings) as running:
        yield running


async def admin(gw: RunningGateway, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers={"authorization": f"Bearer {TOKEN}"}) as session,
        session.request(method, f"{gw.base_url}/admin/v1{path}", json=body) as response,
    ):
        raw = await response.read()
        return response.status, orjson.loads(raw) if raw else None


async def connect(gw: RunningGateway, provider: str, account: str, **extra: Any) -> dict[str, Any]:
    body = {"tenant_id": f"t-{uuid.uuid4().hex[:8]}", "provider": provider, "provider_account_id": account}
    status, connection = await admin(gw, "POST", "/connections", body | extra)
    assert status == 201, connection
    return connection  # type: ignore[no-any-return]


async def deliver(
    gw: RunningGateway, path: str, body: bytes, headers: dict[str, str]
) -> aiohttp.ClientResponse:
    async with (
        aiohttp.ClientSession() as session,
        session.post(gw.base_url + path, data=body, headers=headers) as response,
    ):
        assert await response.read() == b""  # every webhook answer is empty
        return response


def path_of(connection: dict[str, Any]) -> str:
    return f"/webhooks/{connection['provider']}/{connection['id']}"


async def raw_records(gw: RunningGateway) -> list[Any]:
    return await read_topic(gw.settings.kafka_bootstrap_servers, gw.settings.topic_raw)


def assert_stored(record: Any, connection: dict[str, Any], body: bytes) -> None:
    assert record.value == body
    assert record.key == connection["provider_account_id"].encode()
    assert record_header(record, H_CONNECTION_ID) == connection["id"]
    assert record_header(record, H_PROVIDER) == connection["provider"]


# Independent signers: written from the providers' documents, not with the gateway's schemes.


def zoho_hex(secret: str, content: bytes) -> str:
    return hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()


def standard_headers(secret: str, body: bytes, msg_id: str = "msg_2Kq") -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body.decode()),
        "content-type": "application/json",
    }


def freshbooks_signature(verifier: str, form: bytes) -> str:
    fields: dict[str, str] = {}
    for name, value in parse_qsl(form.decode(), keep_blank_values=True):
        fields.setdefault(name, value)
    digest = hmac.new(verifier.encode(), json.dumps(fields).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def intacct_token(key: Any, algorithm: str, **claims: Any) -> str:
    payload = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300, "sub": "client-1"} | claims
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=algorithm)


async def test_zoho_books_json_and_form_deliveries(gw: RunningGateway) -> None:
    connection = await connect(gw, "zoho-books", "60012345678", webhook_secret=ZOHO_SECRET)
    body = b'{"event_type":"invoice_created","data":{"invoice":{"invoice_id":"982000000567114"}}}'
    right = await deliver(
        gw,
        path_of(connection),
        body,
        {"x-zoho-webhook-signature": zoho_hex(ZOHO_SECRET, body), "content-type": "application/json"},
    )
    assert right.status == 200
    form = urlencode({"invoice_id": "982000000567114", "event": "invoice.update", "amount": "12.50"}).encode()
    # Zoho Billing: key-value pairs, decoded, sorted by key, concatenated.
    content = b"amount12.50eventinvoice.updateinvoice_id982000000567114"
    form_answer = await deliver(
        gw,
        path_of(connection),
        form,
        {
            "x-zoho-webhook-signature": zoho_hex(ZOHO_SECRET, content),
            "content-type": "application/x-www-form-urlencoded",
        },
    )
    assert form_answer.status == 200
    for signature in (zoho_hex("AnotherSecret1", body), "", "zz", zoho_hex(ZOHO_SECRET, body + b" ")):
        wrong = await deliver(
            gw, path_of(connection), body, {"x-zoho-webhook-signature": signature} if signature else {}
        )
        assert wrong.status == 401
    records = await raw_records(gw)
    assert len(records) == 2
    assert_stored(records[0], connection, body)
    assert_stored(records[1], connection, form)


@pytest.mark.parametrize("provider", ["netsuite", "custom"])
async def test_standard_webhooks_providers(gw: RunningGateway, provider: str) -> None:
    connection = await connect(gw, provider, "TSTDRV-1", webhook_secret=WHSEC)
    body = b'{"type":"invoice.updated","data":{"id":"INV-77","lastmodifieddate":"2026-11-20T10:00:00Z"}}'
    right = await deliver(gw, path_of(connection), body, standard_headers(WHSEC, body, "msg_right"))
    assert right.status == 200
    wrong = await deliver(gw, path_of(connection), body, standard_headers(WHSEC_NEXT, body))
    assert wrong.status == 401
    stale = standard_headers(WHSEC, body) | {"webhook-timestamp": str(int(time.time()) - 3600)}
    assert (await deliver(gw, path_of(connection), body, stale)).status == 401
    records = await raw_records(gw)
    assert len(records) == 1
    assert_stored(records[0], connection, body)
    assert record_header(records[0], H_PROVIDER_EVENT_ID) == "msg_right"


async def test_unknown_disconnected_and_secretless_connections_are_404(gw: RunningGateway) -> None:
    body = b"{}"
    signed = standard_headers(WHSEC, body)
    for path in (
        f"/webhooks/netsuite/{uuid.uuid4()}",
        "/webhooks/netsuite/not-a-uuid",
        f"/webhooks/unknown-provider/{uuid.uuid4()}",
    ):
        assert (await deliver(gw, path, body, signed)).status == 404

    bare = await connect(gw, "custom", "no-secret")
    assert (await deliver(gw, path_of(bare), body, signed)).status == 404
    zoho_bare = await connect(gw, "zoho-books", "no-secret")
    assert (await deliver(gw, path_of(zoho_bare), body, {})).status == 404

    connection = await connect(gw, "netsuite", "TSTDRV-2", webhook_secret=WHSEC)
    assert (await deliver(gw, path_of(connection), body, signed)).status == 200
    # The same connection under another provider's URL is not served.
    assert (await deliver(gw, f"/webhooks/custom/{connection['id']}", body, signed)).status == 404
    # A shared-endpoint provider has no per-connection URL.
    qbo = await connect(gw, "quickbooks", "9341453908000000")
    assert (await deliver(gw, path_of(qbo), body, signed)).status == 404

    status, _ = await admin(gw, "DELETE", f"/connections/{connection['id']}")
    assert status == 204
    # At once in this process: the admin call drops the cached scheme.
    assert (await deliver(gw, path_of(connection), body, standard_headers(WHSEC, body))).status == 404
    assert len(await raw_records(gw)) == 1


async def test_rotation_accepts_every_active_secret_and_drops_removed_ones(gw: RunningGateway) -> None:
    connection = await connect(gw, "custom", "acct-rotate", webhook_secret=WHSEC)
    body = b'{"type":"contact.created","data":{"id":"C-1"}}'
    path = path_of(connection)
    assert (await deliver(gw, path, body, standard_headers(WHSEC, body))).status == 200
    status, _ = await admin(
        gw, "PATCH", f"/connections/{connection['id']}", {"webhook_secrets": [WHSEC, WHSEC_NEXT]}
    )
    assert status == 200
    assert (await deliver(gw, path, body, standard_headers(WHSEC, body))).status == 200
    assert (await deliver(gw, path, body, standard_headers(WHSEC_NEXT, body))).status == 200
    await admin(gw, "PATCH", f"/connections/{connection['id']}", {"webhook_secrets": [WHSEC_NEXT]})
    assert (await deliver(gw, path, body, standard_headers(WHSEC, body))).status == 401
    assert (await deliver(gw, path, body, standard_headers(WHSEC_NEXT, body))).status == 200
    # Paused connections still store deliveries (routing decides what to do with them).
    await admin(gw, "PATCH", f"/connections/{connection['id']}", {"status": "paused"})
    assert (await deliver(gw, path, body, standard_headers(WHSEC_NEXT, body))).status == 200
    assert len(await raw_records(gw)) == 5


async def test_freshbooks_verify_handshake(gw: RunningGateway) -> None:
    connection = await connect(gw, "freshbooks", "6BApk")
    path = path_of(connection)
    form = {"content-type": "application/x-www-form-urlencoded"}
    event = b"name=invoice.create&object_id=1234567&account_id=6BApk&business_id=6543&identity_id=1234"

    # Before the handshake nothing else is accepted.
    assert (await deliver(gw, path, event, form)).status == 401
    assert (await deliver(gw, path, b"name=callback.verify&object_id=99", form)).status == 401

    verifier = "scADVVi5QuKuj5qTjVkbJNYQe7V7USpGd"
    handshake = f"name=callback.verify&object_id=99&verifier={verifier}".encode()
    answer = await deliver(gw, path, handshake, form)
    assert answer.status == 200
    status, stored = await admin(gw, "GET", f"/connections/{connection['id']}")
    assert status == 200 and stored["has_webhook_secret"] is True
    assert verifier not in json.dumps(stored)

    # Signed with the verifier from now on; an unsigned verify post no longer passes.
    signed = form | {"x-freshbooks-hmac-sha256": freshbooks_signature(verifier, event)}
    assert (await deliver(gw, path, event, signed)).status == 200
    assert (await deliver(gw, path, event, form)).status == 401
    other = b"name=callback.verify&object_id=100&verifier=attackerChosenCode1"
    assert (await deliver(gw, path, other, form)).status == 401
    wrong = form | {"x-freshbooks-hmac-sha256": freshbooks_signature("attackerChosenCode1", event)}
    assert (await deliver(gw, path, event, wrong)).status == 401

    records = await raw_records(gw)
    # The handshake is on the raw topic for the product to PUT the verifier back to FreshBooks.
    assert [r.value for r in records] == [handshake, event]
    assert_stored(records[0], connection, handshake)

    # Clearing the secret opens the handshake again (a new callback registration).
    status, cleared = await admin(gw, "PATCH", f"/connections/{connection['id']}", {"webhook_secrets": []})
    assert status == 200 and cleared["has_webhook_secret"] is False
    renewed = f"name=callback.verify&object_id=101&verifier={verifier}X".encode()
    assert (await deliver(gw, path, renewed, form)).status == 200
    new_signed = form | {"x-freshbooks-hmac-sha256": freshbooks_signature(verifier + "X", event)}
    assert (await deliver(gw, path, event, new_signed)).status == 200
    assert (await deliver(gw, path, event, signed)).status == 401


async def test_freshbooks_with_a_known_verifier_and_disconnected(gw: RunningGateway) -> None:
    verifier = "knownVerifierFromAnEarlierRegistration"
    connection = await connect(gw, "freshbooks", "9ZzQ", webhook_secret=verifier)
    event = b"name=payment.create&object_id=77&account_id=9ZzQ"
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-freshbooks-hmac-sha256": freshbooks_signature(verifier, event),
    }
    assert (await deliver(gw, path_of(connection), event, headers)).status == 200
    await admin(gw, "DELETE", f"/connections/{connection['id']}")
    assert (await deliver(gw, path_of(connection), event, headers)).status == 404
    handshake = b"name=callback.verify&object_id=5&verifier=abc123"
    assert (await deliver(gw, path_of(connection), handshake, {})).status == 404


async def test_sage_intacct_bearer_jwt(gw: RunningGateway) -> None:
    connection = await connect(gw, "sage-intacct", "ACME-CO")
    path = path_of(connection)
    body = b'{"object":"LOCATION","action":"update","key":"12","data":{"LOCATIONID":"WEST"}}'
    trusted = base64.b64encode(b'{"clientId":"client-1"}').decode()

    def bearer(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}", "x-trusted-context": trusted}

    for key, algorithm in ((EC_KEY, "ES256"), (RSA_KEY, "RS256")):
        assert (await deliver(gw, path, body, bearer(intacct_token(key, algorithm)))).status == 200
    refused = [
        {},
        {"authorization": "Basic dXNlcjpwYXNz"},
        bearer("not.a.jwt"),
        bearer(intacct_token(OTHER_KEY, "ES256")),
        bearer(intacct_token(EC_KEY, "ES256", exp=int(time.time()) - 600)),
        bearer(intacct_token(EC_KEY, "ES256", exp=None)),
        bearer(intacct_token(EC_KEY, "ES256", iss="https://someone-else.test")),
        bearer(intacct_token(RSA_KEY, "RS256", aud="another-audience")),
        bearer(jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}, "k" * 32, "HS256")),
        bearer(jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}, None, "none")),
    ]
    for headers in refused:
        assert (await deliver(gw, path, body, headers)).status == 401, headers
    records = await raw_records(gw)
    assert len(records) == 2
    assert_stored(records[0], connection, body)


async def test_sage_intacct_without_configured_keys_is_404(settings_factory: Any) -> None:
    settings = settings_factory(admin_tokens=TOKEN, encryption_keys=KEYRING)
    async with running_gateway(settings) as gw:
        connection = await connect(gw, "sage-intacct", "ACME-CO-2")
        token = intacct_token(EC_KEY, "ES256")
        answer = await deliver(gw, path_of(connection), b"{}", {"authorization": f"Bearer {token}"})
        assert answer.status == 404


async def test_sage_intacct_keys_as_a_jwks_document(settings_factory: Any) -> None:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key())) | {
        "kid": "rsa-1",
        "use": "sig",
    }
    settings = settings_factory(
        admin_tokens=TOKEN, encryption_keys=KEYRING, sage_intacct_jwt_keys=json.dumps({"keys": [jwk]})
    )
    async with running_gateway(settings) as gw:
        connection = await connect(gw, "sage-intacct", "ACME-CO-3")
        good = jwt.encode({"exp": int(time.time()) + 60}, RSA_KEY, "RS256", headers={"kid": "rsa-1"})
        other_kid = jwt.encode({"exp": int(time.time()) + 60}, RSA_KEY, "RS256", headers={"kid": "rsa-2"})
        path = path_of(connection)
        assert (await deliver(gw, path, b"{}", {"authorization": f"Bearer {good}"})).status == 200
        assert (await deliver(gw, path, b"{}", {"authorization": f"Bearer {other_kid}"})).status == 401


async def test_another_process_sees_a_secret_change_within_the_cache_time(settings_factory: Any) -> None:
    settings = settings_factory(admin_tokens=TOKEN, encryption_keys=KEYRING, connection_cache_seconds=0.5)
    async with running_gateway(settings) as first, running_gateway(settings, migrate_first=False) as second:
        connection = await connect(first, "custom", "acct-two-processes", webhook_secret=WHSEC)
        body = b'{"type":"bill.created"}'
        assert (await deliver(second, path_of(connection), body, standard_headers(WHSEC, body))).status == 200
        status, _ = await admin(
            first, "PATCH", f"/connections/{connection['id']}", {"webhook_secret": WHSEC_NEXT}
        )
        assert status == 200
        # The other process still has the old scheme cached for a moment, then looks again.
        assert (await deliver(second, path_of(connection), body, standard_headers(WHSEC, body))).status == 200
        await asyncio.sleep(0.6)
        assert (await deliver(second, path_of(connection), body, standard_headers(WHSEC, body))).status == 401
        assert (
            await deliver(second, path_of(connection), body, standard_headers(WHSEC_NEXT, body))
        ).status == 200


async def test_database_unreachable_is_503_with_retry_after(settings_factory: Any) -> None:
    unreachable = f"postgresql://ledgerhook@127.0.0.1:{free_port()}/ledgerhook"
    settings = settings_factory(database_url=unreachable, encryption_keys=KEYRING, retry_after_seconds=7)
    async with running_gateway(settings, migrate_first=False) as gw:
        answer = await deliver(
            gw, f"/webhooks/netsuite/{uuid.uuid4()}", b"{}", standard_headers(WHSEC, b"{}")
        )
        assert answer.status == 503 and answer.headers["retry-after"] == "7"
        # The shared endpoints never touch the database.
        shared = await deliver(gw, "/webhooks/xero", b"{}", {"x-xero-signature": "bad"})
        assert shared.status == 401
        async with (
            aiohttp.ClientSession(headers={"authorization": "Bearer test-admin-token"}) as session,
            session.get(gw.base_url + "/admin/v1/connections") as response,
        ):
            assert response.status == 503
            assert response.headers["content-type"] == "application/problem+json"
