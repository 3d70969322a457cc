"""Properties every signature scheme must hold, over hostile and arbitrary input.

- `verify` never raises and always answers a Verdict, whatever the body and header strings
  (non-ASCII, lone surrogates, control characters, empty, huge, almost-well-formed);
- what a sender signs on an independent path (`hmac`/`hashlib` directly) always verifies;
- a single changed byte of a body-signed delivery always fails. FreshBooks signs the parsed form,
  not the bytes, so its property is stated on the form instead.
"""

import base64
import hashlib
import hmac
import json
import string
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provider_auth.webhooks import BodyHmac, FreshBooksForm, SignatureScheme, StandardWebhooks, Verdict
from provider_auth.webhooks.freshbooks import HEADER as FRESHBOOKS_HEADER
from provider_auth.webhooks.freshbooks import form_fields, signed_content

NOW = 1_700_000_000
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

SCHEMES: dict[str, SignatureScheme] = {
    "quickbooks": BodyHmac.create("intuit-signature", ["token-a", "token-b"]),
    "standard": StandardWebhooks.create([STANDARD_SECRET], clock=lambda: NOW),
    "freshbooks": FreshBooksForm.create(["verifier"]),
}
HEADER_NAMES = [
    "intuit-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    FRESHBOOKS_HEADER,
]

# Every code point, lone surrogates included (a str can hold them even if HTTP cannot); they are
# rare in the default distribution, so they get a share of their own.
any_char = st.one_of(
    st.characters(codec=None, exclude_categories=()),
    st.characters(codec=None, exclude_categories=()),
    st.characters(codec=None, exclude_categories=()),
    st.characters(codec=None, categories=["Cs"]),
)


def hostile_text(min_size: int = 0, max_size: int = 80) -> st.SearchStrategy[str]:
    """Strings of `any_char`; built from lists because `st.text` never yields lone surrogates."""
    return st.lists(any_char, min_size=min_size, max_size=max_size).map("".join)


huge = st.builds(lambda c, n: c * n, any_char, st.integers(10_000, 300_000))
digits = st.integers(0, 10**20).map(str)
hexish = st.text("0123456789abcdefABCDEF", max_size=70)
b64ish = st.text(string.ascii_letters + string.digits + "+/=", max_size=50)
near_now = st.integers(NOW - 400, NOW + 400).map(str)

# Strings close to each scheme's grammar reach its deeper branches; the rest is noise.
header_value = st.one_of(
    hostile_text(),
    huge,
    st.sampled_from(["", " ", ",", "=", "v1,", "t=", "sha256=", "\x00", "\r\n"]),
    st.builds(lambda t, s: f"t={t},v1={s}", st.one_of(digits, near_now, hostile_text(max_size=12)), hexish),
    st.builds(lambda s: f"sha256={s}", hexish),
    st.lists(
        st.builds(lambda v, s: f"{v},{s}", st.sampled_from(["v1", "v2", "v1a", ""]), b64ish), max_size=4
    ).map(" ".join),
    near_now,
    b64ish,
)
headers_strategy = st.fixed_dictionaries({}, optional={name: header_value for name in HEADER_NAMES})
bodies = st.one_of(st.binary(max_size=300), st.binary(min_size=1, max_size=4).map(lambda b: b * 50_000))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(SCHEMES)), body=bodies, headers=headers_strategy)
def test_verify_never_raises(name: str, body: bytes, headers: dict[str, str]) -> None:
    verdict = SCHEMES[name].verify(body, headers)

    assert isinstance(verdict, Verdict)
    # Random input forging a signature would mean the scheme checks nothing.
    assert verdict is not Verdict.OK


def has_surrogate(value: str) -> bool:
    """True when `value` holds a lone surrogate, which no UTF-8 byte string can carry."""
    return any(0xD800 <= ord(c) <= 0xDFFF for c in value)


@given(
    body=st.binary(max_size=300),
    msg_id=hostile_text(1, 40),
    timestamp=st.integers(NOW - 300, NOW + 300),
    digests=st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=3),
)
def test_standard_webhooks_well_formed_headers_with_any_id(
    body: bytes, msg_id: str, timestamp: int, digests: list[bytes]
) -> None:
    # Fresh timestamp and readable `v1` entries, so every id reaches the signed-content step.
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join("v1," + base64.b64encode(d).decode() for d in digests),
    }

    verdict = SCHEMES["standard"].verify(body, headers)
    assert verdict is (Verdict.MALFORMED if has_surrogate(msg_id) else Verdict.MISMATCH)


secrets = st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=3)
msg_ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
SignedFactory = Callable[[bytes], tuple[SignatureScheme, dict[str, str]]]


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256, computed without the schemes under test."""
    return hmac.new(key, message, hashlib.sha256).digest()


@st.composite
def signed_senders(draw: st.DrawFn) -> SignedFactory:
    """A scheme with random secrets, and a function signing a body as a sender would."""
    ring = draw(secrets)
    key = ring[draw(st.integers(0, len(ring) - 1))]
    if draw(st.sampled_from(["body", "standard"])) == "body":
        body_scheme = BodyHmac.create("x-signature", ring)

        def sign_body(body: bytes) -> tuple[SignatureScheme, dict[str, str]]:
            signature = base64.b64encode(hmac_sha256(key, body)).decode()
            return body_scheme, {"x-signature": signature}

        return sign_body
    timestamp = draw(st.integers(NOW - 300, NOW + 300))
    standard = StandardWebhooks(tuple(ring), clock=lambda: NOW)
    msg_id = draw(msg_ids)

    def sign_standard(body: bytes) -> tuple[SignatureScheme, dict[str, str]]:
        digest = hmac_sha256(key, f"{msg_id}.{timestamp}.".encode() + body)
        return standard, {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        }

    return sign_standard


@given(sender=signed_senders(), body=st.binary(max_size=2000))
def test_what_a_sender_signs_verifies(sender: SignedFactory, body: bytes) -> None:
    scheme, headers = sender(body)

    assert scheme.verify(body, headers) is Verdict.OK


@given(sender=signed_senders(), body=st.binary(min_size=1, max_size=2000), data=st.data())
def test_any_single_byte_change_fails(sender: SignedFactory, body: bytes, data: st.DataObject) -> None:
    scheme, headers = sender(body)
    index = data.draw(st.integers(0, len(body) - 1), label="index")
    flip = data.draw(st.integers(1, 255), label="xor")
    changed = bytearray(body)
    changed[index] ^= flip

    assert scheme.verify(bytes(changed), headers) is Verdict.MISMATCH


@given(sender=signed_senders(), body=st.binary(max_size=200), extra=st.binary(min_size=1, max_size=8))
def test_appending_or_truncating_fails(sender: SignedFactory, body: bytes, extra: bytes) -> None:
    scheme, headers = sender(body)

    assert scheme.verify(body + extra, headers) is Verdict.MISMATCH
    if body:
        assert scheme.verify(body[:-1], headers) is Verdict.MISMATCH


form_text = st.text(st.characters(codec="utf-8"), max_size=20)
forms = st.dictionaries(form_text, form_text, max_size=6)
FRESHBOOKS = FreshBooksForm.create(["verifier"])


def freshbooks_signature(body: bytes) -> str:
    """What FreshBooks sends: base64 HMAC of `json.dumps` of the form, first value per field."""
    form: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        form.setdefault(name, value)
    return base64.b64encode(hmac_sha256(b"verifier", json.dumps(form).encode())).decode()


@given(form=forms)
def test_freshbooks_round_trip(form: dict[str, str]) -> None:
    body = urlencode(form).encode()

    assert form_fields(body) == form
    assert FRESHBOOKS.verify(body, {FRESHBOOKS_HEADER: freshbooks_signature(body)}) is Verdict.OK


@given(form=forms, data=st.data())
def test_freshbooks_any_changed_letter_or_digit_fails(form: dict[str, str], data: st.DataObject) -> None:
    body = urlencode({"name": "invoice.create", **form}).encode()
    signature = freshbooks_signature(body)
    # Letters and digits outside %XX escapes are field content; changing one changes the form.
    in_escape = {i + k for i, byte in enumerate(body) if byte == ord("%") for k in (1, 2)}
    positions = [i for i, byte in enumerate(body) if chr(byte).isalnum() and i not in in_escape]
    index = data.draw(st.sampled_from(positions), label="index")
    replacement = data.draw(
        st.sampled_from(string.ascii_letters + string.digits).filter(lambda c: ord(c) != body[index])
    )
    changed = body[:index] + replacement.encode() + body[index + 1 :]

    assert FRESHBOOKS.verify(changed, {FRESHBOOKS_HEADER: signature}) is Verdict.MISMATCH


@given(body=st.binary(min_size=1, max_size=120), data=st.data())
def test_freshbooks_verdict_follows_the_signed_form(body: bytes, data: st.DataObject) -> None:
    # A byte change that leaves the parsed form as it was (say `+` for a space, or a second value of
    # a repeated field) cannot be detected by this scheme; any change to the form must be.
    signature = freshbooks_signature(body)
    changed = bytearray(body)
    changed[data.draw(st.integers(0, len(changed) - 1))] ^= data.draw(st.integers(1, 255))
    same_form = signed_content(bytes(changed)) == signed_content(body)

    verdict = FRESHBOOKS.verify(bytes(changed), {FRESHBOOKS_HEADER: signature})
    assert verdict is (Verdict.OK if same_form else Verdict.MISMATCH)


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_huge_inputs_are_refused_without_raising(name: str) -> None:
    body = b"&=%" * 400_000
    noise = "v1,=" * 250_000
    headers = dict.fromkeys(HEADER_NAMES, noise) | {"webhook-timestamp": str(NOW)}

    assert SCHEMES[name].verify(body, headers) is Verdict.MALFORMED
