"""StandardWebhooks: `webhook-id`/`webhook-timestamp`/`webhook-signature` over `"<id>.<t>.<body>"`.

The published vector and the scenarios come from the reference library's own suite,
standard-webhooks/standard-webhooks `libraries/python/tests/test_webhooks.py` (`test_sign_function`,
`test_invalid_signature_raises_error`, `test_multi_sig_payload_is_valid`, ...); the same vector is in
svix/svix-webhooks `python/tests/test_webhooks.py`.
"""

import base64
import hashlib
import hmac

import pytest
from starlette.datastructures import Headers

from provider_auth.webhooks import StandardWebhooks, Verdict
from provider_auth.webhooks.standard import decode_secret

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
PAYLOAD = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# The reference suite's "invalid signature": the expected one with its last byte changed.
INVALID = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
OTHER = "Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="


def scheme(*secrets: str, now: float = TIMESTAMP) -> StandardWebhooks:
    """A scheme whose clock stands at `now`."""
    return StandardWebhooks.create(list(secrets) or [SECRET], clock=lambda: now)


def headers(
    signature: str = EXPECTED, msg_id: str = MSG_ID, timestamp: int | str = TIMESTAMP
) -> dict[str, str]:
    """The three Standard Webhooks headers."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def independent_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64>` computed without the scheme under test."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def test_published_sign_vector() -> None:
    assert independent_signature(decode_secret(SECRET), MSG_ID, TIMESTAMP, PAYLOAD) == EXPECTED


def test_published_vector_verifies() -> None:
    assert scheme().verify(PAYLOAD, headers()) is Verdict.OK


def test_published_invalid_signature_is_a_mismatch() -> None:
    assert scheme().verify(PAYLOAD, headers(INVALID)) is Verdict.MISMATCH


def test_published_multi_signature_header() -> None:
    signature = " ".join([f"v1,{OTHER}", f"v2,{OTHER}", EXPECTED, f"v1,{OTHER}"])

    assert scheme().verify(PAYLOAD, headers(signature)) is Verdict.OK


def test_secret_with_and_without_prefix_is_the_same_key() -> None:
    bare = SECRET.removeprefix("whsec_")

    assert decode_secret(bare) == decode_secret(SECRET) == base64.b64decode(bare)
    assert scheme(bare).verify(PAYLOAD, headers()) is Verdict.OK


def test_secret_with_missing_padding() -> None:
    key = bytes(range(1, 24))  # 23 bytes: base64 ends with one "="
    padded = base64.b64encode(key).decode()
    assert padded.endswith("=")
    unpadded = "whsec_" + padded.rstrip("=")

    assert decode_secret(unpadded) == key
    signature = independent_signature(key, MSG_ID, TIMESTAMP, PAYLOAD)
    assert scheme(unpadded).verify(PAYLOAD, headers(signature)) is Verdict.OK


def test_secret_needing_two_padding_characters() -> None:
    key = bytes(range(1, 23))  # 22 bytes: base64 ends with "=="
    assert decode_secret("whsec_" + base64.b64encode(key).decode().rstrip("=")) == key


@pytest.mark.parametrize("secret", ["whsec_", "whsec_!!!!", "whsec_abc_def", "whsec_A"])
def test_unreadable_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="Standard Webhooks secret"):
        StandardWebhooks.create([secret])


def test_empty_ring_and_lone_secret_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        StandardWebhooks.create([])
    with pytest.raises(TypeError):
        StandardWebhooks.create(SECRET)


def test_rotation_accepts_old_and_new_keys() -> None:
    old, new = bytes(range(32)), bytes(range(32, 64))
    ring = scheme(*("whsec_" + base64.b64encode(k).decode() for k in (old, new)))

    for key in (old, new):
        signature = independent_signature(key, MSG_ID, TIMESTAMP, PAYLOAD)
        assert ring.verify(PAYLOAD, headers(signature)) is Verdict.OK
    retired = independent_signature(bytes(range(64, 96)), MSG_ID, TIMESTAMP, PAYLOAD)
    assert ring.verify(PAYLOAD, headers(retired)) is Verdict.MISMATCH


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_missing_header_is_missing(name: str) -> None:
    incomplete = headers()
    del incomplete[name]

    assert scheme().verify(PAYLOAD, incomplete) is Verdict.MISSING
    assert scheme().verify(PAYLOAD, {**incomplete, name: ""}) is Verdict.MISSING


@pytest.mark.parametrize("timestamp", ["hello", "-1614265330", "1614265330.5", " 1614265330", "9" * 20])
def test_invalid_timestamp_is_malformed(timestamp: str) -> None:
    assert scheme().verify(PAYLOAD, headers(timestamp=timestamp)) is Verdict.MALFORMED


def test_tolerance_is_five_minutes_both_ways() -> None:
    assert scheme(now=TIMESTAMP + 300).verify(PAYLOAD, headers()) is Verdict.OK
    assert scheme(now=TIMESTAMP - 300).verify(PAYLOAD, headers()) is Verdict.OK
    assert scheme(now=TIMESTAMP + 301).verify(PAYLOAD, headers()) is Verdict.STALE
    assert scheme(now=TIMESTAMP - 301).verify(PAYLOAD, headers()) is Verdict.STALE


def test_custom_tolerance() -> None:
    strict = StandardWebhooks.create([SECRET], tolerance_seconds=10, clock=lambda: TIMESTAMP + 11)

    assert strict.verify(PAYLOAD, headers()) is Verdict.STALE


@pytest.mark.parametrize(
    "signature",
    [
        EXPECTED.replace("v1,", "v2,"),  # a valid digest under another version
        EXPECTED.replace("v1,", "v1a,"),
        EXPECTED.replace("v1,", "V1,"),
        EXPECTED.replace("v1,", "v1="),
        "v1",
        "v1,not base64!",
        "garbage",
    ],
)
def test_no_readable_v1_entry_is_malformed(signature: str) -> None:
    assert scheme().verify(PAYLOAD, headers(signature)) is Verdict.MALFORMED


def test_unreadable_entries_are_skipped_when_a_valid_one_follows() -> None:
    signature = f"garbage v2,{OTHER} v1,%%% {EXPECTED}"

    assert scheme().verify(PAYLOAD, headers(signature)) is Verdict.OK


def test_repeated_spaces_between_entries() -> None:
    assert scheme().verify(PAYLOAD, headers(f"v1,{OTHER}   {EXPECTED}")) is Verdict.OK


@pytest.mark.parametrize(
    ("body", "msg_id", "timestamp"),
    [
        (b'{"test": 2432232315}', MSG_ID, TIMESTAMP),
        (PAYLOAD, MSG_ID + "x", TIMESTAMP),
        (PAYLOAD, MSG_ID, TIMESTAMP + 1),
    ],
)
def test_body_id_and_timestamp_are_all_signed(body: bytes, msg_id: str, timestamp: int) -> None:
    assert scheme().verify(body, headers(msg_id=msg_id, timestamp=timestamp)) is Verdict.MISMATCH


def test_wrong_secret_is_a_mismatch() -> None:
    other = "whsec_" + base64.b64encode(b"another key entirely").decode()

    assert scheme(other).verify(PAYLOAD, headers()) is Verdict.MISMATCH


def test_reads_real_case_insensitive_request_headers() -> None:
    sent = {"Webhook-Id": MSG_ID, "Webhook-Timestamp": str(TIMESTAMP), "Webhook-Signature": EXPECTED}

    assert scheme().verify(PAYLOAD, Headers(sent)) is Verdict.OK


def test_unencodable_id_is_malformed_not_an_exception() -> None:
    # A str holding a lone surrogate cannot be UTF-8 encoded; verify must still answer.
    assert scheme().verify(PAYLOAD, headers(msg_id="msg_\ud800")) is Verdict.MALFORMED
