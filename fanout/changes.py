"""What a provider payload says, before any routing: typed changes, one per record touched."""

from dataclasses import dataclass, field
from datetime import datetime


class ParseError(ValueError):
    """The payload cannot be read as the provider's format; the reason is safe to log."""


# Values, never mutated; not `frozen` because a frozen dataclass's __init__ costs about three times
# as much, and the fan-out worker builds several of these per change.
@dataclass(slots=True)
class ProviderChange:
    """One change to one record, as the provider reported it (names and operations as sent)."""

    provider_account_id: str
    entity: str
    entity_id: str
    operation: str
    occurred_at: datetime | None
    event_id: str | None = None
    # QuickBooks Merge: the record merged away (`deletedId`); `entity_id` is the one kept.
    merged_away_id: str | None = None
    # Provider extras worth keeping (Xero credit note type and status, for example).
    attributes: dict[str, str] = field(default_factory=dict)


# The `provider_account_id` of a change whose payload does not name its provider account (a Zoho
# Books webhook without `organization_id`, a custom sender without `account_id`). Such payloads only
# arrive on per-connection endpoints, which are routed by their connection id: the connection is the
# account. A fixed sentinel rather than "" so that "not named" can never pass for a real, empty id.
CONNECTION_ACCOUNT = "@connection"


@dataclass(slots=True)  # not frozen, like ProviderChange
class NormalizedChange:
    """One change in Ledgerhook's unified vocabulary (`fanout.vocabulary.normalize` builds it)."""

    provider_account_id: str
    # Unified snake_case entity (contact, invoice, credit_note, ...); unknown ones keep their own name.
    entity: str
    # The entity name exactly as the provider sent it (`Customer`, `CREDITNOTE`, `bill_vendor`).
    provider_entity: str
    entity_id: str
    # created, updated, deleted, merged, voided, emailed; any other provider operation in snake_case.
    operation: str
    occurred_at: datetime | None
    event_id: str | None = None
    # For `merged`: `entity_id` is the record that disappeared and `merged_into` the one kept.
    merged_into: str | None = None
    # 'customer' or 'vendor' for contacts when the provider says which.
    contact_type: str | None = None
    # Provider extras carried over from the ProviderChange.
    attributes: dict[str, str] = field(default_factory=dict)
