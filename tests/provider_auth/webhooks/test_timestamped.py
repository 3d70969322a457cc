"""TimestampedHmac: `Stripe-Signature: t=<unix>,v1=<hex>` over `"<t>.<raw body>"`.

The payload and secret are the fixtures of stripe/stripe-python `tests/test_webhook.py`
(`DUMMY_WEBHOOK_PAYLOAD`, `DUMMY_WEBHOOK_SECRET`). That suite computes its headers at run time, so
the pinned header below was produced by stripe-python 16.1.0's
`WebhookSignature.generate_signature_header(payload, secret, timestamp=1700000000)` and is also
recomputed here with `hmac`/`hashlib` directly. The scenarios mirror that suite's
`TestWebhookSignature` cases.
"""

import hashlib
import hmac

import pytest
from starlette.datastructures import Headers

from provider_auth.webhooks import TimestampedHmac, Verdict

STRIPE_PAYLOAD = b"""{
  "id": "evt_test_webhook",
  "object": "event",
  "data": { "object": { "id": "rdr_123", "object": "terminal.reader" } }
}"""
STRIPE_SECRET = "whsec_test_secret"
T = 1_700_000_000
STRIPE_HEADER = "t=1700000000,v1=3bfab77baf5f7b6991a46c9b53b6547d7afc56148b10468fcad9f35c1992ffbd"


class Clock:
    """A settable clock, so tolerance tests do not depend on the wall clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def scheme(*secrets: str, now: float = T, tolerance: int = 300) -> TimestampedHmac:
    """A Stripe-style scheme at a fixed time."""
    return TimestampedHmac.create(list(secrets), tolerance_seconds=tolerance, clock=Clock(now))


def independent_hex(secret: str, timestamp: int, body: bytes) -> str:
    """hex HMAC-SHA256 of `"<t>.<body>"`, computed without the scheme under test."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def test_pinned_vector_from_stripe_python() -> None:
    assert f"t={T},v1={independent_hex(STRIPE_SECRET, T, STRIPE_PAYLOAD)}" == STRIPE_HEADER
    assert scheme(STRIPE_SECRET).sign(STRIPE_PAYLOAD, T) == STRIPE_HEADER
    assert scheme(STRIPE_SECRET).verify(STRIPE_PAYLOAD, {"stripe-signature": STRIPE_HEADER}) is Verdict.OK


def test_the_secret_is_used_literally_with_its_whsec_prefix() -> None:
    # Stripe keys the HMAC with the UTF-8 bytes of the whole secret, `whsec_` included.
    without_prefix = scheme(STRIPE_SECRET.removeprefix("whsec_"))

    assert without_prefix.verify(STRIPE_PAYLOAD, {"stripe-signature": STRIPE_HEADER}) is Verdict.MISMATCH


def test_header_contains_one_valid_signature_among_others() -> None:
    header = STRIPE_HEADER + ",v1=bad_signature,v1=" + "00" * 32

    assert scheme(STRIPE_SECRET).verify(STRIPE_PAYLOAD, {"stripe-signature": header}) is Verdict.OK


def test_valid_signature_listed_after_a_wrong_one() -> None:
    good = STRIPE_HEADER.split(",")[1]
    header = f"t={T},v1={'ab' * 32},{good}"

    assert scheme(STRIPE_SECRET).verify(STRIPE_PAYLOAD, {"stripe-signature": header}) is Verdict.OK


def test_no_signature_with_the_expected_scheme_is_malformed() -> None:
    v0_only = f"t={T},v0={independent_hex(STRIPE_SECRET, T, STRIPE_PAYLOAD)}"

    assert scheme(STRIPE_SECRET).verify(STRIPE_PAYLOAD, {"stripe-signature": v0_only}) is Verdict.MALFORMED


@pytest.mark.parametrize(
    "header",
    [
        "i'm not even a real signature header",
        "bad_header",
        f"v1={'ab' * 32}",  # no timestamp
        f"t=soon,v1={'ab' * 32}",
        f"t=-5,v1={'ab' * 32}",
        f"t=١٢٣,v1={'ab' * 32}",  # Arabic-Indic digits are digits to str.isdigit, not to Stripe
        f"t={'9' * 40},v1={'ab' * 32}",
        f"t={T},v1=not-hex",
    ],
)
def test_unreadable_header_is_malformed(header: str) -> None:
    assert scheme(STRIPE_SECRET).verify(STRIPE_PAYLOAD, {"stripe-signature": header}) is Verdict.MALFORMED


def test_no_valid_signature_for_payload_is_a_mismatch() -> None:
    header = f"t={T},v1={'ab' * 32}"

    assert scheme(STRIPE_SECRET).verify(STRIPE_PAYLOAD, {"stripe-signature": header}) is Verdict.MISMATCH


def test_wrong_secret_is_a_mismatch() -> None:
    header = f"t={T},v1={independent_hex('whsec_other', T, STRIPE_PAYLOAD)}"

    assert scheme(STRIPE_SECRET).verify(STRIPE_PAYLOAD, {"stripe-signature": header}) is Verdict.MISMATCH


def test_the_timestamp_is_signed() -> None:
    moved = STRIPE_HEADER.replace(f"t={T}", f"t={T + 1}")

    assert scheme(STRIPE_SECRET).verify(STRIPE_PAYLOAD, {"stripe-signature": moved}) is Verdict.MISMATCH


def test_a_changed_body_is_a_mismatch() -> None:
    tampered = STRIPE_PAYLOAD.replace(b"rdr_123", b"rdr_124")

    assert scheme(STRIPE_SECRET).verify(tampered, {"stripe-signature": STRIPE_HEADER}) is Verdict.MISMATCH


@pytest.mark.parametrize("headers", [{}, {"stripe-signature": ""}])
def test_missing_header(headers: dict[str, str]) -> None:
    assert scheme(STRIPE_SECRET).verify(STRIPE_PAYLOAD, headers) is Verdict.MISSING


def test_rotation_accepts_old_and_new_secrets() -> None:
    ring = scheme("whsec_old", "whsec_new")

    for secret in ("whsec_old", "whsec_new"):
        header = f"t={T},v1={independent_hex(secret, T, STRIPE_PAYLOAD)}"
        assert ring.verify(STRIPE_PAYLOAD, {"stripe-signature": header}) is Verdict.OK
    header = f"t={T},v1={independent_hex('whsec_retired', T, STRIPE_PAYLOAD)}"
    assert ring.verify(STRIPE_PAYLOAD, {"stripe-signature": header}) is Verdict.MISMATCH


def test_tolerance_boundary() -> None:
    headers = {"stripe-signature": STRIPE_HEADER}

    assert scheme(STRIPE_SECRET, now=T + 300).verify(STRIPE_PAYLOAD, headers) is Verdict.OK
    assert scheme(STRIPE_SECRET, now=T + 300.5).verify(STRIPE_PAYLOAD, headers) is Verdict.STALE
    assert scheme(STRIPE_SECRET, now=T + 86_400).verify(STRIPE_PAYLOAD, headers) is Verdict.STALE


def test_timestamp_outside_a_custom_tolerance_is_stale() -> None:
    # stripe-python: a header 15 s old with tolerance=10 is refused.
    assert (
        scheme(STRIPE_SECRET, now=T + 15, tolerance=10).verify(
            STRIPE_PAYLOAD, {"stripe-signature": STRIPE_HEADER}
        )
        is Verdict.STALE
    )


def test_a_clock_that_moves_turns_a_delivery_stale() -> None:
    clock = Clock(T)
    moving = TimestampedHmac.create([STRIPE_SECRET], clock=clock)
    headers = {"stripe-signature": STRIPE_HEADER}

    assert moving.verify(STRIPE_PAYLOAD, headers) is Verdict.OK
    clock.now = T + 301
    assert moving.verify(STRIPE_PAYLOAD, headers) is Verdict.STALE


def test_zero_tolerance_disables_the_age_check() -> None:
    # stripe-python: a signature at t=12345 verifies when no tolerance is given.
    header = f"t=12345,v1={independent_hex(STRIPE_SECRET, 12345, STRIPE_PAYLOAD)}"

    assert (
        scheme(STRIPE_SECRET, tolerance=0).verify(STRIPE_PAYLOAD, {"stripe-signature": header}) is Verdict.OK
    )


def test_future_timestamps_are_accepted_as_stripe_does() -> None:
    # Stripe only bounds the age of a signature, not clock skew the other way.
    header = f"t={T + 3600},v1={independent_hex(STRIPE_SECRET, T + 3600, STRIPE_PAYLOAD)}"

    assert scheme(STRIPE_SECRET).verify(STRIPE_PAYLOAD, {"stripe-signature": header}) is Verdict.OK


def test_upper_case_hex_and_spaces_after_commas() -> None:
    signature = independent_hex(STRIPE_SECRET, T, STRIPE_PAYLOAD).upper()

    header = f"t={T}, v1={signature}"
    assert scheme(STRIPE_SECRET).verify(STRIPE_PAYLOAD, {"stripe-signature": header}) is Verdict.OK


def test_custom_header_name_read_case_insensitively() -> None:
    custom = TimestampedHmac.create([STRIPE_SECRET], header="X-Acme-Signature", clock=Clock(T))
    headers = Headers({"X-Acme-Signature": STRIPE_HEADER})

    assert custom.verify(STRIPE_PAYLOAD, headers) is Verdict.OK
    assert custom.verify(STRIPE_PAYLOAD, {"stripe-signature": STRIPE_HEADER}) is Verdict.MISSING


def test_a_lone_secret_is_refused() -> None:
    with pytest.raises(TypeError):
        TimestampedHmac.create(STRIPE_SECRET)
