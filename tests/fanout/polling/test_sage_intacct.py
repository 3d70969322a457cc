"""Sage Intacct polling over the REST query service (docs/providers.md, Sage Intacct): the requests, a
golden page, paging that restarts from the last second read, and hostile answers."""

from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.changes import ParseError, ProviderChange
from fanout.polling import sage_intacct
from fanout.polling.pages import PageRequest, PolledPage, PollTarget
from fanout.vocabulary import UNIFIED_ENTITIES, entity_name, normalize
from provider_auth.oauth.specs import SPECS
from provider_auth.providers import Provider
from tests.fanout.polling.careless_json import dumps, hostile, json_values

PAGES = Path(__file__).parent / "pages" / "sage_intacct"
TARGET = PollTarget(account="acme-corp")
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INVOICE = "accounts-receivable/invoice"


def query(entity: str, since: str, start: int) -> dict[str, Any]:
    """The query body the module sends, as the query service documents its fields."""
    return {
        "object": entity,
        "fields": ["key", "id", "audit.createdDateTime", "audit.modifiedDateTime"],
        "filters": [{"$gte": {"audit.modifiedDateTime": since}}],
        "filterParameters": {"includePrivate": True},
        "orderBy": [{"audit.modifiedDateTime": "asc"}, {"key": "asc"}],
        "start": start,
        "size": 4000,
    }


def request_for(body: dict[str, Any]) -> PageRequest:
    return PageRequest(
        method="POST",
        path="/services/core/query",
        headers=(("Content-Type", "application/json"),),
        body=orjson.dumps(body),
    )


def record(
    key: str, modified: str, created: str | None = None, human_id: str | None = None
) -> dict[str, Any]:
    audit = {"modifiedDateTime": modified} | ({"createdDateTime": created} if created else {})
    return {"key": key, "id": human_id or key, "audit": audit}


def answer(rows: list[dict[str, Any]], *, following: int | None, start: int = 1) -> bytes:
    """An answer in the documented query envelope: `ia::result`, and `ia::meta` with next/previous."""
    meta = {"totalCount": len(rows), "start": start, "pageSize": 4000, "next": following, "previous": None}
    return orjson.dumps({"ia::result": rows, "ia::meta": meta})


def first(since: datetime, entity: str = INVOICE) -> PageRequest:
    (request,) = sage_intacct.first_requests(TARGET, since, [entity])
    return request


# --- requests ----------------------------------------------------------------------------------------


def test_path_is_relative_to_the_rest_base_url() -> None:
    assert SPECS[Provider.SAGE_INTACCT].api_base_url.endswith("/ia/api/v1")
    assert sage_intacct.QUERY_PATH == "/services/core/query"


def test_first_request_filters_and_orders_on_the_modified_time() -> None:
    since = datetime(2025, 4, 29, 17, 26, 0, 750_000, tzinfo=UTC)
    request = first(since)
    expected = query(INVOICE, "2025-04-29T17:26:00Z", 1)
    assert request == request_for(expected)
    assert request.body == orjson.dumps(expected)  # the exact bytes, keys in this order
    assert request.params == ()


def test_first_requests_take_any_offset_and_each_object_once() -> None:
    since = datetime(2025, 1, 1, 13, 30, tzinfo=timezone(timedelta(hours=2)))
    bill, vendor = "accounts-payable/bill", "accounts-payable/vendor"
    requests = sage_intacct.first_requests(TARGET, since, [bill, vendor, bill])
    assert requests == [
        request_for(query(bill, "2025-01-01T11:30:00Z", 1)),
        request_for(query(vendor, "2025-01-01T11:30:00Z", 1)),
    ]


def test_every_default_object_is_in_the_unified_vocabulary() -> None:
    assert len(set(sage_intacct.ENTITIES)) == len(sage_intacct.ENTITIES)
    for entity in sage_intacct.ENTITIES:
        assert entity_name(Provider.SAGE_INTACCT, entity)[0] in UNIFIED_ENTITIES, entity
    assert entity_name(Provider.SAGE_INTACCT, "accounts-receivable/customer") == ("contact", "customer")
    assert entity_name(Provider.SAGE_INTACCT, "accounts-payable/vendor") == ("contact", "vendor")
    assert entity_name(Provider.SAGE_INTACCT, "general-ledger/journal-entry") == ("journal_entry", None)


def test_first_requests_refuse_what_they_cannot_ask() -> None:
    since = datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="aware"):
        sage_intacct.first_requests(TARGET, since.replace(tzinfo=None), [INVOICE])
    for name in ["ARINVOICE", "invoice", "accounts-receivable/", '"; drop', "a/b c"]:
        with pytest.raises(ValueError, match="REST object name"):
            sage_intacct.first_requests(TARGET, since, [name])


def test_overlap_and_page_size() -> None:
    assert timedelta(seconds=1) < sage_intacct.OVERLAP <= timedelta(hours=1)
    assert sage_intacct.PAGE_SIZE == 4000  # the query service's maximum


# --- golden page -------------------------------------------------------------------------------------

# The envelope is the query service's documented answer (`ia::result`, `ia::meta` with totalCount,
# start, pageSize, next, previous):
# https://developer.sage.com/intacct/docs/openapi/common/core.query/tag/Query
# The records are invoices as the invoice reference lists them (key, id, href) with the `audit` group
# every object documents (createdDateTime, modifiedDateTime in UTC, whole seconds):
# https://developer.sage.com/intacct/docs/openapi/ar/accounts-receivable.invoice/tag/Invoices


def test_golden_invoice_page() -> None:
    request = first(datetime(2025, 4, 1, tzinfo=UTC))
    page = sage_intacct.parse_page(TARGET, request, (PAGES / "query_invoice.json").read_bytes())
    assert page.changes == [
        ProviderChange("acme-corp", INVOICE, "498", "created", datetime(2025, 4, 29, 15, 26, tzinfo=UTC)),
        ProviderChange(
            "acme-corp",
            INVOICE,
            "501",
            "created",
            datetime(2025, 4, 29, 15, 26, tzinfo=UTC),
            attributes={"id": "INV-0501"},
        ),
        ProviderChange("acme-corp", INVOICE, "978", "updated", datetime(2025, 4, 30, 8, 12, 45, tzinfo=UTC)),
    ]
    assert all(change.event_id is None for change in page.changes)
    assert page.more is False
    assert page.server_time is None
    assert sage_intacct.next_requests(TARGET, request, page) == []
    normalized = [normalize(Provider.SAGE_INTACCT, change) for change in page.changes]
    assert [(n.entity, n.provider_entity, n.operation) for n in normalized] == [
        ("invoice", INVOICE, "created"),
        ("invoice", INVOICE, "created"),
        ("invoice", INVOICE, "updated"),
    ]


def test_dotted_audit_fields_are_read_too() -> None:
    body = orjson.dumps(
        {
            "ia::result": [
                {
                    "key": 77,
                    "audit.modifiedDateTime": "2025-05-01T10:00:00Z",
                    "audit.createdDateTime": "2025-05-01T10:00:00Z",
                }
            ],
            "ia::meta": {"totalCount": 1, "start": 1, "pageSize": 4000, "next": None, "previous": None},
        }
    )
    (change,) = sage_intacct.parse_page(TARGET, first(datetime(2025, 5, 1, tzinfo=UTC)), body).changes
    assert (change.entity_id, change.operation, change.attributes) == ("77", "created", {})


def test_answers_without_next_are_read_by_their_counts() -> None:
    # Older answers (and the object list) give only totalCount, start and pageSize.
    request = first(datetime(2025, 5, 1, tzinfo=UTC))
    rows = [record("1", "2025-05-01T10:00:00Z"), record("2", "2025-05-01T10:00:01Z")]
    more = orjson.dumps({"ia::result": rows, "ia::meta": {"totalCount": 5, "start": 1, "pageSize": 2}})
    done = orjson.dumps({"ia::result": rows, "ia::meta": {"totalCount": 2, "start": 1, "pageSize": 2}})
    assert sage_intacct.parse_page(TARGET, request, more).more is True
    assert sage_intacct.parse_page(TARGET, request, done).more is False


# --- following pages ---------------------------------------------------------------------------------


def test_next_page_restarts_at_the_last_second_read_and_skips_its_rows_already_read() -> None:
    request = first(datetime(2025, 5, 1, 9, tzinfo=UTC))
    rows = [
        record("10", "2025-05-01T09:30:00Z"),
        record("11", "2025-05-01T10:00:00Z"),
        record("12", "2025-05-01T10:00:00Z"),
    ]
    page = sage_intacct.parse_page(TARGET, request, answer(rows, following=4001))
    assert page.more is True
    assert sage_intacct.next_requests(TARGET, request, page) == [
        request_for(query(INVOICE, "2025-05-01T10:00:00Z", 3))
    ]


def test_a_page_all_in_the_cursors_second_adds_to_the_rows_skipped() -> None:
    request = request_for(query(INVOICE, "2025-05-01T10:00:00Z", 3))
    rows = [record("13", "2025-05-01T10:00:00Z"), record("14", "2025-05-01T10:00:00Z")]
    page = sage_intacct.parse_page(TARGET, request, answer(rows, following=4001, start=3))
    assert sage_intacct.next_requests(TARGET, request, page) == [
        request_for(query(INVOICE, "2025-05-01T10:00:00Z", 5))
    ]


def test_the_last_page_asks_for_nothing_more() -> None:
    request = first(datetime(2025, 5, 1, 9, tzinfo=UTC))
    page = sage_intacct.parse_page(
        TARGET, request, answer([record("1", "2025-05-01T09:00:00Z")], following=None)
    )
    assert sage_intacct.next_requests(TARGET, request, page) == []
    with pytest.raises(ValueError, match="must hold rows"):
        sage_intacct.next_requests(TARGET, request, PolledPage(more=True))


def test_rows_out_of_order_or_before_the_cursor_are_a_parse_error() -> None:
    request = first(datetime(2025, 5, 1, 9, tzinfo=UTC))
    before = [record("1", "2025-05-01T08:59:59Z")]
    backwards = [record("1", "2025-05-01T09:00:02Z"), record("2", "2025-05-01T09:00:01Z")]
    for rows in (before, backwards):
        with pytest.raises(ParseError, match="order"):
            sage_intacct.parse_page(TARGET, request, answer(rows, following=None))
    with pytest.raises(ParseError, match="empty page"):
        sage_intacct.parse_page(TARGET, request, answer([], following=4001))


def test_requests_not_built_here_are_refused() -> None:
    with pytest.raises(ValueError, match="not a Sage Intacct query"):
        sage_intacct.parse_page(TARGET, request_for({"object": INVOICE}), answer([], following=None))
    changed = query(INVOICE, "2025-05-01T10:00:00Z", 1) | {"size": 10}
    with pytest.raises(ValueError, match="not a Sage Intacct query"):
        sage_intacct.parse_page(TARGET, request_for(changed), answer([], following=None))


# --- a query service stand-in, to read whole polls ---------------------------------------------------


@dataclass
class FakeQueryService:
    """Filters, orders and pages rows of one object the way the query service documents it."""

    rows: dict[str, datetime]  # key -> audit.modifiedDateTime
    page_size: int
    requests: int = 0
    edits: dict[int, dict[str, datetime]] = field(default_factory=dict)  # after request n: key -> new time

    def answer(self, request: PageRequest) -> bytes:
        self.requests += 1
        body = orjson.loads(request.body or b"")
        assert body["orderBy"] == [{"audit.modifiedDateTime": "asc"}, {"key": "asc"}]
        since = datetime.fromisoformat(body["filters"][0]["$gte"]["audit.modifiedDateTime"])
        matched = sorted((moment, key) for key, moment in self.rows.items() if moment >= since)
        start = body["start"]
        served = matched[start - 1 : start - 1 + min(self.page_size, body["size"])]
        following = start + len(served) if start - 1 + len(served) < len(matched) else None
        rows = [record(key, moment.isoformat().replace("+00:00", "Z")) for moment, key in served]
        self.rows.update(self.edits.pop(self.requests, {}))
        return answer(rows, following=following, start=start)


def poll(server: FakeQueryService, since: datetime) -> list[ProviderChange]:
    queue = deque(sage_intacct.first_requests(TARGET, since, [INVOICE]))
    changes: list[ProviderChange] = []
    while queue:
        assert server.requests < 1_000, "the poll does not end"
        request = queue.popleft()
        page = sage_intacct.parse_page(TARGET, request, server.answer(request))
        changes.extend(page.changes)
        queue.extend(sage_intacct.next_requests(TARGET, request, page))
    return changes


NOON = datetime(2025, 6, 1, 12, tzinfo=UTC)


def test_rows_sharing_a_second_across_pages_are_read_once_in_order() -> None:
    rows = {f"K{n:02d}": NOON for n in range(7)} | {
        "A": NOON - timedelta(seconds=1),
        "Z": NOON + timedelta(seconds=1),
    }
    server = FakeQueryService(rows=rows, page_size=3)
    changes = poll(server, NOON - timedelta(seconds=1))
    assert [change.entity_id for change in changes] == [
        "A",
        "K00",
        "K01",
        "K02",
        "K03",
        "K04",
        "K05",
        "K06",
        "Z",
    ]
    assert server.requests == 3


def test_a_record_saved_mid_poll_does_not_push_unread_rows_out_of_reach() -> None:
    # After the first page, K02 (already read) is saved again. With row offsets over the whole window,
    # every later row would move up one place and the first row of the next page would be skipped.
    rows = {f"K{n:02d}": NOON + timedelta(seconds=n) for n in range(9)}
    server = FakeQueryService(rows=dict(rows), page_size=4, edits={1: {"K02": NOON + timedelta(minutes=5)}})
    changes = poll(server, NOON)
    assert Counter(change.entity_id for change in changes) == Counter(list(rows)) + Counter(["K02"])
    assert server.requests == 3


@st.composite
def stored_rows(draw: st.DrawFn) -> dict[str, datetime]:
    keys = draw(st.lists(st.integers(min_value=1, max_value=10**6).map(str), unique=True, max_size=25))
    moments = st.integers(min_value=-3, max_value=6).map(lambda seconds: NOON + timedelta(seconds=seconds))
    return {key: draw(moments) for key in keys}


@FUZZ
@given(rows=stored_rows(), page_size=st.integers(min_value=1, max_value=5))
def test_a_poll_reads_every_row_from_since_exactly_once_in_order(
    rows: dict[str, datetime], page_size: int
) -> None:
    changes = poll(FakeQueryService(rows=dict(rows), page_size=page_size), NOON)
    expected = sorted((moment, key) for key, moment in rows.items() if moment >= NOON)
    assert [(change.occurred_at, change.entity_id) for change in changes] == expected


# --- hostile answers ---------------------------------------------------------------------------------

REQUEST = first(datetime(2025, 1, 1, tzinfo=UTC))

JSON = json_values(
    ["2025-01-01T10:00:00Z", "2025-01-01T10:00:00", "1999-01-01T10:00:00Z", "9999-12-31T23:59:59-12:00"]
)


def only_parse_errors(body: bytes) -> PolledPage | None:
    try:
        page = sage_intacct.parse_page(TARGET, REQUEST, body)
    except ParseError as error:
        assert str(error)
        return None
    for change in page.changes:
        assert change.entity == INVOICE and change.entity_id.strip()
        assert change.operation in ("created", "updated")
        assert change.occurred_at is not None and change.occurred_at.utcoffset() == timedelta(0)
        assert all(isinstance(v, str) for v in change.attributes.values())
    assert len(sage_intacct.next_requests(TARGET, REQUEST, page)) == (1 if page.more else 0)
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
    rows=hostile(
        st.lists(
            hostile(
                st.builds(
                    dict,
                    key=hostile(st.integers(min_value=0, max_value=10**6).map(str), JSON),
                    id=hostile(st.text(min_size=1, max_size=8), JSON),
                    audit=hostile(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "modifiedDateTime": hostile(st.just("2025-01-01T10:00:00Z"), JSON),
                                "createdDateTime": hostile(st.just("2025-01-01T10:00:00Z"), JSON),
                            },
                        ),
                        JSON,
                    ),
                ),
                JSON,
            ),
            max_size=4,
        ),
        JSON,
    ),
    following=hostile(st.one_of(st.none(), st.integers(min_value=2, max_value=10**6)), JSON),
    total=hostile(st.integers(min_value=0, max_value=10), JSON),
)
def test_hostile_fields_in_a_well_formed_envelope(rows: Any, following: Any, total: Any) -> None:
    meta = {"next": following, "totalCount": total, "start": 1}
    only_parse_errors(dumps({"ia::result": rows, "ia::meta": meta}))


_AT = '"audit": {"modifiedDateTime": "2025-01-01T10:00:00Z"}'
_META = '"ia::meta": {"next": null}'


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe not utf-8",
        b"{" * 100_000,
        b'{"ia::result": [], "ia::meta": {"next": NaN}}',
        b'{"ia::result": [], "ia::meta": {"next": 1e400}}',
        b'{"ia::result": [], "ia::meta": {"next": true}}',
        b'{"ia::result": [], "ia::meta": {"next": "2"}}',
        b'{"ia::result": [], "ia::meta": {"totalCount": "3", "start": 1}}',
        b'{"ia::result": []}',
        b'{"ia::result": {}, "ia::meta": {"next": null}}',
        f'{{"ia::result": [{{{_AT}}}], {_META}}}'.encode(),
        f'{{"ia::result": [{{"key": true, {_AT}}}], {_META}}}'.encode(),
        f'{{"ia::result": [{{"key": "1"}}], {_META}}}'.encode(),
        f'{{"ia::result": [{{"key": "1", "audit": {{"modifiedDateTime": 1714400000}}}}], {_META}}}'.encode(),
        # The XML API's form, in the company's time zone.
        f'{{"ia::result": [{{"key": "1", {_AT.replace("2025-01-01T10:00:00Z", "04/29/2025 15:26:00")}}}], '
        f"{_META}}}".encode(),
        f'{{"ia::result": [{{"key": "1", {_AT[:-1]}, "createdDateTime": "yesterday"}}}}], {_META}}}'.encode(),
    ],
)
def test_malformed_pages_are_parse_errors(body: bytes) -> None:
    with pytest.raises(ParseError):
        sage_intacct.parse_page(TARGET, REQUEST, body)


# --- generated valid pages ---------------------------------------------------------------------------


@st.composite
def valid_rows(draw: st.DrawFn) -> list[tuple[str, datetime, datetime | None, str | None]]:
    keys = draw(st.lists(st.integers(min_value=1, max_value=10**9).map(str), unique=True, max_size=8))
    moments = sorted(
        draw(
            st.lists(
                st.datetimes(
                    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
                ),
                min_size=len(keys),
                max_size=len(keys),
            )
        )
    )
    rows = []
    for key, modified in zip(keys, moments, strict=True):
        created = draw(st.one_of(st.none(), st.just(modified), st.just(modified - timedelta(days=3))))
        human_id = draw(st.one_of(st.none(), st.just(key), st.from_regex(r"INV-[0-9]{1,6}", fullmatch=True)))
        rows.append((key, modified, created, human_id))
    return rows


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@FUZZ
@given(rows=valid_rows(), following=st.one_of(st.none(), st.integers(min_value=2, max_value=10**6)))
def test_generated_pages_come_back_as_generated(
    rows: list[tuple[str, datetime, datetime | None, str | None]], following: int | None
) -> None:
    following = following if rows else None
    items = []
    for key, modified, created, human_id in rows:
        audit = {"modifiedDateTime": iso(modified)} | ({"createdDateTime": iso(created)} if created else {})
        items.append({"key": key, "audit": audit} | ({"id": human_id} if human_id else {}))
    request = first(datetime(1999, 1, 1, tzinfo=UTC))
    page = sage_intacct.parse_page(TARGET, request, answer(items, following=following))
    assert [change.entity_id for change in page.changes] == [key for key, *_ in rows]
    assert [change.occurred_at for change in page.changes] == [modified for _, modified, _, _ in rows]
    assert [change.operation for change in page.changes] == [
        "created" if created == modified else "updated" for _, modified, created, _ in rows
    ]
    assert [change.attributes for change in page.changes] == [
        {"id": human_id} if human_id and human_id != key else {} for key, _, _, human_id in rows
    ]
    assert {change.provider_account_id for change in page.changes} <= {"acme-corp"}
    assert page.more is (following is not None)
    assert len(sage_intacct.next_requests(TARGET, request, page)) == (1 if page.more else 0)
