"""The webhook endpoint over real HTTP: status contract, both QuickBooks formats, Xero intent to
receive, body limits, and exactly one raw record per acknowledged delivery."""

import base64
import hashlib
import hmac
import random

import aiohttp
import orjson
import pytest

from gateway.dev import samples
from gateway.ingress.delivery import (
    DELIVERY_ID_HEADER,
    H_CONNECTION_ID,
    H_CONTENT_TYPE,
    H_DELIVERY_ID,
    H_PROVIDER,
    H_PROVIDER_EVENT_ID,
    H_RECEIVED_AT,
)
from tests.support import (
    QUICKBOOKS_TOKENS,
    XERO_KEYS,
    RunningGateway,
    read_topic,
    record_header,
    running_gateway,
)


def b64_hmac(key: str, body: bytes) -> str:
    """Independent signing path: base64 HMAC-SHA256, as QuickBooks and Xero document it."""
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


LEGACY_SAMPLE = (
    b'{"eventNotifications":[{"realmId":"1185883450","dataChangeEvent":{"entities":[{"name":"Customer",'
    b'"id":"1","operation":"Create","lastUpdated":"2015-10-05T14:42:19-0700"}]}}]}'
)
CLOUDEVENTS_SAMPLE = (
    b'[{"specversion":"1.0","id":"88cd52aa-1b2c","source":"intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58gtT3QKRxeH3d7W8",'
    b'"type":"qbo.account.created.v1","datacontenttype":"application/json","time":"2025-09-10T21:31:25.179851517Z",'
    b'"intuitentityid":"1234","intuitaccountid":"310687","data":{}}]'
)


async def post(gw: RunningGateway, path: str, body: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
    async with (
        aiohttp.ClientSession() as session,
        session.post(gw.base_url + path, data=body, headers=headers) as response,
    ):
        await response.read()
        return response


def assert_bare(response: aiohttp.ClientResponse, body: bytes = b"") -> None:
    """Every webhook answer: no body, no cookie."""
    assert response.headers.get("content-length", "0") == "0"
    assert "set-cookie" not in {k.lower() for k in response.headers}


@pytest.mark.parametrize("content_type", ["application/json", "application/cloudevents+json"])
@pytest.mark.parametrize(
    ("body", "account", "event_id"),
    [
        (LEGACY_SAMPLE, "1185883450", None),
        (CLOUDEVENTS_SAMPLE, "310687", "88cd52aa-1b2c"),
    ],
)
async def test_quickbooks_both_formats_stored_with_headers(
    gateway: RunningGateway, body: bytes, account: str, event_id: str | None, content_type: str
) -> None:
    response = await post(
        gateway,
        "/webhooks/quickbooks",
        body,
        {"intuit-signature": b64_hmac(QUICKBOOKS_TOKENS[1], body), "content-type": content_type},
    )
    assert response.status == 200
    assert_bare(response)
    records = await read_topic(gateway.settings.kafka_bootstrap_servers, gateway.settings.topic_raw)
    assert len(records) == 1
    record = records[0]
    assert record.value == body  # the raw bytes, unchanged
    assert record.key == account.encode()
    assert record_header(record, H_PROVIDER) == "quickbooks"
    assert record_header(record, H_DELIVERY_ID) == response.headers[DELIVERY_ID_HEADER]
    assert record_header(record, H_CONTENT_TYPE) == content_type
    assert record_header(record, H_RECEIVED_AT).endswith("Z")
    assert record_header(record, H_PROVIDER_EVENT_ID) == event_id
    assert record_header(record, H_CONNECTION_ID) is None


async def test_every_active_verifier_token_is_accepted(gateway: RunningGateway) -> None:
    for token in QUICKBOOKS_TOKENS:
        response = await post(
            gateway,
            "/webhooks/quickbooks",
            LEGACY_SAMPLE,
            {"intuit-signature": b64_hmac(token, LEGACY_SAMPLE)},
        )
        assert response.status == 200
    records = await read_topic(gateway.settings.kafka_bootstrap_servers, gateway.settings.topic_raw)
    assert len(records) == 2


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "not-base64!!",
        b64_hmac("retired-token", LEGACY_SAMPLE),
        b64_hmac(QUICKBOOKS_TOKENS[1], LEGACY_SAMPLE + b" "),
    ],
)
async def test_quickbooks_bad_signature_is_401_and_not_stored(
    gateway: RunningGateway, signature: str | None
) -> None:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["intuit-signature"] = signature
    response = await post(gateway, "/webhooks/quickbooks", LEGACY_SAMPLE, headers)
    assert response.status == 401
    assert_bare(response)
    assert await read_topic(gateway.settings.kafka_bootstrap_servers, gateway.settings.topic_raw) == []


async def test_xero_intent_to_receive_sequence(gateway: RunningGateway) -> None:
    """Xero sends several empty payloads, some signed right, some wrong: 200 / 401, empty, fast."""
    rng = random.Random(7)
    expected_stored = 0
    async with aiohttp.ClientSession() as session:
        for attempt in range(8):
            body = samples.xero_intent_to_receive()
            good = attempt % 2 == 0 or rng.random() < 0.3
            signature = b64_hmac(XERO_KEYS[0] if good else "some-other-key", body)
            async with session.post(
                gateway.base_url + "/webhooks/xero",
                data=body,
                headers={"x-xero-signature": signature, "content-type": "application/json"},
            ) as response:
                assert (await response.read()) == b""
                assert response.status == (200 if good else 401)
                assert "set-cookie" not in {k.lower() for k in response.headers}
                expected_stored += good
        async with session.post(
            gateway.base_url + "/webhooks/xero", data=samples.xero_intent_to_receive()
        ) as r:
            assert r.status == 401  # unsigned
            assert await r.read() == b""
    records = await read_topic(gateway.settings.kafka_bootstrap_servers, gateway.settings.topic_raw)
    assert len(records) == expected_stored
    # No account named: keyed by the delivery id.
    assert all(r.key == record_header(r, H_DELIVERY_ID).encode() for r in records)


async def test_xero_delivery_mixing_tenants_is_keyed_by_delivery(gateway: RunningGateway) -> None:
    one = orjson.loads(samples.xero_events("tenant-a", 1))
    two = orjson.loads(samples.xero_events("tenant-b", 1))
    body = orjson.dumps({**one, "events": one["events"] + two["events"]})
    response = await post(gateway, "/webhooks/xero", body, {"x-xero-signature": b64_hmac(XERO_KEYS[0], body)})
    assert response.status == 200
    single = samples.xero_events("tenant-a", 2)
    response = await post(
        gateway, "/webhooks/xero", single, {"x-xero-signature": b64_hmac(XERO_KEYS[0], single)}
    )
    assert response.status == 200
    records = await read_topic(gateway.settings.kafka_bootstrap_servers, gateway.settings.topic_raw)
    keys = sorted(r.key for r in records)
    assert b"tenant-a" in keys
    mixed = next(r for r in records if r.value == body)
    assert mixed.key == record_header(mixed, H_DELIVERY_ID).encode()


@pytest.mark.parametrize("body", [b"not json at all", b"", b'{"eventNotifications": 5}', b"\xff\xfe\x00"])
async def test_signed_but_unparseable_body_is_stored_never_400(gateway: RunningGateway, body: bytes) -> None:
    response = await post(
        gateway,
        "/webhooks/quickbooks",
        body,
        {"intuit-signature": b64_hmac(QUICKBOOKS_TOKENS[0], body), "content-type": "text/plain"},
    )
    assert response.status == 200
    records = await read_topic(gateway.settings.kafka_bootstrap_servers, gateway.settings.topic_raw)
    assert [r.value for r in records] == [body]


async def test_status_contract_for_unknown_paths_and_methods(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as session:
        for method, path, status in [
            ("POST", "/webhooks/nope", 404),
            ("POST", "/webhooks/quickbooks/some-connection", 404),  # shared-endpoint provider
            ("POST", "/webhooks/zoho-books/unknown-connection", 404),
            ("POST", "/elsewhere", 404),
            ("GET", "/webhooks/quickbooks", 405),
            ("PUT", "/webhooks/xero", 405),
        ]:
            async with session.request(method, gateway.base_url + path, data=b"{}") as response:
                assert response.status == status, (method, path)
                assert await response.read() == b""
                assert "set-cookie" not in {k.lower() for k in response.headers}
                if status == 405:
                    assert response.headers["allow"] == "POST"


async def test_unconfigured_provider_is_404(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_gateway(settings_factory(xero_webhook_keys="")) as gw:
        body = samples.xero_intent_to_receive()
        response = await post(gw, "/webhooks/xero", body, {"x-xero-signature": b64_hmac(XERO_KEYS[0], body)})
        assert response.status == 404


async def test_body_limit_enforced_while_reading(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with running_gateway(settings_factory(max_body_bytes=1024)) as gw:
        big = b"x" * 1025
        signed = {"intuit-signature": b64_hmac(QUICKBOOKS_TOKENS[0], big)}
        response = await post(gw, "/webhooks/quickbooks", big, signed)
        assert response.status == 413
        assert_bare(response)

        async def chunks():  # no Content-Length: chunked transfer, cut off while reading
            for _ in range(64):
                yield b"y" * 512

        async with (
            aiohttp.ClientSession() as session,
            session.post(gw.base_url + "/webhooks/quickbooks", data=chunks(), headers=signed) as r,
        ):
            assert r.status == 413
        exact = b"z" * 1024
        response = await post(
            gw, "/webhooks/quickbooks", exact, {"intuit-signature": b64_hmac(QUICKBOOKS_TOKENS[0], exact)}
        )
        assert response.status == 200
        records = await read_topic(gw.settings.kafka_bootstrap_servers, gw.settings.topic_raw)
        assert [r.value for r in records] == [exact]


async def test_concurrent_deliveries_each_stored_exactly_once(gateway: RunningGateway) -> None:
    import asyncio

    bodies = [samples.quickbooks_cloudevents(str(1000 + i % 17), 3, random.Random(i)) for i in range(500)]
    assert len(set(bodies)) == 500
    connector = aiohttp.TCPConnector(limit=500)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(body: bytes) -> tuple[int, str | None]:
            async with session.post(
                gateway.base_url + "/webhooks/quickbooks",
                data=body,
                headers={
                    "intuit-signature": b64_hmac(QUICKBOOKS_TOKENS[1], body),
                    "content-type": "application/cloudevents+json",
                },
            ) as response:
                return response.status, response.headers.get(DELIVERY_ID_HEADER)

        results = await asyncio.gather(*(send(b) for b in bodies))
    acknowledged = {body for body, (status, _) in zip(bodies, results, strict=True) if status == 200}
    assert {status for status, _ in results} <= {200, 503}
    assert len(acknowledged) >= 490  # a healthy local broker takes them all; 503s would be retried
    records = await read_topic(gateway.settings.kafka_bootstrap_servers, gateway.settings.topic_raw)
    stored = [r.value for r in records]
    assert len(stored) == len(set(stored))  # no delivery twice
    assert acknowledged <= set(stored)  # every 200 is on the topic
    ids = [record_header(r, H_DELIVERY_ID) for r in records]
    assert len(set(ids)) == len(ids)


async def test_health_endpoints_and_metrics(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.base_url + "/livez") as r:
            assert r.status == 200
        async with session.get(gateway.base_url + "/readyz") as r:
            assert r.status == 200
            assert (await r.json())["checks"] == {"broker": "ok", "database": "ok"}
        body = LEGACY_SAMPLE
        await session.post(
            gateway.base_url + "/webhooks/quickbooks",
            data=body,
            headers={"intuit-signature": b64_hmac(QUICKBOOKS_TOKENS[0], body)},
        )
        await session.post(
            gateway.base_url + "/webhooks/quickbooks", data=body, headers={"intuit-signature": "wrong"}
        )
        gateway.lifecycle.draining = True
        async with session.get(gateway.base_url + "/readyz") as r:
            assert r.status == 503
            assert (await r.json())["status"] == "draining"
        gateway.lifecycle.draining = False
        async with session.get(gateway.base_url + "/metrics") as r:
            text = await r.text()
    assert 'ledgerhook_webhook_requests_total{outcome="stored",provider="quickbooks"} 1.0' in text
    assert 'ledgerhook_webhook_requests_total{outcome="unauthorized",provider="quickbooks"} 1.0' in text
    assert 'ledgerhook_webhook_signature_failures_total{provider="quickbooks",reason="malformed"} 1.0' in text
    assert 'ledgerhook_webhook_ack_seconds_count{provider="quickbooks"} 1.0' in text
    assert f'ledgerhook_webhook_body_bytes_total{{provider="quickbooks"}} {float(2 * len(body))}' in text
    assert "ledgerhook_webhook_in_flight 0.0" in text


async def test_readyz_reports_unreachable_database(settings_factory) -> None:  # type: ignore[no-untyped-def]
    broken = settings_factory(database_url="postgresql://nobody@127.0.0.1:1/none")
    async with running_gateway(broken, migrate_first=False) as gw, aiohttp.ClientSession() as session:
        async with session.get(gw.base_url + "/readyz") as r:
            assert r.status == 503
            assert (await r.json())["checks"] == {"broker": "ok", "database": "unreachable"}
        # Ingress does not depend on the database: deliveries are still stored.
        async with session.post(
            gw.base_url + "/webhooks/quickbooks",
            data=LEGACY_SAMPLE,
            headers={"intuit-signature": b64_hmac(QUICKBOOKS_TOKENS[0], LEGACY_SAMPLE)},
        ) as r:
            assert r.status == 200
