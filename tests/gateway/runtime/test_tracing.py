"""OpenTelemetry tracing end to end: one webhook is one trace from its request through the fan-out
worker to every event and quarantine record it produced, on the real gateway and worker (in this
process with the SDK's in-memory exporter, and as `ledgerhook serve` and `ledgerhook worker`
exporting over OTLP); off unless `OTEL_*` asks for it, leaving no trace header anywhere; the setup
reads the standard variables and fails soft."""

import asyncio
import base64
import gzip
import hashlib
import hmac
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.dev.embedded import free_port
from gateway.ingress.delivery import DELIVERY_ID_HEADER
from gateway.runtime.infra import open_infrastructure
from gateway.runtime.lifecycle import Lifecycle
from gateway.runtime.server import GatewayServer, uvicorn_config
from gateway.runtime.tracing import INGRESS, Tracing, requested_exporters, tracing_from_environment
from gateway.runtime.worker import running_worker_tasks
from gateway.settings import Settings
from provider_auth.accounts.store import ConnectionStore
from provider_auth.providers import Provider
from provider_auth.vault import KeyRing
from tests.docs.test_asyncapi import conforming_message
from tests.fanout.pipeline.pipeline_support import (
    Received,
    caught_up,
    read_events,
    read_quarantine,
    settings_env,
)
from tests.support import (
    ADMIN_TOKEN,
    QUICKBOOKS_TOKENS,
    RunningGateway,
    migrate_and_create_topics,
    read_topic,
    record_header,
)

# A caller's trace context: the gateway must not continue it.
FOREIGN_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ZOHO_SECRET = "ZohoTracingSecret2026"


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the machine's environment says, each test starts without `OTEL_*` variables."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def traced_settings(settings_factory: Any) -> Settings:
    """This test's topics, and a consumer group of its own that joins fast."""
    return settings_factory(  # type: ignore[no-any-return]
        worker_group_id=f"tracing-{uuid.uuid4().hex[:8]}",
        worker_session_timeout_ms=1000,  # the dev broker holds a join for half the session timeout
    )


@asynccontextmanager
async def gateway_with(settings: Settings, tracing: Tracing) -> AsyncIterator[RunningGateway]:
    """A gateway serving real HTTP on loopback with the process tracing handed in."""
    await migrate_and_create_topics(settings)
    lifecycle = Lifecycle()
    app = create_app(settings, lifecycle, tracing=tracing)
    port = free_port()
    server = GatewayServer(uvicorn_config(settings, app, "127.0.0.1", port), lifecycle, drain_seconds=0)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("gateway did not start")
        await asyncio.sleep(0.02)
    try:
        yield RunningGateway(f"http://127.0.0.1:{port}", settings, app, server, lifecycle)
    finally:
        server.should_exit = True
        await task


def account() -> str:
    """A provider account id of this test only."""
    return str(uuid.uuid4().int)[:12]


def quickbooks_body(*changes: tuple[str, str, str]) -> bytes:
    """A QuickBooks CloudEvents batch: one event per (realm, entity id, kind)."""
    return orjson.dumps(
        [
            {
                "specversion": "1.0",
                "id": uuid.uuid4().hex,
                "source": f"intuit.tracing/{realm}",
                "type": f"qbo.{kind}.v1",
                "datacontenttype": "application/json",
                "time": f"2025-09-10T21:31:2{n}Z",
                "intuitentityid": entity_id,
                "intuitaccountid": realm,
                "data": {},
            }
            for n, (realm, entity_id, kind) in enumerate(changes)
        ]
    )


def intuit_signature(body: bytes) -> str:
    """base64 HMAC-SHA256 with the verifier token, as Intuit signs."""
    return base64.b64encode(hmac.new(QUICKBOOKS_TOKENS[0].encode(), body, hashlib.sha256).digest()).decode()


async def post(base_url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
    """POST a webhook; its status and delivery id."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(base_url + path, data=body, headers=headers) as r,
    ):
        assert await r.read() == b""
        return r.status, r.headers.get(DELIVERY_ID_HEADER)


def traceparent(span: ReadableSpan) -> str:
    """The W3C `traceparent` of a span, written from the specification; it is sampled."""
    context = span.get_span_context()
    assert context is not None and context.trace_flags & 0x01
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def one(spans: list[ReadableSpan], kind: SpanKind) -> ReadableSpan:
    found = [span for span in spans if span.kind is kind]
    assert len(found) == 1, [span.name for span in found]
    return found[0]


def attribute_texts(spans: list[ReadableSpan]) -> str:
    """Every attribute name and value of the spans, as one text to search."""
    return " ".join(f"{key}={value!r}" for span in spans for key, value in (span.attributes or {}).items())


# --- one webhook, one trace ------------------------------------------------------------------------


async def test_one_webhook_is_one_trace_from_the_request_to_every_event(traced_settings: Settings) -> None:
    settings = traced_settings
    exporter = InMemorySpanExporter()
    tracing = Tracing.exporting_to(exporter)
    realm, stranger = account(), account()
    # Two changes for a realm two tenants connected, one for a realm nobody did: four events, and the
    # delivery quarantined (`unknown_account`).
    body = quickbooks_body(
        (realm, "7", "invoice.updated"), (realm, "8", "customer.created"), (stranger, "9", "bill.deleted")
    )
    signature = intuit_signature(body)
    async with gateway_with(settings, tracing) as gateway, open_infrastructure(settings) as infra:
        store = ConnectionStore(infra.pool, keyring=None)
        connections = {(await store.create(f"tenant-{n}", Provider.QUICKBOOKS, realm)).id for n in range(2)}
        status, delivery_id = await post(
            gateway.base_url,
            "/webhooks/quickbooks",
            body,
            {
                "intuit-signature": signature,
                "content-type": "application/json",
                "traceparent": FOREIGN_TRACEPARENT,
            },
        )
        assert status == 200
        async with (
            asyncio.timeout(60),
            running_worker_tasks(settings, infra, CollectorRegistry(), tracing=tracing),
        ):
            await caught_up(settings)

    spans = list(exporter.get_finished_spans())
    request = one(spans, SpanKind.SERVER)
    processing = one(spans, SpanKind.CONSUMER)
    assert len(spans) == 2
    trace_id = request.context.trace_id

    # The request: a root span (the caller's traceparent is not followed), what the metrics count.
    assert request.parent is None
    assert f"{trace_id:032x}" != FOREIGN_TRACEPARENT.split("-")[1]
    assert request.name == "POST /webhooks/{provider}"
    assert dict(request.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/webhooks/{provider}",
        "http.response.status_code": 200,
        "http.request.body.size": len(body),
        "ledgerhook.provider": "quickbooks",
        "ledgerhook.outcome": "stored",
        "ledgerhook.delivery_id": delivery_id,
    }
    assert request.status.status_code is StatusCode.UNSET

    # The worker continues the request's trace: one CONSUMER span per raw record, its child.
    assert processing.parent is not None
    assert processing.parent.span_id == request.context.span_id
    assert processing.context.trace_id == trace_id
    assert processing.name == f"process {settings.topic_raw}"
    attributes = dict(processing.attributes or {})
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.destination.name"] == settings.topic_raw
    assert attributes["messaging.consumer.group.name"] == settings.worker_group_id
    assert attributes["ledgerhook.delivery_id"] == delivery_id
    assert attributes["ledgerhook.provider"] == "quickbooks"
    assert attributes["ledgerhook.events"] == 4
    assert attributes["ledgerhook.quarantine.reason"] == "unknown_account"
    assert attributes["ledgerhook.outcome"] == "published"

    # The raw record carries the request's span; the events and the quarantine record the worker's.
    raw = await read_topic(settings.kafka_bootstrap_servers, settings.topic_raw)
    assert [record_header(record, "traceparent") for record in raw] == [traceparent(request)]
    events = await read_events(settings)
    assert len(events) == 4
    assert {event.header("ce_connectionid") for event in events} == connections
    for event in events:
        assert event.header("ce_traceparent") == traceparent(processing)
        assert event.event().get_extension("traceparent") == traceparent(processing)  # the official SDK
        assert event.header("ce_tracestate") is None  # no vendor entries to carry
        assert conforming_message("changes", event).startswith("accounting.")
    [quarantined] = await read_quarantine(settings)
    assert quarantined.header("traceparent") == traceparent(processing)
    assert quarantined.header("ledgerhook-delivery-id") == delivery_id
    assert conforming_message("quarantine", quarantined) == "quarantine.delivery"

    # Never a secret, a signature, a header value or the body on a span.
    texts = attribute_texts(spans)
    for secret in (
        signature,
        *QUICKBOOKS_TOKENS,
        body.decode(),
        "intuit-signature",
        "application/json",
        realm,
    ):
        assert secret not in texts


async def test_per_connection_requests_are_one_span_each(settings_factory: Any) -> None:
    settings = settings_factory(encryption_keys=f"k1:{KeyRing.generate_key()}")
    exporter = InMemorySpanExporter()
    async with gateway_with(settings, Tracing.exporting_to(exporter)) as gateway:
        async with (
            aiohttp.ClientSession(headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as admin,
            admin.post(
                f"{gateway.base_url}/admin/v1/connections",
                json={
                    "tenant_id": "tenant-z",
                    "provider": "zoho-books",
                    "provider_account_id": account(),
                    "webhook_secret": ZOHO_SECRET,
                },
            ) as response,
        ):
            assert response.status == 201
            connection = await response.json()
        path = f"/webhooks/zoho-books/{connection['id']}"
        body = b'{"event_type":"invoice_created","data":{"invoice":{"invoice_id":"982000000567114"}}}'
        right = hmac.new(ZOHO_SECRET.encode(), body, hashlib.sha256).hexdigest()
        stored, delivery_id = await post(gateway.base_url, path, body, {"x-zoho-webhook-signature": right})
        refused, _ = await post(gateway.base_url, path, body, {"x-zoho-webhook-signature": "0" * 64})
        unknown, _ = await post(gateway.base_url, f"/webhooks/zoho-books/{uuid.uuid4()}", body, {})
        assert (stored, refused, unknown) == (200, 401, 404)

    spans = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER]
    assert len(spans) == 3  # one per request, whichever component answered it
    assert {span.name for span in spans} == {"POST /webhooks/{provider}/{connection_id}"}
    assert len({span.context.trace_id for span in spans}) == 3
    by_outcome = {
        dict(span.attributes or {})["ledgerhook.outcome"]: dict(span.attributes or {}) for span in spans
    }
    assert by_outcome["stored"]["ledgerhook.connection_id"] == connection["id"]
    assert by_outcome["stored"]["ledgerhook.delivery_id"] == delivery_id
    assert by_outcome["stored"]["ledgerhook.provider"] == "zoho-books"
    assert by_outcome["unauthorized"]["http.response.status_code"] == 401
    assert by_outcome["unauthorized"]["ledgerhook.connection_id"] == connection["id"]
    assert by_outcome["not_found"]["http.response.status_code"] == 404
    assert "ledgerhook.connection_id" not in by_outcome["not_found"]  # only connections that exist
    assert ZOHO_SECRET not in attribute_texts(spans) and right not in attribute_texts(spans)
    raw = await read_topic(settings.kafka_bootstrap_servers, settings.topic_raw)
    stored_span = next(
        span for span in spans if dict(span.attributes or {})["ledgerhook.outcome"] == "stored"
    )
    assert [record_header(record, "traceparent") for record in raw] == [traceparent(stored_span)]


async def test_a_made_up_method_does_not_make_up_a_span_name(settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    async with (
        gateway_with(settings, Tracing.exporting_to(exporter)) as gateway,
        aiohttp.ClientSession() as session,
        session.request("PROPFIND", f"{gateway.base_url}/webhooks/xero") as response,
    ):
        assert response.status == 405
    [span] = exporter.get_finished_spans()
    assert span.name == "HTTP /webhooks/{provider}"
    attributes = dict(span.attributes or {})
    assert attributes["http.request.method"] == "_OTHER"
    assert attributes["ledgerhook.outcome"] == "method_not_allowed"
    assert attributes["http.response.status_code"] == 405


# --- off unless configured -------------------------------------------------------------------------


async def test_without_otel_variables_nothing_is_traced_and_no_record_carries_a_trace(
    traced_settings: Settings,
) -> None:
    settings = traced_settings
    tracing = tracing_from_environment()
    assert not tracing.enabled and tracing.tracer(INGRESS) is None
    realm = account()
    body = quickbooks_body((realm, "7", "invoice.updated"), (account(), "9", "bill.deleted"))
    async with gateway_with(settings, tracing) as gateway, open_infrastructure(settings) as infra:
        await ConnectionStore(infra.pool, keyring=None).create("tenant", Provider.QUICKBOOKS, realm)
        headers = {"intuit-signature": intuit_signature(body), "traceparent": FOREIGN_TRACEPARENT}
        assert (await post(gateway.base_url, "/webhooks/quickbooks", body, headers))[0] == 200
        async with (
            asyncio.timeout(60),
            running_worker_tasks(settings, infra, CollectorRegistry(), tracing=tracing),
        ):
            await caught_up(settings)

    raw = await read_topic(settings.kafka_bootstrap_servers, settings.topic_raw)
    assert len(raw) == 1
    assert {name for name, _ in raw[0].headers}.isdisjoint({"traceparent", "tracestate"})
    [event] = await read_events(settings)
    assert not {"ce_traceparent", "ce_tracestate"} & set(event.headers)
    [quarantined] = await read_quarantine(settings)
    assert not {"traceparent", "tracestate"} & set(quarantined.headers)


# --- the setup -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "billing"}, []),  # naming the service asks for no traces
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, []),
        ({"OTEL_TRACES_EXPORTER": " Console , otlp,console"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
        ({"OTEL_SDK_DISABLED": " TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, []),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
    ],
)
def test_the_exporters_asked_for(environ: dict[str, str], exporters: list[str]) -> None:
    assert requested_exporters(environ) == exporters


def test_sdk_disabled_wins_without_a_word(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    with caplog.at_level(logging.INFO, logger="ledgerhook.tracing"):
        assert not tracing_from_environment().enabled
    assert caplog.records == []


@pytest.mark.parametrize(
    ("environ", "said"),
    [
        (
            {"OTEL_TRACES_EXPORTER": "zipkin"},
            "OTEL_TRACES_EXPORTER=zipkin is not an exporter Ledgerhook ships",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTLP protocol grpc is not supported, only http/protobuf",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_BSP_MAX_QUEUE_SIZE": "-1"},
            "tracing could not be set up from the OTEL_* variables",
        ),
    ],
)
def test_what_cannot_be_set_up_is_one_line_and_tracing_stays_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, environ: dict[str, str], said: str
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.INFO, logger="ledgerhook.tracing"):
        tracing = tracing_from_environment()
    assert not tracing.enabled and tracing.tracer(INGRESS) is None
    assert [record.getMessage() for record in caplog.records if said in record.getMessage()] != []
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.WARNING


def test_without_the_tracing_extra_one_line_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if the SDK were not installed
    with caplog.at_level(logging.INFO, logger="ledgerhook.tracing"):
        tracing = tracing_from_environment()
    assert not tracing.enabled
    [line] = caplog.records
    assert line.levelno == logging.WARNING
    assert "pip install 'ledgerhook[tracing]'" in line.getMessage()


class Collector:
    """A loopback OTLP/HTTP receiver keeping every request posted to `/v1/traces`."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    received.append(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def spans(self) -> list[tuple[str, Any]]:
        """(service name, span) of every span received."""
        found: list[tuple[str, Any]] = []
        for request in list(self.requests):
            for resource_spans in request.resource_spans:
                service = next(
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                )
                found.extend((service, span) for scope in resource_spans.scope_spans for span in scope.spans)
        return found

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def collecting() -> Iterator[Collector]:
    collector = Collector()
    try:
        yield collector
    finally:
        collector.close()


def test_otel_variables_configure_the_otlp_export(monkeypatch: pytest.MonkeyPatch) -> None:
    with collecting() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
        tracing = tracing_from_environment()
        tracer = tracing.tracer(INGRESS)
        assert tracer is not None
        tracer.start_span("first").end()
        monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-hooks")
        named = tracing_from_environment()
        other = named.tracer(INGRESS)
        assert other is not None
        other.start_span("second").end()
        tracing.shutdown()  # flushes what the batch holds
        named.shutdown()
        spans = {span.name: service for service, span in collector.spans()}
        resources = [
            {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for request in collector.requests
            for resource_spans in request.resource_spans
        ]
    assert spans == {
        "first": "ledgerhook",
        "second": "billing-hooks",
    }  # the default service name, else theirs
    assert all(resource["deployment.environment"] == "staging" for resource in resources)


# --- as operators run it ----------------------------------------------------------------------------


async def test_serve_and_worker_export_one_trace_over_otlp(traced_settings: Settings) -> None:
    settings = traced_settings
    await migrate_and_create_topics(settings)
    realm = account()
    async with open_infrastructure(settings) as infra:
        await ConnectionStore(infra.pool, keyring=None).create("tenant", Provider.QUICKBOOKS, realm)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = settings_env(
        settings,
        HOST="127.0.0.1",
        PORT=str(port),
        WORKER_PORT=str(free_port()),
        QUICKBOOKS_VERIFIER_TOKENS=",".join(QUICKBOOKS_TOKENS),
        SHUTDOWN_DRAIN_SECONDS="0",
    )
    processes: list[subprocess.Popen[bytes]] = []
    with collecting() as collector, tempfile.TemporaryFile() as logs:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        try:
            for command, service in (("serve", "hooks-gateway"), ("worker", "hooks-worker")):
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "gateway.cli", command],
                        env=env | otel | {"OTEL_SERVICE_NAME": service},
                        stdout=subprocess.DEVNULL,
                        stderr=logs,
                    )
                )
            await wait_ready(base, processes)
            body = quickbooks_body((realm, "7", "invoice.updated"))
            status, _ = await post(
                base, "/webhooks/quickbooks", body, {"intuit-signature": intuit_signature(body)}
            )
            assert status == 200
            events = await events_within(settings, 60)
            for process in processes:
                process.send_signal(signal.SIGTERM)
            assert [await asyncio.to_thread(process.wait, 30) for process in processes] == [0, 0]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        spans = collector.spans()
        logs.seek(0)
        output = logs.read().decode()

    assert "tracing on" in output
    [(gateway_service, request)] = [
        (s, span) for s, span in spans if span.name == "POST /webhooks/{provider}"
    ]
    [(worker_service, processing)] = [(s, span) for s, span in spans if span.name.startswith("process ")]
    assert (gateway_service, worker_service) == ("hooks-gateway", "hooks-worker")
    assert processing.trace_id == request.trace_id and processing.parent_span_id == request.span_id
    [event] = events
    version, trace_id, parent_id, flags = (event.header("ce_traceparent") or "").split("-")
    assert (version, trace_id, parent_id) == ("00", processing.trace_id.hex(), processing.span_id.hex())
    assert int(flags, 16) & 0x01  # sampled


async def wait_ready(base: str, processes: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """Until the gateway answers `/readyz` with 200 (the worker joins meanwhile)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert all(process.poll() is None for process in processes), "a process exited"
            try:
                async with session.get(base + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the gateway never became ready")


async def events_within(settings: Settings, timeout: float) -> list[Received]:
    """The change events, once there are some."""
    deadline = time.monotonic() + timeout
    while not (events := await read_events(settings)):
        assert time.monotonic() < deadline, "no event in time"
        await asyncio.sleep(0.2)
    return events
