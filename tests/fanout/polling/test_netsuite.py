"""NetSuite SuiteQL polling (docs/providers.md, NetSuite): the requests, a golden page, keyset paging
over equal timestamps, windows cut in two past SuiteQL's row cap, and hostile answers."""

import re
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.changes import ParseError, ProviderChange
from fanout.polling import netsuite
from fanout.polling.pages import PageRequest, PolledPage, PollTarget
from fanout.vocabulary import UNIFIED_ENTITIES, entity_name, normalize
from provider_auth.oauth.specs import SPECS
from provider_auth.providers import Provider
from tests.fanout.polling.careless_json import dumps, hostile, json_values

PAGES = Path(__file__).parent / "pages" / "netsuite"
TARGET = PollTarget(account="TSTDRV1234567", time_zone="America/Los_Angeles")
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_TIME = "'YYYY-MM-DD HH24:MI:SS'"
_SELECT_TRANSACTION = (
    f"SELECT id, TO_CHAR(lastmodifieddate, {_TIME}) AS modified_at, "
    f"TO_CHAR(createddate, {_TIME}) AS created_at, voided FROM transaction"
)


def date(text: str) -> str:
    return f"TO_DATE('{text}', {_TIME})"


def suiteql(query: str) -> PageRequest:
    """The request NetSuite's documentation shows for a SuiteQL query, with Ledgerhook's page size."""
    return PageRequest(
        method="POST",
        path="/query/v1/suiteql",
        params=(("limit", "1000"), ("offset", "0")),
        headers=(("Prefer", "transient"), ("Content-Type", "application/json")),
        body=orjson.dumps({"q": query}),
    )


def answer(items: list[dict[str, Any]], *, more: bool, total: int | None = None) -> bytes:
    """A SuiteQL answer in the documented envelope (links, count, hasMore, items, offset, totalResults)."""
    return orjson.dumps(
        {
            "links": [],
            "count": len(items),
            "hasMore": more,
            "items": items,
            "offset": 0,
            "totalResults": len(items) if total is None else total,
        }
    )


def row(record: int, modified: str, created: str | None = None, voided: str = "F") -> dict[str, Any]:
    return {"links": [], "id": str(record), "modified_at": modified, "created_at": created, "voided": voided}


def query_of(request: PageRequest) -> str:
    assert request.body is not None
    query: str = orjson.loads(request.body)["q"]
    return query


# --- requests ----------------------------------------------------------------------------------------


def test_path_is_relative_to_the_rest_base_url_which_ends_in_services_rest() -> None:
    # The default base URL already holds /services/rest: the path must not repeat it.
    assert SPECS[Provider.NETSUITE].api_base_url.endswith("/services/rest")
    assert netsuite.SUITEQL_PATH == "/query/v1/suiteql"


def test_first_request_for_a_transaction_type_in_the_accounts_time_zone() -> None:
    # 10:30:00.5 UTC on the day New York moved to daylight time is 06:30:00 on its wall clock; the
    # fraction is dropped (the bound only widens), and the time is never cut to a date.
    target = PollTarget(account="1234567", time_zone="America/New_York")
    since = datetime(2024, 3, 10, 10, 30, 0, 500_000, tzinfo=UTC)
    assert netsuite.first_requests(target, since, ["vendorbill"]) == [
        suiteql(
            f"{_SELECT_TRANSACTION} WHERE type = 'VendBill' "
            f"AND lastmodifieddate >= {date('2024-03-10 06:30:00')} ORDER BY lastmodifieddate, id"
        )
    ]


def test_first_requests_for_entity_records_use_their_own_tables() -> None:
    since = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
    customer, item = netsuite.first_requests(TARGET, since, ["customer", "item"])
    assert customer == suiteql(
        f"SELECT id, TO_CHAR(lastmodifieddate, {_TIME}) AS modified_at, "
        f"TO_CHAR(datecreated, {_TIME}) AS created_at FROM customer "
        f"WHERE lastmodifieddate >= {date('2025-01-15 04:00:00')} ORDER BY lastmodifieddate, id"
    )
    assert query_of(item) == (
        f"SELECT id, TO_CHAR(lastmodifieddate, {_TIME}) AS modified_at, "
        f"TO_CHAR(createddate, {_TIME}) AS created_at FROM item "
        f"WHERE lastmodifieddate >= {date('2025-01-15 04:00:00')} ORDER BY lastmodifieddate, id"
    )


@pytest.mark.parametrize(
    ("entity", "transaction_type"),
    [
        ("invoice", "CustInvc"),
        ("creditmemo", "CustCred"),
        ("customerpayment", "CustPymt"),
        ("vendorbill", "VendBill"),
        ("vendorcredit", "VendCred"),
        ("vendorpayment", "VendPymt"),
        ("journalentry", "Journal"),
        ("purchaseorder", "PurchOrd"),
        ("expensereport", "ExpRept"),
    ],
)
def test_transactions_are_read_by_type(entity: str, transaction_type: str) -> None:
    (request,) = netsuite.first_requests(TARGET, datetime(2025, 1, 1, tzinfo=UTC), [entity])
    assert f" FROM transaction WHERE type = '{transaction_type}' AND " in query_of(request)


def test_every_default_entity_is_in_the_unified_vocabulary() -> None:
    assert len(set(netsuite.ENTITIES)) == len(netsuite.ENTITIES)
    for entity in netsuite.ENTITIES:
        assert entity_name(Provider.NETSUITE, entity)[0] in UNIFIED_ENTITIES, entity
    requests = netsuite.first_requests(TARGET, datetime(2025, 1, 1, tzinfo=UTC), netsuite.ENTITIES)
    assert len(requests) == len(netsuite.ENTITIES)


def test_first_requests_refuse_what_they_cannot_ask() -> None:
    since = datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="no query"):
        netsuite.first_requests(TARGET, since, ["timebill"])
    with pytest.raises(ValueError, match="aware"):
        netsuite.first_requests(TARGET, since.replace(tzinfo=None), ["invoice"])
    with pytest.raises(ValueError, match="time zone"):
        netsuite.first_requests(PollTarget("1", "Mars/Olympus_Mons"), since, ["invoice"])


def test_the_overlap_covers_the_inclusive_second_and_late_commits() -> None:
    assert timedelta(seconds=1) < netsuite.OVERLAP <= timedelta(hours=1)
    assert netsuite.PAGE_SIZE == 1000


# --- golden page -------------------------------------------------------------------------------------

# The envelope (links, count, hasMore, items with their own links, offset, totalResults) is NetSuite's
# documented collection page; items carry the columns the query selects, SuiteQL writing them in lower
# case: https://docs.oracle.com/en/cloud/saas/netsuite/ns-online-help/section_156414087576.html and
# https://docs.oracle.com/en/cloud/saas/netsuite/ns-online-help/section_157909186990.html


def test_golden_vendor_bill_page() -> None:
    (request,) = netsuite.first_requests(TARGET, datetime(2025, 9, 1, tzinfo=UTC), ["vendorbill"])
    page = netsuite.parse_page(TARGET, request, (PAGES / "suiteql_vendorbill.json").read_bytes())
    assert page.changes == [
        # Pacific daylight time: UTC-7. Created and last changed in the same second: created.
        ProviderChange(
            "TSTDRV1234567", "vendorbill", "1042", "created", datetime(2025, 9, 10, 21, 31, 24, tzinfo=UTC)
        ),
        ProviderChange(
            "TSTDRV1234567", "vendorbill", "1043", "updated", datetime(2025, 9, 10, 21, 31, 24, tzinfo=UTC)
        ),
        # 01:30 happened twice that night (clocks fell back at 02:00): the first, daylight, one.
        ProviderChange(
            "TSTDRV1234567", "vendorbill", "977", "updated", datetime(2025, 11, 2, 8, 30, tzinfo=UTC)
        ),
        # Pacific standard time: UTC-8; voided wins over the times.
        ProviderChange(
            "TSTDRV1234567", "vendorbill", "1100", "voided", datetime(2025, 11, 3, 16, 0, tzinfo=UTC)
        ),
    ]
    assert all(change.event_id is None and change.attributes == {} for change in page.changes)
    assert page.more is False
    assert page.server_time is None
    assert page.total_results == 4
    assert page.last_row == (datetime(2025, 11, 3, 8, 0), 1100)
    assert netsuite.next_requests(TARGET, request, page) == []
    normalized = [normalize(Provider.NETSUITE, change) for change in page.changes]
    assert [(n.entity, n.provider_entity, n.operation) for n in normalized] == [
        ("bill", "vendorbill", "created"),
        ("bill", "vendorbill", "updated"),
        ("bill", "vendorbill", "updated"),
        ("bill", "vendorbill", "voided"),
    ]


def test_entity_records_have_no_voided_column() -> None:
    (request,) = netsuite.first_requests(TARGET, datetime(2025, 1, 1, tzinfo=UTC), ["customer"])
    body = answer(
        [{"links": [], "id": 7, "modified_at": "2025-02-01 10:00:00", "created_at": None}], more=False
    )
    (change,) = netsuite.parse_page(TARGET, request, body).changes
    assert (change.entity, change.entity_id, change.operation) == ("customer", "7", "updated")
    assert normalize(Provider.NETSUITE, change).contact_type == "customer"


# --- following pages ---------------------------------------------------------------------------------


def test_next_page_starts_after_the_last_row_so_equal_times_at_the_boundary_are_kept() -> None:
    (request,) = netsuite.first_requests(TARGET, datetime(2025, 1, 1, 8, tzinfo=UTC), ["invoice"])
    body = answer(
        [row(5, "2025-01-01 09:00:00"), row(9, "2025-01-01 09:00:00")],
        more=True,
        total=3,
    )
    page = netsuite.parse_page(TARGET, request, body)
    assert page.more
    assert netsuite.next_requests(TARGET, request, page) == [
        suiteql(
            f"{_SELECT_TRANSACTION} WHERE type = 'CustInvc' "
            f"AND lastmodifieddate >= {date('2025-01-01 00:00:00')} "
            f"AND (lastmodifieddate > {date('2025-01-01 09:00:00')} "
            f"OR (lastmodifieddate = {date('2025-01-01 09:00:00')} AND id > 9)) "
            "ORDER BY lastmodifieddate, id"
        )
    ]


def test_a_page_must_move_past_the_rows_already_read() -> None:
    (request,) = netsuite.first_requests(TARGET, datetime(2025, 1, 1, 8, tzinfo=UTC), ["invoice"])
    first = netsuite.parse_page(TARGET, request, answer([row(9, "2025-01-01 09:00:00")], more=True))
    (following,) = netsuite.next_requests(TARGET, request, first)
    with pytest.raises(ParseError, match="does not move past"):
        netsuite.parse_page(TARGET, following, answer([row(9, "2025-01-01 09:00:00")], more=True))
    with pytest.raises(ParseError, match="does not move past"):
        netsuite.parse_page(TARGET, following, answer([row(3, "2025-01-01 08:59:59")], more=False))
    with pytest.raises(ParseError, match="no items"):
        netsuite.parse_page(TARGET, following, answer([], more=True))
    assert netsuite.parse_page(TARGET, following, answer([], more=False)).changes == []


def test_an_open_window_past_the_row_cap_is_cut_where_half_the_cap_is_expected() -> None:
    (request,) = netsuite.first_requests(TARGET, datetime(2024, 1, 1, 8, tzinfo=UTC), ["journalentry"])
    body = answer([row(1, "2024-01-01 00:00:00"), row(2, "2024-01-01 00:00:10")], more=True, total=250_000)
    page = netsuite.parse_page(TARGET, request, body)
    # Two rows in ten seconds: 5 s a row, so 50,000 rows end 250,000 s after the last one read.
    middle = date("2024-01-03 21:26:50")
    first, second = netsuite.next_requests(TARGET, request, page)
    assert query_of(first) == (
        f"{_SELECT_TRANSACTION} WHERE type = 'Journal' AND lastmodifieddate >= {date('2024-01-01 00:00:00')} "
        f"AND lastmodifieddate < {middle} AND (lastmodifieddate > {date('2024-01-01 00:00:10')} "
        f"OR (lastmodifieddate = {date('2024-01-01 00:00:10')} AND id > 2)) ORDER BY lastmodifieddate, id"
    )
    assert second == suiteql(
        f"{_SELECT_TRANSACTION} WHERE type = 'Journal' AND lastmodifieddate >= {middle} "
        "ORDER BY lastmodifieddate, id"
    )
    # The bounded half, still past the cap, is halved between the last row read and its end.
    body = answer([row(3, "2024-01-01 00:00:20")], more=True, total=150_000)
    inner = netsuite.parse_page(TARGET, first, body)
    left, right = netsuite.next_requests(TARGET, first, inner)
    assert f"AND lastmodifieddate < {date('2024-01-02 10:43:35')} AND (" in query_of(left)
    assert "AND id > 3)) ORDER BY" in query_of(left)
    assert query_of(right) == (
        f"{_SELECT_TRANSACTION} WHERE type = 'Journal' AND lastmodifieddate >= {date('2024-01-02 10:43:35')} "
        f"AND lastmodifieddate < {middle} ORDER BY lastmodifieddate, id"
    )


def test_a_window_of_one_second_is_not_cut_but_read_on() -> None:
    (request,) = netsuite.first_requests(TARGET, datetime(2024, 1, 1, 8, tzinfo=UTC), ["invoice"])
    page = netsuite.parse_page(
        TARGET, request, answer([row(1, "2024-01-01 00:00:00")], more=True, total=250_000)
    )
    first, _ = netsuite.next_requests(TARGET, request, page)
    # The bounded half ends far away; a page whose last row is one second before the end cannot be cut.
    end = re.search(r"lastmodifieddate < TO_DATE\('([^']*)'", query_of(first))
    assert end is not None
    last = datetime.fromisoformat(end.group(1)) - timedelta(seconds=1)
    page = netsuite.parse_page(
        TARGET, first, answer([row(8, last.isoformat(sep=" "))], more=True, total=200_000)
    )
    (following,) = netsuite.next_requests(TARGET, first, page)
    assert f"lastmodifieddate < {date(end.group(1))} AND (" in query_of(following)
    assert "AND id > 8)) ORDER BY" in query_of(following)


def test_next_requests_needs_the_page_parse_page_read() -> None:
    (request,) = netsuite.first_requests(TARGET, datetime(2024, 1, 1, tzinfo=UTC), ["invoice"])
    with pytest.raises(ValueError, match="parse_page"):
        netsuite.next_requests(TARGET, request, PolledPage(more=True))
    assert netsuite.next_requests(TARGET, request, PolledPage(more=False)) == []


def test_requests_not_built_here_are_refused() -> None:
    stranger = suiteql("SELECT id FROM transaction")
    with pytest.raises(ValueError, match="not a SuiteQL request"):
        netsuite.parse_page(TARGET, stranger, answer([], more=False))
    (request,) = netsuite.first_requests(TARGET, datetime(2024, 1, 1, tzinfo=UTC), ["invoice"])
    tampered = PageRequest(request.method, request.path, request.params, request.headers, b"{}")
    with pytest.raises(ValueError, match="not a SuiteQL request"):
        netsuite.parse_page(TARGET, tampered, answer([], more=False))


# --- a SuiteQL stand-in, to read whole polls ---------------------------------------------------------

_BOUND = r"TO_DATE\('([^']*)', 'YYYY-MM-DD HH24:MI:SS'\)"


@dataclass
class FakeSuiteQL:
    """Answers the module's queries over rows of one record type, the way SuiteQL orders and pages them.

    It reads the query's bounds with its own patterns, serves `page_size` rows a page, and can claim a
    `totalResults` past the cap to make the module cut its windows.
    """

    rows: dict[int, datetime]  # id -> lastmodifieddate, wall clock
    page_size: int
    claimed_total: int | None = None
    requests: int = 0
    edits: dict[int, dict[int, datetime]] = field(default_factory=dict)  # after request n: id -> new time

    def answer(self, request: PageRequest) -> bytes:
        self.requests += 1
        query = query_of(request)
        start = re.search(rf"lastmodifieddate >= {_BOUND}", query)
        end = re.search(rf"lastmodifieddate < {_BOUND}", query)
        after = re.search(
            rf"\(lastmodifieddate > {_BOUND} OR \(lastmodifieddate = {_BOUND} AND id > (\d+)\)\)", query
        )
        assert start is not None and query.endswith(" ORDER BY lastmodifieddate, id")
        matched = sorted(
            (moment, record)
            for record, moment in self.rows.items()
            if moment >= datetime.fromisoformat(start.group(1))
            and (end is None or moment < datetime.fromisoformat(end.group(1)))
            and (
                after is None
                or (moment, record) > (datetime.fromisoformat(after.group(1)), int(after.group(3)))
            )
        )
        served = matched[: self.page_size]
        items = [row(record, moment.isoformat(sep=" ")) for moment, record in served]
        body = answer(items, more=len(matched) > len(served), total=self.claimed_total or len(matched))
        self.rows.update(self.edits.pop(self.requests, {}))
        return body


def poll(server: FakeSuiteQL, since: datetime, target: PollTarget = TARGET) -> list[ProviderChange]:
    queue = deque(netsuite.first_requests(target, since, ["invoice"]))
    changes: list[ProviderChange] = []
    while queue:
        assert server.requests < 5_000, "the poll does not end"
        request = queue.popleft()
        page = netsuite.parse_page(target, request, server.answer(request))
        changes.extend(page.changes)
        queue.extend(netsuite.next_requests(target, request, page))
    return changes


UTC_TARGET = PollTarget(account="TSTDRV1234567", time_zone="UTC")
NOON = datetime(2025, 6, 1, 12, 0)


def test_equal_timestamps_across_page_boundaries_are_read_once_in_order() -> None:
    # Seven rows in one second, three a page: the boundaries fall inside the second, twice.
    rows = {record: NOON for record in (4, 8, 15, 16, 23, 42, 108)}
    rows[3] = NOON - timedelta(seconds=1)
    rows[1] = NOON + timedelta(seconds=1)
    server = FakeSuiteQL(rows=rows, page_size=3)
    changes = poll(server, NOON.replace(tzinfo=UTC) - timedelta(seconds=1), UTC_TARGET)
    assert [change.entity_id for change in changes] == ["3", "4", "8", "15", "16", "23", "42", "108", "1"]
    assert server.requests == 3


def test_a_record_saved_mid_poll_does_not_push_unread_rows_out_of_reach() -> None:
    # After the first page, record 4 (already read) is saved again: with row offsets, every row after
    # it would move up one place and the first row of the next page would be skipped.
    rows = {record: NOON + timedelta(seconds=record) for record in range(1, 10)}
    server = FakeSuiteQL(rows=rows, page_size=4, edits={1: {4: NOON + timedelta(minutes=5)}})
    changes = poll(server, NOON.replace(tzinfo=UTC), UTC_TARGET)
    read = Counter(change.entity_id for change in changes)
    assert read == Counter(str(record) for record in range(1, 10)) + Counter(["4"])
    versions = [change.occurred_at for change in changes if change.entity_id == "4"]
    assert versions == [datetime(2025, 6, 1, 12, 0, 4, tzinfo=UTC), datetime(2025, 6, 1, 12, 5, tzinfo=UTC)]


@st.composite
def stored_rows(draw: st.DrawFn) -> dict[int, datetime]:
    ids = draw(st.lists(st.integers(min_value=1, max_value=10**6), unique=True, max_size=25))
    # Few distinct seconds, so that many rows share one.
    offsets = st.integers(min_value=-3, max_value=6).map(lambda seconds: NOON + timedelta(seconds=seconds))
    return {record: draw(offsets) for record in ids}


@FUZZ
@given(rows=stored_rows(), page_size=st.integers(min_value=1, max_value=5), cut=st.booleans())
def test_a_poll_reads_every_row_from_since_exactly_once(
    rows: dict[int, datetime], page_size: int, cut: bool
) -> None:
    server = FakeSuiteQL(rows=dict(rows), page_size=page_size, claimed_total=250_000 if cut else None)
    changes = poll(server, NOON.replace(tzinfo=UTC), UTC_TARGET)
    expected = {record for record, moment in rows.items() if moment >= NOON}
    assert Counter(change.entity_id for change in changes) == Counter(str(record) for record in expected)
    for change in changes:
        assert change.occurred_at == rows[int(change.entity_id)].replace(tzinfo=UTC)
    if not cut:
        # One window, read in SuiteQL's order.
        assert [int(change.entity_id) for change in changes] == [
            record
            for _, record in sorted((moment, record) for record, moment in rows.items() if moment >= NOON)
        ]


# --- hostile answers ---------------------------------------------------------------------------------

REQUEST = netsuite.first_requests(TARGET, datetime(2025, 1, 1, tzinfo=UTC), ["invoice"])[0]

JSON = json_values(["T", "F", "2025-01-01 10:00:00", "2025-13-01 10:00:00", "0001-01-01 00:00:00", "12"])


def only_parse_errors(body: bytes) -> netsuite.SuiteQLPage | None:
    try:
        page = netsuite.parse_page(TARGET, REQUEST, body)
    except ParseError as error:
        assert str(error)
        return None
    for change in page.changes:
        assert change.entity == "invoice"
        assert change.entity_id.isdigit()
        assert change.operation in ("created", "updated", "voided")
        assert change.occurred_at is not None and change.occurred_at.utcoffset() == timedelta(0)
    next_requests = netsuite.next_requests(TARGET, REQUEST, page)
    assert len(next_requests) <= 2
    return page


@FUZZ
@given(body=st.binary(max_size=2_000))
def test_arbitrary_bytes_are_a_parse_error_or_a_page(body: bytes) -> None:
    only_parse_errors(body)


@FUZZ
@given(value=JSON)
def test_arbitrary_json_is_a_parse_error_or_a_page(value: Any) -> None:
    only_parse_errors(dumps(value))


@FUZZ
@given(
    items=hostile(
        st.lists(
            hostile(
                st.builds(
                    dict,
                    id=hostile(st.integers(min_value=0, max_value=10**6).map(str), JSON),
                    modified_at=hostile(st.just("2025-01-01 10:00:00"), JSON),
                    created_at=hostile(st.just("2025-01-01 10:00:00"), JSON),
                    voided=hostile(st.sampled_from(["T", "F"]), JSON),
                ),
                JSON,
            ),
            max_size=4,
        ),
        JSON,
    ),
    more=hostile(st.booleans(), JSON),
    total=hostile(st.integers(min_value=0, max_value=10**6), JSON),
)
def test_hostile_fields_in_a_well_formed_envelope(items: Any, more: Any, total: Any) -> None:
    only_parse_errors(dumps({"items": items, "hasMore": more, "totalResults": total}))


_AT = '"modified_at": "2025-01-01 10:00:00"'


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe not utf-8",
        b"[" * 100_000,
        b'{"items": [], "hasMore": NaN}',
        b'{"items": [], "hasMore": false, "totalResults": 1e400}',
        b'{"items": [], "hasMore": false, "hasMore": "yes"}',
        f'{{"items": [{{"id": "1", {_AT}}}], "hasMore": false, "totalResults": -1}}'.encode(),
        f'{{"items": [{{"id": 123456789012345678901234567890, {_AT}}}], "hasMore": false}}'.encode(),
        b'{"items": [{"id": "1", "modified_at": "2025-01-01T10:00:00Z"}], "hasMore": false}',
        b'{"items": [{"id": "1", "modified_at": "2025-02-30 10:00:00"}], "hasMore": false}',
        # Past year 9999 once in UTC.
        b'{"items": [{"id": "1", "modified_at": "9999-12-31 23:59:59"}], "hasMore": false}',
        b'{"items": [{"id": "1"}], "hasMore": false}',
        f'{{"items": [{{{_AT}}}], "hasMore": false}}'.encode(),
        f'{{"items": [{{"id": "-1", {_AT}}}], "hasMore": false}}'.encode(),
        f'{{"items": [{{"id": "1", {_AT}, "voided": "maybe"}}], "hasMore": false}}'.encode(),
        b'{"items": {}, "hasMore": false}',
    ],
)
def test_malformed_pages_are_parse_errors(body: bytes) -> None:
    with pytest.raises(ParseError):
        netsuite.parse_page(TARGET, REQUEST, body)


def test_an_unknown_account_time_zone_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="time zone"):
        netsuite.parse_page(PollTarget("1", "Nowhere/Else"), REQUEST, answer([], more=False))


# --- generated valid pages ---------------------------------------------------------------------------

ZONES = ["UTC", "America/Los_Angeles", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham"]


@st.composite
def valid_rows(draw: st.DrawFn) -> list[tuple[int, datetime, datetime | None, bool]]:
    ids = draw(st.lists(st.integers(min_value=0, max_value=10**17), unique=True, max_size=8))
    moments = sorted(
        draw(
            st.lists(
                st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)).map(
                    # Written without a fold: in a repeated hour the module reads the first instant.
                    lambda moment: moment.replace(microsecond=0, fold=0)
                ),
                min_size=len(ids),
                max_size=len(ids),
            )
        )
    )
    rows = []
    for record, modified in zip(ids, moments, strict=True):
        created = draw(st.one_of(st.none(), st.just(modified), st.just(modified - timedelta(days=3))))
        rows.append((record, modified, created, draw(st.booleans())))
    # SuiteQL orders by (lastmodifieddate, id).
    return sorted(rows, key=lambda entry: (entry[1], entry[0]))


@FUZZ
@given(rows=valid_rows(), more=st.booleans(), zone=st.sampled_from(ZONES), numeric_ids=st.booleans())
def test_generated_pages_come_back_as_generated(
    rows: list[tuple[int, datetime, datetime | None, bool]], more: bool, zone: str, numeric_ids: bool
) -> None:
    target = PollTarget(account="4711", time_zone=zone)
    (request,) = netsuite.first_requests(target, datetime(1999, 1, 1, tzinfo=UTC), ["vendorcredit"])
    items: list[dict[str, Any]] = [
        {
            "links": [],
            "id": record if numeric_ids else str(record),
            "modified_at": modified.isoformat(sep=" "),
            "created_at": created.isoformat(sep=" ") if created else None,
            "voided": "T" if voided else "F",
        }
        for record, modified, created, voided in rows
    ]
    more = more and bool(rows)
    page = netsuite.parse_page(target, request, answer(items, more=more))
    assert [change.entity_id for change in page.changes] == [str(record) for record, *_ in rows]
    assert [change.occurred_at for change in page.changes] == [
        modified.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC) for _, modified, _, _ in rows
    ]
    assert [change.operation for change in page.changes] == [
        "voided" if voided else "created" if created == modified else "updated"
        for _, modified, created, voided in rows
    ]
    assert {change.provider_account_id for change in page.changes} <= {"4711"}
    assert {change.entity for change in page.changes} <= {"vendorcredit"}
    assert page.more is more
    assert page.last_row == ((rows[-1][1], rows[-1][0]) if rows else None)
    assert len(netsuite.next_requests(target, request, page)) == (1 if more else 0)
