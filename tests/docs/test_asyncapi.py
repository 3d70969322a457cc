"""docs/asyncapi.yaml, the AsyncAPI 3.0 contract of the topics: valid against the official AsyncAPI 3.0.0
JSON Schema, every `$ref` resolving, generated (an edit by hand is found), and true of the records
Ledgerhook publishes through its real pipeline (gateway, fan-out worker, poller output, account status
transitions) on the test broker: each record matches exactly one message of its channel, headers,
payload and key.

The AsyncAPI 3.0.0 JSON Schema is vendored beside this file (tests/docs/asyncapi/; source, checksum
and licence in its NOTICE): no Python package ships it.
"""

import copy
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urldefrag

import orjson
import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator, ValidationError
from prometheus_client import CollectorRegistry
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7, DRAFT202012

from fanout.account_events import AccountEventPublisher, HistoryGap
from fanout.polling import quickbooks
from fanout.polling.pages import PollTarget
from fanout.polling.publishing import PageUnparseable, PollerMetrics, PollOutput, PollTopics
from gateway.runtime.infra import open_infrastructure
from gateway.settings import KafkaSettings, Settings
from provider_auth.accounts.events import AuthFailure, AuthFailureReason, ReactivationReason
from provider_auth.accounts.status import StatusTransitions
from provider_auth.accounts.store import ConnectionStore
from provider_auth.providers import Provider
from tests.fanout.pipeline.pipeline_support import (
    PipelineStack,
    Received,
    caught_up,
    post_signed,
    produce_raw,
    read_records,
    worker_running,
)
from tests.paths import REPO_ROOT
from tests.support import migrate_and_create_topics, running_gateway

DOCS = REPO_ROOT / "docs"
ASYNCAPI_PATH = DOCS / "asyncapi.yaml"
SCHEMA_DIR = DOCS / "schemas"
VENDORED = Path(__file__).resolve().parent / "asyncapi"
META_SCHEMA_PATH = VENDORED / "3.0.0.json"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_schemas", DOCS / "generate_schemas.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _generator()
DOCUMENT: dict[str, Any] = yaml.safe_load(ASYNCAPI_PATH.read_text(encoding="utf-8"))
META_SCHEMA: dict[str, Any] = json.loads(META_SCHEMA_PATH.read_text(encoding="utf-8"))
SCHEMAS: dict[str, dict[str, Any]] = {
    path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(SCHEMA_DIR.glob("*.json"))
}
# Where the document sits beside the schema files, so that its relative `schemas/...` refs resolve to
# their `$id`s: validation needs no network.
DOCUMENT_URI = gen.BASE_URI.removesuffix("schemas/") + "asyncapi.yaml"
REGISTRY: Registry = Registry().with_resources(
    [(DOCUMENT_URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012))]
    + [(schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS.values()]
)
CHANNELS = ("changes", "accountEvents", "quarantine")


def meta_validator() -> Draft7Validator:
    """The official AsyncAPI 3.0.0 schema (draft-07, its definitions bundled under their `$id`s)."""
    registry: Registry = Registry().with_resource(
        META_SCHEMA["$id"], Resource.from_contents(META_SCHEMA, default_specification=DRAFT7)
    )
    return Draft7Validator(META_SCHEMA, registry=registry)


def pointer(document: Any, fragment: str) -> Any:
    """The value a JSON pointer (`/a/b`, URI fragment form) names in `document`; KeyError if none."""
    value = document
    for raw_part in fragment.lstrip("/").split("/") if fragment.strip("/") else []:
        part = raw_part.replace("~1", "/").replace("~0", "~")
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def refs(node: Any) -> Iterator[str]:
    """Every `$ref` in a document, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def message(name: str) -> dict[str, Any]:
    """A message of the document's components."""
    found: dict[str, Any] = DOCUMENT["components"]["messages"][name]
    return found


def channel_messages(channel: str) -> list[str]:
    """The names of a channel's messages (each a `$ref` to the components)."""
    names = []
    for entry in DOCUMENT["channels"][channel]["messages"].values():
        names.append(entry["$ref"].removeprefix("#/components/messages/"))
    return names


def schema_validator(name: str, part: str) -> Draft202012Validator:
    """A validator of `headers` or `payload` of a message, `$ref`s resolved in the local registry."""
    return Draft202012Validator(
        {"$ref": f"{DOCUMENT_URI}#/components/messages/{name}/{part}"},
        registry=REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def header_names(schema: dict[str, Any]) -> set[str]:
    """The header names a headers schema documents, through its `allOf`s and `$ref`s."""
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        names |= header_names(part)
    if "$ref" in schema:
        names |= header_names(pointer(DOCUMENT, schema["$ref"].removeprefix("#")))
    return names


def key_binding(name: str) -> dict[str, Any]:
    """The Kafka message binding of a message."""
    bindings = message(name)["bindings"]
    if "$ref" in bindings:
        bindings = pointer(DOCUMENT, bindings["$ref"].removeprefix("#"))
    kafka: dict[str, Any] = bindings["kafka"]
    return kafka


def conforming_message(channel: str, record: Received) -> str:
    """The one message of `channel` the record is; asserts its headers, payload and key conform."""
    headers = {name: value.decode() for name, value in record.headers.items()}
    matched = [
        name for name in channel_messages(channel) if schema_validator(name, "headers").is_valid(headers)
    ]
    assert len(matched) == 1, (channel, headers, matched)
    name = matched[0]
    # Every header on the record is one the message documents.
    documented = header_names(message(name)["headers"])
    assert set(headers) <= documented, set(headers) - documented

    content_type = message(name).get("contentType", DOCUMENT["defaultContentType"])
    if content_type == "application/json":
        payload: Any = orjson.loads(record.value)
    else:
        payload = record.value.decode("latin-1")  # opaque bytes, one character per byte
    schema_validator(name, "payload").validate(payload)

    binding = key_binding(name)
    assert record.key is not None
    key = record.key.decode()
    Draft202012Validator(binding["key"]).validate(key)
    if "x-key-header" in binding:
        assert key == headers[binding["x-key-header"]]
    return name


# --- the document itself ----------------------------------------------------------------------------


def test_the_vendored_schema_is_the_one_its_notice_names() -> None:
    notice = (VENDORED / "NOTICE").read_text(encoding="utf-8")
    digest = hashlib.sha256(META_SCHEMA_PATH.read_bytes()).hexdigest()
    assert f"SHA-256 {digest}" in notice
    assert META_SCHEMA["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    assert "Apache License" in (VENDORED / "LICENSE").read_text(encoding="utf-8")


def test_the_document_is_valid_asyncapi_3_0() -> None:
    assert DOCUMENT["asyncapi"] == "3.0.0"
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message[:200]}"
        for error in meta_validator().iter_errors(DOCUMENT)
    ]
    assert errors == []


def _set(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    *parents, last = path.split("/")
    pointer(changed, "/".join(parents))[last] = value
    return changed


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("operations/sendChanges/action", "publish"),  # AsyncAPI 2's word
        ("channels/changes/bindings/kafka/partitions", "six"),
        ("channels/quarantine/bindings/kafka/bindingVersion", "9.9.9"),
        ("components/messageBindings/connectionKey/kafka/partitionKey", {"type": "string"}),
        ("servers/kafka/variables/bootstrap/default", 9092),
        ("components/messages/accounting.invoice.created/contentType", ["application/json"]),
    ],
)
def test_the_official_schema_refuses_a_broken_document(path: str, value: Any) -> None:
    # The validation reaches into bindings and components: it is not vacuous.
    assert not meta_validator().is_valid(_set(DOCUMENT, path, value))


def test_every_ref_resolves() -> None:
    checked = 0
    seen_files: set[str] = set()
    todo: list[tuple[Path, Any]] = [(ASYNCAPI_PATH, DOCUMENT)]
    while todo:
        path, document = todo.pop()
        for ref in refs(document):
            target, fragment = urldefrag(ref)
            if target:
                file = (path.parent / target).resolve()
                assert file.is_file(), f"{path.name}: {ref}"
                if file.name not in seen_files:
                    seen_files.add(file.name)
                    todo.append((file, json.loads(file.read_text(encoding="utf-8"))))
                resolved = pointer(json.loads(file.read_text(encoding="utf-8")), fragment)
            else:
                resolved = pointer(document, fragment)
            assert isinstance(resolved, dict), f"{path.name}: {ref}"
            checked += 1
    assert checked > len(SCHEMAS) * 3
    # Every schema file is some message's payload; none is copied into the document.
    assert seen_files == set(SCHEMAS)
    assert "$schema" not in ASYNCAPI_PATH.read_text(encoding="utf-8")


def test_every_event_type_has_one_message_with_its_schema() -> None:
    payloads: dict[str, str] = {}
    for channel in CHANNELS:
        for name in channel_messages(channel):
            payload = message(name)["payload"]
            if "$ref" in payload:
                payloads[payload["$ref"]] = name
    assert set(payloads) == {f"schemas/{file}" for file in SCHEMAS}
    for file, schema in SCHEMAS.items():
        name = payloads[f"schemas/{file}"]
        expected_channel = "changes" if file.startswith("accounting.") else "accountEvents"
        assert name in channel_messages(expected_channel)
        if file != gen.COMMON:
            assert name == file.removesuffix(".json")
            assert message(name)["name"] == schema["title"]  # the ce_type
            pinned = message(name)["headers"]["allOf"][1]["properties"]
            assert pinned["ce_type"] == {"const": schema["title"]}
    assert channel_messages("quarantine") == [gen.DELIVERY_MESSAGE, gen.PAGE_MESSAGE]


def test_operations_send_every_message_of_their_channel() -> None:
    operations = DOCUMENT["operations"]
    assert {op["channel"]["$ref"] for op in operations.values()} == {f"#/channels/{c}" for c in CHANNELS}
    for operation in operations.values():
        assert operation["action"] == "send"  # the document describes Ledgerhook, the producer
        channel = operation["channel"]["$ref"].removeprefix("#/channels/")
        assert [m["$ref"] for m in operation["messages"]] == [
            f"#/channels/{channel}/messages/{name}" for name in channel_messages(channel)
        ]


def test_channels_servers_and_keys_follow_the_settings() -> None:
    fields = KafkaSettings.model_fields
    addresses = {c: DOCUMENT["channels"][c]["address"] for c in CHANNELS}
    assert addresses == {
        "changes": fields["topic_changes"].default,
        "accountEvents": fields["topic_account_events"].default,
        "quarantine": fields["topic_quarantine"].default,
    }
    assert addresses == {
        "changes": "ledgerhook.changes",
        "accountEvents": "ledgerhook.account-events",
        "quarantine": "ledgerhook.quarantine",
    }
    for channel in CHANNELS:
        kafka = DOCUMENT["channels"][channel]["bindings"]["kafka"]
        assert "LEDGERHOOK_TOPIC_PARTITIONS" in kafka["x-partitions"]
        assert "LEDGERHOOK_TOPIC_REPLICATION_FACTOR" in kafka["x-replicas"]
    server = DOCUMENT["servers"]["kafka"]
    assert (server["protocol"], server["host"]) == ("kafka", "{bootstrap}")
    assert server["variables"]["bootstrap"]["default"] == fields["kafka_bootstrap_servers"].default
    # Events are keyed by connection: the key is the partition key header.
    for channel in ("changes", "accountEvents"):
        for name in channel_messages(channel):
            assert key_binding(name)["x-key-header"] == "ce_partitionkey"
    assert key_binding(gen.PAGE_MESSAGE)["x-key-header"] == "ledgerhook-provider-account-id"


def test_the_headers_are_the_code_s() -> None:
    cloudevents = DOCUMENT["components"]["schemas"]["CloudEventHeaders"]
    assert cloudevents["required"] == [
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_subject",
        "content-type",
        "ce_tenantid",
        "ce_connectionid",
        "ce_provider",
        "ce_partitionkey",
    ]
    delivery = DOCUMENT["components"]["schemas"]["QuarantinedDeliveryHeaders"]
    assert delivery["properties"]["ledgerhook-quarantine-reason"]["enum"] == [
        "unparseable",
        "unknown_account",
        "disconnected",
        "unknown_connection",
        "unknown_provider",
        "paused",
    ]
    page = DOCUMENT["components"]["schemas"]["QuarantinedPageHeaders"]
    assert page["properties"]["ledgerhook-quarantine-reason"]["enum"] == ["poll_unparseable"]


# --- generated, never edited ------------------------------------------------------------------------


def test_check_fails_when_the_document_is_edited_by_hand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copied = tmp_path / "asyncapi.yaml"
    shutil.copyfile(ASYNCAPI_PATH, copied)
    assert gen.main(["--check", "--asyncapi", str(copied)]) == 0

    edited = copied.read_text(encoding="utf-8").replace("  title: Ledgerhook events\n", "  title: Mine\n")
    assert edited != ASYNCAPI_PATH.read_text(encoding="utf-8")
    copied.write_text(edited, encoding="utf-8")
    capsys.readouterr()
    assert gen.main(["--check", "--asyncapi", str(copied)]) == 1
    assert "stale: asyncapi.yaml" in capsys.readouterr().err
    # The script itself, as the suite and a developer run it.
    result = subprocess.run(
        [sys.executable, str(DOCS / "generate_schemas.py"), "--check", "--asyncapi", str(copied)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "stale: asyncapi.yaml" in result.stderr

    # Regenerating restores the committed document, byte for byte; a second run writes nothing.
    assert gen.main(["--asyncapi", str(copied)]) == 0
    assert copied.read_bytes() == ASYNCAPI_PATH.read_bytes()
    assert gen.write_asyncapi(copied) is False

    copied.unlink()
    assert gen.main(["--check", "--asyncapi", str(copied)]) == 1


def test_the_committed_document_is_what_the_code_generates() -> None:
    assert gen.render_asyncapi(gen.asyncapi()) == ASYNCAPI_PATH.read_text(encoding="utf-8")


# --- records the pipeline publishes -----------------------------------------------------------------


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    """This test's topics and a consumer group of its own."""
    return settings_factory(  # type: ignore[no-any-return]
        worker_group_id=f"asyncapi-{uuid.uuid4().hex[:8]}",
        worker_session_timeout_ms=1000,  # the dev broker holds a join for half the session timeout
    )


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[PipelineStack]:
    """Gateway serving real HTTP, plus a pool and producer of the test's own (as the worker has)."""
    async with running_gateway(settings) as gateway, open_infrastructure(settings) as infra:
        yield PipelineStack(settings, gateway, infra)


def account() -> str:
    return str(uuid.uuid4().int)[:14]


def quickbooks_body(*notifications: tuple[str, list[dict[str, str]]]) -> bytes:
    """A QuickBooks webhook body: (realm, entities) per notification."""
    return orjson.dumps(
        {
            "eventNotifications": [
                {"realmId": realm, "dataChangeEvent": {"entities": entities}}
                for realm, entities in notifications
            ]
        }
    )


async def records(settings: Settings, topic: str) -> list[Received]:
    found = await read_records(settings.kafka_bootstrap_servers, topic)
    return sorted(found, key=lambda r: (r.partition, r.offset))


async def test_webhook_events_and_quarantined_deliveries_conform(stack: PipelineStack) -> None:
    realm, stranger = account(), account()
    connection = await ConnectionStore(stack.infra.pool, keyring=None).create(
        "tenant-contract", Provider.QUICKBOOKS, realm
    )
    at = "2025-09-10T21:31:24.500Z"
    mixed = quickbooks_body(
        (
            realm,
            [
                {"name": "Invoice", "id": "1042", "operation": "Update", "lastUpdated": at},
                {
                    "name": "Customer",
                    "id": "977",
                    "operation": "Merge",
                    "deletedId": "1001",
                    "lastUpdated": at,
                },
                {"name": "TimeActivity", "id": "12", "operation": "Create", "lastUpdated": at},
                {"name": "Payment", "id": "55", "operation": "Void", "lastUpdated": at},
            ],
        ),
        (stranger, [{"name": "Invoice", "id": "7", "operation": "Create", "lastUpdated": at}]),
    )
    mixed_id = await post_signed(stack.gateway, "quickbooks", mixed)
    lone = quickbooks_body(
        (stranger, [{"name": "Bill", "id": "8", "operation": "Create", "lastUpdated": at}])
    )
    lone_id = await post_signed(stack.gateway, "quickbooks", lone)
    garbage_id = await post_signed(stack.gateway, "quickbooks", b"<not json/>")
    # A raw record that names no provider (ingress never writes one; an older or foreign writer may).
    orphan_id = str(uuid.uuid4())
    await produce_raw(stack, b"{}", orphan_id.encode(), {"ledgerhook-delivery-id": orphan_id})

    async with worker_running(stack):
        await caught_up(stack.settings)

    events = await records(stack.settings, stack.settings.topic_changes)
    matched = [conforming_message("changes", record) for record in events]
    assert sorted(matched) == [
        "accounting.change",  # TimeActivity: outside the vocabulary
        "accounting.contact.merged",
        "accounting.invoice.updated",
        "accounting.payment.voided",
    ]
    for record in events:  # the key rule: the connection, in the headers and the data alike
        assert record.key == connection.id.encode()
        assert (
            record.header("ce_connectionid") == orjson.loads(record.value)["connection_id"] == connection.id
        )

    quarantined = await records(stack.settings, stack.settings.topic_quarantine)
    assert [conforming_message("quarantine", record) for record in quarantined] == [gen.DELIVERY_MESSAGE] * 4
    by_delivery = {r.header("ledgerhook-delivery-id"): r for r in quarantined}
    assert set(by_delivery) == {mixed_id, lone_id, garbage_id, orphan_id}
    reasons = {d: r.header("ledgerhook-quarantine-reason") for d, r in by_delivery.items()}
    assert reasons == {
        mixed_id: "unknown_account",
        lone_id: "unknown_account",
        garbage_id: "unparseable",
        orphan_id: "unknown_provider",
    }
    # The key rule of a quarantined delivery: the one provider account it names, else its delivery id.
    keys = {d: (r.key or b"").decode() for d, r in by_delivery.items()}
    assert keys == {mixed_id: mixed_id, lone_id: stranger, garbage_id: garbage_id, orphan_id: orphan_id}
    assert by_delivery[lone_id].value == lone


async def test_polled_events_account_events_and_quarantined_pages_conform(settings: Settings) -> None:
    await migrate_and_create_topics(settings)
    realm = account()
    now = datetime.now(UTC).replace(microsecond=0)
    async with open_infrastructure(settings) as infra:
        connection = await ConnectionStore(infra.pool, keyring=None).create(
            "tenant-contract", Provider.QUICKBOOKS, realm
        )
        topics = PollTopics(settings.topic_changes, settings.topic_quarantine, settings.topic_account_events)
        output = PollOutput(topics, infra.pool, infra.producer, PollerMetrics(CollectorRegistry()))
        target = PollTarget(realm)
        [request] = quickbooks.first_requests(target, now - timedelta(hours=1), ["Invoice", "Customer"])
        stamp = (now - timedelta(minutes=5)).isoformat()
        cdc = {
            "CDCResponse": [
                {
                    "QueryResponse": [
                        {
                            "Invoice": [
                                {"Id": "31", "MetaData": {"CreateTime": stamp, "LastUpdatedTime": stamp}}
                            ]
                        },
                        {
                            "Customer": [
                                {"Id": "4", "status": "Deleted", "MetaData": {"LastUpdatedTime": stamp}}
                            ]
                        },
                    ]
                }
            ],
            "time": now.isoformat(),
        }
        page = await output.parse(Provider.QUICKBOOKS, quickbooks, target, request, orjson.dumps(cdc))
        await output.changes(Provider.QUICKBOOKS, [connection], page.changes, origin="poll", received_at=now)

        fault = {"Fault": {"type": "SystemFault", "Error": [{"code": "10000", "Message": "internal"}]}}
        with pytest.raises(PageUnparseable):
            await output.parse(Provider.QUICKBOOKS, quickbooks, target, request, orjson.dumps(fault))

        gap = HistoryGap(
            tenant_id=connection.tenant_id,
            connection_id=connection.id,
            provider=Provider.QUICKBOOKS,
            provider_account_id=realm,
            entities=("Invoice", "Customer"),
            lost_from=now - timedelta(days=40),
            lost_until=now - timedelta(days=30),
            origin="poll",
            occurred_at=now,
        )
        await output.history_gaps([gap])

        transitions = StatusTransitions(AccountEventPublisher(infra.producer, settings.topic_account_events))
        failure = AuthFailure("quickbooks", AuthFailureReason.INVALID_GRANT, "invalid_grant", now)
        async with infra.pool.acquire() as conn, conn.transaction():
            assert await transitions.broken(conn, [connection.id], failure) == [connection.id]
        async with infra.pool.acquire() as conn, conn.transaction():
            back = now + timedelta(minutes=1)
            assert await transitions.reactivated(
                conn, [connection.id], ReactivationReason.RECONNECTED, back
            ) == [connection.id]

    events = await records(settings, settings.topic_changes)
    assert sorted(conforming_message("changes", record) for record in events) == [
        "accounting.contact.deleted",
        "accounting.invoice.created",
    ]
    assert {orjson.loads(record.value)["origin"] for record in events} == {"poll"}

    account_events = await records(settings, settings.topic_account_events)
    assert sorted(conforming_message("accountEvents", record) for record in account_events) == [
        "integrated_account.authentication_error",
        "integrated_account.history_gap",
        "integrated_account.reactivated",
    ]
    assert {record.key for record in account_events} == {connection.id.encode()}

    [page_record] = await records(settings, settings.topic_quarantine)
    assert conforming_message("quarantine", page_record) == gen.PAGE_MESSAGE
    assert page_record.key == realm.encode()
    assert page_record.value == orjson.dumps(fault)


def test_a_record_off_the_contract_is_refused() -> None:
    # What the conformance checks above would catch: a wrong header, payload or key.
    headers = {
        "ce_specversion": b"1.0",
        "ce_id": str(uuid.uuid4()).encode(),
        "ce_source": b"/ledgerhook/quickbooks/123",
        "ce_type": b"accounting.invoice.updated",
        "ce_time": b"2025-09-10T21:31:24.500Z",
        "ce_subject": b"invoice/1042",
        "content-type": b"application/json",
        "ce_tenantid": b"t",
        "ce_connectionid": b"c",
        "ce_provider": b"quickbooks",
        "ce_partitionkey": b"c",
    }
    data = {
        "tenant_id": "t",
        "connection_id": "c",
        "provider": "quickbooks",
        "provider_account_id": "123",
        "entity": "invoice",
        "provider_entity": "Invoice",
        "entity_id": "1042",
        "operation": "updated",
        "occurred_at": "2025-09-10T21:31:24.500Z",
        "origin": "webhook",
        "delivery_id": str(uuid.uuid4()),
    }

    def record(key: bytes = b"c", value: dict[str, Any] = data, **changed: bytes) -> Received:
        return Received(0, 0, key, headers | changed, orjson.dumps(value))

    assert conforming_message("changes", record()) == "accounting.invoice.updated"
    refused = [
        record(ce_subject=b"bill/1042"),  # the subject's entity is not the type's
        record(ce_time=b"2025-09-10T21:31:24+02:00"),
        record(ce_traceparent=b"not-a-traceparent"),
        record(ce_surprise=b"1"),  # a header the contract does not name
        record(value={**data, "entity": "bill"}),  # the invoice schema pins the entity
        record(key=b"other"),  # the key is the partition key
    ]
    for wrong in refused:
        with pytest.raises((AssertionError, ValidationError)):
            conforming_message("changes", wrong)
