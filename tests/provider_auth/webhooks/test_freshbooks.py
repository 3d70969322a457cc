"""FreshBooksForm: base64 HMAC-SHA256 of `json.dumps` of the posted form fields.

FreshBooks publishes no signed test vector. Its scheme is documented as a Python snippet in the
FreshBooks Python SDK's webhook guide (freshbooks/freshbooks-python-sdk
`docs/source/user_guide/webhooks.md`): `json.dumps(request.form)` keyed with the verifier code, then
base64. The expectations below are therefore written out by hand as the JSON text that snippet
produces (default separators, ASCII escaping, fields in the order sent, first value of a repeated
field as Flask's `request.form` gives it), and the HMAC is computed with `hmac`/`hashlib` directly.
"""

import base64
import hashlib
import hmac

import pytest

from provider_auth.webhooks import FreshBooksForm, Verdict
from provider_auth.webhooks.freshbooks import HEADER, form_fields, signed_content

VERIFIER = "verifier-code-from-callback-verify"
# The event body of the SDK guide (with the `&` its example lost before `user_id`).
EVENT = b"name=invoice.create&object_id=1234567&account_id=6BApk&business_id=6543&identity_id=1234&user_id=1"
EVENT_JSON = (
    b'{"name": "invoice.create", "object_id": "1234567", "account_id": "6BApk", '
    b'"business_id": "6543", "identity_id": "1234", "user_id": "1"}'
)


def independent_signature(verifier: str, json_text: bytes) -> str:
    """What FreshBooks sends for a form whose `json.dumps` is `json_text`."""
    return base64.b64encode(hmac.new(verifier.encode(), json_text, hashlib.sha256).digest()).decode()


def scheme(*verifiers: str) -> FreshBooksForm:
    """The scheme with the given verifiers (default: the one test verifier)."""
    return FreshBooksForm.create(list(verifiers) or [VERIFIER])


def test_documented_event_body() -> None:
    assert signed_content(EVENT) == EVENT_JSON
    signature = independent_signature(VERIFIER, EVENT_JSON)

    assert scheme().verify(EVENT, {HEADER: signature}) is Verdict.OK


@pytest.mark.parametrize(
    ("body", "json_text"),
    [
        # several fields, kept in the order sent (not sorted)
        (
            b"object_id=9&name=payment.create&account_id=xZ1",
            b'{"object_id": "9", "name": "payment.create", "account_id": "xZ1"}',
        ),
        # a repeated field: the first value wins, at the position it first appeared
        (
            b"name=invoice.update&object_id=1&name=invoice.delete",
            b'{"name": "invoice.update", "object_id": "1"}',
        ),
        # blank values, and a field without "=", are kept as empty strings
        (b"name=client.create&note=&flag", b'{"name": "client.create", "note": "", "flag": ""}'),
        # percent-encoded UTF-8 and `+` as space; json.dumps escapes non-ASCII as \uXXXX
        (
            b"organization=Caf%C3%A9+Ren%C3%A9&amount=%E2%82%AC5",
            b'{"organization": "Caf\\u00e9 Ren\\u00e9", "amount": "\\u20ac5"}',
        ),
        # raw (unencoded) UTF-8 in the body decodes the same way
        ("organization=Café".encode(), b'{"organization": "Caf\\u00e9"}'),
        # characters outside the BMP become surrogate pairs, as json.dumps writes them
        (b"memo=%F0%9F%93%92", b'{"memo": "\\ud83d\\udcd2"}'),
        # quotes, backslashes and control characters are JSON-escaped
        (b"memo=say+%22hi%22+%5C+%0A", b'{"memo": "say \\"hi\\" \\\\ \\n"}'),
        # empty body and stray separators
        (b"", b"{}"),
        (b"&&name=x&&", b'{"name": "x"}'),
    ],
)
def test_signed_content(body: bytes, json_text: bytes) -> None:
    assert signed_content(body) == json_text
    assert scheme().verify(body, {HEADER: independent_signature(VERIFIER, json_text)}) is Verdict.OK


def test_form_fields_first_value_wins() -> None:
    assert form_fields(b"a=1&b=2&a=3") == {"a": "1", "b": "2"}
    assert list(form_fields(b"b=2&a=1")) == ["b", "a"]


def test_a_signature_over_the_last_value_of_a_repeated_field_is_refused() -> None:
    body = b"name=invoice.create&object_id=1&object_id=2"
    last_wins = independent_signature(VERIFIER, b'{"name": "invoice.create", "object_id": "2"}')

    assert scheme().verify(body, {HEADER: last_wins}) is Verdict.MISMATCH


def test_a_changed_field_is_a_mismatch() -> None:
    signature = independent_signature(VERIFIER, EVENT_JSON)

    assert scheme().verify(EVENT.replace(b"1234567", b"1234568"), {HEADER: signature}) is Verdict.MISMATCH
    assert scheme().verify(EVENT + b"&extra=1", {HEADER: signature}) is Verdict.MISMATCH


def test_rotation_accepts_old_and_new_verifiers() -> None:
    ring = scheme("old-verifier", "new-verifier")

    for verifier in ("old-verifier", "new-verifier"):
        assert ring.verify(EVENT, {HEADER: independent_signature(verifier, EVENT_JSON)}) is Verdict.OK
    retired = independent_signature("retired-verifier", EVENT_JSON)
    assert ring.verify(EVENT, {HEADER: retired}) is Verdict.MISMATCH


def test_wrong_verifier_is_a_mismatch() -> None:
    signature = independent_signature("another-verifier", EVENT_JSON)

    assert scheme().verify(EVENT, {HEADER: signature}) is Verdict.MISMATCH


def test_signature_of_the_raw_body_is_a_mismatch() -> None:
    # FreshBooks signs the JSON rendering, never the form bytes themselves.
    raw_signature = base64.b64encode(hmac.new(VERIFIER.encode(), EVENT, hashlib.sha256).digest()).decode()

    assert scheme().verify(EVENT, {HEADER: raw_signature}) is Verdict.MISMATCH


@pytest.mark.parametrize("headers", [{}, {HEADER: ""}, {"x-freshbooks-hmac-sha1": "abc"}])
def test_missing_header(headers: dict[str, str]) -> None:
    assert scheme().verify(EVENT, headers) is Verdict.MISSING


@pytest.mark.parametrize(
    "value",
    [
        "not base64!",
        "abc",
        "é" * 44,
        independent_signature(VERIFIER, EVENT_JSON).rstrip("="),  # right digest, padding cut off
        "sha256=" + independent_signature(VERIFIER, EVENT_JSON),
    ],
)
def test_garbage_header_is_malformed(value: str) -> None:
    assert scheme().verify(EVENT, {HEADER: value}) is Verdict.MALFORMED


def test_surrounding_whitespace_is_tolerated() -> None:
    signature = independent_signature(VERIFIER, EVENT_JSON)

    assert scheme().verify(EVENT, {HEADER: f" {signature} "}) is Verdict.OK


def test_a_lone_verifier_is_refused() -> None:
    with pytest.raises(TypeError):
        FreshBooksForm.create(VERIFIER)
