"""Realistic signed sample deliveries, for `ledgerhook send-sample`, the tests and the benchmarks.

One body builder and one signer per provider, each in the form docs/providers.md describes.
"""

import base64
import os
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import urlencode

import orjson

from provider_auth.webhooks import BodyHmac
from provider_auth.webhooks import freshbooks as freshbooks_scheme
from provider_auth.webhooks import zoho as zoho_scheme
from provider_auth.webhooks.base import hmac_sha256
from provider_auth.webhooks.registry import QUICKBOOKS_SIGNATURE_HEADER, XERO_SIGNATURE_HEADER
from provider_auth.webhooks.standard import decode_secret

# The accounts a sample names when none is given (`ledgerhook send-sample`, the dev banner).
SAMPLE_QUICKBOOKS_REALM = "9341453908000000"
SAMPLE_XERO_TENANT = "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"

QBO_ENTITIES = ["Customer", "Invoice", "Payment", "Bill", "Vendor", "Item", "JournalEntry", "Estimate"]
QBO_OPERATIONS = ["Create", "Update", "Update", "Update", "Delete", "Void", "Emailed"]
XERO_CATEGORIES = ["CONTACT", "INVOICE", "CREDITNOTE"]
ZOHO_ENTITIES = ["invoice", "contact", "bill", "creditnote", "customerpayment"]
FRESHBOOKS_EVENTS = [
    "invoice.create",
    "invoice.update",
    "client.create",
    "client.update",
    "payment.create",
    "expense.create",
    "bill.create",
]
# NetSuite record types as a SuiteScript user event script names them (docs/events.md).
NETSUITE_RECORD_TYPES = ["invoice", "customer", "vendor", "vendorbill", "customerpayment", "journalentry"]
CUSTOM_TYPES = ["invoice", "contact", "payment", "bill"]
STANDARD_OPERATIONS = ["created", "updated", "updated", "deleted"]
SAGE_INTACCT_OBJECTS = ["ARINVOICE", "APBILL", "ARPYMT", "CUSTOMER", "VENDOR", "GLBATCH"]
SAGE_INTACCT_ACTIONS = ["add", "set", "set", "delete"]
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"


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


def zoho_books_event(organization_id: str, rng: random.Random | None = None) -> bytes:
    """A Zoho Books workflow webhook: one record under its entity name, with the organization
    (docs/providers.md, Zoho Books; the shape is unverified there, this follows its example)."""
    rng = rng or random.Random()
    entity = rng.choice(ZOHO_ENTITIES)
    # Zoho writes times in the organization's zone, `-0800` style.
    modified = datetime.now(timezone(timedelta(hours=-8))).strftime("%Y-%m-%dT%H:%M:%S%z")
    number = rng.randint(1, 99999)
    party = _zoho_id(rng)
    amount = round(rng.uniform(20, 5000), 2)
    records: dict[str, dict[str, object]] = {
        "invoice": {
            "invoice_id": _zoho_id(rng),
            "invoice_number": f"INV-{number:06d}",
            "customer_id": party,
            "customer_name": "Bowman & Co",
            "status": rng.choice(["draft", "sent", "paid"]),
            "total": amount,
            "currency_code": "USD",
        },
        "contact": {
            "contact_id": _zoho_id(rng),
            "contact_name": "Bowman & Co",
            "contact_type": rng.choice(["customer", "vendor"]),
            "status": "active",
        },
        "bill": {
            "bill_id": _zoho_id(rng),
            "bill_number": f"BL-{number:05d}",
            "vendor_id": party,
            "status": "open",
            "total": amount,
        },
        "creditnote": {
            "creditnote_id": _zoho_id(rng),
            "creditnote_number": f"CN-{number:05d}",
            "customer_id": party,
            "status": "open",
            "total": amount,
        },
        "customerpayment": {
            "payment_id": _zoho_id(rng),
            "payment_number": str(number),
            "customer_id": party,
            "amount": amount,
        },
    }
    record = records[entity] | {"last_modified_time": modified}
    return orjson.dumps({entity: record, "organization_id": organization_id})


def freshbooks_event(account_id: str, rng: random.Random | None = None) -> bytes:
    """A FreshBooks event: one form-encoded change, no timestamp (docs/providers.md, FreshBooks)."""
    rng = rng or random.Random()
    return urlencode(
        {
            "name": rng.choice(FRESHBOOKS_EVENTS),
            "object_id": str(rng.randint(100_000, 9_999_999)),
            "account_id": account_id,
            "business_id": str(rng.randint(1000, 99999)),
            "identity_id": str(rng.randint(1000, 99999)),
            "user_id": "1",
        }
    ).encode()


def freshbooks_verify(verifier: str, callback_id: str, account_id: str | None = None) -> bytes:
    """The `callback.verify` handshake FreshBooks posts when a callback is registered."""
    fields = {"name": "callback.verify", "object_id": callback_id, "verifier": verifier}
    if account_id is not None:
        fields["account_id"] = account_id
    return urlencode(fields).encode()


def standard_event(account_id: str, netsuite: bool = False, rng: random.Random | None = None) -> bytes:
    """A Ledgerhook standard event, as the NetSuite SuiteScript of docs/events.md posts it (`netsuite`)
    or as a custom source would."""
    rng = rng or random.Random()
    now = datetime.now(UTC)
    record_type = rng.choice(NETSUITE_RECORD_TYPES if netsuite else CUSTOM_TYPES)
    changed = now - timedelta(seconds=rng.randint(0, 60))
    data: dict[str, str] = {
        "id": str(rng.randint(1, 99999)),
        "updated_at": changed.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    if record_type == "contact":
        data["contact_type"] = rng.choice(["customer", "vendor"])
    event: dict[str, object] = {"type": f"{record_type}.{rng.choice(STANDARD_OPERATIONS)}"}
    if not netsuite:
        event["id"] = f"evt_{uuid.UUID(int=rng.getrandbits(128)).hex}"
    event |= {
        "account_id": account_id,
        "timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": data,
    }
    return orjson.dumps(event)


def sage_intacct_event(company_id: str, rng: random.Random | None = None) -> bytes:
    """A Platform Trigger body in the shape docs/providers.md (Sage Intacct) suggests."""
    rng = rng or random.Random()
    modified = datetime.now(UTC) - timedelta(seconds=rng.randint(0, 60))
    return orjson.dumps(
        {
            "object": rng.choice(SAGE_INTACCT_OBJECTS),
            "key": str(rng.randint(1, 99999)),
            "action": rng.choice(SAGE_INTACCT_ACTIONS),
            "companyId": company_id,
            "whenModified": modified.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "idempotencyKey": _uuid(rng),
        }
    )


def signed_zoho(body: bytes, secret_token: str) -> SignedSample:
    """A JSON `body` with the hex `X-Zoho-Webhook-Signature` of its raw bytes."""
    signature = hmac_sha256(secret_token.encode(), body).hex()
    return SignedSample(body, {"content-type": JSON_TYPE, zoho_scheme.HEADER: signature})


def signed_freshbooks(body: bytes, verifier: str) -> SignedSample:
    """A form `body` with the `X-FreshBooks-Hmac-SHA256` FreshBooks computes with the verifier."""
    digest = hmac_sha256(verifier.encode(), freshbooks_scheme.signed_content(body))
    return SignedSample(
        body, {"content-type": FORM_TYPE, freshbooks_scheme.HEADER: base64.b64encode(digest).decode()}
    )


def unsigned_form(body: bytes) -> SignedSample:
    """A form `body` without a signature (the FreshBooks handshake is not signed)."""
    return SignedSample(body, {"content-type": FORM_TYPE})


def signed_standard(
    body: bytes, secret: str, message_id: str | None = None, timestamp: int | None = None
) -> SignedSample:
    """`body` with the Standard Webhooks headers, signed with a `whsec_` secret."""
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac_sha256(decode_secret(secret), f"{message_id}.{stamp}.".encode() + body)
    return SignedSample(
        body,
        {
            "content-type": JSON_TYPE,
            "webhook-id": message_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        },
    )


def signed_bearer(body: bytes, token: str) -> SignedSample:
    """`body` with `Authorization: Bearer <token>`, as Sage Intacct sends it."""
    return SignedSample(body, {"content-type": JSON_TYPE, "authorization": f"Bearer {token}"})


def _zoho_id(rng: random.Random) -> str:
    return f"982000000{rng.randint(0, 999_999):06d}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
