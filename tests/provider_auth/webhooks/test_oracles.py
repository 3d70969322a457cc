"""Cross-checks against independent implementations, used as oracles.

- `standardwebhooks` (PyPI; the reference Python library of standard-webhooks/standard-webhooks);
- `werkzeug` (PyPI): Flask's `request.form`, exactly what the FreshBooks Python snippet
  (`json.dumps(request.form)`) signs.

What the oracle signs, we accept; what it refuses, we refuse. The oracles read bodies as UTF-8 text,
so bodies here are text.
"""

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
import standardwebhooks
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from provider_auth.webhooks import FreshBooksForm, StandardWebhooks, Verdict
from provider_auth.webhooks.freshbooks import HEADER as FRESHBOOKS_HEADER
from provider_auth.webhooks.freshbooks import signed_content

text = st.text(st.characters(codec="utf-8"), max_size=300)
# Standard Webhooks ids are opaque header tokens (`msg_...`): printable ASCII without spaces.
msg_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
keys = st.binary(min_size=1, max_size=64)


def whsec(key: bytes, padded: bool) -> str:
    """A `whsec_` secret for `key`, with or without base64 padding."""
    encoded = base64.b64encode(key).decode()
    return "whsec_" + (encoded if padded else encoded.rstrip("="))


@settings(max_examples=150)
@given(key=keys, padded=st.booleans(), msg_id=msg_ids, payload=text)
def test_standard_webhooks_matches_the_reference_library(
    key: bytes, padded: bool, msg_id: str, payload: str
) -> None:
    now = int(time.time())  # the reference library checks tolerance against the wall clock
    secret = whsec(key, padded)
    ours = StandardWebhooks.create([secret], clock=lambda: now)
    reference = standardwebhooks.Webhook(secret)
    body = payload.encode()

    signature = reference.sign(msg_id, datetime.fromtimestamp(now, tz=UTC), payload)

    headers = {"webhook-id": msg_id, "webhook-timestamp": str(now), "webhook-signature": signature}
    reference.verify(body, headers, json_parse=False)  # raises when the reference disagrees
    assert ours.verify(body, headers) is Verdict.OK


@given(key=keys, other=keys, msg_id=msg_ids, payload=text)
def test_standard_webhooks_both_refuse_another_key(
    key: bytes, other: bytes, msg_id: str, payload: str
) -> None:
    if key.rstrip(b"\0") == other.rstrip(b"\0"):  # HMAC pads short keys with zeros: same key
        other = bytes([other[0] ^ 1]) + other[1:]
    now = int(time.time())
    signer = standardwebhooks.Webhook(whsec(other, padded=True))
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(now),
        "webhook-signature": signer.sign(msg_id, datetime.fromtimestamp(now, tz=UTC), payload),
    }

    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(whsec(key, padded=True)).verify(payload.encode(), headers, json_parse=False)
    ours = StandardWebhooks.create([whsec(key, padded=True)], clock=lambda: now)
    assert ours.verify(payload.encode(), headers) is Verdict.MISMATCH


def flask_form_json(body: bytes) -> bytes:
    """`json.dumps(request.form)` as Flask computes it for a form-encoded POST of `body`."""
    environ = EnvironBuilder(
        method="POST", data=body, content_type="application/x-www-form-urlencoded"
    ).get_environ()
    return json.dumps(Request(environ).form).encode()


field = st.text(st.characters(codec="utf-8"), max_size=20)


@given(pairs=st.lists(st.tuples(field, field), max_size=8))
def test_freshbooks_signs_what_flask_request_form_renders(pairs: list[tuple[str, str]]) -> None:
    # Pairs, not a dict, so repeated field names occur; Flask keeps the first value, as we must.
    body = urlencode(pairs).encode()

    assert signed_content(body) == flask_form_json(body)


@pytest.mark.parametrize(
    "body",
    [
        b"name=invoice.create&object_id=1234567&account_id=6BApk&business_id=6543&identity_id=1234&user_id=1",
        b"name=a&name=b&note=&flag&x=%2B+%26",
        "organization=Café Ren%C3%A9".encode(),
    ],
)
def test_freshbooks_documented_snippet_accepts_our_signature(body: bytes) -> None:
    verifier = "verifier-code"
    ours = FreshBooksForm.create([verifier])
    # The FreshBooks guide's check, step by step: HMAC of json.dumps(request.form), base64.
    expected = base64.b64encode(
        hmac.new(verifier.encode(), flask_form_json(body), hashlib.sha256).digest()
    ).decode()

    assert ours.verify(body, {FRESHBOOKS_HEADER: expected}) is Verdict.OK
