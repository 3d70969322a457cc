"""The public event contract: docs/events.md and docs/schemas/ agree with the events the code builds.

Schemas are read from the repository and `$ref`s resolved through a local registry (no network).
"""

import functools
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings import kafka as core_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.v1 import kafka as v1_kafka
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012 as DRAFT_2020_12

from fanout import quarantine, raw, vocabulary
from fanout.account_events import HISTORY_GAP, HistoryGap
from fanout.account_events import history_gap_record as _gap_record
from fanout.change_events import (
    LEDGERHOOK_NAMESPACE,
    Recipient,
    body_digest,
    change_events,
    event_id,
)
from fanout.changes import CONNECTION_ACCOUNT, NormalizedChange, ProviderChange
from fanout.cloudevents import EventRecord
from fanout.parsers import PARSERS
from fanout.timestamps import format_timestamp, parse_timestamp
from fanout.vocabulary import entity_name, normalize
from gateway.ingress import delivery
from provider_auth.ids import uuid7
from provider_auth.providers import Provider
from tests.paths import REPO_ROOT


def change_event(recipient: Recipient, change: NormalizedChange, **options: Any) -> EventRecord:
    """The CloudEvent record of `change` for one connection."""
    return change_events((recipient,), change, **options)[0][1]


ROOT = REPO_ROOT
DOCS = ROOT / "docs"
SCHEMA_DIR = DOCS / "schemas"
EVENTS_MD = (DOCS / "events.md").read_text(encoding="utf-8")
COMMON = "accounting.change.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_schemas", DOCS / "generate_schemas.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _generator()
UNIFIED: tuple[str, ...] = gen.UNIFIED_ENTITIES
STANDARD: tuple[str, ...] = gen.STANDARD_OPERATIONS

SCHEMAS: dict[str, dict[str, Any]] = {
    path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(SCHEMA_DIR.glob("*.json"))
}
REGISTRY: Registry = Registry().with_resources(
    # A broken file is reported by the tests below rather than failing the collection.
    (schema.get("$id", name), Resource.from_contents(schema, default_specification=DRAFT_2020_12))
    for name, schema in SCHEMAS.items()
)


def schema_file(ce_type: str) -> str:
    """The schema file of an event type: its own, else the common one for change events."""
    own = ce_type.replace(":", ".") + ".json"
    if own in SCHEMAS:
        return own
    assert ce_type.startswith("accounting."), ce_type
    return COMMON


@functools.cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(
        SCHEMAS[name], registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def validate(ce_type: str, data: dict[str, Any]) -> None:
    validator(schema_file(ce_type)).validate(data)


def is_valid(name: str, data: dict[str, Any]) -> bool:
    return validator(name).is_valid(data)


def read(record: EventRecord) -> dict[str, Any]:
    data = orjson.loads(record.value)
    assert isinstance(data, dict)
    return data


RECEIVED = datetime(2025, 9, 10, 21, 45, tzinfo=UTC)
QBO = Recipient("0197a3c2-5b7e-7c1d-9f00-3e8a1b2c4d5e", "tenant-acme", "quickbooks", "9341453050339321")


# --- the generated files ---------------------------------------------------------------------------


def test_generated_schemas_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(DOCS / "generate_schemas.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_check_finds_stale_files_and_regenerating_is_idempotent(tmp_path: Path) -> None:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, target)
    assert gen.main(["--check", "--dir", str(target)]) == 0
    (target / "accounting.invoice.created.json").write_text("{}\n", encoding="utf-8")
    (target / "accounting.bill.voided.json").unlink()
    (target / "accounting.retired.created.json").write_text("{}\n", encoding="utf-8")
    assert gen.stale_files(target) == [
        "accounting.bill.voided.json",
        "accounting.invoice.created.json",
        "accounting.retired.created.json",
    ]
    assert gen.main(["--check", "--dir", str(target)]) == 1
    assert gen.main(["--dir", str(target)]) == 0
    assert gen.main(["--check", "--dir", str(target)]) == 0
    assert gen.write(target) == []  # a second run changes nothing
    assert sorted(p.name for p in target.iterdir()) == sorted(SCHEMAS)
    for name in SCHEMAS:
        assert (target / name).read_bytes() == (SCHEMA_DIR / name).read_bytes()


def test_generator_reads_the_vocabulary() -> None:
    # The unified names events.md documents (its vocabulary table), and every one understood as itself.
    table = EVENTS_MD.split("### The unified vocabulary", 1)[1].split("\n#", 1)[0]
    listed = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)
    assert tuple(dict.fromkeys(listed)) == UNIFIED
    for entity in UNIFIED:
        assert entity_name(Provider.CUSTOM, entity) == (entity, None)
    assert STANDARD == ("created", "updated", "deleted", "merged", "voided", "emailed")
    assert tuple(p.value for p in Provider) == gen.PROVIDERS


def test_one_file_per_unified_entity_and_standard_operation() -> None:
    expected = {f"accounting.{e}.{o}.json" for e in UNIFIED for o in STANDARD}
    expected |= {
        COMMON,
        "integrated_account.authentication_error.json",
        "integrated_account.reactivated.json",
        "integrated_account.history_gap.json",
    }
    assert set(SCHEMAS) == expected
    assert len(SCHEMAS) == len(UNIFIED) * len(STANDARD) + 4


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_schema_is_a_valid_2020_12_schema(name: str) -> None:
    schema = SCHEMAS[name]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == DRAFT
    assert schema["$id"] == gen.BASE_URI + name
    if name != COMMON:
        assert schema["title"].replace(":", ".") + ".json" == name


@pytest.mark.parametrize("name", sorted(n for n in SCHEMAS if n.startswith("accounting.") and n != COMMON))
def test_per_type_schemas_pin_entity_and_operation(name: str) -> None:
    _, entity, operation, _ = name.split(".")
    schema = SCHEMAS[name]
    assert schema["allOf"] == [{"$ref": COMMON}]
    assert schema["properties"]["entity"] == {"const": entity}
    assert schema["properties"]["operation"] == {"const": operation}
    data = _data(entity=entity, operation=operation)
    assert is_valid(name, data)
    other_entity = "invoice" if entity != "invoice" else "bill"
    assert not is_valid(name, {**data, "entity": other_entity})
    other_operation = "updated" if operation != "updated" else "created"
    assert not is_valid(name, {**data, "operation": other_operation})
    # contact_type: contacts only; merged_into: merges only.
    assert is_valid(name, {**data, "contact_type": "vendor"}) == (entity == "contact")
    assert is_valid(name, {**data, "merged_into": "977"}) == (operation == "merged")
    assert not is_valid(name, {**data, "unexpected": 1})  # the common schema still applies


def _data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "tenant_id": "t",
        "connection_id": "c",
        "provider": "quickbooks",
        "provider_account_id": "1",
        "entity": "invoice",
        "provider_entity": "Invoice",
        "entity_id": "1042",
        "operation": "updated",
        "occurred_at": "2025-09-10T21:31:24.500Z",
        "origin": "webhook",
        "delivery_id": "0199351c-6a3e-7b2f-8c4d-5e6f7a8b9c0d",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ({}, True),
        ({"entity": "time_activity", "provider_entity": "TimeActivity"}, True),
        ({"operation": "status_changed"}, True),
        ({"occurred_at": None}, True),
        ({"occurred_at": "2025-09-10T21:31:24.500123Z"}, True),
        ({"origin": "poll", "delivery_id": None, "record": {"Id": "1", "Line": [{"Amount": 1.5}]}}, True),
        ({"attributes": {"type": "ACCRECCREDIT", "status": "AUTHORISED"}}, True),
        ({"entity": "contact", "contact_type": "customer"}, True),
        ({"operation": "merged", "merged_into": "977"}, True),
        ({"extra": "field"}, False),
        ({"origin": "poll"}, False),  # cdc has no delivery
        ({"delivery_id": None}, False),  # a webhook has one
        ({"origin": "email"}, False),
        ({"provider": "sage"}, False),
        ({"entity": "Invoice"}, False),
        ({"entity": "credit note"}, False),
        ({"operation": "Update"}, False),
        ({"entity_id": ""}, False),
        ({"entity_id": 1042}, False),
        ({"occurred_at": "2025-09-10T14:31:24-07:00"}, False),  # always UTC with Z
        ({"occurred_at": "yesterday"}, False),
        ({"contact_type": "customer"}, False),  # only for contacts
        ({"entity": "contact", "contact_type": "employee"}, False),
        ({"merged_into": "977"}, False),  # only for merges
        ({"attributes": {"count": 3}}, False),
        ({"record": [1, 2]}, False),
    ],
)
def test_common_schema(change: dict[str, Any], valid: bool) -> None:
    assert is_valid(COMMON, _data(**change)) is valid


@pytest.mark.parametrize(
    "field", ["tenant_id", "entity", "operation", "occurred_at", "origin", "delivery_id"]
)
def test_common_schema_requires(field: str) -> None:
    data = _data()
    del data[field]
    assert not is_valid(COMMON, data)


# --- events built from every provider's payloads ----------------------------------------------------

SAMPLES: dict[Provider, list[bytes]] = {
    Provider.QUICKBOOKS: [
        orjson.dumps(
            {
                "eventNotifications": [
                    {
                        "realmId": "9341453050339321",
                        "dataChangeEvent": {
                            "entities": [
                                {
                                    "name": n,
                                    "id": i,
                                    "operation": o,
                                    "lastUpdated": "2015-10-05T14:42:19-0700",
                                }
                                for n, i, o in [
                                    ("Customer", "1", "Create"),
                                    ("Invoice", "1042", "Update"),
                                    ("Payment", "55", "Void"),
                                    ("Invoice", "1042", "Emailed"),
                                    ("Attachable", "8", "Delete"),
                                    ("Purchase", "9", "Create"),
                                    ("Class", "10", "Update"),
                                    ("Account", "11", "Create"),
                                    ("TimeActivity", "12", "Update"),
                                ]
                            ]
                            + [
                                {
                                    "name": "Customer",
                                    "id": "977",
                                    "operation": "Merge",
                                    "deletedId": "1001",
                                    "lastUpdated": "2025-09-10T21:40:00.000Z",
                                }
                            ]
                        },
                    }
                ]
            }
        ),
        orjson.dumps(
            [
                {
                    "specversion": "1.0",
                    "id": f"qbo-{i}",
                    "source": "intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58gtT3QKRxeH3d7W8/9341453050339321",
                    "type": event_type,
                    "time": "2025-09-10T21:31:25.179851517Z",
                    "intuitentityid": str(100 + i),
                    "intuitaccountid": "9341453050339321",
                    "data": data,
                }
                for i, (event_type, data) in enumerate(
                    [
                        ("qbo.creditmemo.created.v1", {}),
                        ("qbo.vendor.merged.v1", {"deletedid": "41"}),
                        ("qbo.billpayment.deleted.v1", {}),
                        ("qbo.estimate.updated.v1", {}),
                    ]
                )
            ]
        ),
    ],
    Provider.XERO: [
        orjson.dumps(
            {
                "events": [
                    {
                        "resourceUrl": f"https://api.xero.com/api.xro/2.0/x/{i}",
                        "resourceId": f"5f0e2c1a-7b8d-4e9f-a0b1-c2d3e4f5a6b{i}",
                        "eventDateUtc": "2024-06-21T01:15:39.902",
                        "eventType": event_type,
                        "eventCategory": category,
                        "tenantId": "a3e1f6b2-4c5d-4e7f-8a9b-0c1d2e3f4a5b",
                        "tenantType": "ORGANISATION",
                        "data": data,
                    }
                    for i, (category, event_type, data) in enumerate(
                        [
                            ("CONTACT", "CREATE", {}),
                            ("INVOICE", "UPDATE", {"Type": "ACCREC", "Status": "AUTHORISED"}),
                            ("CREDITNOTE", "UPDATE", {"Type": "ACCRECCREDIT"}),
                            ("SUBSCRIPTION", "UPDATE", {}),
                        ]
                    )
                ],
                "firstEventSequence": 1,
                "lastEventSequence": 4,
                "entropy": "S0MEENTR0PY",
            }
        )
    ],
    Provider.ZOHO_BOOKS: [
        orjson.dumps(body)
        for body in [
            {
                "invoice": {
                    "invoice_id": "982000000567114",
                    "last_modified_time": "2013-11-18T02:17:40-0800",
                    "status": "sent",
                },
                "organization_id": "10234695",
                "event_type": "invoice_created",
            },
            {"contact": {"contact_id": "7", "contact_type": "vendor"}, "organization_id": "10234695"},
            {"vendorpayment": {"payment_id": "9", "action": "deleted"}},
            {"purchaseorder": {"purchaseorder_id": "3", "event_type": "purchaseorder_created"}},
            {"journal": {"journal_id": "4", "updated_time": "2024-01-02T03:04:05+0530"}},
            {"salesorder": {"salesorder_id": "5", "event_type": "salesorder_confirmed"}},
        ]
    ],
    Provider.FRESHBOOKS: [
        b"name=client.create&object_id=1&account_id=6BApk&business_id=6543&identity_id=1234&user_id=1",
        b"name=invoice.sendByEmail&object_id=2&account_id=6BApk",
        b"name=bill_vendor.update&object_id=3&account_id=6BApk",
        b"name=tax.delete&object_id=4&account_id=6BApk",
        b"name=item.create&object_id=5",
        b"name=expense.update&object_id=6&account_id=6BApk",
    ],
    Provider.SAGE_INTACCT: [
        orjson.dumps(
            {
                "object": "ARINVOICE",
                "key": "101",
                "action": "set",
                "companyId": "acme-corp",
                "whenModified": "2025-09-10T21:31:24Z",
            }
        ),
        orjson.dumps(
            [
                {"object": "APBILL", "key": "7", "action": "add", "companyId": "acme-corp"},
                {
                    "objectName": "accounts-payable/vendor",
                    "data": {"key": "8", "id": "V-100"},
                    "eventType": "delete",
                    "companyId": "acme-corp",
                },
            ]
        ),
        orjson.dumps(
            {
                "events": [
                    {"object": "GLBATCH", "RECORDNO": "9", "action": "delete", "idempotencyKey": "k-9"},
                    {"object": "DEPARTMENT", "key": "D1", "action": "set"},
                    {"object": "TAXDETAIL", "key": "T1"},
                    {"object": "APADJUSTMENT", "key": "A1", "action": "add"},
                    {"object": "SODOCUMENT", "key": "S1", "action": "add"},
                ]
            }
        ),
    ],
    Provider.NETSUITE: [
        orjson.dumps(
            {
                "account_id": "TSTDRV1234567",
                "events": [
                    {
                        "type": "vendorbill.created",
                        "data": {"id": 7, "updated_at": "2025-09-10T21:31:24.5-07:00"},
                    },
                    {"type": "customer.merged", "data": {"id": "5", "merged_into": "3"}},
                    {"type": "contact.updated", "data": {"id": "9", "contact_type": "vendor"}},
                    {"type": "creditmemo.voided", "id": "evt_11", "data": {"id": "11"}},
                    {"type": "salestaxitem.updated", "data": {"id": "12"}},
                    {"type": "vendorcredit.created", "data": {"id": "13"}},
                    {"type": "itemreceipt.created", "data": {"id": "14"}},
                ],
            }
        )
    ],
    Provider.CUSTOM: [
        b'{"type": "accounting.payment.voided", "timestamp": "2025-09-10T21:31:25Z", "data": {"id": "p1"}}',
        b'{"type": "project.archived", "id": "evt_1", "data": {"id": "pr1"}}',
        b'{"type": "purchase_order.emailed", "data": {"id": "po1"}}',
    ],
}


def _sample_events(provider: Provider) -> list[tuple[NormalizedChange, EventRecord]]:
    events = []
    for body in SAMPLES[provider]:
        changes = PARSERS[provider](body)
        assert changes, body
        for change in changes:
            normalized = normalize(provider, change)
            account = change.provider_account_id
            recipient = Recipient(
                connection_id=f"conn-{provider.value}",
                tenant_id="tenant-acme",
                provider=provider.value,
                # A change that does not name its account is the connection's own.
                provider_account_id="acct-of-connection" if account == CONNECTION_ACCOUNT else account,
            )
            record = change_event(
                recipient,
                normalized,
                origin="webhook",
                delivery_id=uuid7(),
                received_at=RECEIVED,
                body_digest=body_digest(body),
            )
            events.append((normalized, record))
    return events


def test_every_provider_parser_has_samples() -> None:
    assert set(SAMPLES) == set(PARSERS)


@pytest.mark.parametrize("provider", list(SAMPLES))
def test_events_from_provider_payloads_validate(provider: Provider) -> None:
    for normalized, record in _sample_events(provider):
        ce_type = record.header("ce_type")
        assert ce_type == f"accounting.{normalized.entity}.{normalized.operation}"
        data = read(record)
        validate(ce_type, data)
        has_own = normalized.entity in UNIFIED and normalized.operation in STANDARD
        assert (schema_file(ce_type) != COMMON) is has_own
        assert data["provider"] == provider.value


def test_provider_samples_cover_the_whole_vocabulary() -> None:
    seen = [normalized for provider in SAMPLES for normalized, _ in _sample_events(provider)]
    assert {n.entity for n in seen} >= set(UNIFIED)
    assert {n.operation for n in seen} >= set(STANDARD)
    assert {n.contact_type for n in seen} >= {"customer", "vendor", None}
    assert any(n.merged_into for n in seen)
    assert any(n.entity not in UNIFIED for n in seen)  # kept under its own name
    assert any(n.operation not in STANDARD for n in seen)


def test_merge_names_the_record_merged_away() -> None:
    events = dict((n.entity_id, r) for n, r in _sample_events(Provider.QUICKBOOKS) if n.operation == "merged")
    data = read(events["1001"])
    assert (data["entity_id"], data["merged_into"], data["contact_type"]) == ("1001", "977", "customer")
    assert events["1001"].header("ce_subject") == "contact/1001"
    validate("accounting.contact.merged", data)
    assert not is_valid("accounting.contact.deleted.json", data)


# --- any normalized change --------------------------------------------------------------------------

_NAME = st.from_regex(r"[a-z][a-z0-9]{0,7}(_[a-z0-9]{1,6}){0,2}", fullmatch=True)
_TEXT = st.text(min_size=1, max_size=24)
_ZONES = st.sampled_from([UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))])
_MOMENTS = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9998, 12, 31), timezones=_ZONES)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what orjson writes
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _normalized_changes(draw: st.DrawFn) -> NormalizedChange:
    entity = draw(st.sampled_from(UNIFIED) | _NAME)
    operation = draw(st.sampled_from(STANDARD) | _NAME)
    return NormalizedChange(
        provider_account_id=draw(_TEXT),
        entity=entity,
        provider_entity=draw(_TEXT),
        entity_id=draw(_TEXT),
        operation=operation,
        occurred_at=draw(st.none() | _MOMENTS),
        event_id=draw(st.none() | _TEXT),
        merged_into=draw(st.none() | _TEXT) if operation == "merged" else None,
        contact_type=draw(st.sampled_from([None, "customer", "vendor"])) if entity == "contact" else None,
        attributes=draw(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3)),
    )


_RECIPIENTS = st.builds(
    Recipient,
    connection_id=st.uuids().map(str),
    tenant_id=_TEXT,
    provider=st.sampled_from([p.value for p in Provider]),
    provider_account_id=_TEXT,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    recipient=_RECIPIENTS,
    change=_normalized_changes(),
    cdc=st.booleans(),
    record=st.none() | st.dictionaries(st.text(max_size=8), _JSON, max_size=4),
    received=_MOMENTS,
)
def test_any_normalized_change_gives_valid_data(
    recipient: Recipient,
    change: NormalizedChange,
    cdc: bool,
    record: dict[str, Any] | None,
    received: datetime,
) -> None:
    event = change_event(
        recipient,
        change,
        origin="poll" if cdc else "webhook",
        delivery_id=None if cdc else uuid7(),
        received_at=received,
        record=record,
    )
    ce_type = event.header("ce_type")
    assert ce_type is not None
    data = read(event)
    validate(ce_type, data)
    name = schema_file(ce_type)
    assert (name != COMMON) is (change.entity in UNIFIED and change.operation in STANDARD)
    assert is_valid(COMMON, data)


_PROVIDER_ENTITIES = sorted(
    {"Customer", "Vendor", "CONTACT", "client", "bill_vendor", "vendorbill", "GLBATCH"}
)


@settings(deadline=None)
@given(
    provider=st.sampled_from(list(Provider)),
    entity=st.sampled_from([*_PROVIDER_ENTITIES, *UNIFIED]) | st.text(max_size=20),
    operation=st.sampled_from(["Create", "UPDATE", "sendByEmail", "set", "Merge", "Void"])
    | st.text(max_size=20),
    entity_id=_TEXT,
    merged_away=st.none() | _TEXT,
    contact_type=st.none() | st.sampled_from(["customer", "Vendor", "employee", ""]),
    occurred=st.none() | _MOMENTS,
)
def test_whatever_a_parser_reports_normalizes_to_valid_data(
    provider: Provider,
    entity: str,
    operation: str,
    entity_id: str,
    merged_away: str | None,
    contact_type: str | None,
    occurred: datetime | None,
) -> None:
    # Where contact_type and merged_into may appear is decided by `normalize`: the schema's rules hold.
    change = ProviderChange(
        provider_account_id="acct",
        entity=entity or "x",
        entity_id=entity_id,
        operation=operation or "x",
        occurred_at=occurred,
        merged_away_id=merged_away,
        attributes={"contact_type": contact_type} if contact_type is not None else {},
    )
    recipient = Recipient("conn", "tenant", provider.value, "acct")
    event = change_event(
        recipient, normalize(provider, change), origin="webhook", delivery_id="d", received_at=RECEIVED
    )
    validate(event.header("ce_type") or "", read(event))


# --- the envelope, read with the official CloudEvents SDK --------------------------------------------


def _invoice_update() -> tuple[NormalizedChange, EventRecord]:
    change = NormalizedChange(
        provider_account_id=QBO.provider_account_id,
        entity="invoice",
        provider_entity="Invoice",
        entity_id="1042",
        operation="updated",
        occurred_at=datetime(2025, 9, 10, 21, 31, 24, 500000, tzinfo=UTC),
    )
    record = change_event(QBO, change, origin="webhook", delivery_id="d-1", received_at=RECEIVED)
    return change, record


def test_headers_are_unique_and_documented() -> None:
    _, record = _invoice_update()
    names = [name for name, _ in record.headers]
    assert len(names) == len(set(names))
    assert set(names) == {
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
    }
    for name in names:
        assert f"| header `{name}` |" in EVENTS_MD


def test_cloudevents_sdk_reads_a_change_event() -> None:
    change, record = _invoice_update()
    message = v1_kafka.KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
    event = v1_kafka.from_binary(message)
    assert event["specversion"] == "1.0"
    assert event["id"] == event_id(QBO, change) == str(uuid.UUID(event["id"]))
    assert event["source"] == "/ledgerhook/quickbooks/9341453050339321"
    assert event["type"] == "accounting.invoice.updated"
    assert event["subject"] == "invoice/1042"
    assert event["time"] == "2025-09-10T21:31:24.500Z"
    assert event["datacontenttype"] == "application/json"
    assert event["tenantid"] == "tenant-acme"
    assert event["connectionid"] == QBO.connection_id
    assert event["provider"] == "quickbooks"
    assert event["partitionkey"] == QBO.connection_id.encode()  # the SDK takes it from the record key
    assert event.data == orjson.loads(record.value)
    validate(event["type"], event.data)


def test_cloudevents_core_binding_reads_a_change_event() -> None:
    change, record = _invoice_update()
    message = core_kafka.KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
    event = core_kafka.from_binary(message, JSONFormat())
    assert event.get_specversion() == "1.0"
    assert event.get_type() == "accounting.invoice.updated"
    assert event.get_id() == event_id(QBO, change)
    assert event.get_time() == change.occurred_at
    assert event.get_subject() == "invoice/1042"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_extension("tenantid") == "tenant-acme"
    assert event.get_extension("connectionid") == QBO.connection_id
    assert event.get_extension("provider") == "quickbooks"
    assert event.get_extension("partitionkey") == QBO.connection_id
    data = event.get_data()
    assert isinstance(data, dict)
    assert data["entity_id"] == "1042" and data["delivery_id"] == "d-1"
    validate(event.get_type(), data)


def test_cloudevents_time_falls_back_to_reception_without_a_change_time() -> None:
    change = NormalizedChange("6BApk", "invoice", "invoice", "2", "emailed", occurred_at=None)
    record = change_event(QBO, change, origin="webhook", delivery_id="d", received_at=RECEIVED)
    event = core_kafka.from_binary_event(
        core_kafka.KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
    )
    assert event.get_time() == RECEIVED
    data = event.get_data()
    assert isinstance(data, dict) and data["occurred_at"] is None
    validate(event.get_type(), data)


# --- docs/events.md ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n in SCHEMAS if n != COMMON))
def test_docs_name_every_event_type_with_a_schema(name: str) -> None:
    assert f"`{SCHEMAS[name]['title']}`" in EVENTS_MD


def test_docs_name_every_topic_reason_and_header() -> None:
    for topic in ("ledgerhook.changes", "ledgerhook.account-events", "ledgerhook.quarantine"):
        assert f"`{topic}`" in EVENTS_MD
    assert "`ledgerhook.webhooks.raw` (internal)" in EVENTS_MD
    assert [reason.value for reason in quarantine.Reason] == [
        "unparseable",
        "unknown_account",
        "disconnected",
        "unknown_connection",
        "unknown_provider",
        "paused",
    ]
    for reason in quarantine.Reason:
        assert f"| `{reason.value}` |" in EVENTS_MD
    headers = {
        value for module in (delivery, raw) for name, value in vars(module).items() if name.startswith("H_")
    }
    headers |= quarantine.QUARANTINE_HEADERS
    assert len(headers) >= 13
    for header in headers:
        assert f"| `{header}` |" in EVENTS_MD
    for field in gen.change_schema()["properties"]:
        assert f"| `{field}` |" in EVENTS_MD
    for reason in (*gen.AUTHENTICATION_ERROR_REASONS, *gen.REACTIVATED_REASONS):
        assert f"| `{reason}` |" in EVENTS_MD


def test_documented_event_id_formula_is_the_code() -> None:
    namespace = re.search(r"uuid5\(([0-9a-f-]{36}),", EVENTS_MD)
    template = re.search(r'"(<connection_id>\|[^"]+)"', EVENTS_MD)
    assert namespace and template
    assert uuid.UUID(namespace.group(1)) == LEDGERHOOK_NAMESPACE

    def documented(change: NormalizedChange, version: str) -> str:
        fields = {
            "connection_id": QBO.connection_id,
            "provider": QBO.provider,
            "provider_account_id": QBO.provider_account_id,
            "entity": change.entity,
            "entity_id": change.entity_id,
            "operation": change.operation,
            "version": version,
        }
        name = re.sub(r"<(\w+)>", lambda m: fields[m.group(1)], template.group(1))
        return str(uuid.uuid5(uuid.UUID(namespace.group(1)), name))

    timed, _ = _invoice_update()
    assert "`2025-09-10T21:31:24.500000+00:00`" in EVENTS_MD
    assert event_id(QBO, timed) == documented(timed, "2025-09-10T21:31:24.500000+00:00")
    # Without a change time: the provider's event id, else the body hash, else nothing.
    untimed = NormalizedChange("1", "invoice", "Invoice", "7", "emailed", None, event_id="evt-9")
    assert event_id(QBO, untimed, "abc") == documented(untimed, "evt-9")
    anonymous = NormalizedChange("1", "invoice", "Invoice", "7", "emailed", None)
    digest = body_digest(b"name=invoice.sendByEmail")
    assert event_id(QBO, anonymous, digest) == documented(anonymous, digest)
    assert event_id(QBO, anonymous) == documented(anonymous, "")


_EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\n((?:```\w+\n.*?\n```\n?)+)", re.DOTALL)
_BLOCK = re.compile(r"```(\w+)\n(.*?)\n```", re.DOTALL)


def _examples(kind: str) -> list[list[str]]:
    return [
        [text for _, text in _BLOCK.findall(blocks)]
        for found, blocks in _EXAMPLE.findall(EVENTS_MD)
        if found == kind
    ]


def _headers(text: str) -> tuple[str, dict[str, str]]:
    lines = [line.split(": ", 1) for line in text.splitlines()]
    assert lines[0][0] == "record key"
    return lines[0][1], dict((name, value) for name, value in lines[1:])


def test_docs_event_examples_are_valid_and_consistent() -> None:
    examples = _examples("event")
    types = set()
    for headers_text, data_text in examples:
        key, headers = _headers(headers_text)
        data = json.loads(data_text)
        validate(headers["ce_type"], data)
        types.add(headers["ce_type"].split(":")[0].split(".")[0])
        assert key == headers["ce_connectionid"] == headers["ce_partitionkey"] == data["connection_id"]
        assert headers["ce_tenantid"] == data["tenant_id"]
        assert headers["ce_provider"] == data["provider"]
        assert headers["ce_source"] == f"/ledgerhook/{data['provider']}/{data['provider_account_id']}"
        assert headers["content-type"] == "application/json"
        assert headers["ce_specversion"] == "1.0"
        assert uuid.UUID(headers["ce_id"])
        if headers["ce_type"].startswith("integrated_account:"):
            assert headers["ce_subject"] == f"connection/{data['connection_id']}"
            assert headers["ce_time"] == data["occurred_at"]
    assert types == {"accounting", "integrated_account"}
    assert len(examples) >= 6


def test_docs_change_event_examples_are_what_the_code_builds() -> None:
    checked = 0
    for headers_text, data_text in _examples("event"):
        key, headers = _headers(headers_text)
        data = json.loads(data_text)
        if not headers["ce_type"].startswith("accounting."):
            continue
        recipient = Recipient(
            data["connection_id"], data["tenant_id"], data["provider"], data["provider_account_id"]
        )
        change = NormalizedChange(
            provider_account_id=data["provider_account_id"],
            entity=data["entity"],
            provider_entity=data["provider_entity"],
            entity_id=data["entity_id"],
            operation=data["operation"],
            occurred_at=parse_timestamp(data["occurred_at"]) if data["occurred_at"] else None,
            merged_into=data.get("merged_into"),
            contact_type=data.get("contact_type"),
            attributes=data.get("attributes", {}),
        )
        record = change_event(
            recipient,
            change,
            origin=data["origin"],
            delivery_id=data["delivery_id"],
            received_at=RECEIVED,
            record=data.get("record"),
        )
        assert record.key.decode() == key
        assert [(name, value.decode()) for name, value in record.headers] == list(headers.items())
        assert read(record) == data
        assert json.dumps(data, indent=2) == data_text  # shown in the order and form the code writes
        checked += 1
    assert checked >= 4


def test_docs_merge_example_follows_the_merge_rule() -> None:
    merged = [json.loads(data) for _, data in _examples("event") if '"operation": "merged"' in data]
    assert merged
    for data in merged:
        assert data["entity_id"] != data["merged_into"]
    body = orjson.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": merged[0]["provider_account_id"],
                    "dataChangeEvent": {
                        "entities": [
                            {
                                "name": "Customer",
                                "id": merged[0]["merged_into"],
                                "operation": "Merge",
                                "deletedId": merged[0]["entity_id"],
                                "lastUpdated": merged[0]["occurred_at"],
                            }
                        ]
                    },
                }
            ]
        }
    )
    normalized = normalize(Provider.QUICKBOOKS, PARSERS[Provider.QUICKBOOKS](body)[0])
    assert (normalized.entity_id, normalized.merged_into) == (
        merged[0]["entity_id"],
        merged[0]["merged_into"],
    )
    assert format_timestamp(normalized.occurred_at or RECEIVED) == merged[0]["occurred_at"]


def test_docs_python_validation_snippet_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    snippet = EVENTS_MD.split("resolves them from the directory without a network. In Python:", 1)[1]
    code = _BLOCK.search(snippet)
    assert code and code.group(1) == "python"
    monkeypatch.chdir(ROOT)
    _, record = _invoice_update()
    exec(code.group(2), {"event_data": read(record)})  # noqa: S102 - our own documentation
    with pytest.raises(ValidationError):
        exec(code.group(2), {"event_data": {**read(record), "operation": "created"}})  # noqa: S102


def test_docs_standard_event_examples_parse() -> None:
    examples = _examples("standard-event")
    assert len(examples) == 2
    single = PARSERS[Provider.NETSUITE](examples[0][0].encode())
    assert [(c.provider_account_id, c.entity, c.entity_id, c.operation, c.event_id) for c in single] == [
        ("TSTDRV1234567", "invoice", "1042", "updated", "evt_01J9Z6Q8K3M4N5P6R7S8T9V0W1")
    ]
    assert single[0].occurred_at == datetime(2025, 9, 11, 4, 31, 24, 500000, tzinfo=UTC)
    batch = [normalize(Provider.NETSUITE, c) for c in PARSERS[Provider.NETSUITE](examples[1][0].encode())]
    assert [(n.entity, n.operation, n.entity_id, n.merged_into, n.contact_type) for n in batch] == [
        ("bill", "created", "7", None, None),
        ("contact", "merged", "5", "3", "vendor"),
        ("journal_entry", "deleted", "j1", None, None),
    ]


# The vocabulary table: "| `entity` | contact_type | any provider | QuickBooks | ... |".
_COLUMNS = {
    "QuickBooks": [Provider.QUICKBOOKS],
    "Xero": [Provider.XERO],
    "FreshBooks": [Provider.FRESHBOOKS],
    "Zoho Books": [Provider.ZOHO_BOOKS],
    "Sage Intacct": [Provider.SAGE_INTACCT],
    "NetSuite": [Provider.NETSUITE],
    "any provider": list(Provider),
}


def _vocabulary_table() -> list[dict[str, Any]]:
    lines = EVENTS_MD.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.startswith("| entity | contact_type | any provider |")
    )
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        rows.append(cells)
    return rows


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_docs_vocabulary_table_is_the_code() -> None:
    rows = _vocabulary_table()
    listed: dict[Provider, set[str]] = {p: set() for p in Provider}
    for row in rows:
        (entity,) = _names(row["entity"])
        contact_type = (_names(row["contact_type"]) or [None])[0]
        for column, providers in _COLUMNS.items():
            for name in _names(row[column]):
                for provider in providers:
                    assert entity_name(provider, name) == (entity, contact_type), (provider, name)
                    listed[provider].add(vocabulary._key(name))
    assert {_names(row["entity"])[0] for row in rows} == set(UNIFIED)
    # Every provider name the vocabulary maps to a unified entity is in the table.
    for provider, table in vocabulary._ENTITIES.items():
        for key, (entity, _) in table.items():
            if entity in UNIFIED:
                assert key in listed[provider], (provider, key)
    for key in vocabulary._COMMON:
        assert all(key in listed[provider] for provider in Provider), key


_OWN_NAME_LISTS = {
    "QuickBooks": Provider.QUICKBOOKS,
    "Xero": Provider.XERO,
    "Zoho Books": Provider.ZOHO_BOOKS,
    "Sage Intacct": Provider.SAGE_INTACCT,
    "NetSuite and custom sources": Provider.NETSUITE,
}


def test_docs_own_name_entities_are_the_code() -> None:
    section = EVENTS_MD.split("Entities kept under their own snake_case name", 1)[1].split("### ", 1)[0]
    documented: dict[Provider, set[str]] = {}
    for line in section.split("\n- ")[1:]:
        label, _, rest = line.partition(":")
        for name, entity in re.findall(r"`([^`]+)`\s*→\s*`([^`]+)`", rest):
            provider = _OWN_NAME_LISTS[label.strip()]
            assert entity_name(provider, name) == (entity, None), (provider, name)
            assert entity not in UNIFIED
            documented.setdefault(provider, set()).add(vocabulary._key(name))
    assert set(vocabulary._QUICKBOOKS_OWN_KEYS) <= documented[Provider.QUICKBOOKS]
    for provider, table in vocabulary._ENTITIES.items():
        for key, (entity, _) in table.items():
            if entity not in UNIFIED:
                assert key in documented[provider], (provider, key)


# --- history gaps -----------------------------------------------------------------------------------


def _gap(**overrides: Any) -> HistoryGap:
    fields: dict[str, Any] = {
        "tenant_id": "tenant-acme",
        "connection_id": QBO.connection_id,
        "provider": Provider.QUICKBOOKS,
        "provider_account_id": QBO.provider_account_id,
        "entities": ("Invoice", "Customer", "Vendor", "Invoice"),
        "lost_from": RECEIVED - timedelta(days=40),
        "lost_until": RECEIVED - timedelta(days=30),
        "origin": "poll",
        "occurred_at": RECEIVED,
    }
    return HistoryGap(**(fields | overrides))


def test_a_history_gap_event_is_valid_and_names_unified_entities() -> None:
    ident, record = _gap_record(_gap())
    data = read(record)
    validate(HISTORY_GAP, data)
    assert data["entities"] == ["contact", "invoice"]
    assert data["lost_from"] == "2025-08-01T21:45:00.000Z"
    assert data["lost_until"] == "2025-08-11T21:45:00.000Z"
    headers = dict(record.headers)
    assert headers["ce_type"] == HISTORY_GAP.encode()
    assert headers["ce_id"] == ident.encode()
    assert headers["ce_subject"] == f"connection/{QBO.connection_id}".encode()
    assert record.key == QBO.connection_id.encode()


def test_a_history_gap_id_is_stable_for_its_window_and_differs_for_another() -> None:
    first, _ = _gap_record(_gap())
    assert _gap_record(_gap(occurred_at=RECEIVED + timedelta(minutes=5)))[0] == first
    assert _gap_record(_gap(lost_from=RECEIVED - timedelta(days=41)))[0] != first
    assert _gap_record(_gap(origin="backfill", job_id="job-1"))[0] != first


@pytest.mark.parametrize(
    ("field", "value"),
    [("entities", []), ("origin", "webhook"), ("lost_until", "yesterday"), ("surprise", 1)],
)
def test_the_history_gap_schema_refuses(field: str, value: Any) -> None:
    data = read(_gap_record(_gap())[1]) | {field: value}
    assert not is_valid("integrated_account.history_gap.json", data)
