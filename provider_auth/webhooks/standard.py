"""Standard Webhooks: the scheme of NetSuite senders and custom sources.

`webhook-signature` holds `v1,<base64>` entries of HMAC-SHA256 over
`"<webhook-id>.<webhook-timestamp>.<raw body>"`; secrets are `whsec_` + base64 of the key;
timestamps more than 5 minutes off are refused (docs/providers.md, Generic sources).
"""

import base64
import binascii
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from provider_auth.webhooks.base import Headers, Verdict, hmac_sha256, matches_any

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


def decode_secret(secret: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret (prefix optional, missing padding accepted)."""
    body = secret.removeprefix(SECRET_PREFIX).strip()
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a Standard Webhooks secret must be whsec_ followed by base64") from exc
    if not key:
        raise ValueError("a Standard Webhooks secret must not be empty")
    return key


@dataclass(frozen=True, slots=True)
class StandardWebhooks:
    """Standard Webhooks verification with several active keys and a symmetric tolerance."""

    keys: tuple[bytes, ...]
    tolerance_seconds: int = 300
    clock: Callable[[], float] = field(default=time.time, compare=False)

    @classmethod
    def create(
        cls, secrets: Iterable[str], tolerance_seconds: int = 300, clock: Callable[[], float] = time.time
    ) -> "StandardWebhooks":
        """A scheme for `whsec_...` secrets; raises ValueError for a secret that is not one."""
        if isinstance(secrets, str | bytes):  # one secret passed bare would be iterated per character
            raise TypeError("pass the secrets as a list, not a single string")
        keys = tuple(decode_secret(s) for s in secrets)
        if not keys:
            raise ValueError("a signature scheme needs at least one non-empty secret")
        return cls(keys, tolerance_seconds, clock)

    def verify(self, body: bytes, headers: Headers) -> Verdict:
        """OK when any `v1` signature matches under any key and the timestamp is within tolerance."""
        msg_id = headers.get("webhook-id")
        raw_timestamp = headers.get("webhook-timestamp")
        signatures = headers.get("webhook-signature")
        if not msg_id or not raw_timestamp or not signatures:
            return Verdict.MISSING
        if not (raw_timestamp.isascii() and raw_timestamp.isdigit() and len(raw_timestamp) < 16):
            return Verdict.MALFORMED
        timestamp = int(raw_timestamp)
        if abs(self.clock() - timestamp) > self.tolerance_seconds:
            return Verdict.STALE
        received = []
        for entry in signatures.split(" "):
            version, sep, value = entry.partition(",")
            if version != "v1" or not sep:
                continue
            try:
                received.append(base64.b64decode(value.encode("ascii"), validate=True))
            except (binascii.Error, ValueError, UnicodeEncodeError):
                continue
        if not received:
            return Verdict.MALFORMED
        try:
            content = f"{msg_id}.{timestamp}.".encode() + body
        except UnicodeEncodeError:  # a lone surrogate in the id: no sender could have signed it
            return Verdict.MALFORMED
        candidates = (hmac_sha256(key, content) for key in self.keys)
        return Verdict.OK if matches_any(candidates, received) else Verdict.MISMATCH
