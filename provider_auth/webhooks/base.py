"""The interface every webhook signature scheme implements."""

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Protocol

Headers = Mapping[str, str]


class Verdict(StrEnum):
    """Why a delivery was accepted or refused; the reason goes to logs and metrics, never the secret."""

    OK = "ok"
    MISSING = "missing"  # no signature header at all
    MALFORMED = "malformed"  # a header that cannot be read
    STALE = "stale"  # signed, but outside the timestamp tolerance
    MISMATCH = "mismatch"  # no active secret produces this signature

    @property
    def ok(self) -> bool:
        """True only for a verified delivery."""
        return self is Verdict.OK


class SignatureScheme(Protocol):
    """Checks one delivery's raw body and headers against the scheme's active secrets."""

    def verify(self, body: bytes, headers: Headers) -> Verdict:
        """Verify the exact raw bytes of a delivery; never raises for hostile input."""
        ...


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of `message` under `key`."""
    return hmac.digest(key, message, hashlib.sha256)


def matches_any(candidates: Iterable[bytes], received: Iterable[bytes]) -> bool:
    """True when any received signature equals any candidate, compared in constant time.

    Every pair is compared (no early exit on the secret list) so timing does not reveal which
    secret of the ring matched.
    """
    found = False
    received = list(received)
    for candidate in candidates:
        for value in received:
            found |= hmac.compare_digest(candidate, value)
    return found


def as_secrets(secrets: Iterable[str | bytes]) -> tuple[bytes, ...]:
    """Secrets as bytes (strings are UTF-8); refuses an empty ring, which would verify nothing."""
    # A lone str or bytes is iterable too: it would silently become a ring of one-character keys
    # (or, for bytes, of all-zero keys) that anyone could sign with.
    if isinstance(secrets, str | bytes | bytearray | memoryview):
        raise TypeError("pass the secrets as a list, not a single string or bytes value")
    ring = tuple(s.encode() if isinstance(s, str) else bytes(s) for s in secrets)
    if not ring or any(not s for s in ring):
        raise ValueError("a signature scheme needs at least one non-empty secret")
    return ring
