"""FreshBooks polling (docs/providers.md, FreshBooks): the `updated_min` searches, golden pages from
FreshBooks' documented examples, US/Eastern times, `vis_state`, and hostile or generated pages."""

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.changes import ParseError, ProviderChange
from fanout.polling import freshbooks
from fanout.polling.pages import PageRequest, PolledPage, PollTarget
from fanout.vocabulary import UNIFIED_ENTITIES, entity_name, normalize
from provider_auth.providers import Provider
from tests.fanout.polling.careless_json import MISSING, dumps, hostile, json_values

PAGES = Path(__file__).parent / "pages" / "freshbooks"
ACCOUNT = PollTarget(account="zDmNq")  # the accounting_systemid of FreshBooks' examples
# 2016-07-20 03:00 UTC is still 2016-07-19 in US/Eastern.
SINCE = datetime(2016, 7, 20, 3, 0, tzinfo=UTC)
EASTERN = ZoneInfo("America/New_York")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def page(name: str) -> bytes:
    return (PAGES / name).read_bytes()


def active(entity: str, since: datetime = SINCE) -> PageRequest:
    """The first request of `entity`: its active and archived records."""
    return freshbooks.first_requests(ACCOUNT, since, [entity])[0]


# --- the requests ----------------------------------------------------------------------------------


def test_first_requests_search_each_entity_and_its_deleted_records() -> None:
    requests = freshbooks.first_requests(ACCOUNT, SINCE, freshbooks.ENTITIES)
    paging = (("page", "1"), ("per_page", "100"))
    day = ("search[updated_min]", "2016-07-19")
    deleted = ("search[vis_state]", "1")
    base = "/accounting/account/zDmNq/"
    assert [(r.method, r.path, r.params) for r in requests] == [
        ("GET", base + "users/clients", (day, *paging)),
        ("GET", base + "users/clients", (day, deleted, *paging)),
        ("GET", base + "invoices/invoices", (day, *paging)),
        ("GET", base + "invoices/invoices", (day, deleted, *paging)),
        ("GET", base + "payments/payments", (day, *paging)),
        ("GET", base + "payments/payments", (day, deleted, *paging)),
        ("GET", base + "expenses/expenses", (day, *paging)),
        ("GET", base + "expenses/expenses", (day, deleted, *paging)),
        ("GET", base + "items/items", (day, *paging)),
        ("GET", base + "items/items", (day, deleted, *paging)),
        # Taxes keep no deleted records.
        ("GET", base + "taxes/taxes", (day, *paging)),
    ]
    # No token (the fetcher adds it), no body.
    assert all(r.headers == () and r.body is None for r in requests)


def test_the_search_day_is_the_us_eastern_day_of_since() -> None:
    assert (
        dict(active("client", datetime(2016, 7, 20, 4, 0, tzinfo=UTC)).params)["search[updated_min]"]
        == "2016-07-20"
    )  # midnight EDT
    assert (
        dict(active("client", datetime(2016, 7, 20, 3, 59, tzinfo=UTC)).params)["search[updated_min]"]
        == "2016-07-19"
    )
    plus_ten = timezone(timedelta(hours=10))
    assert (
        dict(active("client", datetime(2016, 7, 20, 9, 0, tzinfo=plus_ten)).params)["search[updated_min]"]
        == "2016-07-19"
    )


def test_entities_are_checked_asked_once_and_accounts_kept_in_their_path_segment() -> None:
    requests = freshbooks.first_requests(PollTarget("a/b?c"), SINCE, ["tax", "tax", "bill"])
    assert [r.path for r in requests] == [
        "/accounting/account/a%2Fb%3Fc/taxes/taxes",
        "/accounting/account/a%2Fb%3Fc/bills/bills",
        "/accounting/account/a%2Fb%3Fc/bills/bills",
    ]
    for name in ("credit_note", "bill_payment", "time_entry"):
        with pytest.raises(ValueError, match=name):
            freshbooks.first_requests(ACCOUNT, SINCE, [name])
    with pytest.raises(ValueError, match="aware"):
        freshbooks.first_requests(ACCOUNT, datetime(2016, 7, 20), ["client"])


def test_next_requests_turn_the_page_until_page_reaches_pages() -> None:
    deleted = freshbooks.first_requests(ACCOUNT, SINCE, ["item"])[1]
    [second] = freshbooks.next_requests(ACCOUNT, deleted, PolledPage(more=True))
    assert second == PageRequest(
        "GET",
        "/accounting/account/zDmNq/items/items",
        (
            ("search[updated_min]", "2016-07-19"),
            ("search[vis_state]", "1"),
            ("page", "2"),
            ("per_page", "100"),
        ),
    )
    [third] = freshbooks.next_requests(ACCOUNT, second, PolledPage(more=True))
    assert dict(third.params)["page"] == "3"
    assert freshbooks.next_requests(ACCOUNT, deleted, PolledPage(more=False)) == []


def test_module_constants() -> None:
    assert freshbooks.PAGE_SIZE == 100
    # The search matches whole days: re-reading at least one covers it.
    assert timedelta(days=1) <= freshbooks.OVERLAP
    for entity in freshbooks.ENTITIES:
        assert entity_name(Provider.FRESHBOOKS, entity)[0] in UNIFIED_ENTITIES, entity


# --- golden pages ----------------------------------------------------------------------------------


# https://www.freshbooks.com/api/items: the documented item (its fields up to `vis_state`), in the
# list envelope of https://www.freshbooks.com/api/parameters. `updated` is US/Eastern (EDT in July).
def test_golden_items_page() -> None:
    parsed = freshbooks.parse_page(ACCOUNT, active("item"), page("items.json"))
    assert parsed == PolledPage(
        changes=[
            ProviderChange(
                provider_account_id="zDmNq",
                entity="item",
                entity_id="201225",
                operation="updated",
                occurred_at=datetime(2016, 7, 20, 19, 36, 9, tzinfo=UTC),
                event_id=None,
                attributes={},
            )
        ],
        more=False,
        server_time=None,
    )
    assert normalize(Provider.FRESHBOOKS, parsed.changes[0]).entity == "item"


# https://www.freshbooks.com/api/taxes: the documented tax (no vis_state: taxes have none).
def test_golden_taxes_page() -> None:
    parsed = freshbooks.parse_page(ACCOUNT, active("tax"), page("taxes.json"))
    assert parsed.changes == [
        ProviderChange("zDmNq", "tax", "58728", "updated", datetime(2016, 7, 20, 19, 28, 44, tzinfo=UTC))
    ]
    assert parsed.more is False
    assert normalize(Provider.FRESHBOOKS, parsed.changes[0]).entity == "tax_rate"


# https://freshbooks.github.io/freshbooks-python-sdk/html/user_guide/making_calls.html ("Dates and
# Times"): a client `updated` "2021-04-16 10:31:59" is 14:31:59 UTC; page 2 of 3 from its paging
# example. The second client is the same, archived (vis_state 2, https://www.freshbooks.com/api/active_deleted).
def test_golden_clients_page_in_us_eastern_with_an_archived_client() -> None:
    request = active("client", datetime(2021, 4, 15, tzinfo=UTC))
    parsed = freshbooks.parse_page(ACCOUNT, request, page("clients.json"))
    at = datetime(2021, 4, 16, 14, 31, 59, tzinfo=UTC)
    assert parsed.changes == [
        ProviderChange("zDmNq", "client", "134", "updated", at),
        ProviderChange("zDmNq", "client", "135", "updated", at, attributes={"vis_state": "archived"}),
    ]
    assert parsed.more is True
    normalized = normalize(Provider.FRESHBOOKS, parsed.changes[0])
    assert (normalized.entity, normalized.contact_type, normalized.operation) == (
        "contact",
        "customer",
        "updated",
    )


# The error of the same SDK page: {"response": {"errors": [{"errno": 1012, ...}]}}.
def test_golden_error_is_a_parse_error_naming_the_errno_only() -> None:
    with pytest.raises(ParseError, match="errno 1012") as raised:
        freshbooks.parse_page(ACCOUNT, active("client"), page("error.json"))
    assert "not found" not in str(raised.value)


def documented_clients(**fields: Any) -> bytes:
    document = json.loads(page("clients.json"))
    document["response"]["result"]["clients"][0].update(fields)
    return orjson.dumps(document)


def test_vis_state_1_is_a_deletion() -> None:
    request = freshbooks.first_requests(ACCOUNT, datetime(2021, 4, 15, tzinfo=UTC), ["client"])[1]
    changes = freshbooks.parse_page(ACCOUNT, request, documented_clients(vis_state=1)).changes
    assert (changes[0].operation, changes[0].attributes) == ("deleted", {})
    assert normalize(Provider.FRESHBOOKS, changes[0]).operation == "deleted"


def test_created_at_equal_to_updated_is_a_creation() -> None:
    since = datetime(2021, 4, 15, tzinfo=UTC)
    body = documented_clients(created_at="2021-04-16 10:31:59")
    assert freshbooks.parse_page(ACCOUNT, active("client", since), body).changes[0].operation == "created"
    body = documented_clients(created_at="2021-04-16 10:31:58")
    assert freshbooks.parse_page(ACCOUNT, active("client", since), body).changes[0].operation == "updated"


def test_the_ids_fall_back_to_their_duplicates() -> None:
    since = datetime(2021, 4, 15, tzinfo=UTC)
    document = json.loads(page("clients.json"))
    del document["response"]["result"]["clients"][0]["id"]
    [first, _] = freshbooks.parse_page(ACCOUNT, active("client", since), orjson.dumps(document)).changes
    assert first.entity_id == "134"  # from userid


@pytest.mark.parametrize(
    ("updated", "utc"),
    [
        ("2016-01-20 15:36:09", datetime(2016, 1, 20, 20, 36, 9, tzinfo=UTC)),  # EST, -5
        # The autumn hour that happens twice is read as its first (EDT) occurrence.
        ("2021-11-07 01:30:00", datetime(2021, 11, 7, 5, 30, tzinfo=UTC)),
        ("2021-11-07 02:30:00", datetime(2021, 11, 7, 7, 30, tzinfo=UTC)),
        # A time that carries its own offset is read with it.
        ("2021-11-07T01:30:00Z", datetime(2021, 11, 7, 1, 30, tzinfo=UTC)),
        ("2021-11-07T01:30:00.250-0500", datetime(2021, 11, 7, 6, 30, 0, 250000, tzinfo=UTC)),
    ],
)
def test_updated_times_in_us_eastern(updated: str, utc: datetime) -> None:
    body = documented_clients(updated=updated)
    [first, _] = freshbooks.parse_page(
        ACCOUNT, active("client", datetime(2016, 1, 1, tzinfo=UTC)), body
    ).changes
    assert first.occurred_at == utc


def test_bills_answer_updated_at_in_utc() -> None:
    record = {
        "id": 7,
        "updated_at": "2020-09-09 20:13:25",
        "created_at": "2020-09-09 20:13:25",
        "vis_state": 0,
    }
    body = orjson.dumps({"response": {"result": {"bills": [record], "page": 1, "pages": 1}}})
    [change] = freshbooks.parse_page(ACCOUNT, active("bill", datetime(2020, 9, 1, tzinfo=UTC)), body).changes
    assert (change.entity_id, change.operation, change.occurred_at) == (
        "7",
        "created",
        datetime(2020, 9, 9, 20, 13, 25, tzinfo=UTC),
    )


def test_records_updated_before_the_search_day_are_dropped() -> None:
    # Integrators report the search ignored on some endpoints: what it excludes was read before.
    request = active("client", datetime(2021, 4, 16, 12, 0, tzinfo=UTC))  # day 2021-04-16
    assert dict(request.params)["search[updated_min]"] == "2021-04-16"
    before = documented_clients(updated="2021-04-15 23:59:59")
    assert [c.entity_id for c in freshbooks.parse_page(ACCOUNT, request, before).changes] == ["135"]
    midnight = documented_clients(updated="2021-04-16 00:00:00")
    assert [c.entity_id for c in freshbooks.parse_page(ACCOUNT, request, midnight).changes] == ["134", "135"]


def clients(*records: Any, page: Any = 1, pages: Any = 1) -> bytes:
    return orjson.dumps({"response": {"result": {"clients": list(records), "page": page, "pages": pages}}})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"response": {"errors": {"errno": 1003, "message": "Permission Denied"}}}', "errno 1003"),
        (b'{"response": {"errors": []}}', "error"),
        (b'{"response": {"errors": [{"errno": "x"}]}}', "error"),
        (b"{}", "response"),
        (b'{"response": {}}', "result"),
        (b'{"response": {"result": {"page": 1, "pages": 1}}}', "clients"),
        (b'{"response": {"result": {"clients": [], "pages": 1}}}', "page"),
        (clients(page=True), "page"),
        (clients(pages=-1), "pages"),
        (clients(pages=2), "empty page"),
        (clients({"updated": "2021-04-16 10:31:59"}), "id"),
        (clients({"id": 1}), "updated"),
        (clients({"id": 1, "updated": "2021-04-16"}), "updated"),
        (clients({"id": 1, "updated": "2021-04-16T10:31:59.123456789"}), "updated"),
        (clients({"id": 1, "updated": "2021-04-16 10:31:59", "vis_state": "1"}), "vis_state"),
        (clients({"id": 1, "updated": "9999-12-31 23:59:59"}), "updated"),
        (b"\xff\xfe", "JSON"),
    ],
)
def test_unreadable_pages_are_parse_errors(body: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as raised:
        freshbooks.parse_page(ACCOUNT, active("client", datetime(2016, 1, 1, tzinfo=UTC)), body)
    assert "Permission" not in str(raised.value)


def test_no_results_is_the_last_page() -> None:
    # FreshBooks answers pages 0 when nothing matches.
    body = b'{"response": {"result": {"clients": [], "page": 1, "pages": 0, "per_page": 100, "total": 0}}}'
    assert freshbooks.parse_page(ACCOUNT, active("client"), body) == PolledPage()


@pytest.mark.parametrize(
    "path",
    ["/accounting/account/zDmNq/credit_notes/credit_notes", "/accounting/account//users/clients", "/x"],
)
def test_a_request_this_module_did_not_build_is_refused(path: str) -> None:
    with pytest.raises(ParseError):
        freshbooks.parse_page(ACCOUNT, PageRequest("GET", path), page("items.json"))


# --- properties ------------------------------------------------------------------------------------

JSON = json_values(
    ["2021-04-16 10:31:59", "0001-01-01 00:00:00", "9999-12-31 23:59:59", "2021-02-30 00:00:00"]
)


def sound(request: PageRequest, body: bytes) -> PolledPage | None:
    """The parsed page after checking its invariants, or None for a ParseError (anything else fails)."""
    try:
        parsed = freshbooks.parse_page(ACCOUNT, request, body)
    except ParseError:
        return None
    assert isinstance(parsed.more, bool)
    for change in parsed.changes:
        assert change.provider_account_id == ACCOUNT.account
        assert change.entity_id.strip() == change.entity_id and change.entity_id
        assert change.occurred_at is not None and change.occurred_at.utcoffset() == timedelta(0)
        assert change.operation in ("created", "updated", "deleted")
        assert change.event_id is None
        normalize(Provider.FRESHBOOKS, change)
    assert freshbooks.parse_page(ACCOUNT, request, body) == parsed  # pure
    return parsed


EARLY = datetime(1990, 1, 1, tzinfo=UTC)


@FUZZ
@given(body=st.binary(max_size=1_000), entity=st.sampled_from(freshbooks.ENTITIES))
def test_arbitrary_bytes(body: bytes, entity: str) -> None:
    sound(active(entity, EARLY), body)


@FUZZ
@given(value=JSON)
def test_arbitrary_json(value: Any) -> None:
    sound(active("client", EARLY), dumps(value))


@FUZZ
@given(depth=st.integers(min_value=1, max_value=5_000), opener=st.sampled_from(["[", '{"response":']))
def test_deep_nesting(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    sound(active("client", EARLY), (opener * depth + "1" + closer * depth).encode())


@st.composite
def hostile_page(draw: st.DrawFn) -> Any:
    record = st.builds(
        lambda **fields: {k: v for k, v in fields.items() if v is not MISSING},
        id=hostile(st.integers(min_value=1, max_value=2**40), JSON),
        userid=hostile(st.integers(min_value=1, max_value=2**40), JSON),
        updated=hostile(st.just("2021-04-16 10:31:59"), JSON),
        created_at=hostile(st.just("2021-04-16 10:31:59"), JSON),
        vis_state=hostile(st.sampled_from([0, 1, 2, 3]), JSON),
    )
    result = st.builds(
        lambda **fields: {k: v for k, v in fields.items() if v is not MISSING},
        clients=hostile(st.lists(hostile(record, JSON), max_size=3), JSON),
        page=hostile(st.integers(min_value=0, max_value=3), JSON),
        pages=hostile(st.integers(min_value=0, max_value=3), JSON),
    )
    response = st.builds(
        lambda **fields: {k: v for k, v in fields.items() if v is not MISSING},
        result=hostile(result, JSON),
        errors=st.just(MISSING) | JSON,
    )
    return {"response": draw(hostile(response, JSON)), "extra": draw(JSON)}


@FUZZ
@given(value=hostile_page())
def test_hostile_field_values(value: Any) -> None:
    sound(active("client", EARLY), dumps(value))


@pytest.mark.parametrize(
    "body",
    [
        b'{"response": {"result": {"clients": [], "clients": {}, "page": 1, "pages": 1}}}',
        b'{"response": {"errors": [], "result": {"clients": [], "page": 1, "pages": 1}, "errors": 1}}',
        b'{"response": {"result": {"clients": [{"id": 1, "id": 2, "updated": "2021-04-16 10:31:59"}],'
        b' "page": 1, "page": 2, "pages": 1}}}',
    ],
)
def test_duplicate_keys_are_read_like_any_json(body: bytes) -> None:
    sound(active("client", EARLY), body)


@st.composite
def valid_page(draw: st.DrawFn) -> tuple[str, bytes, list[tuple[str, datetime, str]], bool]:
    entity = draw(st.sampled_from(sorted(freshbooks._RESOURCES)))
    resource = freshbooks._RESOURCES[entity]
    records, expected = [], []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        record_id = draw(st.integers(min_value=1, max_value=2**53))
        local = draw(st.datetimes(min_value=datetime(2016, 7, 21), max_value=datetime(2099, 1, 1)))
        # A written wall time has no fold: in a repeated hour the module reads the first instant.
        local = local.replace(microsecond=0, fold=0)
        written = local.strftime("%Y-%m-%d %H:%M:%S")
        # What the zone-less wall time stands for (the first of a repeated hour, as the module reads it).
        moment = local.replace(tzinfo=resource.zone).astimezone(UTC)
        vis_state = draw(st.sampled_from([0, 1, 2, None]))
        fresh = draw(st.booleans())
        record: dict[str, Any] = {resource.id_fields[0]: record_id, resource.updated: written, "x": [1, {}]}
        if vis_state is not None:
            record["vis_state"] = vis_state
        record["created_at"] = written if fresh else "2000-01-01 00:00:00"
        operation = "deleted" if vis_state == 1 else ("created" if fresh else "updated")
        records.append(record)
        expected.append((str(record_id), moment, operation))
    page_number = draw(st.integers(min_value=1, max_value=5))
    pages = (
        draw(st.integers(min_value=page_number, max_value=7)) if records else draw(st.sampled_from([0, 1]))
    )
    result = {resource.records: records, "page": page_number, "pages": pages, "per_page": 100, "total": 9}
    return entity, orjson.dumps({"response": {"result": result}}), expected, page_number < pages


@FUZZ
@given(generated=valid_page())
def test_valid_pages_round_trip(generated: tuple[str, bytes, list[tuple[str, datetime, str]], bool]) -> None:
    entity, body, expected, more = generated
    request = active(entity, datetime(2016, 7, 21, tzinfo=UTC))  # day 2016-07-20: nothing dropped
    parsed = sound(request, body)
    assert parsed is not None
    assert [(c.entity_id, c.occurred_at, c.operation) for c in parsed.changes] == expected
    assert all(c.entity == entity for c in parsed.changes)
    assert parsed.more is more
    assert len(freshbooks.next_requests(ACCOUNT, request, parsed)) == int(more)
