"""Xero webhook payloads: `{"events": [...], ...}`, each event naming its own organisation.

Intent-to-receive deliveries carry no events (docs/providers.md, Xero).
"""

from typing import Any

from fanout.changes import ParseError, ProviderChange
from fanout.parsers.json_body import as_list, as_object, load_json, optional_text, text
from fanout.timestamps import parse_timestamp


def parse(body: bytes) -> list[ProviderChange]:
    """Every change in a Xero delivery, in payload order; [] for an intent-to-receive payload."""
    document = as_object(load_json(body), where="body")
    if "events" not in document:
        raise ParseError("body has no events array")
    return [
        _event(as_object(e, where=f"events[{i}]"), i)
        for i, e in enumerate(as_list(document["events"], where="events"))
    ]


def _event(event: dict[str, Any], index: int) -> ProviderChange:
    where = f"events[{index}]"
    attributes: dict[str, str] = {}
    data = event.get("data")
    if isinstance(data, dict):
        for key in ("Type", "Status"):
            value = optional_text(data, key)
            if value:
                attributes[key.lower()] = value
    tenant_type = optional_text(event, "tenantType")
    if tenant_type:
        attributes["tenant_type"] = tenant_type
    raw_date = event.get("eventDateUtc")
    occurred = None
    if raw_date is not None:
        if not isinstance(raw_date, str):
            raise ParseError(f"{where}: eventDateUtc must be a string")
        try:
            occurred = parse_timestamp(raw_date)
        except (ValueError, OverflowError):
            raise ParseError(f"{where}: unreadable eventDateUtc") from None
    return ProviderChange(
        provider_account_id=text(event, "tenantId", where=where),
        entity=text(event, "eventCategory", where=where),
        entity_id=text(event, "resourceId", where=where),
        operation=text(event, "eventType", where=where),
        occurred_at=occurred,
        attributes=attributes,
    )
