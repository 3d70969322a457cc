"""QuickBooks Online webhook payloads, in both formats Intuit sends to the same URL.

Told apart by shape: a JSON object with `eventNotifications` (legacy) or a JSON array of CloudEvents
(docs/providers.md, QuickBooks Online).
"""

from typing import Any

from fanout.changes import ParseError, ProviderChange
from fanout.parsers.json_body import as_list, as_object, load_json, optional_text, text
from fanout.timestamps import parse_timestamp


def parse(body: bytes) -> list[ProviderChange]:
    """Every change in a QuickBooks delivery, in payload order."""
    document = load_json(body)
    if isinstance(document, dict) and "eventNotifications" in document:
        return _legacy(document)
    if isinstance(document, list):
        return [_cloudevent(as_object(event, where=f"event {i}"), i) for i, event in enumerate(document)]
    raise ParseError("neither a legacy eventNotifications object nor a CloudEvents array")


def _legacy(document: dict[str, Any]) -> list[ProviderChange]:
    changes = []
    for n, notification in enumerate(as_list(document["eventNotifications"], where="eventNotifications")):
        where = f"eventNotifications[{n}]"
        notification = as_object(notification, where=where)
        realm = text(notification, "realmId", where=where)
        event = as_object(notification.get("dataChangeEvent"), where=f"{where}.dataChangeEvent")
        for e, entity in enumerate(as_list(event.get("entities"), where=f"{where}.entities")):
            entity_where = f"{where}.entities[{e}]"
            entity = as_object(entity, where=entity_where)
            changes.append(
                ProviderChange(
                    provider_account_id=realm,
                    entity=text(entity, "name", where=entity_where),
                    entity_id=text(entity, "id", where=entity_where),
                    operation=text(entity, "operation", where=entity_where),
                    occurred_at=_timestamp(entity.get("lastUpdated"), entity_where),
                    merged_away_id=optional_text(entity, "deletedId"),
                )
            )
    return changes


def _cloudevent(event: dict[str, Any], index: int) -> ProviderChange:
    where = f"event {index}"
    if event.get("specversion") != "1.0":
        raise ParseError(f"{where}: specversion must be 1.0")
    event_type = text(event, "type", where=where)
    parts = event_type.split(".")
    if len(parts) < 3 or parts[0] != "qbo" or not parts[1] or not parts[2]:
        raise ParseError(f"{where}: type must look like qbo.<entity>.<operation>.v1")
    data = event.get("data")
    merged_away = optional_text(data, "deletedid") if isinstance(data, dict) else None
    return ProviderChange(
        provider_account_id=text(event, "intuitaccountid", where=where),
        entity=parts[1],
        entity_id=text(event, "intuitentityid", where=where),
        operation=parts[2],
        occurred_at=_timestamp(event.get("time"), where),
        event_id=optional_text(event, "id"),
        merged_away_id=merged_away,
    )


def _timestamp(value: object, where: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"{where}: timestamp must be a string")
    try:
        return parse_timestamp(value)
    except (ValueError, OverflowError):
        raise ParseError(f"{where}: unreadable timestamp") from None
