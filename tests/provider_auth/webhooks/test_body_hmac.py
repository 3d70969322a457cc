"""BodyHmac: base64 HMAC-SHA256 of the raw body in one header (QuickBooks, Xero).

Neither Intuit nor Xero publishes a test vector, so the vectors here are:
- RFC 4231 (HMAC-SHA256 test cases 1 and 2), the published vectors of the primitive itself;
- provider-shaped bodies signed on an independent path (`hmac`/`hashlib`/`base64` directly).
"""

import base64
import hashlib
import hmac

import pytest
from starlette.datastructures import Headers

from provider_auth.webhooks import BodyHmac, Verdict

# RFC 4231 section 4.2 (test case 1) and 4.3 (test case 2).
JEFE_DATA = b"what do ya want for nothing?"
JEFE_HEX = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
RFC4231_CASES = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", JEFE_DATA, JEFE_HEX),
]

QUICKBOOKS_BODY = (
    b'{"eventNotifications":[{"realmId":"1185883450","dataChangeEvent":{"entities":[{"name":"Customer",'
    b'"id":"1","operation":"Create","lastUpdated":"2015-10-05T14:42:19-0700"}]}}]}'
)
XERO_INTENT_BODY = b'{"events":[],"lastEventSequence":0,"firstEventSequence":0,"entropy":"S0m3r4Nd0mt3xt"}'


def independent_b64(key: bytes, body: bytes) -> str:
    """base64 HMAC-SHA256, computed without the scheme under test."""
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()


@pytest.mark.parametrize(("key", "data", "expected_hex"), RFC4231_CASES)
def test_rfc4231_vectors(key: bytes, data: bytes, expected_hex: str) -> None:
    scheme = BodyHmac.create("x-signature", [key])
    expected = base64.b64encode(bytes.fromhex(expected_hex)).decode()

    assert scheme.sign(data) == expected
    assert scheme.verify(data, {"x-signature": expected}) is Verdict.OK


@pytest.mark.parametrize(
    ("header", "body"),
    [
        ("intuit-signature", QUICKBOOKS_BODY),
        ("x-xero-signature", XERO_INTENT_BODY),
    ],
)
def test_provider_bodies_signed_on_an_independent_path(header: str, body: bytes) -> None:
    key = "a-provider-verifier-token"
    scheme = BodyHmac.create(header, [key])
    signature = independent_b64(key.encode(), body)

    assert scheme.sign(body) == signature
    assert scheme.verify(body, {header: signature}) is Verdict.OK
    assert scheme.verify(body + b" ", {header: signature}) is Verdict.MISMATCH


def test_reads_real_case_insensitive_request_headers() -> None:
    scheme = BodyHmac.create("X-Xero-Signature", ["xero-key"])
    signature = independent_b64(b"xero-key", XERO_INTENT_BODY)
    # Starlette's request headers, built from the names in the case Xero sends them.
    headers = Headers({"X-Xero-Signature": signature, "Content-Type": "application/json"})

    assert scheme.verify(XERO_INTENT_BODY, headers) is Verdict.OK


def test_rotation_accepts_every_active_secret() -> None:
    scheme = BodyHmac.create("intuit-signature", ["old-token", "new-token"])

    for key in (b"old-token", b"new-token"):
        signature = independent_b64(key, QUICKBOOKS_BODY)
        assert scheme.verify(QUICKBOOKS_BODY, {"intuit-signature": signature}) is Verdict.OK
    retired = independent_b64(b"retired-token", QUICKBOOKS_BODY)
    assert scheme.verify(QUICKBOOKS_BODY, {"intuit-signature": retired}) is Verdict.MISMATCH


def test_sign_with_an_explicit_secret_of_the_ring() -> None:
    scheme = BodyHmac.create("x-xero-signature", ["first", "second"])

    assert scheme.sign(XERO_INTENT_BODY, b"second") == independent_b64(b"second", XERO_INTENT_BODY)
    assert scheme.sign(XERO_INTENT_BODY) == independent_b64(b"first", XERO_INTENT_BODY)


def test_wrong_secret_is_a_mismatch() -> None:
    scheme = BodyHmac.create("x-xero-signature", ["right-key"])
    signature = independent_b64(b"wrong-key", XERO_INTENT_BODY)

    assert scheme.verify(XERO_INTENT_BODY, {"x-xero-signature": signature}) is Verdict.MISMATCH


@pytest.mark.parametrize("headers", [{}, {"x-xero-signature": ""}, {"x-other": "abc"}])
def test_missing_header(headers: dict[str, str]) -> None:
    scheme = BodyHmac.create("x-xero-signature", ["key"])

    assert scheme.verify(XERO_INTENT_BODY, headers) is Verdict.MISSING


@pytest.mark.parametrize(
    "value",
    [
        "not base64 at all!",
        "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM",  # padding cut off
        "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=é",
        "W9zBRr9g_U5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=",  # url-safe alphabet
        "sha256=W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=",  # a prefix no provider sends
    ],
)
def test_garbage_is_malformed(value: str) -> None:
    scheme = BodyHmac.create("x-signature", [b"Jefe"])

    assert scheme.verify(JEFE_DATA, {"x-signature": value}) is Verdict.MALFORMED


def test_hex_sent_to_a_base64_scheme_never_passes() -> None:
    # 64 hex digits are also valid base64 (48 bytes), so this is a mismatch, not a parse failure.
    scheme = BodyHmac.create("x-signature", [b"Jefe"])

    assert scheme.verify(JEFE_DATA, {"x-signature": JEFE_HEX}) is Verdict.MISMATCH


def test_surrounding_whitespace_is_tolerated() -> None:
    scheme = BodyHmac.create("intuit-signature", ["token"])
    signature = independent_b64(b"token", QUICKBOOKS_BODY)

    assert scheme.verify(QUICKBOOKS_BODY, {"intuit-signature": f"  {signature}\t"}) is Verdict.OK


def test_header_name_is_lower_cased_on_create() -> None:
    assert BodyHmac.create("Intuit-Signature", ["k"]).header == "intuit-signature"


@pytest.mark.parametrize("lone", ["a-verifier-token", b"a-verifier-token"])
def test_a_lone_secret_is_refused_not_split_into_characters(lone: str | bytes) -> None:
    # Iterating a bare string would make every character a key; bytes would make all-zero keys.
    with pytest.raises(TypeError):
        BodyHmac.create("intuit-signature", lone)  # type: ignore[arg-type]


@pytest.mark.parametrize("ring", [[], [""], ["good", b""]])
def test_empty_ring_or_empty_secret_is_refused(ring: list[str | bytes]) -> None:
    with pytest.raises(ValueError, match="non-empty secret"):
        BodyHmac.create("intuit-signature", ring)
