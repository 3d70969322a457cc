"""Zoho webhooks: `X-Zoho-Webhook-Signature`, HMAC-SHA256 keyed by the webhook's secret token.

Zoho documents no signature for Books webhooks; this is Zoho Billing's scheme (sorted `keyvalue`
pairs of a form body, then the raw JSON), kept tolerant so that being wrong about a detail is cheap
(docs/providers.md, Zoho Books):

- the digest is accepted hex-encoded (either case) or base64, with or without a `sha256=` prefix;
- a form body is checked both as sorted decoded pairs and as raw bytes, a JSON body as raw bytes;
- the `t=<unix ms>,v=<hex>` form of Zoho Payments (HMAC of `"<t>.<raw body>"`) is accepted within
  a five-minute tolerance.

Zoho also signs the webhook's configured query parameters; the gateway passes none, so connection
URLs are registered in Zoho without extra query parameters.
"""

import base64
import binascii
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from provider_auth.webhooks.base import Headers, Verdict, as_secrets, hmac_sha256, matches_any

HEADER = "x-zoho-webhook-signature"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def sorted_pairs(pairs: Iterable[tuple[str, str]]) -> str:
    """`keyvalue` for every pair, sorted by key (stable for repeated keys), joined with nothing."""
    return "".join(key + value for key, value in sorted(pairs, key=lambda pair: pair[0]))


def signed_contents(body: bytes, content_type: str | None) -> list[bytes]:
    """Every reading of the delivery Zoho may have signed, most likely first."""
    contents = []
    is_form = (content_type or "").split(";")[0].strip().lower() == FORM_CONTENT_TYPE
    if is_form:
        try:
            fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            fields = None
        if fields is not None:
            contents.append(sorted_pairs(fields).encode())
    contents.append(body)  # the raw JSON payload
    return contents


@dataclass(frozen=True, slots=True)
class ZohoWebhookSignature:
    """The Zoho Billing scheme, checked against every active secret token."""

    secrets: tuple[bytes, ...]
    tolerance_seconds: int = 300
    clock: Callable[[], float] = field(default=time.time, compare=False)

    @classmethod
    def create(
        cls,
        secrets: Iterable[str | bytes],
        tolerance_seconds: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> "ZohoWebhookSignature":
        """A scheme checked against every secret token of the ring."""
        return cls(as_secrets(secrets), tolerance_seconds, clock)

    def verify(self, body: bytes, headers: Headers) -> Verdict:
        """OK when the header matches the delivery under any active secret token."""
        value = headers.get(HEADER)
        if not value or not value.strip():
            return Verdict.MISSING
        value = value.strip()
        if "v=" in value and "t=" in value:
            return self._verify_timestamped(body, value)
        received = _decode_digest(value)
        if received is None:
            return Verdict.MALFORMED
        contents = signed_contents(body, headers.get("content-type"))
        candidates = [hmac_sha256(secret, content) for secret in self.secrets for content in contents]
        return Verdict.OK if matches_any(candidates, [received]) else Verdict.MISMATCH

    def _verify_timestamped(self, body: bytes, value: str) -> Verdict:
        parts = dict(item.strip().partition("=")[::2] for item in value.split(","))
        raw_time, digest = parts.get("t", ""), parts.get("v", "").replace(" ", "")
        if not (raw_time.isascii() and raw_time.isdigit() and len(raw_time) < 17):
            return Verdict.MALFORMED
        received = _decode_digest(digest)
        if received is None:
            return Verdict.MALFORMED
        stamp = int(raw_time)
        seconds = stamp / 1000 if stamp > 10**11 else stamp  # Zoho Payments sends milliseconds
        if abs(self.clock() - seconds) > self.tolerance_seconds:
            return Verdict.STALE
        content = raw_time.encode() + b"." + body
        candidates = (hmac_sha256(secret, content) for secret in self.secrets)
        return Verdict.OK if matches_any(candidates, [received]) else Verdict.MISMATCH


def _decode_digest(value: str) -> bytes | None:
    """A 32-byte digest from hex or base64 text, with an optional `sha256=` prefix; else None."""
    text = value.strip()
    if text[:7].lower() == "sha256=":
        text = text[7:]
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        digest = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    return digest if len(digest) == 32 else None
