"""Zoho Books webhook payloads (unverified shape: read tolerantly).

Zoho Books webhooks are workflow actions an organization sets up against its own URL (zoho.com/books/
help/settings/automation/workflow-actions/webhooks, and the Books API v3 `settings/webhooks`
resource: entity, events, entity parameters, optional secret). With "entity parameters" appended the
JSON body is the record under its entity name, as in the Books API responses::

    {"invoice": {"invoice_id": "982000000567114", "last_modified_time": "2013-11-18T02:17:40-0800",
                 ...}, "organization_id": "10234695"}

How it is read (assumptions, each cheap to change):
- the entity is the one top-level key whose value is a JSON object (several: the one whose object
  carries `<key>_id`); the record id is `<entity>_id` (`payment_id` for vendor payments, `account_id`
  for chart of accounts, `contact_id` for customer and vendor, then plain `id`);
- the operation comes from `event_type`, `action`, `event` or `operation` (top level first, then the
  record), with a leading entity name dropped (`invoice_created` -> `created`); when none is sent,
  since the event is configured on the webhook rather than sent, the change is an `updated`;
- the account is `organization_id` (top level, then the record) when sent; without it the change is
  the connection's (`CONNECTION_ACCOUNT`): Zoho posts to a per-connection URL, routed by connection id;
- the time is `last_modified_time`, else `updated_time` (Zoho writes `2013-11-18T02:17:40-0800`); an
  unreadable time is left out rather than failing the delivery;
- a contact's `contact_type` (customer / vendor) and the record `status` are kept as extras.
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
