"""FreshBooks golden form deliveries (docs/providers.md, FreshBooks), and the verify handshake."""

import base64
import hashlib
import hmac
import json
from urllib.parse import parse_qsl, urlencode

import pytest

from fanout.changes import CONNECTION_ACCOUNT, ParseError, ProviderChange
from fanout.parsers import PARSERS, freshbooks
from fanout.vocabulary import normalize
from provider_auth.providers import Provider
from provider_auth.webhooks import Verdict
from provider_auth.webhooks.freshbooks import FreshBooksForm

EVENT = b"name=invoice.create&object_id=1234567&account_id=6BApk&business_id=6543&identity_id=1234&user_id=1"
VERIFY = b"name=callback.verify&object_id=2001&verifier=scADVVi5QuKuj5qTjVkbJNYQe7V7USpGd"


def test_freshbooks_is_registered() -> None:
    assert PARSERS[Provider.FRESHBOOKS] is freshbooks.parse


def test_event_reads_entity_operation_record_and_account() -> None:
    assert freshbooks.parse(EVENT) == [
        ProviderChange(
            provider_account_id="6BApk",
            entity="invoice",
            entity_id="1234567",
            operation="create",
            occurred_at=None,
            attributes={"business_id": "6543", "identity_id": "1234", "user_id": "1"},
        )
    ]


@pytest.mark.parametrize(
    ("name", "entity", "operation", "contact_type"),
    [
        ("invoice.create", "invoice", "created", None),
        ("invoice.sendByEmail", "invoice", "emailed", None),
        ("payment.update", "payment", "updated", None),
        ("client.delete", "contact", "deleted", "customer"),
        ("bill_vendor.create", "contact", "created", "vendor"),
        ("bill_payment.update", "payment", "updated", None),
        ("expense.update", "expense", "updated", None),
        ("bill.delete", "bill", "deleted", None),
        ("credit_note.create", "credit_note", "created", None),
        ("item.update", "item", "updated", None),
        ("tax.delete", "tax_rate", "deleted", None),
        ("time_entry.create", "time_entry", "created", None),
        ("estimate.accept", "estimate", "accept", None),
    ],
)
def test_event_names_normalize(name: str, entity: str, operation: str, contact_type: str | None) -> None:
    body = urlencode({"name": name, "object_id": "42", "account_id": "6BApk"}).encode()
    normalized = normalize(Provider.FRESHBOOKS, freshbooks.parse(body)[0])
    assert (normalized.entity, normalized.operation, normalized.contact_type) == (
        entity,
        operation,
        contact_type,
    )
    assert normalized.provider_entity == name.split(".")[0]
    assert normalized.entity_id == "42"


def test_verify_handshake_is_no_change_and_yields_its_code() -> None:
    assert freshbooks.parse(VERIFY) == []
    assert freshbooks.verification_code(VERIFY) == "scADVVi5QuKuj5qTjVkbJNYQe7V7USpGd"
    assert freshbooks.callback_verification(VERIFY) == freshbooks.CallbackVerification(
        callback_id="2001", verifier="scADVVi5QuKuj5qTjVkbJNYQe7V7USpGd"
    )


def test_the_code_signs_later_deliveries() -> None:
    # The verifier the helper returns is the key FreshBooks signs events with.
    code = freshbooks.verification_code(VERIFY)
    assert code is not None
    signed = json.dumps(dict(parse_qsl(EVENT.decode()))).encode()
    signature = base64.b64encode(hmac.new(code.encode(), signed, hashlib.sha256).digest()).decode()
    scheme = FreshBooksForm.create([code])
    assert scheme.verify(EVENT, {"x-freshbooks-hmac-sha256": signature}) is Verdict.OK


@pytest.mark.parametrize(
    "body",
    [EVENT, b"", b"name=callback.verify&object_id=1", b"name=callback.verify&verifier=", b"\xff\xfe", b"{}"],
)
def test_no_code_outside_a_verify_handshake(body: bytes) -> None:
    assert freshbooks.verification_code(body) is None


def test_first_value_of_a_repeated_field_counts() -> None:
    body = b"name=payment.create&name=invoice.delete&object_id=7&object_id=8&account_id=A"
    change = freshbooks.parse(body)[0]
    assert (change.entity, change.operation, change.entity_id) == ("payment", "create", "7")


def test_event_without_account_belongs_to_its_connection() -> None:
    change = freshbooks.parse(b"name=client.update&object_id=99")[0]
    assert change.provider_account_id == CONNECTION_ACCOUNT


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"object_id=1&account_id=A",
        b"name=invoice&object_id=1",
        b"name=.create&object_id=1",
        b"name=invoice.&object_id=1",
        b"name=invoice.create&account_id=A",
        b"name=invoice.create&object_id=%20",
        b"name=invoice.create&object_id=%FF",
        b"name=invoice.create&object_id=\xff",
    ],
)
def test_malformed_deliveries_raise_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError):
        freshbooks.parse(body)
