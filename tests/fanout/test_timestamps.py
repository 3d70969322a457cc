"""Every timestamp form the providers send (docs/providers.md), to aware UTC; else ValueError."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.timestamps import format_timestamp, parse_timestamp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # QuickBooks legacy: offset without a colon.
        ("2015-10-05T14:42:19-0700", datetime(2015, 10, 5, 21, 42, 19, tzinfo=UTC)),
        ("2016-10-05T03:09:04.000Z", datetime(2016, 10, 5, 3, 9, 4, tzinfo=UTC)),
        # QuickBooks CloudEvents: nanoseconds, truncated to microseconds.
        ("2025-09-10T21:31:25.179851517Z", datetime(2025, 9, 10, 21, 31, 25, 179851, tzinfo=UTC)),
        # Xero: no offset means UTC.
        ("2024-06-21T01:15:39.902", datetime(2024, 6, 21, 1, 15, 39, 902000, tzinfo=UTC)),
        ("2024-06-21T01:15:39", datetime(2024, 6, 21, 1, 15, 39, tzinfo=UTC)),
        # QuickBooks CDC.
        ("2015-12-23T12:55:50-08:00", datetime(2015, 12, 23, 20, 55, 50, tzinfo=UTC)),
        ("2015-12-23T12:56:06.196-08:00", datetime(2015, 12, 23, 20, 56, 6, 196000, tzinfo=UTC)),
        # Zoho Books.
        ("2013-11-18T02:17:40+0530", datetime(2013, 11, 17, 20, 47, 40, tzinfo=UTC)),
        ("2013-11-18 02:17:40+05", datetime(2013, 11, 17, 21, 17, 40, tzinfo=UTC)),
        ("2013-11-18t02:17:40z", datetime(2013, 11, 18, 2, 17, 40, tzinfo=UTC)),
        ("  2013-11-18T02:17:40Z\n", datetime(2013, 11, 18, 2, 17, 40, tzinfo=UTC)),
        # Xero .NET JSON dates: milliseconds since the epoch, the offset is informational.
        ("/Date(1541176290160+0000)/", datetime(2018, 11, 2, 16, 31, 30, 160000, tzinfo=UTC)),
        ("/Date(1541176290160+1300)/", datetime(2018, 11, 2, 16, 31, 30, 160000, tzinfo=UTC)),
        ("/Date(1541176290160)/", datetime(2018, 11, 2, 16, 31, 30, 160000, tzinfo=UTC)),
        ("/Date(-1000)/", datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_known_forms(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2015-10-05",
        "2015-13-05T14:42:19Z",
        "2015-02-30T14:42:19Z",
        "2015-10-05T24:00:00Z",
        "2015-10-05T14:42:19+2400",
        "2015-10-05T14:42:19+0060",
        "2015-10-05T14:42:19 PST",
        "0000-01-01T00:00:00Z",
        # Out of range once in UTC (was an OverflowError).
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "/Date(999999999999999)/",
        "/Date(-999999999999999)/",
        "/Date(abc)/",
        "03/04/2025 05:06:07",
        "\uff12\uff10\uff12\uff14-06-21T01:15:39",  # full-width digits
    ],
)
def test_anything_else_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_format_is_rfc3339_utc_with_z() -> None:
    moment = datetime(2015, 10, 5, 14, 42, 19, tzinfo=timezone(timedelta(hours=-7)))
    assert format_timestamp(moment) == "2015-10-05T21:42:19.000Z"
    assert format_timestamp(moment.replace(microsecond=179851)) == "2015-10-05T21:42:19.179851Z"


@given(st.datetimes(timezones=st.just(UTC)))
def test_format_round_trips(moment: datetime) -> None:
    assert parse_timestamp(format_timestamp(moment)) == moment


@given(
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
    st.sampled_from(["%Y-%m-%dT%H:%M:%S.%f{z}", "%Y-%m-%dT%H:%M:%S.%f000{z}", "%Y-%m-%d %H:%M:%S.%f{z}"]),
    st.booleans(),
)
def test_offsets_in_either_spelling_round_trip(
    moment: datetime, minutes: int, pattern: str, colon: bool
) -> None:
    local = moment.astimezone(timezone(timedelta(minutes=minutes)))
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    zone = f"{sign}{hours:02d}{':' if colon else ''}{mins:02d}"
    assert parse_timestamp(local.strftime(pattern).format(z=zone)) == moment


@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_is_a_value_error(text: str) -> None:
    try:
        parsed = parse_timestamp(text)
    except ValueError:
        return
    assert parsed.tzinfo is UTC


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
    st.integers(min_value=1, max_value=12),
    st.text(alphabet="0123456789", min_size=6, max_size=6),
    st.sampled_from(["", "Z", "z", "+00:00", "-0000", "+00"]),
    st.sampled_from(["T", "t", " "]),
    st.sampled_from([".", ","]),
)
def test_fractions_of_any_length_truncate_to_microseconds(
    moment: datetime, digits: int, extra: str, zone: str, separator: str, mark: str
) -> None:
    # Every spelling of the same UTC time reads the same, whichever parser path takes it.
    fraction = (f"{moment.microsecond:06d}" + extra)[:digits]
    m = moment
    text = f"{m.year:04d}-{m.month:02d}-{m.day:02d}{separator}{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
    text += mark + fraction + zone
    parsed = parse_timestamp(text)
    assert parsed == moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    assert parsed.tzinfo is UTC
