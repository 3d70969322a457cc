"""Zoho Books webhook payloads: one record under its entity name (shape unverified: read tolerantly).

The assumptions, each cheap to change, are listed in docs/providers.md, Zoho Books; without an
`organization_id` the change belongs to the connection the delivery came in on (`CONNECTION_ACCOUNT`).
"""

from datetime import datetime
from typing import Any

from fanout.changes import CONNECTION_ACCOUNT, ParseError, ProviderChange
from fanout.parsers.json_body import as_object, load_json, optional_text, text
from fanout.timestamps import parse_timestamp

# Entities whose id field is not `<entity>_id`, as in the Books API.
_ID_FIELDS = {
    "vendorpayment": "payment_id",
    "customerpayment": "payment_id",
    "chartofaccount": "account_id",
    "banktransaction": "transaction_id",
    "customer": "contact_id",
    "vendor": "contact_id",
}
_OPERATION_FIELDS = ("event_type", "action", "event", "operation")
_TIME_FIELDS = ("last_modified_time", "updated_time")
# Top-level objects that are never the changed record (an organization object names its own id).
_NOT_ENTITIES = frozenset({"organization"})


def parse(body: bytes) -> list[ProviderChange]:
    """The change in a Zoho Books webhook body (always one record)."""
    document = as_object(load_json(body), where="body")
    entity, record = _entity(document)
    where = f"{entity} record"
    entity_id = _record_id(entity, record, where)
    attributes: dict[str, str] = {}
    for key in ("contact_type", "status"):
        value = optional_text(record, key)
        if value:
            attributes[key] = value
    account = optional_text(document, "organization_id") or optional_text(record, "organization_id")
    return [
        ProviderChange(
            provider_account_id=account or CONNECTION_ACCOUNT,
            entity=entity,
            entity_id=entity_id,
            operation=_operation(entity, document, record),
            occurred_at=_time(record) or _time(document),
            attributes=attributes,
        )
    ]


def _entity(document: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    candidates = [
        (key, value)
        for key, value in document.items()
        if isinstance(value, dict) and key.strip() and key not in _NOT_ENTITIES
    ]
    if len(candidates) > 1:
        # An entity object names its own id; nested extras (custom objects, addresses) do not.
        candidates = [(key, value) for key, value in candidates if _id_field(key) in value]
    if len(candidates) != 1:
        raise ParseError("body must hold exactly one entity object")
    return candidates[0]


def _id_field(entity: str) -> str:
    return _ID_FIELDS.get(entity, f"{entity}_id")


def _record_id(entity: str, record: dict[str, Any], where: str) -> str:
    key = _id_field(entity)
    if record.get(key) is None and record.get("id") is not None:
        key = "id"
    return text(record, key, where=where)


def _operation(entity: str, *objects: dict[str, Any]) -> str:
    for obj in objects:
        for key in _OPERATION_FIELDS:
            value = optional_text(obj, key)
            if value:
                return _strip_entity(entity, value.rsplit(".", 1)[-1]) or value
    return "updated"


def _strip_entity(entity: str, value: str) -> str:
    """`invoice_created` -> `created` and `credit_note_updated` (entity creditnote) -> `updated`."""
    squashed = entity.replace("_", "").lower()
    for i, char in enumerate(value):
        if char == "_" and value[:i].replace("_", "").lower() == squashed:
            return value[i + 1 :].lstrip("_").strip()  # `a__created` for entity `a_` is `created` too
    return value.strip()


def _time(obj: dict[str, Any]) -> datetime | None:
    for key in _TIME_FIELDS:
        value = obj.get(key)
        if isinstance(value, str):
            try:
                return parse_timestamp(value)
            except ValueError:
                continue  # tolerated: the shape is unverified, the change still counts
    return None
