"""Identifiers shared by every layer: time-ordered ids for new things, and UUID validation."""

import os
import time
import uuid


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): millisecond Unix time first, so ids sort by creation."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & (2**48 - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & (2**62 - 1)
    text = f"{value:032x}"  # formatted directly: this runs on every webhook request
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def canonical_uuid(value: str) -> str | None:
    """`value` as a canonical (lower-case, hyphenated) UUID, or None when it is not one."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None
