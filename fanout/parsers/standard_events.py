"""Ledgerhook standard events: the JSON body NetSuite SuiteScript senders and custom sources post.

One event (`type` `"<entity>.<operation>"`, `data.id`, optional `id`, `account_id`, `timestamp`,
`data.updated_at`, `data.merged_into`, `data.contact_type`) or a batch `{"events": [...]}`; the
format is documented in docs/events.md, "The Standard Webhooks body". It is our own format, so
anything it does not allow is a ParseError: a sender bug should be seen.
"""

from datetime import datetime
from typing import Any

from fanout.changes import CONNECTION_ACCOUNT, ParseError, ProviderChange
from fanout.parsers.json_body import as_list, as_object, load_json, optional_text, text
from fanout.timestamps import parse_timestamp


def parse(body: bytes) -> list[ProviderChange]:
    """Every change of a standard event or batch, in payload order."""
    document = as_object(load_json(body), where="body")
    if "events" in document:
        default_account = _account(document, "body", None)
        return [
            _event(as_object(event, where=f"events[{i}]"), f"events[{i}]", default_account)
            for i, event in enumerate(as_list(document["events"], where="events"))
        ]
    return [_event(document, "event", None)]


def _event(event: dict[str, Any], where: str, default_account: str | None) -> ProviderChange:
    parts = text(event, "type", where=where).split(".")
    entity, operation = (parts[-2].strip(), parts[-1].strip()) if len(parts) >= 2 else ("", "")
    if not entity or not operation:
        raise ParseError(f"{where}: type must look like <entity>.<operation>")
    data = as_object(event.get("data"), where=f"{where}.data")
    record_id = text(data, "id", where=f"{where}.data")
    entity = optional_text(data, "entity") or entity
    merged_into = optional_text(data, "merged_into")
    attributes = {}
    contact_type = optional_text(data, "contact_type")
    if contact_type:
        attributes["contact_type"] = contact_type
    occurred = _time(data, "updated_at", f"{where}.data") or _time(event, "timestamp", where)
    return ProviderChange(
        provider_account_id=_account(event, where, default_account) or CONNECTION_ACCOUNT,
        entity=entity,
        # ProviderChange keeps the QuickBooks convention: entity_id is the record kept by a merge,
        # merged_away_id the one that disappeared (here `data.id`).
        entity_id=merged_into or record_id,
        operation=operation,
        occurred_at=occurred,
        event_id=optional_text(event, "id"),
        merged_away_id=record_id if merged_into else None,
        attributes=attributes,
    )


def _account(obj: dict[str, Any], where: str, default: str | None) -> str | None:
    if obj.get("account_id") is None:
        return default
    return text(obj, "account_id", where=where)


def _time(obj: dict[str, Any], key: str, where: str) -> datetime | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"{where}: {key} must be an RFC 3339 string")
    try:
        return parse_timestamp(value)
    except ValueError:
        raise ParseError(f"{where}: unreadable {key}") from None
