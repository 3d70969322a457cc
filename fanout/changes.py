"""What a provider payload says, before any routing: typed changes, one per record touched."""

from dataclasses import dataclass, field
from datetime import datetime


class ParseError(ValueError):
    """The payload cannot be read as the provider's format; the reason is safe to log."""


@dataclass(frozen=True, slots=True)
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
