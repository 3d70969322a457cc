"""FreshBooks webhooks: `X-FreshBooks-Hmac-SHA256` over a JSON rendering of the form fields.

FreshBooks signs `json.dumps` of the posted form (Python's default separators and ASCII escaping,
fields in the order sent, the first value of a repeated field) with the callback's verifier code
(docs/providers.md, FreshBooks).
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
