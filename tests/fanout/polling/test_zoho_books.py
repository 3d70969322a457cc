"""Zoho Books polling (docs/providers.md, Zoho Books): the list requests, golden pages from Zoho's
documented examples, and hostile or generated pages through the parser."""

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.changes import ParseError, ProviderChange
from fanout.polling import zoho_books
from fanout.polling.pages import PageRequest, PolledPage, PollTarget
from fanout.vocabulary import UNIFIED_ENTITIES, entity_name, normalize
from provider_auth.providers import Provider
from tests.fanout.polling.careless_json import MISSING, dumps, hostile, json_values

PAGES = Path(__file__).parent / "pages" / "zoho_books"
ORG = PollTarget(account="10234695")  # the organization id of Zoho's examples
SINCE = datetime(2013, 11, 18, 10, 0, tzinfo=UTC)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def page(name: str) -> bytes:
    return (PAGES / name).read_bytes()


def first(entity: str, since: datetime = SINCE) -> PageRequest:
    [request] = zoho_books.first_requests(ORG, since, [entity])
    return request


# --- the requests ----------------------------------------------------------------------------------


def test_first_requests_list_each_entity_modified_since_the_watermark() -> None:
    requests = zoho_books.first_requests(ORG, SINCE, zoho_books.ENTITIES)
    assert [r.path for r in requests] == [
        "/invoices",
        "/contacts",
        "/bills",
        "/creditnotes",
        "/customerpayments",
        "/vendorpayments",
        "/items",
        "/purchaseorders",
        "/expenses",
        "/vendorcredits",
    ]
    for request in requests:
        assert request.method == "GET"
        # Relative to the API base, which already ends in /books/v3; no token: the fetcher adds it.
        assert request.params == (
            ("organization_id", "10234695"),
            ("last_modified_time", "2013-11-18T10:00:00+0000"),
            ("page", "1"),
            ("per_page", "200"),
        )
        assert request.headers == ()
        assert request.body is None


def test_the_filter_time_is_utc_whole_seconds_rounded_down() -> None:
    since = datetime(2013, 11, 18, 2, 17, 40, 999_999, tzinfo=timezone(timedelta(hours=-8)))
    assert dict(first("invoice", since).params)["last_modified_time"] == "2013-11-18T10:17:40+0000"


def test_entities_are_checked_and_asked_once() -> None:
    assert [r.path for r in zoho_books.first_requests(ORG, SINCE, ["bill", "bill", "journal"])] == [
        "/bills",
        "/journals",
    ]
    with pytest.raises(ValueError, match="timesheet"):
        zoho_books.first_requests(ORG, SINCE, ["timesheet"])
    with pytest.raises(ValueError, match="aware"):
        zoho_books.first_requests(ORG, datetime(2013, 11, 18), ["invoice"])


def test_next_requests_turn_the_page_until_has_more_page_is_false() -> None:
    request = first("contact")
    assert zoho_books.next_requests(ORG, request, PolledPage(more=True)) == [
        PageRequest(
            method="GET",
            path="/contacts",
            params=(
                ("organization_id", "10234695"),
                ("last_modified_time", "2013-11-18T10:00:00+0000"),
                ("page", "2"),
                ("per_page", "200"),
            ),
        )
    ]
    [second] = zoho_books.next_requests(ORG, request, PolledPage(more=True))
    [third] = zoho_books.next_requests(ORG, second, PolledPage(more=True))
    assert dict(third.params)["page"] == "3"
    assert zoho_books.next_requests(ORG, request, PolledPage(more=False)) == []


def test_module_constants() -> None:
    assert zoho_books.PAGE_SIZE == 200
    assert timedelta(0) < zoho_books.OVERLAP <= timedelta(hours=1)
    assert zoho_books.MODIFIED_FILTER == "last_modified_time"
    # Every default entity is one the unified vocabulary knows.
    for entity in zoho_books.ENTITIES:
        assert entity_name(Provider.ZOHO_BOOKS, entity)[0] in UNIFIED_ENTITIES, entity


# --- golden pages ----------------------------------------------------------------------------------


# https://www.zoho.com/books/api/v3/invoices/#list-invoices: the documented List invoices answer
# (Zoho's example values; its "Download OpenAPI document" carries the same), with the page_context of
# https://www.zoho.com/books/api/v3/pagination.
def test_golden_invoices_page() -> None:
    parsed = zoho_books.parse_page(ORG, first("invoice"), page("invoices.json"))
    assert parsed == PolledPage(
        changes=[
            ProviderChange(
                provider_account_id="10234695",
                entity="invoice",
                entity_id="982000000567114",
                # created_time == last_modified_time: never modified since it was created.
                operation="created",
                occurred_at=datetime(2013, 11, 18, 10, 17, 40, tzinfo=UTC),
                event_id=None,
                attributes={"status": "draft"},
            )
        ],
        more=False,
        server_time=None,
    )
    normalized = normalize(Provider.ZOHO_BOOKS, parsed.changes[0])
    assert (normalized.entity, normalized.operation) == ("invoice", "created")


# https://www.zoho.com/books/api/v3/journals/#get-journal-list: the documented journal list answer,
# whose records carry no modified time (why journals are not polled by default): the page fails
# rather than let a watermark pass records whose version is unknown.
def test_golden_journals_page_without_times_fails() -> None:
    assert "journal" not in zoho_books.ENTITIES
    with pytest.raises(ParseError, match="last_modified_time"):
        zoho_books.parse_page(ORG, first("journal"), page("journals.json"))


# https://www.zoho.com/books/api/v3/bills/#list-bills: the example of its last_modified_time
# filter, `2013-09-11T17:18:32+0530`, as a bill's time, on a bill modified since its creation.
def test_bill_times_in_plus_0530() -> None:
    record = {
        "bill_id": "460000000098765",
        "status": "open",
        "created_time": "2013-09-10T10:00:00+0530",
        "last_modified_time": "2013-09-11T17:18:32+0530",
    }
    body = orjson.dumps({"code": 0, "bills": [record], "page_context": {"has_more_page": False}})
    request = first("bill", since=datetime(2013, 9, 1, tzinfo=UTC))
    assert zoho_books.parse_page(ORG, request, body).changes == [
        ProviderChange(
            "10234695",
            "bill",
            "460000000098765",
            "updated",
            datetime(2013, 9, 11, 11, 48, 32, tzinfo=UTC),
            attributes={"status": "open"},
        )
    ]


# https://www.zoho.com/books/api/v3/pagination (page 2 of 25 a page, no more) around the contact of
# https://www.zoho.com/books/api/v3/contacts/#list-contacts; the example shows no times, so these
# two are written in the documented format (https://www.zoho.com/books/api/v3/response).
def test_golden_contacts_page_keeps_the_contact_type() -> None:
    request = zoho_books.next_requests(ORG, first("contact"), PolledPage(more=True))[0]
    parsed = zoho_books.parse_page(ORG, request, page("contacts_page_2.json"))
    assert parsed.more is False
    [change] = parsed.changes
    assert change == ProviderChange(
        "10234695",
        "contact",
        "460000000026049",
        "updated",
        datetime(2013, 11, 19, 16, 1, 12, tzinfo=UTC),
        attributes={"contact_type": "customer"},
    )
    normalized = normalize(Provider.ZOHO_BOOKS, change)
    assert (normalized.entity, normalized.contact_type) == ("contact", "customer")


def documented_invoice(**fields: Any) -> bytes:
    document = json.loads(page("invoices.json"))
    document["invoices"][0].update(fields)
    return orjson.dumps(document)


def test_a_void_document_is_voided() -> None:
    body = documented_invoice(status="void", last_modified_time="2013-11-20T09:00:00-0800")
    [change] = zoho_books.parse_page(ORG, first("invoice"), body).changes
    assert (change.operation, change.attributes) == ("voided", {"status": "void"})
    assert normalize(Provider.ZOHO_BOOKS, change).operation == "voided"


def test_has_more_page_asks_for_the_next_page() -> None:
    document = json.loads(page("invoices.json"))
    document["page_context"]["has_more_page"] = True
    parsed = zoho_books.parse_page(ORG, first("invoice"), orjson.dumps(document))
    assert parsed.more is True
    assert [dict(r.params)["page"] for r in zoho_books.next_requests(ORG, first("invoice"), parsed)] == ["2"]


def test_payments_are_read_under_either_documented_key() -> None:
    record = {"payment_id": "9030000079467", "last_modified_time": "2016-06-05T10:00:00-0700"}
    for key in ("customerpayments", "customer_payments"):
        body = orjson.dumps({"code": 0, key: [record], "page_context": {"has_more_page": False}})
        [change] = zoho_books.parse_page(ORG, first("customerpayment"), body).changes
        assert (change.entity, change.entity_id) == ("customerpayment", "9030000079467")
        assert normalize(Provider.ZOHO_BOOKS, change).entity == "payment"


def test_records_older_than_the_filter_are_dropped_equal_ones_kept() -> None:
    # Where the filter is not documented Zoho may ignore it: those records were read before.
    older = {"invoice_id": "1", "last_modified_time": "2013-11-18T01:59:59-0800"}
    equal = {"invoice_id": "2", "last_modified_time": "2013-11-18T02:00:00-0800"}
    body = orjson.dumps({"code": 0, "invoices": [older, equal], "page_context": {"has_more_page": False}})
    assert [c.entity_id for c in zoho_books.parse_page(ORG, first("invoice"), body).changes] == ["2"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"code": 57, "message": "You are not authorized to perform this operation"}', "code 57"),
        (b'{"code": "0", "invoices": [], "page_context": {"has_more_page": false}}', "code"),
        (b'{"code": 0, "page_context": {"has_more_page": false}}', "invoices"),
        (b'{"code": 0, "invoices": {}, "page_context": {"has_more_page": false}}', "invoices"),
        (b'{"code": 0, "invoices": []}', "page_context"),
        (b'{"code": 0, "invoices": [], "page_context": {"has_more_page": "false"}}', "has_more_page"),
        (b'{"code": 0, "invoices": [], "page_context": {"has_more_page": true}}', "empty page"),
        (
            b'{"code": 0, "invoices": [{"last_modified_time": "2013-11-18T02:17:40-0800"}],'
            b' "page_context": {"has_more_page": false}}',
            "invoice_id",
        ),
        (
            b'{"code": 0, "invoices": [{"invoice_id": "1"}], "page_context": {"has_more_page": false}}',
            "last_modified_time",
        ),
        # No offset: a time in no known zone is no version.
        (
            b'{"code": 0, "invoices": [{"invoice_id": "1", "last_modified_time": "2013-11-18T02:17:40"}],'
            b' "page_context": {"has_more_page": false}}',
            "last_modified_time",
        ),
        (b"[]", "body"),
        (b"\xff", "JSON"),
    ],
)
def test_unreadable_pages_are_parse_errors(body: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as raised:
        zoho_books.parse_page(ORG, first("invoice"), body)
    assert "authorized" not in str(raised.value)  # the reason, never the body


def test_a_request_this_module_did_not_build_is_refused() -> None:
    with pytest.raises(ParseError):
        zoho_books.parse_page(ORG, PageRequest("GET", "/organizations"), page("invoices.json"))


# --- properties ------------------------------------------------------------------------------------

JSON = json_values(["2013-11-18T02:17:40-0800", "2013-11-18T02:17:40", "9999-12-31T23:59:59-2359", "0"])


def sound(request: PageRequest, body: bytes) -> PolledPage | None:
    """The parsed page after checking its invariants, or None for a ParseError (anything else fails)."""
    try:
        parsed = zoho_books.parse_page(ORG, request, body)
    except ParseError:
        return None
    assert isinstance(parsed.more, bool)
    for change in parsed.changes:
        assert change.provider_account_id == ORG.account
        assert change.entity_id.strip() == change.entity_id and change.entity_id
        assert change.occurred_at is not None and change.occurred_at.utcoffset() == timedelta(0)
        assert change.operation in ("created", "updated", "voided")
        assert change.event_id is None
        normalize(Provider.ZOHO_BOOKS, change)
    assert zoho_books.parse_page(ORG, request, body) == parsed  # pure
    return parsed


@FUZZ
@given(body=st.binary(max_size=1_000), entity=st.sampled_from(zoho_books.ENTITIES))
def test_arbitrary_bytes(body: bytes, entity: str) -> None:
    sound(first(entity), body)


@FUZZ
@given(value=JSON)
def test_arbitrary_json(value: Any) -> None:
    sound(first("invoice"), dumps(value))


@FUZZ
@given(depth=st.integers(min_value=1, max_value=5_000), opener=st.sampled_from(["[", '{"a":']))
def test_deep_nesting(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    sound(first("invoice"), (opener * depth + "1" + closer * depth).encode())


@st.composite
def hostile_page(draw: st.DrawFn) -> Any:
    record = st.builds(
        lambda **fields: {k: v for k, v in fields.items() if v is not MISSING},
        invoice_id=hostile(st.one_of(st.text(max_size=8), st.integers()), JSON),
        last_modified_time=hostile(st.just("2013-11-18T02:17:40-0800"), JSON),
        created_time=hostile(st.just("2013-11-18T02:17:40-0800"), JSON),
        status=hostile(st.sampled_from(["void", "draft"]), JSON),
    )
    return {
        "code": draw(hostile(st.just(0), JSON)),
        "invoices": draw(hostile(st.lists(hostile(record, JSON), max_size=3), JSON)),
        "page_context": draw(
            hostile(st.fixed_dictionaries({"has_more_page": hostile(st.booleans(), JSON)}), JSON)
        ),
        "extra": draw(JSON),
    }


@FUZZ
@given(value=hostile_page())
def test_hostile_field_values(value: Any) -> None:
    sound(first("invoice"), dumps(value))


@pytest.mark.parametrize(
    "body",
    [
        b'{"code": 0, "code": 57, "invoices": [], "page_context": {"has_more_page": false}}',
        b'{"code": 0, "invoices": [], "invoices": 1, "page_context": {"has_more_page": false}}',
        b'{"code": 0, "invoices": [{"invoice_id": "1", "invoice_id": "2", "last_modified_time": "x",'
        b' "last_modified_time": "2013-11-18T02:17:40-0800"}], "page_context": {"has_more_page": false}}',
    ],
)
def test_duplicate_keys_are_read_like_any_json(body: bytes) -> None:
    sound(first("invoice"), body)


@st.composite
def valid_page(draw: st.DrawFn) -> tuple[str, bytes, list[tuple[str, datetime, str]], bool]:
    entity = draw(st.sampled_from(zoho_books.ENTITIES))
    id_field = zoho_books._ENDPOINTS[entity].id_field
    key = zoho_books._ENDPOINTS[entity].records[0]
    records, expected = [], []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        record_id = draw(st.from_regex(r"[0-9]{1,18}", fullmatch=True))
        moment = draw(st.datetimes(min_value=datetime(2013, 11, 18, 10), max_value=datetime(2099, 1, 1)))
        moment = moment.replace(microsecond=0, tzinfo=UTC)
        minutes = draw(st.integers(min_value=-12 * 60, max_value=14 * 60))
        local = moment.astimezone(timezone(timedelta(minutes=minutes)))
        written = local.strftime("%Y-%m-%dT%H:%M:%S%z")
        created = draw(st.sampled_from(["same", "earlier", "absent"]))
        status = draw(st.sampled_from(["void", "Void", "draft", "sent", None]))
        record: dict[str, Any] = {id_field: record_id, "last_modified_time": written, "total": 1.5}
        if created == "same":
            record["created_time"] = written
        elif created == "earlier":
            record["created_time"] = (local - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S%z")
        if status is not None:
            record["status"] = status
        operation = (
            "voided"
            if status is not None and status.lower() == "void"
            else ("created" if created == "same" else "updated")
        )
        records.append(record)
        expected.append((record_id, moment, operation))
    more = draw(st.booleans()) and bool(records)
    body = orjson.dumps(
        {"code": 0, "message": "success", key: records, "page_context": {"has_more_page": more}}
    )
    return entity, body, expected, more


@FUZZ
@given(generated=valid_page())
def test_valid_pages_round_trip(generated: tuple[str, bytes, list[tuple[str, datetime, str]], bool]) -> None:
    entity, body, expected, more = generated
    parsed = sound(first(entity), body)
    assert parsed is not None
    assert [(c.entity_id, c.occurred_at, c.operation) for c in parsed.changes] == expected
    assert all(c.entity == entity for c in parsed.changes)
    assert parsed.more is more
    assert len(zoho_books.next_requests(ORG, first(entity), parsed)) == int(more)
