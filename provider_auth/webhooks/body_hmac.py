"""HMAC-SHA256 over the raw body, in one header: QuickBooks, Xero, Shopify and most custom sources.

- QuickBooks Online: `intuit-signature` = base64(HMAC-SHA256(body, verifier token))
  (developer.intuit.com, "Webhooks" > "Validating the notification").
- Xero: `x-xero-signature` = base64(HMAC-SHA256(body, webhook key))
  (developer.xero.com/documentation/guides/webhooks/configuring-your-server).
- Shopify: `x-shopify-hmac-sha256`, base64; GitHub style: `x-hub-signature-256: sha256=<hex>`.
"""

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from provider_auth.webhooks.base import Headers, Verdict, as_secrets, hmac_sha256, matches_any

Encoding = Literal["base64", "hex"]


@dataclass(frozen=True, slots=True)
class BodyHmac:
    """A signature header carrying HMAC-SHA256 of the raw body, base64 or hex, maybe prefixed."""

    header: str
    secrets: tuple[bytes, ...]
    encoding: Encoding = "base64"
    prefix: str = ""

    @classmethod
    def create(
        cls, header: str, secrets: Iterable[str | bytes], encoding: Encoding = "base64", prefix: str = ""
    ) -> "BodyHmac":
        """A scheme reading `header` (any case), checked against every secret of the ring."""
        return cls(header.lower(), as_secrets(secrets), encoding, prefix)

    def sign(self, body: bytes, secret: bytes | None = None) -> str:
        """The header value a sender holding `secret` (default: the first active one) would send."""
        digest = hmac_sha256(secret if secret is not None else self.secrets[0], body)
        encoded = base64.b64encode(digest).decode() if self.encoding == "base64" else digest.hex()
        return self.prefix + encoded

    def verify(self, body: bytes, headers: Headers) -> Verdict:
        """OK when the header matches HMAC-SHA256 of `body` under any active secret."""
        value = headers.get(self.header)
        if not value:
            return Verdict.MISSING
        if not value.startswith(self.prefix):
            return Verdict.MALFORMED
        received = _decode(value[len(self.prefix) :].strip(), self.encoding)
        if received is None:
            return Verdict.MALFORMED
        candidates = (hmac_sha256(secret, body) for secret in self.secrets)
        return Verdict.OK if matches_any(candidates, [received]) else Verdict.MISMATCH


def _decode(value: str, encoding: Encoding) -> bytes | None:
    try:
        if encoding == "hex":
            return bytes.fromhex(value)
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        return None
