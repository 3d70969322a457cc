"""A verified delivery as it is stored on the raw topic: the body unchanged plus a few headers."""

from dataclasses import dataclass
from datetime import UTC, datetime

# Raw-topic header names live with their reader (fanout.raw) so both sides share one definition;
# re-exported here (`as`: explicit re-export) for the ingress and its tests.
from fanout.raw import H_CONNECTION_ID as H_CONNECTION_ID
from fanout.raw import H_CONTENT_TYPE as H_CONTENT_TYPE
from fanout.raw import H_DELIVERY_ID as H_DELIVERY_ID
from fanout.raw import H_PROVIDER as H_PROVIDER
from fanout.raw import H_PROVIDER_EVENT_ID as H_PROVIDER_EVENT_ID
from fanout.raw import H_RECEIVED_AT as H_RECEIVED_AT
from fanout.timestamps import format_timestamp
from provider_auth.ids import uuid7

# The answer header that tells the sender the id its delivery is stored under.
DELIVERY_ID_HEADER = "x-ledgerhook-delivery-id"


def new_delivery_id() -> str:
    """A UUIDv7, so delivery ids sort by arrival."""
    return uuid7()


@dataclass(frozen=True, slots=True)
class RawDelivery:
    """One verified webhook delivery, ready for the raw topic."""

    delivery_id: str
    provider: str
    body: bytes
    received_at: datetime
    content_type: str | None = None
    connection_id: str | None = None
    provider_event_id: str | None = None
    account_key: str | None = None  # the provider account, when the delivery names exactly one

    @property
    def key(self) -> bytes:
        """Partition key: the provider account keeps one account's deliveries in order."""
        return (self.account_key or self.delivery_id).encode()

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka record headers; only the ones with a value."""
        pairs = [
            (H_DELIVERY_ID, self.delivery_id),
            (H_PROVIDER, self.provider),
            (H_RECEIVED_AT, format_timestamp(self.received_at)),
            (H_CONTENT_TYPE, self.content_type),
            (H_CONNECTION_ID, self.connection_id),
            (H_PROVIDER_EVENT_ID, self.provider_event_id),
        ]
        return [(name, value.encode()) for name, value in pairs if value]


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)
