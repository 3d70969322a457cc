"""Realistic signed sample deliveries, for `ledgerhook send-sample`, the tests and the benchmarks."""

import os
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from provider_auth.webhooks import BodyHmac
from provider_auth.webhooks.registry import QUICKBOOKS_SIGNATURE_HEADER, XERO_SIGNATURE_HEADER

QBO_ENTITIES = ["Customer", "Invoice", "Payment", "Bill", "Vendor", "Item", "JournalEntry", "Estimate"]
QBO_OPERATIONS = ["Create", "Update", "Update", "Update", "Delete", "Void", "Emailed"]
XERO_CATEGORIES = ["CONTACT", "INVOICE", "CREDITNOTE"]


@dataclass(frozen=True)
class SignedSample:
    """A body and the headers a provider would send with it."""

    body: bytes
    headers: dict[str, str]


def quickbooks_cloudevents(realm: str, count: int = 6, rng: random.Random | None = None) -> bytes:
    """A QuickBooks CloudEvents batch (the format every app uses since the 2026 migration)."""
    rng = rng or random.Random()
    now = datetime.now(UTC)
    events = []
    for _ in range(count):
        entity = rng.choice(QBO_ENTITIES)
        operation = {
            "Create": "created",
            "Update": "updated",
            "Delete": "deleted",
            "Void": "voided",
            "Emailed": "emailed",
        }[rng.choice(QBO_OPERATIONS)]
        events.append(
            {
                "specversion": "1.0",
                "id": os.urandom(16).hex(),
                "source": f"intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58gtT3QKRxeH3d7W8/{realm}",
                "type": f"qbo.{entity.lower()}.{operation}.v1",
                "datacontenttype": "application/json",
                "time": (now - timedelta(seconds=rng.randint(0, 60)))
                .isoformat(timespec="microseconds")
                .replace("+00:00", "Z"),
                "intuitentityid": str(rng.randint(1, 99999)),
                "intuitaccountid": realm,
                "data": {},
            }
        )
    return orjson.dumps(events)


def quickbooks_legacy(realm: str, count: int = 6, rng: random.Random | None = None) -> bytes:
    """A legacy `eventNotifications` QuickBooks delivery."""
    rng = rng or random.Random()
    now = datetime.now(UTC)
    entities = [
        {
            "name": rng.choice(QBO_ENTITIES),
            "id": str(rng.randint(1, 99999)),
            "operation": rng.choice(QBO_OPERATIONS),
            "lastUpdated": (now - timedelta(seconds=rng.randint(0, 60))).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        }
        for _ in range(count)
    ]
    return orjson.dumps(
        {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": entities}}]}
    )


def xero_events(tenant_id: str, count: int = 3, rng: random.Random | None = None) -> bytes:
    """A Xero delivery with `count` events for one organisation."""
    rng = rng or random.Random()
    now = datetime.now(UTC)
    events = []
    for _ in range(count):
        category = rng.choice(XERO_CATEGORIES)
        resource = str(_uuid(rng))
        path = {"CONTACT": "Contacts", "INVOICE": "Invoices", "CREDITNOTE": "CreditNotes"}[category]
        events.append(
            {
                "resourceUrl": f"https://api.xero.com/api.xro/2.0/{path}/{resource}",
                "resourceId": resource,
                "eventDateUtc": now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
                "eventType": rng.choice(["CREATE", "UPDATE"]),
                "eventCategory": category,
                "tenantId": tenant_id,
                "tenantType": "ORGANISATION",
            }
        )
    sequence = rng.randint(1, 10_000)
    return orjson.dumps(
        {
            "events": events,
            "firstEventSequence": sequence,
            "lastEventSequence": sequence + count - 1,
            "entropy": os.urandom(10).hex().upper(),
        }
    )


def xero_intent_to_receive() -> bytes:
    """The empty delivery Xero sends when a subscription is created or re-enabled."""
    return orjson.dumps(
        {
            "events": [],
            "lastEventSequence": 0,
            "firstEventSequence": 0,
            "entropy": os.urandom(10).hex().upper(),
        }
    )


def signed_quickbooks(body: bytes, verifier_token: str) -> SignedSample:
    """`body` with the `intuit-signature` QuickBooks would send."""
    signature = BodyHmac.create(QUICKBOOKS_SIGNATURE_HEADER, [verifier_token]).sign(body)
    return SignedSample(
        body,
        {
            "content-type": "application/cloudevents+json" if body[:1] == b"[" else "application/json",
            QUICKBOOKS_SIGNATURE_HEADER: signature,
        },
    )


def signed_xero(body: bytes, webhook_key: str) -> SignedSample:
    """`body` with the `x-xero-signature` Xero would send."""
    signature = BodyHmac.create(XERO_SIGNATURE_HEADER, [webhook_key]).sign(body)
    return SignedSample(body, {"content-type": "application/json", XERO_SIGNATURE_HEADER: signature})


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
