"""FreshBooks webhooks: `X-FreshBooks-Hmac-SHA256` over a JSON rendering of the form fields.

FreshBooks posts form-encoded events (`name=invoice.create&object_id=...&account_id=...`) and signs
`json.dumps(form)` (Python's default separators and ASCII escaping, fields in the order sent, the
first value of a repeated field), base64 HMAC-SHA256 keyed by the callback's verifier code
(freshbooks.com/api/webhooks, and the FreshBooks Python SDK's webhook guide).
"""

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from provider_auth.webhooks.base import Headers, Verdict, as_secrets, hmac_sha256, matches_any

HEADER = "x-freshbooks-hmac-sha256"


def form_fields(body: bytes) -> dict[str, str]:
    """The form fields of a FreshBooks delivery, first value per name, in the order sent."""
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, value)
    return fields


def signed_content(body: bytes) -> bytes:
    """The bytes FreshBooks signs for a form body."""
    return json.dumps(form_fields(body)).encode()


@dataclass(frozen=True, slots=True)
class FreshBooksForm:
    """The FreshBooks scheme, with every active verifier code of the callback."""

    secrets: tuple[bytes, ...]

    @classmethod
    def create(cls, verifiers: Iterable[str | bytes]) -> "FreshBooksForm":
        """A scheme checked against every verifier of the ring."""
        return cls(as_secrets(verifiers))

    def sign(self, body: bytes, secret: bytes | None = None) -> str:
        """The header value FreshBooks would send for `body`."""
        digest = hmac_sha256(secret if secret is not None else self.secrets[0], signed_content(body))
        return base64.b64encode(digest).decode()

    def verify(self, body: bytes, headers: Headers) -> Verdict:
        """OK when the header matches the signed form under any active verifier."""
        value = headers.get(HEADER)
        if not value:
            return Verdict.MISSING
        try:
            received = base64.b64decode(value.strip().encode("ascii"), validate=True)
        except (ValueError, binascii.Error, UnicodeEncodeError):
            return Verdict.MALFORMED
        content = signed_content(body)
        candidates = (hmac_sha256(s, content) for s in self.secrets)
        return Verdict.OK if matches_any(candidates, [received]) else Verdict.MISMATCH
