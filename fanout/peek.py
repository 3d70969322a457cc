"""What the request path needs to know of a payload: which account it names, and its event id."""

from dataclasses import dataclass

from fanout.changes import ParseError
from fanout.parsers import PARSERS
from provider_auth.providers import Provider


@dataclass(frozen=True, slots=True)
class Summary:
    """The single provider account and provider event id a delivery names, when it names one."""

    account_id: str | None = None
    event_id: str | None = None


def summarize(provider: Provider, body: bytes) -> Summary:
    """Summary of a shared-endpoint delivery; empty when the body does not parse (it is still stored)."""
    parser = PARSERS.get(provider) if provider.shared_endpoint else None
    if parser is None:  # per-connection deliveries are keyed by their connection's account instead
        return Summary()
    try:
        changes = parser(body)
    except ParseError:
        return Summary()
    accounts = {change.provider_account_id for change in changes}
    events = {change.event_id for change in changes if change.event_id}
    return Summary(
        account_id=accounts.pop() if len(accounts) == 1 else None,
        event_id=events.pop() if len(events) == 1 and len(changes) == 1 else None,
    )
