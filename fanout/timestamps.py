"""Provider timestamps to aware UTC datetimes, for every form the providers send.

The forms, per provider: docs/providers.md.
"""

import re
from datetime import UTC, datetime, timedelta, timezone

# 2015-10-05T14:42:19-0700, 2016-10-05T03:09:04.000Z, 2025-09-10T21:31:25.179851517Z (QuickBooks),
# 2024-06-21T01:15:39.902 (Xero: no offset, always UTC), 2015-12-23T12:55:50-08:00.
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,12}))?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII,
)
# Xero's .NET JSON dates: /Date(1541176290160+0000)/
_DOTNET = re.compile(r"/Date\((-?\d{1,15})([+-]\d{4})?\)/", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_timestamp(value: str) -> datetime:
    """An aware UTC datetime; a missing offset means UTC. Raises ValueError for anything else."""
    value = value.strip()
    match = _ISO.fullmatch(value)
    if match:
        # The pattern decides what is accepted; the C parser reads the usual forms several times
        # faster than the fields below (it truncates a long fraction the same way).
        try:
            fast = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if fast.tzinfo is None:
                return fast.replace(tzinfo=UTC)
            if fast.tzinfo is UTC:
                return fast
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        parsed = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            micro,
            tzinfo=_offset(offset),
        )
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            # 0001-01-01T00:00:00+01:00 is before year 1 in UTC; keep the promise of ValueError only.
            raise ValueError(f"timestamp out of range {value[:40]!r}") from None
    match = _DOTNET.fullmatch(value)
    if match:
        # Milliseconds since the epoch in UTC (the offset only says where it was written): exact
        # integer arithmetic, and an out-of-range value is a ValueError like any other.
        try:
            return _EPOCH + timedelta(milliseconds=int(match.group(1)))
        except OverflowError:
            raise ValueError(f"timestamp out of range {value[:40]!r}") from None
    raise ValueError(f"unrecognised timestamp {value[:40]!r}")


def _offset(text: str | None) -> timezone:
    if text is None or text in ("Z", "z"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"bad UTC offset {text!r}")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, millisecond precision or finer as needed."""
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    text = utc.isoformat(timespec="microseconds" if utc.microsecond % 1000 else "milliseconds")
    return text[:-6] + "Z"  # isoformat of an aware UTC time ends in +00:00
