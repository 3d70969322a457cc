"""Base64 HMAC-SHA256 of the raw body in one header: the scheme of the shared endpoints.

QuickBooks Online signs with `intuit-signature` and its Verifier Token, Xero with `x-xero-signature`
and its webhook key (docs/providers.md, QuickBooks Online and Xero).
"""

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass

from provider_auth.webhooks.base import Headers, Verdict, as_secrets, hmac_sha256, matches_any


@dataclass(frozen=True, slots=True)
class BodyHmac:
    """A signature header carrying base64 HMAC-SHA256 of the raw body."""

    header: str
    secrets: tuple[bytes, ...]

    @classmethod
    def create(cls, header: str, secrets: Iterable[str | bytes]) -> "BodyHmac":
        """A scheme reading `header` (any case), checked against every secret of the ring."""
        return cls(header.lower(), as_secrets(secrets))

    def sign(self, body: bytes, secret: bytes | None = None) -> str:
        """The header value a sender holding `secret` (default: the first active one) would send."""
        digest = hmac_sha256(secret if secret is not None else self.secrets[0], body)
        return base64.b64encode(digest).decode()

    def verify(self, body: bytes, headers: Headers) -> Verdict:
        """OK when the header matches HMAC-SHA256 of `body` under any active secret."""
        value = headers.get(self.header)
        if not value:
            return Verdict.MISSING
        try:
            received = base64.b64decode(value.strip().encode("ascii"), validate=True)
        except (ValueError, binascii.Error, UnicodeEncodeError):
            return Verdict.MALFORMED
        candidates = (hmac_sha256(secret, body) for secret in self.secrets)
        return Verdict.OK if matches_any(candidates, [received]) else Verdict.MISMATCH
