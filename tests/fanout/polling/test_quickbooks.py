"""QuickBooks Online change data capture (docs/providers.md, QuickBooks Online): the calls, Intuit's
documented answers, what a full answer asks for next, and hostile and generated pages."""

import json
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout import vocabulary
from fanout.changes import ParseError, ProviderChange
from fanout.polling import quickbooks
from fanout.polling.pages import PageRequest, PolledPage, PollTarget
from fanout.vocabulary import UNIFIED_ENTITIES, entity_name, normalize
from provider_auth.providers import Provider
from tests.fanout.polling.careless_json import MISSING, dumps, hostile, json_values

PAGES = Path(__file__).parent / "pages" / "quickbooks"
REALM = "9341453908000000"
TARGET = PollTarget(account=REALM)
# 2015-12-23T09:00:00-08:00, the refresh in Intuit's CDC example.
SINCE = datetime(2015, 12, 23, 17, 0, tzinfo=UTC)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cdc(*entities: str, since: datetime = SINCE) -> PageRequest:
    (request,) = quickbooks.first_requests(TARGET, since, entities)
    return request


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def change(entity: str, record: str, operation: str, when: str) -> ProviderChange:
    return ProviderChange(REALM, entity, record, operation, utc(when))


# --- what is polled ------------------------------------------------------------------------------


def test_entities_are_every_unified_vocabulary_entity_cdc_serves() -> None:
    for entity in quickbooks.ENTITIES:
        assert entity_name(Provider.QUICKBOOKS, entity)[0] in UNIFIED_ENTITIES, entity
        assert entity not in quickbooks.NOT_IN_CDC
    mapped = set(vocabulary._QUICKBOOKS)
    refused = {vocabulary._key(name) for name in quickbooks.NOT_IN_CDC}
    assert {vocabulary._key(name) for name in quickbooks.ENTITIES} == mapped - refused
    assert mapped & refused == {"taxcode", "taxrate"}


def test_constants() -> None:
    assert quickbooks.PAGE_SIZE == 1000  # CDC's cap on one answer
    assert timedelta(days=30) == quickbooks.MAX_LOOKBACK
    assert timedelta(0) < quickbooks.OVERLAP < timedelta(minutes=5)


# --- requests --------------------------------------------------------------------------------------


def test_first_request_is_one_cdc_call_for_every_entity() -> None:
    since = datetime(2015, 12, 23, 9, 0, 59, 999_999, tzinfo=timezone(timedelta(hours=-8)))
    assert quickbooks.first_requests(TARGET, since, ["Customer", "Estimate"]) == [
        PageRequest(
            method="GET",
            path=f"/v3/company/{REALM}/cdc",
            params=(("entities", "Customer,Estimate"), ("changedSince", "2015-12-23T17:00:59+00:00")),
            headers=(("Accept", "application/json"),),
            body=None,
        )
    ]


def test_default_entities_in_one_call() -> None:
    (request,) = quickbooks.first_requests(TARGET, SINCE, quickbooks.ENTITIES)
    assert dict(request.params)["entities"] == ",".join(quickbooks.ENTITIES)
    assert len(request.params) == 2


def test_first_requests_edge_cases() -> None:
    assert quickbooks.first_requests(TARGET, SINCE, []) == []
    twice = quickbooks.first_requests(TARGET, SINCE, ["Invoice", "Customer", "Invoice"])
    assert dict(twice[0].params)["entities"] == "Invoice,Customer"
    odd = quickbooks.first_requests(PollTarget(account="a/b?c"), SINCE, ["Invoice"])
    assert odd[0].path == f"/v3/company/{quote('a/b?c', safe='')}/cdc"
    with pytest.raises(ValueError, match="aware"):
        quickbooks.first_requests(TARGET, datetime(2015, 12, 23), ["Invoice"])
    for refused in ("TaxCode", "TimeActivity"):
        with pytest.raises(ValueError, match="CDC does not serve"):
            quickbooks.first_requests(TARGET, SINCE, ["Invoice", refused])
    for bad in ("Invoice,Bill", "", "Invoicé", "Bill Payment"):
        with pytest.raises(ValueError, match="not a QuickBooks entity name"):
            quickbooks.first_requests(TARGET, SINCE, [bad])


# --- Intuit's documented answers --------------------------------------------------------------------

# The sample of the ChangeDataCapture API reference, verbatim:
# https://developer.intuit.com/app/developer/qbo/docs/api/accounting/all-entities/changedatacapture
REFERENCE = (PAGES / "cdc_reference.json").read_bytes()
# The same sample with the live objects it elides ("...") filled in as the entity references show
# them (Id, SyncToken, MetaData and a few fields); the deleted Estimate and `time` are verbatim.
REFERENCE_FILLED = (PAGES / "cdc_reference_filled.json").read_bytes()


def test_reference_example_reads_every_object() -> None:
    page = quickbooks.parse_page(TARGET, cdc("Customer", "Estimate"), REFERENCE_FILLED)
    assert page.changes == [
        change("Customer", "63", "Update", "2015-12-23T09:32:18-08:00"),
        change("Customer", "99", "Create", "2015-12-23T09:47:05-08:00"),
        change("Estimate", "34", "Update", "2015-12-23T09:40:12-08:00"),
        change("Estimate", "123", "Update", "2015-12-23T10:05:44.123-08:00"),
        change("Estimate", "979", "Delete", "2015-12-23T12:55:50-08:00"),
    ]
    assert page.server_time == datetime(2015, 12, 23, 20, 56, 6, 196_000, tzinfo=UTC)
    assert page.more is False
    assert quickbooks.next_requests(TARGET, cdc("Customer", "Estimate"), page) == []
    kinds = [
        (n.entity, n.contact_type, n.operation)
        for n in (normalize(Provider.QUICKBOOKS, c) for c in page.changes)
    ]
    assert kinds == [
        ("contact", "customer", "updated"),
        ("contact", "customer", "created"),
        ("estimate", None, "updated"),
        ("estimate", None, "updated"),
        ("estimate", None, "deleted"),
    ]


def test_reference_example_as_printed_has_objects_without_a_version() -> None:
    # The reference cuts the live objects down to their Id: an object without LastUpdatedTime must
    # fail the page, or a watermark would move past a change nobody read.
    with pytest.raises(ParseError, match=r"CDCResponse\[0\]\.Customer\[0\]\.MetaData must be a JSON object"):
        quickbooks.parse_page(TARGET, cdc("Customer", "Estimate"), REFERENCE)


def test_only_the_asked_entities_are_read() -> None:
    page = quickbooks.parse_page(TARGET, cdc("Estimate"), REFERENCE_FILLED)
    assert [c.entity_id for c in page.changes] == ["34", "123", "979"]
    # Entity names are matched whatever their case.
    page = quickbooks.parse_page(
        TARGET, cdc("Customer", "Estimate"), REFERENCE_FILLED.replace(b'"Customer"', b'"customer"')
    )
    assert [c.entity for c in page.changes][:2] == ["Customer", "Customer"]


def test_an_answer_without_changes() -> None:
    body = b'{"CDCResponse":[{"QueryResponse":[{}]}],"time":"2015-12-23T12:36:51.763-08:00"}'
    page = quickbooks.parse_page(TARGET, cdc("Customer"), body)
    assert page == PolledPage(changes=[], more=False, server_time=utc("2015-12-23T12:36:51.763-08:00"))
    assert quickbooks.parse_page(TARGET, cdc("Customer"), b'{"CDCResponse":[]}').server_time is None


def test_a_fault_in_a_200_is_a_parse_error_with_its_code() -> None:
    body = json.dumps(
        {
            "Fault": {
                "Error": [
                    {
                        "Message": "message=Exception authenticating OAuth; errorCode=003200",
                        "Detail": "secret-looking detail about invoice 1042",
                        "code": "3200",
                    }
                ],
                "type": "AUTHENTICATION",
            },
            "time": "2015-12-23T12:56:06.196-08:00",
        }
    ).encode()
    with pytest.raises(ParseError) as caught:
        quickbooks.parse_page(TARGET, cdc("Invoice"), body)
    assert str(caught.value) == "body: QuickBooks Fault AUTHENTICATION, code 3200"
    inside = b'{"CDCResponse":[{"Fault":{"Error":[{"code":10000}],"type":"Sys\\ntem\\u202e"}}]}'
    with pytest.raises(ParseError, match=r"^CDCResponse\[0\]: QuickBooks Fault System, code 10000$"):
        quickbooks.parse_page(TARGET, cdc("Invoice"), inside)
    with pytest.raises(ParseError, match="Fault unknown, code unknown"):
        quickbooks.parse_page(TARGET, cdc("Invoice"), b'{"Fault": "oops"}')


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<IntuitResponse/>", "not JSON"),
        (b"[]", "body must be a JSON object"),
        (b"{}", "CDCResponse must be a JSON array"),
        (b'{"CDCResponse":[{}]}', r"CDCResponse\[0\]\.QueryResponse must be a JSON array"),
        (b'{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"Id":"1"}]}]}]}', "MetaData"),
        (
            b'{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"MetaData":{"LastUpdatedTime":"2015-12-23T12:55:50Z"}}]}]}]}',
            "Id is missing",
        ),
        (
            b'{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"Id":"1","MetaData":{"LastUpdatedTime":"yesterday"}}]}]}]}',
            "LastUpdatedTime is unreadable",
        ),
        (
            b'{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"Id":"1","MetaData":{"LastUpdatedTime":17}}]}]}]}',
            "LastUpdatedTime must be a string",
        ),
        (
            b'{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"Id":"1","MetaData":{"CreateTime":"2015-12-23T12:55:50Z"}}]}]}]}',
            "LastUpdatedTime is missing",
        ),
        (b'{"CDCResponse":[],"time":"soon"}', "time is unreadable"),
    ],
)
def test_unreadable_answers(body: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        quickbooks.parse_page(TARGET, cdc("Invoice"), body)


def test_create_time_only_tells_created_from_updated() -> None:
    def operation(meta: dict[str, Any], **record: Any) -> str:
        body = {"CDCResponse": [{"QueryResponse": [{"Invoice": [{"Id": "7", "MetaData": meta, **record}]}]}]}
        (found,) = quickbooks.parse_page(TARGET, cdc("Invoice"), json.dumps(body).encode()).changes
        return found.operation

    when = "2015-12-23T12:55:50-08:00"
    assert operation({"CreateTime": "2015-12-23T20:55:50Z", "LastUpdatedTime": when}) == "Create"
    assert operation({"CreateTime": "2015-12-23T12:55:49-08:00", "LastUpdatedTime": when}) == "Update"
    assert operation({"CreateTime": "garbage", "LastUpdatedTime": when}) == "Update"
    assert operation({"CreateTime": 12, "LastUpdatedTime": when}) == "Update"
    assert operation({"LastUpdatedTime": when}) == "Update"
    assert operation({"CreateTime": when, "LastUpdatedTime": when}, status="Deleted") == "Delete"
    assert operation({"LastUpdatedTime": when}, status=" deleted ") == "Delete"
    assert operation({"CreateTime": when, "LastUpdatedTime": when}, status="Voided") == "Create"


# --- a full answer ----------------------------------------------------------------------------------


def record(record_id: int, when: datetime, *, deleted: bool = False) -> dict[str, Any]:
    meta = {"LastUpdatedTime": when.isoformat()}
    if deleted:
        return {"domain": "QBO", "status": "Deleted", "Id": str(record_id), "MetaData": meta}
    return {"domain": "QBO", "Id": str(record_id), "SyncToken": "1", "MetaData": meta}


def answer(groups: dict[str, list[dict[str, Any]]], time: str = "2015-12-24T00:00:00.5Z") -> bytes:
    query = [
        {name: records, "startPosition": 1, "maxResults": len(records)} for name, records in groups.items()
    ]
    return json.dumps({"CDCResponse": [{"QueryResponse": query}], "time": time}).encode()


def minutes(n: int) -> datetime:
    return SINCE + timedelta(minutes=n)


def test_a_full_answer_asks_each_entity_again_from_where_it_stopped() -> None:
    customers = [record(i, minutes(i)) for i in range(600)]
    # Live invoices first, then the deleted ones, each by last update: the deletions end earlier.
    invoices = [record(1000 + i, minutes(100 + i)) for i in range(390)]
    invoices += [record(2000 + i, minutes(10 + i), deleted=True) for i in range(10)]
    request = cdc("Customer", "Invoice", "Vendor")
    page = quickbooks.parse_page(TARGET, request, answer({"Customer": customers, "Invoice": invoices}))
    assert page.more is True
    assert len(page.changes) == quickbooks.PAGE_SIZE
    follow_ups = quickbooks.next_requests(TARGET, request, page)
    assert [(dict(r.params)["entities"], dict(r.params)["changedSince"]) for r in follow_ups] == [
        ("Customer", minutes(599).isoformat()),
        # Deletions came back, so every live invoice did: resume from the last deletion.
        ("Invoice", minutes(19).isoformat()),
        ("Vendor", SINCE.isoformat()),
    ]
    assert all(r.path == request.path and r.headers == request.headers for r in follow_ups)


def test_objects_of_entities_not_asked_for_count_towards_a_full_answer() -> None:
    body = answer(
        {"Customer": [record(1, minutes(1))], "Estimate": [record(i, minutes(2)) for i in range(999)]}
    )
    page = quickbooks.parse_page(TARGET, cdc("Customer", "Invoice"), body)
    assert [c.entity_id for c in page.changes] == ["1"]
    assert page.more is True


def test_follow_ups_stop_at_an_answer_that_is_not_full() -> None:
    request = cdc("Customer", since=minutes(599))
    full = quickbooks.parse_page(
        TARGET, request, answer({"Customer": [record(i, minutes(599 + i)) for i in range(1000)]})
    )
    (again,) = quickbooks.next_requests(TARGET, request, full)
    assert dict(again.params) == {"entities": "Customer", "changedSince": minutes(1598).isoformat()}
    rest = quickbooks.parse_page(
        TARGET, again, answer({"Customer": [record(i, minutes(1598 + i)) for i in range(999)]})
    )
    assert rest.more is False
    assert quickbooks.next_requests(TARGET, again, rest) == []


def test_a_full_answer_at_one_instant_cannot_be_read_past() -> None:
    request = cdc("Customer", since=minutes(5))
    same = answer(
        {"Customer": [record(i, minutes(5) + timedelta(milliseconds=i % 900)) for i in range(1000)]}
    )
    with pytest.raises(ParseError) as caught:
        quickbooks.parse_page(TARGET, request, same)
    assert str(caught.value) == (
        "Customer: 1000 or more changes at 2015-12-23T17:05:00.000Z; CDC cannot read past them"
    )
    # Several entities asked at once: the per-entity calls that follow get there.
    assert quickbooks.parse_page(TARGET, cdc("Customer", "Vendor", since=minutes(5)), same).more is True


def fake_cdc(book: dict[str, list[tuple[int, datetime, bool]]], request: PageRequest) -> bytes:
    """Intuit's CDC over `book`: per entity the live records by last update, then the deleted ones,
    1,000 objects at the most (docs/providers.md, QuickBooks Online)."""
    params = dict(request.params)
    since = datetime.fromisoformat(params["changedSince"])
    room, groups = quickbooks.PAGE_SIZE, {}
    for entity in params["entities"].split(","):
        rows = sorted((r for r in book.get(entity, []) if r[1] >= since), key=lambda r: (r[2], r[1]))
        rows = rows[:room]
        room -= len(rows)
        if rows:
            groups[entity] = [record(i, when, deleted=deleted) for i, when, deleted in rows]
    return answer(groups)


def test_a_window_of_2500_changes_is_read_whole_but_deletions_behind_a_cut() -> None:
    rng = random.Random(9)
    book: dict[str, list[tuple[int, datetime, bool]]] = {}
    for entity, live, gone in (("Customer", 2100, 20), ("Invoice", 300, 10), ("Vendor", 80, 5)):
        seconds = rng.sample(range(1, 86_400), live + gone)
        book[entity] = [(i, SINCE + timedelta(seconds=s), i >= live) for i, s in enumerate(seconds)]
    queue, seen, calls = quickbooks.first_requests(TARGET, SINCE, ["Customer", "Invoice", "Vendor"]), set(), 0
    while queue:
        request = queue.pop(0)
        page = quickbooks.parse_page(TARGET, request, fake_cdc(book, request))
        seen |= {(c.entity, int(c.entity_id), c.occurred_at, c.operation == "Delete") for c in page.changes}
        queue += quickbooks.next_requests(TARGET, request, page)
        calls += 1
    assert calls == 5  # all three entities; then Customer, Invoice and Vendor; then Customer again
    expected = {(entity, i, when, deleted) for entity, rows in book.items() for i, when, deleted in rows}
    # Customer's answers stopped twice inside its live records (after the 1,000th, then after the
    # 1,999th, read again): its deletions older than where the last call resumed are out of CDC's
    # reach (docs/providers.md, QuickBooks Online).
    resume = sorted(when for _, when, deleted in book["Customer"] if not deleted)[1998]
    lost = {row for row in expected if row[0] == "Customer" and row[3] and row[2] < resume}
    assert seen == expected - lost
    assert 0 < len(lost) <= 20


# --- hostile input ----------------------------------------------------------------------------------

JSON = json_values(["Deleted", "2015-12-23T12:55:50-08:00", "/Date(1541176290160+0000)/", "\ud800"])


def sound_page(request: PageRequest, body: bytes) -> PolledPage | None:
    """The page after checking every promise, or None for a ParseError; any other error fails."""
    try:
        page = quickbooks.parse_page(TARGET, request, body)
    except ParseError as error:
        assert "\n" not in str(error)
        return None
    asked = dict(request.params)["entities"].split(",")
    for found in page.changes:
        assert found.provider_account_id == REALM
        assert found.entity in asked
        assert isinstance(found.entity_id, str) and found.entity_id.strip() == found.entity_id != ""
        assert found.operation in ("Create", "Update", "Delete")
        assert found.occurred_at is not None and found.occurred_at.utcoffset() == timedelta(0)
        assert found.event_id is None
        normalize(Provider.QUICKBOOKS, found)
    assert page.server_time is None or page.server_time.utcoffset() == timedelta(0)
    assert quickbooks.parse_page(TARGET, request, body) == page  # pure
    for follow_up in quickbooks.next_requests(TARGET, request, page):
        assert len(dict(follow_up.params)["entities"].split(",")) == 1
    return page


@FUZZ
@given(body=st.binary(max_size=3000))
def test_arbitrary_bytes(body: bytes) -> None:
    sound_page(cdc("Invoice", "Customer"), body)


@FUZZ
@given(value=JSON)
def test_arbitrary_json(value: Any) -> None:
    sound_page(cdc("Invoice", "Customer"), dumps(value))


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"CDCResponse":' * 5_000 + b"[]" + b"}" * 5_000,
        b'{"CDCResponse":[],"time":NaN}',
        b'{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"Id":1e999}]}]}]}',
        b'{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"Id":123456789012345678901234567890}]}]}]}',
        b'{"CDCResponse":[\xff\xfe]}',
        '{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"Id":"é"}]}]}]}'.encode("latin-1"),
        b'{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"Id":"\\ud800","MetaData":{}}]}]}]}',
        b'{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"Id":"1","MetaData":{"LastUpdatedTime":"/Date(-99999999999999)/"}}]}]}]}',
        b'{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"Id":"1","MetaData":{"LastUpdatedTime":"0001-01-01T00:00:00+01:00"}}]}]}]}',
    ],
)
def test_hostile_bodies_are_parse_errors(body: bytes) -> None:
    with pytest.raises(ParseError):
        quickbooks.parse_page(TARGET, cdc("Invoice"), body)


def test_duplicate_keys_keep_the_last_like_every_parser() -> None:
    body = (
        b'{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"Id":"1","Id":"2",'
        b'"MetaData":{"LastUpdatedTime":"2015-12-23T12:55:50-08:00"}}]}]}],"CDCResponse":[]}'
    )
    assert sound_page(cdc("Invoice"), body) == PolledPage()


TIMES = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@st.composite
def rendered(draw: st.DrawFn, moment: datetime | None = None) -> tuple[str, datetime]:
    """A time as Intuit writes it (an offset, maybe milliseconds) and the instant it stands for."""
    if moment is None:
        moment = draw(TIMES).replace(microsecond=draw(st.integers(0, 999)) * 1000)
    offset = timezone(timedelta(minutes=draw(st.integers(-12 * 60, 14 * 60))))
    spec = draw(st.sampled_from(["seconds", "milliseconds"]))
    if moment.microsecond:
        spec = "milliseconds"
    text = moment.astimezone(offset).isoformat(timespec=spec)
    if draw(st.booleans()) and offset.utcoffset(None) == timedelta(0):
        text = text.replace("+00:00", "Z")
    return text, moment


@st.composite
def hostile_answer(draw: st.DrawFn) -> Any:
    def meta() -> st.SearchStrategy[Any]:
        when = rendered().map(lambda pair: pair[0])
        return st.builds(_obj, LastUpdatedTime=hostile(when, JSON), CreateTime=hostile(when, JSON))

    obj = st.builds(
        _obj,
        Id=hostile(st.one_of(st.text(max_size=5), st.integers()), JSON),
        MetaData=hostile(meta(), JSON),
        status=hostile(st.sampled_from(["Deleted", "Active"]), JSON),
    )
    group = st.builds(
        _obj,
        Invoice=hostile(st.lists(hostile(obj, JSON), max_size=3), JSON),
        Customer=hostile(st.lists(hostile(obj, JSON), max_size=3), JSON),
        startPosition=hostile(st.integers(), JSON),
    )
    response = st.builds(
        _obj,
        QueryResponse=hostile(st.lists(hostile(group, JSON), max_size=3), JSON),
        Fault=st.just(MISSING) | JSON,
    )
    return _obj(
        CDCResponse=draw(hostile(st.lists(hostile(response, JSON), max_size=2), JSON)),
        time=draw(hostile(rendered().map(lambda pair: pair[0]), JSON)),
    )


def _obj(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not MISSING}


@FUZZ
@given(value=hostile_answer())
def test_hostile_field_values(value: Any) -> None:
    sound_page(cdc("Invoice", "Customer"), dumps(value))


# --- generated answers ------------------------------------------------------------------------------

NAMES = ["Customer", "Invoice", "Vendor", "CreditMemo"]


@st.composite
def valid_answer(draw: st.DrawFn) -> tuple[PageRequest, bytes, PolledPage]:
    asked = draw(st.lists(st.sampled_from(NAMES), min_size=2, max_size=4, unique=True))
    groups: list[dict[str, Any]] = []
    expected: list[ProviderChange] = []
    for entity in asked:
        records: list[dict[str, Any]] = []
        for _ in range(draw(st.integers(0, 4))):
            record_id = draw(
                st.one_of(st.integers(0, 2**63 - 1), st.from_regex(r"[0-9A-Za-z-]{1,12}", fullmatch=True))
            )
            updated_text, updated = draw(rendered())
            kind = draw(st.sampled_from(["created", "updated", "deleted", "no CreateTime"]))
            meta: dict[str, Any] = {"LastUpdatedTime": updated_text}
            if kind == "created":
                meta["CreateTime"] = draw(rendered(updated))[0]  # the same instant, maybe another offset
            elif kind in ("updated", "deleted"):
                earlier = updated - timedelta(seconds=draw(st.integers(1, 10**6)))
                meta["CreateTime"] = draw(rendered(earlier))[0]
            item = {"domain": "QBO", "Id": record_id, "MetaData": meta, "SyncToken": "3", "Line": [{"x": 1}]}
            if kind == "deleted":
                item["status"] = "Deleted"
            records.append(item)
            operation = {"created": "Create", "deleted": "Delete"}.get(kind, "Update")
            expected.append(ProviderChange(REALM, entity, str(record_id), operation, updated))
        listed_when_empty = draw(st.booleans())
        if records or listed_when_empty:
            groups.append(
                {entity: records, "startPosition": 1, "maxResults": len(records), "unknown": {"a": [1]}}
            )
    # Objects of an entity not asked for fill the answer up to, or short of, the cap.
    padding = draw(
        st.sampled_from([0, quickbooks.PAGE_SIZE - 1 - len(expected), quickbooks.PAGE_SIZE - len(expected)])
    )
    if padding:
        groups.append({"Estimate": [{"Id": "e"}] * padding})
    time_text, time = draw(rendered())
    shuffled = draw(st.permutations(groups))
    body = {"CDCResponse": [{"QueryResponse": shuffled}], "time": time_text}
    more = len(expected) + padding >= quickbooks.PAGE_SIZE
    # Entities come back in the answer's order, records in theirs.
    order = [next(iter(group)) for group in shuffled]
    expected.sort(key=lambda c: order.index(c.entity))
    return cdc(*asked), json.dumps(body).encode(), PolledPage(changes=expected, more=more, server_time=time)


@FUZZ
@given(generated=valid_answer())
def test_generated_answers_come_out_as_they_went_in(generated: tuple[PageRequest, bytes, PolledPage]) -> None:
    request, body, expected = generated
    page = sound_page(request, body)
    assert page == expected
    follow_ups = quickbooks.next_requests(TARGET, request, page)
    asked = dict(request.params)["entities"].split(",")
    if not page.more:
        assert follow_ups == []
        return
    assert [dict(r.params)["entities"] for r in follow_ups] == asked
    for follow_up in follow_ups:
        (entity,) = dict(follow_up.params)["entities"].split(",")
        resumed = datetime.fromisoformat(dict(follow_up.params)["changedSince"])
        mine = [c for c in page.changes if c.entity == entity]
        deleted = [c.occurred_at for c in mine if c.operation == "Delete" and c.occurred_at]
        updated = [c.occurred_at for c in mine if c.operation != "Delete" and c.occurred_at]
        # Never past the last deletion once one came back (the live records all came before it),
        # else never past the last update.
        assert SINCE <= resumed <= max([SINCE, *(deleted or updated)])


def test_a_request_planned_at_the_30_day_edge_is_moved_up_to_what_cdc_serves_later() -> None:
    since = datetime(2026, 11, 1, 12, 0, 0, 500000, tzinfo=UTC)
    (request,) = quickbooks.first_requests(PollTarget("123"), since, ["Invoice", "Bill"])
    assert quickbooks.no_older_than(request, since - timedelta(seconds=5)) == (request, None)
    assert quickbooks.no_older_than(request, since) == (request, None)  # whole seconds: the same
    moved, was = quickbooks.no_older_than(request, since + timedelta(minutes=2))
    assert was == since.replace(microsecond=0)
    assert dict(moved.params) == {"entities": "Invoice,Bill", "changedSince": "2026-11-01T12:02:00+00:00"}
    assert (moved.method, moved.path, moved.headers) == (request.method, request.path, request.headers)
