"""Identifiers shared by every layer: time-ordered ids for new things, and UUID validation."""

import os
import threading
import time
import uuid


class _Entropy:
    """Random bytes from the operating system's CSPRNG, fetched 4 KiB at a time.

    One `getrandom` call per id was a measurable share of the webhook path's CPU; the bytes are the
    same kind, fetched in bulk. A forked child starts with an empty pool, never its parent's.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self.clear()
        os.register_at_fork(after_in_child=self.clear)

    def clear(self) -> None:
        """Forget what is left of the pool (and a lock another thread may have held at a fork)."""
        self._pool, self._at = b"", 0
        self._lock = threading.Lock()

    def take(self, count: int) -> bytes:
        """`count` bytes never handed out before, whichever thread asks."""
        with self._lock:
            if self._at + count > len(self._pool):
                self._pool, self._at = os.urandom(max(self._size, count)), 0
            start = self._at
            self._at += count
            return self._pool[start : self._at]


_entropy = _Entropy()


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): millisecond Unix time first, so ids sort by creation."""
    rand = _entropy.take(10)
    # 48 bits of milliseconds, version 7 over 12 random bits, variant 0b10 over 62 random bits.
    raw = (
        (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF).to_bytes(6, "big")
        + bytes((0x70 | rand[0] & 0x0F, rand[1], 0x80 | rand[2] & 0x3F))
        + rand[3:]
    )
    text = raw.hex()  # formatted directly: this runs on every webhook request
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def canonical_uuid(value: str) -> str | None:
    """`value` as a canonical (lower-case, hyphenated) UUID, or None when it is not one."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None
