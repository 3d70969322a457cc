"""What the request path needs to know of a payload: which account it names, and its event id.

This runs on every webhook request, before the acknowledgement, so it reads only the two or three
fields it needs from the decoded JSON instead of running the full parser (timestamps, typed changes).
It is a best guess for the partition key and nothing more: a body it cannot read is still stored, and
the fan-out worker's full parse is what counts. The shapes are those of `fanout.parsers.quickbooks`
and `fanout.parsers.xero`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from provider_auth.providers import Provider


@dataclass(frozen=True, slots=True)
class Summary:
    """The single provider account and provider event id a delivery names, when it names one."""

    account_id: str | None = None
    event_id: str | None = None


EMPTY = Summary()


def _single(values: list[Any]) -> str | None:
    """The one non-empty string among `values`, or None when there are none or several."""
    found = {v for v in values if isinstance(v, str) and v}
    return next(iter(found)) if len(found) == 1 else None


def _quickbooks(document: Any) -> Summary:
    if isinstance(document, dict):  # legacy: {"eventNotifications": [{"realmId": ...}, ...]}
        notifications = document.get("eventNotifications")
        if not isinstance(notifications, list):
            return EMPTY
        return Summary(account_id=_single([n.get("realmId") for n in notifications if isinstance(n, dict)]))
    if isinstance(document, list):  # CloudEvents: [{"intuitaccountid": ..., "id": ...}, ...]
        events = [e for e in document if isinstance(e, dict)]
        event_id = events[0].get("id") if len(document) == 1 and events else None
        return Summary(
            account_id=_single([e.get("intuitaccountid") for e in events]),
            event_id=event_id if isinstance(event_id, str) and event_id else None,
        )
    return EMPTY


def _xero(document: Any) -> Summary:
    events = document.get("events") if isinstance(document, dict) else None
    if not isinstance(events, list):
        return EMPTY
    return Summary(account_id=_single([e.get("tenantId") for e in events if isinstance(e, dict)]))


_PEEKS: dict[Provider, Callable[[Any], Summary]] = {Provider.QUICKBOOKS: _quickbooks, Provider.XERO: _xero}


def summarize(provider: Provider, body: bytes) -> Summary:
    """Summary of a shared-endpoint delivery; empty when the body does not say (it is still stored)."""
    peek = _PEEKS.get(provider)
    if peek is None:  # per-connection deliveries are keyed by their connection's account instead
        return EMPTY
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return EMPTY
    return peek(document)
