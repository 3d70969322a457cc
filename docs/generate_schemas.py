"""Generate the JSON Schemas (draft 2020-12) of every event Ledgerhook publishes, into docs/schemas/,
and the AsyncAPI 3.0 document of its topics, docs/asyncapi.yaml.

    python docs/generate_schemas.py           # write the files that changed, remove stale ones
    python docs/generate_schemas.py --check   # exit 1 (and name them) when files are missing or stale

The vocabulary comes from `fanout.vocabulary` (the unified entity names, the standard operations, the
contact types) and the provider slugs from `provider_auth.providers`, so a new entity, operation or
provider shows up here as a stale file (and a failing test) until the schemas are regenerated.
Output is deterministic: running the script twice changes nothing.

Files:
- `accounting.change.json`: the data of every change event, whatever its type (unknown provider
  entities and operations included);
- `accounting.<entity>.<operation>.json`: one per unified entity and standard operation; each
  `$ref`s the common schema and pins `entity` and `operation` (and what `contact_type` and
  `merged_into` may be);
- `integrated_account.authentication_error.json`, `integrated_account.reactivated.json`,
  `integrated_account.history_gap.json`: the data of the account events (their CloudEvents types are
  `integrated_account:<event>`).

Each schema's `title` is the CloudEvents `type` it describes (`accounting.change.json`: the pattern
`accounting.<entity>.<operation>`). See docs/events.md.

`asyncapi.yaml` describes `ledgerhook.changes`, `ledgerhook.account-events` and `ledgerhook.quarantine`:
one message per event type whose payload `$ref`s its schema file, the CloudEvents headers as read
from `fanout.cloudevents`, the quarantine headers from `fanout.quarantine`, `fanout.raw` and
`fanout.polling.publishing`, and topic names and defaults from `gateway.settings`. See docs/events.md,
"AsyncAPI".
"""

import argparse
import json
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from fanout import quarantine, raw, vocabulary  # noqa: E402
from fanout.cloudevents import CONTENT_TYPE, SPEC_VERSION, binary_record  # noqa: E402
from fanout.polling import publishing  # noqa: E402
from gateway.settings import ENV_PREFIX, KafkaSettings  # noqa: E402
from provider_auth.providers import Provider  # noqa: E402

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
ASYNCAPI_FILE = Path(__file__).resolve().parent / "asyncapi.yaml"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
# Identifiers, resolved relative to each other (`$ref: accounting.change.json`); they name where the
# files are published, and no validator needs to fetch them.
BASE_URI = "https://raw.githubusercontent.com/ledgerhook/ledgerhook/main/docs/schemas/"
COMMON = "accounting.change.json"

# The unified entities: the names every provider may use for themselves (vocabulary's common table).
UNIFIED_ENTITIES: tuple[str, ...] = vocabulary.UNIFIED_ENTITIES
# The standard operations, in the vocabulary's order (created, updated, deleted, merged, ...).
STANDARD_OPERATIONS: tuple[str, ...] = vocabulary.STANDARD_OPERATIONS
CONTACT_TYPES: tuple[str, ...] = (vocabulary.CUSTOMER, vocabulary.VENDOR)
PROVIDERS: tuple[str, ...] = tuple(provider.value for provider in Provider)

AUTHENTICATION_ERROR_REASONS = (
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "refresh_unavailable",
)
REACTIVATED_REASONS = ("reconnected", "recovered")

SNAKE_CASE = "^[a-z0-9]+(_[a-z0-9]+)*$"
# fanout.timestamps.format_timestamp: RFC 3339 in UTC, milliseconds or microseconds, `Z`.
TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}([0-9]{3})?Z$"


def _text(description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "description": description}


def _envelope_fields() -> dict[str, Any]:
    """The fields change events and account events share: who the event is for."""
    return {
        "tenant_id": _text("The tenant (the customer of the integrating product) owning the connection."),
        "connection_id": _text("The connection the event is for; also the Kafka record key."),
        "provider": {
            "enum": list(PROVIDERS),
            "description": "The provider slug.",
        },
        "provider_account_id": _text(
            "The connection's account at the provider (QuickBooks realm id, Xero tenant id, NetSuite "
            "account id, ...)."
        ),
    }


def change_schema() -> dict[str, Any]:
    """The data of every change event (`accounting.<entity>.<operation>`)."""
    properties: dict[str, Any] = {
        **_envelope_fields(),
        "entity": {
            "type": "string",
            "pattern": SNAKE_CASE,
            "description": (
                "The unified entity (" + ", ".join(UNIFIED_ENTITIES) + "); an entity outside the "
                "vocabulary keeps its own name in snake_case."
            ),
        },
        "provider_entity": _text("The entity name exactly as the provider sent it (Customer, CREDITNOTE)."),
        "entity_id": _text("The record's id at the provider; for `merged`, the record merged away."),
        "operation": {
            "type": "string",
            "pattern": SNAKE_CASE,
            "description": (
                "The unified operation (" + ", ".join(STANDARD_OPERATIONS) + "); any other provider "
                "operation in snake_case."
            ),
        },
        "occurred_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "pattern": TIMESTAMP,
            "description": "When the record changed, per the provider (RFC 3339, UTC); null when it does "
            "not say (FreshBooks).",
        },
        "origin": {
            "enum": ["webhook", "poll", "backfill"],
            "description": "How Ledgerhook learnt of the change: a provider webhook, its own polling of the "
            "provider's change API, or a backfill.",
        },
        "delivery_id": {
            "type": ["string", "null"],
            "minLength": 1,
            "description": "The webhook delivery the change came in (a UUIDv7); null for poll and backfill.",
        },
        "merged_into": _text("For `merged` only: the record kept (entity_id is the one that disappeared)."),
        "contact_type": {
            "enum": list(CONTACT_TYPES),
            "description": "For contacts, when the provider says which kind.",
        },
        "attributes": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Provider extras worth keeping (Xero credit note type and status, ...).",
        },
        "record": {
            "type": "object",
            "description": "The record as the provider returned it, when Ledgerhook has it.",
        },
    }
    return {
        "$schema": DRAFT,
        "$id": BASE_URI + COMMON,
        "title": "accounting.<entity>.<operation>",
        "description": "The data (Kafka record value) of every Ledgerhook change event.",
        "type": "object",
        "required": [
            "tenant_id",
            "connection_id",
            "provider",
            "provider_account_id",
            "entity",
            "provider_entity",
            "entity_id",
            "operation",
            "occurred_at",
            "origin",
            "delivery_id",
        ],
        "properties": properties,
        "additionalProperties": False,
        "allOf": [
            {
                "if": {"properties": {"origin": {"const": "webhook"}}},
                "then": {"properties": {"delivery_id": {"type": "string"}}},
            },
            {
                "if": {"properties": {"origin": {"enum": ["poll", "backfill"]}}},
                "then": {"properties": {"delivery_id": {"type": "null"}}},
            },
            {
                "if": {"required": ["merged_into"]},
                "then": {"properties": {"operation": {"const": vocabulary.MERGED}}},
            },
            {
                "if": {"required": ["contact_type"]},
                "then": {"properties": {"entity": {"const": "contact"}}},
            },
        ],
    }


def change_type_schema(entity: str, operation: str) -> dict[str, Any]:
    """The data of `accounting.<entity>.<operation>`: the common schema with the type pinned."""
    event_type = f"accounting.{entity}.{operation}"
    properties: dict[str, Any] = {"entity": {"const": entity}, "operation": {"const": operation}}
    properties["contact_type"] = {"enum": list(CONTACT_TYPES)} if entity == "contact" else False
    if operation != vocabulary.MERGED:
        properties["merged_into"] = False
    return {
        "$schema": DRAFT,
        "$id": f"{BASE_URI}{event_type}.json",
        "title": event_type,
        "description": f"The data of the `{event_type}` change event.",
        "allOf": [{"$ref": COMMON}],  # allOf: draft-07 tools ignore keywords beside a $ref
        "properties": properties,
    }


def account_event_schema(event: str, reasons: tuple[str, ...], description: str) -> dict[str, Any]:
    """The data of `integrated_account:<event>`."""
    return {
        "$schema": DRAFT,
        "$id": f"{BASE_URI}integrated_account.{event}.json",
        "title": f"integrated_account:{event}",
        "description": description,
        "type": "object",
        "required": [
            "tenant_id",
            "connection_id",
            "provider",
            "provider_account_id",
            "reason",
            "provider_error",
            "occurred_at",
        ],
        "properties": {
            **_envelope_fields(),
            "reason": {"enum": list(reasons), "description": "Why the event was published."},
            "provider_error": {
                "type": ["string", "null"],
                "description": "The provider's own error code or message, when it gave one.",
            },
            "occurred_at": {
                "type": "string",
                "format": "date-time",
                "pattern": TIMESTAMP,
                "description": "When Ledgerhook saw the change of state (RFC 3339, UTC).",
            },
        },
        "additionalProperties": False,
    }


def history_gap_schema() -> dict[str, Any]:
    """The data of `integrated_account:history_gap`."""
    timestamp = {"type": "string", "format": "date-time", "pattern": TIMESTAMP}
    return {
        "$schema": DRAFT,
        "$id": f"{BASE_URI}integrated_account.history_gap.json",
        "title": "integrated_account:history_gap",
        "description": "Changes the provider no longer serves were asked for (a poll whose watermark is"
        " older than the provider's change API answers for, or a backfill reaching further back): the"
        " changes of `entities` made in [`lost_from`, `lost_until`) will not be published; reading"
        " continues from `lost_until`.",
        "type": "object",
        "required": [
            "tenant_id",
            "connection_id",
            "provider",
            "provider_account_id",
            "entities",
            "lost_from",
            "lost_until",
            "origin",
            "occurred_at",
        ],
        "properties": {
            **_envelope_fields(),
            "entities": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"type": "string", "pattern": SNAKE_CASE},
                "description": "The entities whose changes are lost (unified names, sorted).",
            },
            "lost_from": timestamp | {"description": "Start of the lost window (RFC 3339, UTC)."},
            "lost_until": timestamp
            | {"description": "End of the lost window: the oldest point the provider still serves."},
            "origin": {
                "enum": ["poll", "backfill"],
                "description": "What asked for the lost window: a poll or a backfill.",
            },
            "occurred_at": timestamp | {"description": "When Ledgerhook found the gap (RFC 3339, UTC)."},
        },
        "additionalProperties": False,
    }


def schemas() -> dict[str, dict[str, Any]]:
    """Every schema, by file name."""
    files = {COMMON: change_schema()}
    for entity in UNIFIED_ENTITIES:
        for operation in STANDARD_OPERATIONS:
            files[f"accounting.{entity}.{operation}.json"] = change_type_schema(entity, operation)
    files["integrated_account.authentication_error.json"] = account_event_schema(
        "authentication_error",
        AUTHENTICATION_ERROR_REASONS,
        "A connection's credentials stopped working; it needs the customer to reconnect.",
    )
    files["integrated_account.reactivated.json"] = account_event_schema(
        "reactivated",
        REACTIVATED_REASONS,
        "A connection that had an authentication error works again: new credentials were stored"
        " (reconnected), or the provider answers again after an outage (recovered).",
    )
    files["integrated_account.history_gap.json"] = history_gap_schema()
    return files


def render(schema: dict[str, Any]) -> str:
    """The file text of a schema: stable formatting, a final newline."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def stale_files(directory: Path) -> list[str]:
    """File names that are missing, differ from what would be generated, or are no longer generated."""
    expected = {name: render(schema) for name, schema in schemas().items()}
    stale = [
        name
        for name, text in expected.items()
        if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text
    ]
    if directory.is_dir():
        stale += sorted(path.name for path in directory.glob("*.json") if path.name not in expected)
    return sorted(stale)


def write(directory: Path) -> list[str]:
    """Bring `directory` up to date; the names of the files written or removed."""
    directory.mkdir(parents=True, exist_ok=True)
    expected = {name: render(schema) for name, schema in schemas().items()}
    changed = stale_files(directory)
    for name in changed:
        path = directory / name
        if name in expected:
            path.write_text(expected[name], encoding="utf-8")
        else:
            path.unlink()
    return changed


# --- the AsyncAPI document of the topics ------------------------------------------------------------

ASYNCAPI = "3.0.0"
KAFKA_BINDING = "0.5.0"
# Where docs/ is published: the document links the prose that explains it.
DOCS_URL = "https://github.com/ledgerhook/ledgerhook/blob/main/docs/"
ASYNCAPI_PREAMBLE = (
    '# The AsyncAPI 3.0 contract of Ledgerhook\'s Kafka topics (docs/events.md, "AsyncAPI").\n'
    "# Generated by docs/generate_schemas.py from the code and docs/schemas/: do not edit, regenerate.\n"
)
# The message of change types without a schema file of their own (unknown entities or operations).
COMMON_MESSAGE = "accounting.change"
DELIVERY_MESSAGE = "quarantine.delivery"
PAGE_MESSAGE = "quarantine.page"

UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
CHANGE_TYPE_PATTERN = r"^accounting\.[a-z0-9]+(_[a-z0-9]+)*\.[a-z0-9]+(_[a-z0-9]+)*$"
DIGITS = "^[0-9]+$"
# W3C Trace Context, version 00.
TRACEPARENT_PATTERN = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"

# What a change event's summary says happened, per standard operation.
OPERATION_PHRASES = {
    "created": "was created at the provider.",
    "updated": "was changed at the provider.",
    "deleted": "was deleted at the provider.",
    "merged": "was merged into another at the provider: `entity_id` is the record merged away,"
    " `merged_into` the one kept.",
    "voided": "was voided at the provider.",
    "emailed": "was emailed from the provider.",
}


def _env(setting: str) -> str:
    """The environment variable of a setting."""
    return ENV_PREFIX + setting.upper()


def _default(setting: str) -> Any:
    """A Kafka setting's default."""
    return KafkaSettings.model_fields[setting].default


def _project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as file:
        version: str = tomllib.load(file)["project"]["version"]
    return version


def _string(description: str, **keywords: Any) -> dict[str, Any]:
    return {"type": "string", **keywords, "description": description}


def _described(names: list[str], known: dict[str, dict[str, Any]], what: str) -> dict[str, Any]:
    """The schemas of `names`, in that order; stops the script on a header nobody described."""
    missing = [name for name in names if name not in known]
    if missing:
        raise SystemExit(f"{what}: describe {', '.join(missing)} in docs/generate_schemas.py")
    return {name: known[name] for name in names}


def _cloudevent_header_names() -> list[str]:
    """The headers `fanout.cloudevents.binary_record` writes, in its order."""
    record = binary_record(
        event_id="id",
        source="source",
        event_type="type",
        subject="subject",
        time=datetime(2025, 1, 1, tzinfo=UTC),
        data={},
        tenant_id="tenant",
        connection_id="connection",
        provider="provider",
    )
    return [name for name, _ in record.headers]


def cloudevent_headers() -> dict[str, Any]:
    """The headers of every event (binary content mode): required as the code writes them, plus the
    distributed tracing extension, present when tracing is configured."""
    providers = "|".join(PROVIDERS)
    known: dict[str, dict[str, Any]] = {
        "ce_specversion": {"const": SPEC_VERSION, "description": "CloudEvents `specversion`."},
        "ce_id": _string(
            "CloudEvents `id`: the event id. Change events: deterministic, the same change gets the same"
            ' id (docs/events.md, "Event ids"). Delivery is at least once: dedupe by it.',
            format="uuid",
            pattern=UUID_PATTERN,
        ),
        "ce_source": _string(
            "CloudEvents `source`: `/ledgerhook/<provider>/<provider account id>`.",
            pattern=f"^/ledgerhook/({providers})/.+$",
        ),
        "ce_type": _string("CloudEvents `type`: the event type, which names the payload's schema."),
        "ce_time": _string(
            "CloudEvents `time`, RFC 3339 in UTC with `Z`. Change events: when the record changed"
            " (`occurred_at`), else when the delivery was received; account events: `occurred_at`.",
            format="date-time",
            pattern=TIMESTAMP,
        ),
        "ce_subject": _string(
            "CloudEvents `subject`: `<entity>/<entity id>` for change events, `connection/<connection"
            " id>` for account events.",
            minLength=1,
        ),
        "content-type": {
            "const": CONTENT_TYPE,
            "description": "CloudEvents `datacontenttype`: the record value is JSON.",
        },
        "ce_tenantid": _string(
            "Extension `tenantid`: the tenant owning the connection (`tenant_id`).", minLength=1
        ),
        "ce_connectionid": _string(
            "Extension `connectionid`: the connection (`connection_id`), also the record key.", minLength=1
        ),
        "ce_provider": {"enum": list(PROVIDERS), "description": "Extension `provider`: the provider slug."},
        "ce_partitionkey": _string(
            "Extension `partitionkey` (CloudEvents Partitioning): the connection id, the record key.",
            minLength=1,
        ),
    }
    names = _cloudevent_header_names()
    properties = _described(names, known, "CloudEvents headers")
    properties["ce_traceparent"] = _string(
        "Extension `traceparent` (CloudEvents Distributed Tracing): the W3C trace context of the"
        " webhook request or poll the event came from. Present when tracing is configured (`OTEL_*`).",
        pattern=TRACEPARENT_PATTERN,
    )
    properties["ce_tracestate"] = _string(
        "Extension `tracestate` (CloudEvents Distributed Tracing): the W3C `tracestate` going with"
        " `ce_traceparent`, when there is one."
    )
    return {
        "type": "object",
        "description": "Kafka record headers, UTF-8 text. Consumers ignore headers they do not know.",
        "required": names,
        "properties": properties,
    }


def _raw_headers() -> dict[str, dict[str, Any]]:
    """The raw record's headers (`fanout.raw`), as a quarantined delivery keeps them."""
    known: dict[str, dict[str, Any]] = {
        raw.H_DELIVERY_ID: _string("The delivery id, a UUIDv7 (`delivery_id` of its change events)."),
        raw.H_PROVIDER: _string("The provider slug the delivery came in for."),
        raw.H_RECEIVED_AT: _string("When the gateway received the delivery, RFC 3339 UTC."),
        raw.H_CONTENT_TYPE: _string("The webhook request's content type, when it had one."),
        raw.H_CONNECTION_ID: _string("The connection, for a delivery on a per-connection URL."),
        raw.H_PROVIDER_EVENT_ID: _string("The provider's event id, when the delivery carries exactly one."),
        raw.H_REDRIVE_COUNT: _string(
            "How many times the record was fed back from quarantine (absent: never).", pattern=DIGITS
        ),
        **_trace_headers(
            "the record's trace: the fan-out worker's span that quarantined it (from a worker that"
            " does not trace, the webhook request's)"
        ),
    }
    names = sorted(
        {value for name, value in vars(raw).items() if name.startswith("H_") and isinstance(value, str)},
        key=lambda name: list(known).index(name) if name in known else len(known),
    )
    return _described(names, known, "raw record headers")


def _trace_headers(whose: str) -> dict[str, dict[str, Any]]:
    """The W3C trace context headers (`fanout.raw`), present when tracing is configured."""
    return {
        raw.H_TRACEPARENT: _string(
            f"W3C `traceparent` of {whose}, when tracing is configured (`OTEL_*`).",
            pattern=TRACEPARENT_PATTERN,
        ),
        raw.H_TRACESTATE: _string("W3C `tracestate` going with `traceparent`, when there is one."),
    }


def _reason_headers(reasons: list[str]) -> dict[str, dict[str, Any]]:
    """Why and when a record was quarantined (`fanout.quarantine`)."""
    return {
        quarantine.H_REASON: {"enum": reasons, "description": "Why the record was quarantined."},
        quarantine.H_DETAIL: _string(
            "What went wrong, printable ASCII, safe to log (never a body, never a secret).",
            pattern="^[\\x20-\\x7e]*$",
            maxLength=quarantine.DETAIL_LIMIT,
        ),
        quarantine.H_QUARANTINED_AT: _string(
            "When the record was quarantined, RFC 3339 UTC.", format="date-time", pattern=TIMESTAMP
        ),
    }


def quarantined_delivery_headers() -> dict[str, Any]:
    """A quarantined raw delivery: the raw record's headers plus where it was and why."""
    reasons = [reason.value for reason in quarantine.Reason]
    known = _reason_headers(reasons) | {
        quarantine.H_SOURCE_TOPIC: _string("The raw topic the record came from.", minLength=1),
        quarantine.H_SOURCE_PARTITION: _string("Its partition there.", pattern=DIGITS),
        quarantine.H_SOURCE_OFFSET: _string("Its offset there.", pattern=DIGITS),
    }
    added = [
        quarantine.H_REASON,
        quarantine.H_DETAIL,
        quarantine.H_SOURCE_TOPIC,
        quarantine.H_SOURCE_PARTITION,
        quarantine.H_SOURCE_OFFSET,
        quarantine.H_QUARANTINED_AT,
    ]
    if set(added) != quarantine.QUARANTINE_HEADERS:
        raise SystemExit("quarantine headers: describe fanout.quarantine.QUARANTINE_HEADERS exactly")
    return {
        "type": "object",
        "description": "The raw record's headers, kept as they were (any it had), plus the"
        ' `ledgerhook-quarantine-*` headers. Reasons: docs/events.md, "`ledgerhook.quarantine`".',
        "required": added,
        "properties": _raw_headers() | _described(added, known, "quarantine headers"),
    }


def quarantined_page_headers() -> dict[str, Any]:
    """A page of a change API the poller could not parse (`fanout.polling.publishing`)."""
    known = _reason_headers([publishing.POLL_UNPARSEABLE]) | {
        raw.H_PROVIDER: _string("The provider whose change API answered.", enum=list(PROVIDERS)),
        publishing.H_ACCOUNT: _string("The provider account polled (also the record key).", minLength=1),
        publishing.H_REQUEST: _string(
            "The request's method and path (never its headers).", pattern="^[\\x20-\\x7e]*$"
        ),
    }
    names = [
        quarantine.H_REASON,
        quarantine.H_DETAIL,
        quarantine.H_QUARANTINED_AT,
        raw.H_PROVIDER,
        publishing.H_ACCOUNT,
        publishing.H_REQUEST,
    ]
    return {
        "type": "object",
        "required": names,
        "properties": _described(names, known, "quarantined page headers") | _trace_headers("the poll"),
    }


def _article(words: str) -> str:
    return ("An " if words[0] in "aeiou" else "A ") + words


def _change_message(entity: str, operation: str) -> dict[str, Any]:
    event_type = f"accounting.{entity}.{operation}"
    words = entity.replace("_", " ")
    phrase = OPERATION_PHRASES.get(operation, f"was {operation.replace('_', ' ')} at the provider.")
    return {
        "name": event_type,
        "title": f"{words.capitalize()} {operation}",
        "summary": f"{_article(words)} {phrase}",
        "headers": {
            "allOf": [
                {"$ref": "#/components/schemas/ChangeEventHeaders"},
                {
                    "properties": {
                        "ce_type": {"const": event_type},
                        "ce_subject": {"pattern": f"^{entity}/.+$"},
                    }
                },
            ]
        },
        "payload": {"$ref": f"schemas/{event_type}.json"},
        "bindings": {"$ref": "#/components/messageBindings/connectionKey"},
    }


def _common_change_message() -> dict[str, Any]:
    own_types = [f"accounting.{e}.{o}" for e in UNIFIED_ENTITIES for o in STANDARD_OPERATIONS]
    return {
        "name": "accounting.<entity>.<operation>",
        "title": "Other change",
        "summary": "A change whose entity or operation is outside the unified vocabulary, kept under"
        " the provider's own name in snake_case (QuickBooks `TimeActivity`: `accounting.time_activity."
        "updated`). Ignore the types you do not handle.",
        "headers": {
            "allOf": [
                {"$ref": "#/components/schemas/ChangeEventHeaders"},
                # Every other type has a message of its own.
                {"properties": {"ce_type": {"not": {"enum": own_types}}}},
            ]
        },
        "payload": {"$ref": f"schemas/{COMMON}"},
        "bindings": {"$ref": "#/components/messageBindings/connectionKey"},
    }


def _account_message(file_name: str, schema: dict[str, Any]) -> dict[str, Any]:
    event_type: str = schema["title"]
    return {
        "name": event_type,
        "title": event_type.split(":", 1)[1].replace("_", " ").capitalize(),
        "summary": schema["description"],
        "headers": {
            "allOf": [
                {"$ref": "#/components/schemas/AccountEventHeaders"},
                {"properties": {"ce_type": {"const": event_type}}},
            ]
        },
        "payload": {"$ref": f"schemas/{file_name}"},
        "bindings": {"$ref": "#/components/messageBindings/connectionKey"},
    }


def _raw_body(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "binary", "description": description}


def _key_binding(key: dict[str, Any], header: str | None = None) -> dict[str, Any]:
    """A Kafka message binding; `x-key-header` names the header the key always equals."""
    binding: dict[str, Any] = {"key": key, "bindingVersion": KAFKA_BINDING}
    if header is not None:
        binding["x-key-header"] = header
    return {"kafka": binding}


def _topic(setting: str, description: str, keyed_by_connection: bool = True) -> dict[str, Any]:
    """A channel for a topic whose name is a setting (its default is the address)."""
    partitions, replicas = "topic_partitions", "topic_replication_factor"
    order = " The key keeps each connection's events on one partition." if keyed_by_connection else ""
    return {
        "address": _default(setting),
        "description": f"{description}\n\nThe topic's name is the setting `{_env(setting)}`; the address"
        " is its default.",
        "bindings": {
            "kafka": {
                "bindingVersion": KAFKA_BINDING,
                "x-partitions": f"Configurable: `{_env(partitions)}` (default {_default(partitions)}) when"
                " Ledgerhook creates the topic (`ledgerhook migrate`); a topic that exists keeps its own"
                f" count.{order}",
                "x-replicas": f"Configurable: `{_env(replicas)}` (default {_default(replicas)}; 3 in"
                " production) when Ledgerhook creates the topic.",
            }
        },
    }


def _send(channel: str, messages: list[str], summary: str) -> dict[str, Any]:
    client_id = "kafka_client_id"
    return {
        "action": "send",
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in messages],
        "bindings": {
            "kafka": {
                "clientId": {
                    "type": "string",
                    "default": _default(client_id),
                    "description": f"The producer's client id, `{_env(client_id)}`.",
                },
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the consumer topics."""
    files = schemas()
    change_messages = {
        f"accounting.{e}.{o}": _change_message(e, o) for e in UNIFIED_ENTITIES for o in STANDARD_OPERATIONS
    }
    change_messages[COMMON_MESSAGE] = _common_change_message()
    account_messages = {
        name.removesuffix(".json"): _account_message(name, schema)
        for name, schema in files.items()
        if name.startswith("integrated_account.")
    }
    quarantine_messages = {
        DELIVERY_MESSAGE: {
            "name": DELIVERY_MESSAGE,
            "title": "Quarantined delivery",
            "summary": "A raw webhook delivery the worker could not (fully) turn into events, copied"
            " as it is (same key, value and headers) with the reason. Re-drivable once the cause is"
            " fixed (`ledgerhook redrive`).",
            "contentType": "application/octet-stream",
            "headers": {"$ref": "#/components/schemas/QuarantinedDeliveryHeaders"},
            "payload": _raw_body(
                "The webhook body exactly as received (its `content-type` header says what it is)."
            ),
            "bindings": {"$ref": "#/components/messageBindings/deliveryKey"},
        },
        PAGE_MESSAGE: {
            "name": PAGE_MESSAGE,
            "title": "Quarantined page",
            "summary": "A page of a provider's change API the poller could not parse. Never redriven:"
            " the poll failed, and the next one reads the same changes again.",
            "contentType": "application/octet-stream",
            "headers": {"$ref": "#/components/schemas/QuarantinedPageHeaders"},
            "payload": _raw_body("The page exactly as the provider answered it."),
            "bindings": {"$ref": "#/components/messageBindings/pageKey"},
        },
    }
    groups = {
        "changes": change_messages,
        "accountEvents": account_messages,
        "quarantine": quarantine_messages,
    }
    channels = {
        "changes": _topic(
            "topic_changes",
            "Change events `accounting.<entity>.<operation>`: a record changed at a provider. One"
            " message per unified entity and standard operation, and one for every other type.",
        ),
        "accountEvents": _topic(
            "topic_account_events",
            "Account events `integrated_account:*`: a connection stopped, or started again, being able"
            " to talk to its provider, or changes it asked for are older than the provider serves.",
        ),
        "quarantine": _topic(
            "topic_quarantine",
            "For operators: what could not be turned into events, with the reason. Nothing is dropped"
            " silently.",
            keyed_by_connection=False,
        ),
    }
    for channel, messages in groups.items():
        channels[channel]["messages"] = {name: {"$ref": f"#/components/messages/{name}"} for name in messages}
    return {
        "asyncapi": ASYNCAPI,
        "info": {
            "title": "Ledgerhook events",
            "version": _project_version(),
            "description": "The Kafka topics Ledgerhook publishes: normalized change events from"
            " accounting providers (QuickBooks Online, Xero, NetSuite, Sage Intacct, Zoho Books,"
            " FreshBooks, custom sources), account events, and the quarantine.\n\n"
            "Events are CloudEvents 1.0 in the Kafka binary content mode: the attributes are `ce_*`"
            " headers, the record value is the JSON data, the record key is the connection id (one"
            " connection's events are on one partition, in order). Delivery is at least once: dedupe"
            " by `ce_id`. Payload schemas are the JSON Schema (draft 2020-12) files in `schemas/`, one"
            " per event type; pick one by `ce_type`.",
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
            "externalDocs": {"description": "docs/events.md", "url": DOCS_URL + "events.md"},
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "title": "Kafka",
                "summary": "The Kafka cluster Ledgerhook publishes to.",
                "description": "Apache Kafka or a Kafka-compatible broker (Redpanda, Amazon MSK,"
                " Confluent). TLS and SASL as your cluster says; Ledgerhook's own are the settings"
                f" `{_env('kafka_security_protocol')}` and `{_env('kafka_sasl_mechanism')}`.",
                "variables": {
                    "bootstrap": {
                        "default": _default("kafka_bootstrap_servers"),
                        "description": "A bootstrap server, `host:port` (one of"
                        f" `{_env('kafka_bootstrap_servers')}`).",
                    }
                },
            }
        },
        "channels": channels,
        "operations": {
            "sendChanges": _send(
                "changes",
                list(change_messages),
                "Ledgerhook publishes change events; consumers receive them in consumer groups of their own.",
            ),
            "sendAccountEvents": _send(
                "accountEvents",
                list(account_messages),
                "Ledgerhook publishes account events; consumers receive them (the last"
                " `authentication_error` or `reactivated` of a connection is its state).",
            ),
            "sendQuarantine": _send(
                "quarantine",
                list(quarantine_messages),
                "Ledgerhook quarantines what it could not turn into events; operators read it and redrive.",
            ),
        },
        "components": {
            "schemas": {
                "CloudEventHeaders": cloudevent_headers(),
                "ChangeEventHeaders": {
                    "allOf": [
                        {"$ref": "#/components/schemas/CloudEventHeaders"},
                        {
                            "properties": {
                                "ce_type": {"pattern": CHANGE_TYPE_PATTERN},
                                "ce_subject": {"pattern": "^[a-z0-9_]+/.+$"},
                            }
                        },
                    ]
                },
                "AccountEventHeaders": {
                    "allOf": [
                        {"$ref": "#/components/schemas/CloudEventHeaders"},
                        {
                            "properties": {
                                "ce_type": {"enum": [m["name"] for m in account_messages.values()]},
                                "ce_subject": {"pattern": "^connection/.+$"},
                            }
                        },
                    ]
                },
                "QuarantinedDeliveryHeaders": quarantined_delivery_headers(),
                "QuarantinedPageHeaders": quarantined_page_headers(),
            },
            "messages": change_messages | account_messages | quarantine_messages,
            "messageBindings": {
                "connectionKey": _key_binding(
                    _string("The connection id (UTF-8): one connection's events stay in order.", minLength=1),
                    "ce_partitionkey",
                ),
                "deliveryKey": _key_binding(
                    _string(
                        "As on the raw topic: the provider account the delivery names when it names"
                        f" exactly one, else the delivery id (`{raw.H_DELIVERY_ID}`).",
                        minLength=1,
                    )
                ),
                "pageKey": _key_binding(
                    _string("The provider account polled.", minLength=1), publishing.H_ACCOUNT
                ),
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style for text over several lines; everything else as PyYAML writes it."""


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _represent_text)


def render_asyncapi(document: dict[str, Any]) -> str:
    """The file text of the AsyncAPI document: stable formatting, a final newline."""
    body: str = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
    return ASYNCAPI_PREAMBLE + body


def asyncapi_is_stale(path: Path) -> bool:
    """Whether `path` is missing or differs from the document the code would generate."""
    return not path.is_file() or path.read_text(encoding="utf-8") != render_asyncapi(asyncapi())


def write_asyncapi(path: Path) -> bool:
    """Bring the AsyncAPI document at `path` up to date; whether it was written."""
    if not asyncapi_is_stale(path):
        return False
    path.write_text(render_asyncapi(asyncapi()), encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is missing or stale")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="output directory (docs/schemas)")
    parser.add_argument(
        "--asyncapi", type=Path, default=ASYNCAPI_FILE, help="the AsyncAPI document (docs/asyncapi.yaml)"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.dir)
        if asyncapi_is_stale(args.asyncapi):
            stale.append(args.asyncapi.name)
        for name in stale:
            print(f"stale: {name}", file=sys.stderr)
        if stale:
            print("run: python docs/generate_schemas.py", file=sys.stderr)
            return 1
        return 0
    for name in write(args.dir):
        print(f"wrote: {name}" if (args.dir / name).exists() else f"removed: {name}")
    if write_asyncapi(args.asyncapi):
        print(f"wrote: {args.asyncapi.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
