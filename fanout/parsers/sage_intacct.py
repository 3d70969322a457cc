"""Sage Intacct Platform Trigger deliveries: whatever JSON the trigger's author wrote, read tolerantly.

The suggested body and the reading rules (field aliases, nesting, what is required) are in
docs/providers.md, Sage Intacct; without a company the change belongs to the connection the
delivery came in on (`CONNECTION_ACCOUNT`).
"""

from datetime import datetime
from typing import Any

from fanout.changes import CONNECTION_ACCOUNT, ParseError, ProviderChange
from fanout.parsers.json_body import as_list, as_object, load_json, optional_text, text
from fanout.timestamps import parse_timestamp

_OBJECT = ("object", "objectname", "objecttype", "recordtype")
_RECORD = ("key", "recordno", "recordnumber", "recordkey", "recordid", "id")
_ACTION = ("action", "eventtype", "event", "operation")
_COMPANY = ("companyid", "company", "cnyid")
_TIME = ("whenmodified", "modifiedat", "modifieddatetime", "updatedat", "timestamp", "occurredat", "time")
_EVENT_ID = ("idempotencykey", "eventid")
_NESTED = ("data", "record", "payload")


def parse(body: bytes) -> list[ProviderChange]:
    """Every change in a Sage Intacct trigger delivery, in payload order."""
    document = load_json(body)
    if isinstance(document, list):
        events = document
    else:
        document = as_object(document, where="body")
        batch = _find([document], ("events",))
        events = as_list(batch[1], where="events") if batch else [document]
    return [_event(as_object(event, where=f"event {i}"), f"event {i}") for i, event in enumerate(events)]


def _event(event: dict[str, Any], where: str) -> ProviderChange:
    scopes = [event] + [value for key in _NESTED if isinstance(value := event.get(key), dict)]
    object_name = _required(scopes, _OBJECT, "object type", where)
    record = _required(scopes, _RECORD, "record key", where)
    attributes: dict[str, str] = {}
    found = _find(scopes, _RECORD)
    if found and _normal(found[0]) != "id":
        human_id = _optional(scopes, ("id",))
        if human_id and human_id != record:
            attributes["id"] = human_id  # Intacct REST: `key` is RECORDNO, `id` the readable id
    action = _optional(scopes, _ACTION)
    if action and "." in action:
        action = action.rsplit(".", 1)[-1].strip() or action
    return ProviderChange(
        provider_account_id=_optional(scopes, _COMPANY) or CONNECTION_ACCOUNT,
        entity=object_name,
        entity_id=record,
        operation=action or "updated",
        occurred_at=_time(scopes),
        event_id=_optional(scopes, _EVENT_ID),
        attributes=attributes,
    )


def _normal(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "").replace(" ", "")


def _find(scopes: list[dict[str, Any]], aliases: tuple[str, ...]) -> tuple[str, Any] | None:
    """The first (key, value) whose key matches an alias, by alias order, then scope order."""
    for alias in aliases:
        for scope in scopes:
            for key, value in scope.items():
                if value is not None and _normal(key) == alias:
                    return key, value
    return None


def _required(scopes: list[dict[str, Any]], aliases: tuple[str, ...], what: str, where: str) -> str:
    found = _find(scopes, aliases)
    if found is None:
        raise ParseError(f"{where}: no {what}")
    return text({found[0]: found[1]}, found[0], where=where)


def _optional(scopes: list[dict[str, Any]], aliases: tuple[str, ...]) -> str | None:
    found = _find(scopes, aliases)
    return optional_text({found[0]: found[1]}, found[0]) if found else None


def _time(scopes: list[dict[str, Any]]) -> datetime | None:
    candidates = [_optional(scopes, (alias,)) for alias in _TIME]
    for scope in scopes:
        audit = scope.get("audit")
        if isinstance(audit, dict):
            candidates.append(optional_text(audit, "modifiedDateTime"))
    for value in candidates:
        if value:
            try:
                return parse_timestamp(value)
            except ValueError:
                continue  # tolerated: the trigger body is the customer's, the change still counts
    return None
