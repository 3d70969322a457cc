"""Generate the JSON Schemas (draft 2020-12) of every event Ledgerhook publishes, into docs/schemas/.

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
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from fanout import vocabulary  # noqa: E402
from provider_auth.providers import Provider  # noqa: E402

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
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
        "$ref": COMMON,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is missing or stale")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="output directory (docs/schemas)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.dir)
        for name in stale:
            print(f"stale: {name}", file=sys.stderr)
        if stale:
            print("run: python docs/generate_schemas.py", file=sys.stderr)
            return 1
        return 0
    for name in write(args.dir):
        print(f"wrote: {name}" if (args.dir / name).exists() else f"removed: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
