"""`RawHeaders.read` (one pass over the headers) against reading each header with `header()`."""

from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.raw import (
    H_CONNECTION_ID,
    H_DELIVERY_ID,
    H_PROVIDER,
    H_RECEIVED_AT,
    H_REDRIVE_COUNT,
    RawHeaders,
    header,
    redrive_count,
)
from fanout.timestamps import parse_timestamp

names = st.sampled_from(
    [H_DELIVERY_ID, H_PROVIDER, H_CONNECTION_ID, H_RECEIVED_AT, H_REDRIVE_COUNT, "content-type", "x"]
)
values = st.one_of(
    st.binary(max_size=12),
    st.sampled_from(
        [b"", b"xero", b"7", b"-3", b"x1", b"\xff\xfe", b"2025-09-10T21:31:25.179Z", b"2025-13-01T00:00:00Z"]
    ),
)


def reference(headers: list[tuple[str, bytes]]) -> RawHeaders:
    received = header(headers, H_RECEIVED_AT)
    try:
        received_at = parse_timestamp(received) if received else None
    except ValueError:
        received_at = None
    return RawHeaders(
        delivery_id=header(headers, H_DELIVERY_ID) or None,
        provider=header(headers, H_PROVIDER) or None,
        connection_id=header(headers, H_CONNECTION_ID) or None,
        received_at=received_at,
        redrive_count=redrive_count(headers),
    )


@given(st.lists(st.tuples(names, values), max_size=8))
@settings(max_examples=500, deadline=None)
def test_read_matches_reading_each_header(headers: list[tuple[str, bytes]]) -> None:
    assert RawHeaders.read(headers) == reference(headers)
    assert RawHeaders.read(iter(headers)) == reference(headers)
