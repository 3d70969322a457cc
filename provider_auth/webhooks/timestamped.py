"""Stripe-style signatures: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`.

The signed content is `"<t>.<raw body>"`, hex HMAC-SHA256 with the secret taken as literal UTF-8
bytes (`whsec_` prefix included); any `v1` entry may match; a timestamp older than the tolerance
(300 s by default) is refused (stripe.com/docs/webhooks/signatures, and `WebhookSignature` in
stripe-python).
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from provider_auth.webhooks.base import Headers, Verdict, as_secrets, hmac_sha256, matches_any


@dataclass(frozen=True, slots=True)
class TimestampedHmac:
    """A `t=...,v1=...` signature header over `"<t>.<body>"`, checked with a replay tolerance."""

    secrets: tuple[bytes, ...]
    header: str = "stripe-signature"
    scheme: str = "v1"
    tolerance_seconds: int = 300
    clock: Callable[[], float] = field(default=time.time, compare=False)

    @classmethod
    def create(
        cls,
        secrets: Iterable[str | bytes],
        header: str = "stripe-signature",
        tolerance_seconds: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> "TimestampedHmac":
        """A scheme reading `header`, checked against every secret of the ring."""
        return cls(as_secrets(secrets), header.lower(), "v1", tolerance_seconds, clock)

    def sign(self, body: bytes, timestamp: int, secret: bytes | None = None) -> str:
        """The header value a sender would send at `timestamp`."""
        key = secret if secret is not None else self.secrets[0]
        return f"t={timestamp},{self.scheme}={hmac_sha256(key, _signed(timestamp, body)).hex()}"

    def verify(self, body: bytes, headers: Headers) -> Verdict:
        """OK when a `v1` entry matches under any secret and the timestamp is recent enough."""
        value = headers.get(self.header)
        if not value:
            return Verdict.MISSING
        timestamp: int | None = None
        received: list[bytes] = []
        for item in value.split(","):
            key, sep, raw = item.strip().partition("=")
            if not sep:
                continue
            if key == "t":
                timestamp = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 16 else None
            elif key == self.scheme:
                try:
                    received.append(bytes.fromhex(raw))
                except ValueError:
                    continue
        if timestamp is None or not received:
            return Verdict.MALFORMED
        if self.tolerance_seconds and timestamp < self.clock() - self.tolerance_seconds:
            return Verdict.STALE
        candidates = (hmac_sha256(secret, _signed(timestamp, body)) for secret in self.secrets)
        return Verdict.OK if matches_any(candidates, received) else Verdict.MISMATCH


def _signed(timestamp: int, body: bytes) -> bytes:
    return str(timestamp).encode() + b"." + body
