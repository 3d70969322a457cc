"""Xero accounting list endpoints (docs/providers.md, Xero): the calls, Xero's documented answers,
paging, and hostile and generated pages."""

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.changes import ParseError, ProviderChange
from fanout.polling import xero
from fanout.polling.pages import PageRequest, PolledPage, PollTarget
from fanout.vocabulary import UNIFIED_ENTITIES, entity_name, normalize
from provider_auth.providers import Provider
from tests.fanout.polling.careless_json import MISSING, dumps, hostile, json_values

PAGES = Path(__file__).parent / "pages" / "xero"
TENANT = "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"
TARGET = PollTarget(account=TENANT)
SINCE = datetime(2019, 3, 1, 12, 30, 15, tzinfo=UTC)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADERS = (
    ("Accept", "application/json"),
    ("xero-tenant-id", TENANT),
    ("If-Modified-Since", "2019-03-01T12:30:15"),
)


def first(entity: str, since: datetime = SINCE) -> PageRequest:
    (request,) = xero.first_requests(TARGET, since, [entity])
    return request


def ms(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)


# --- what is polled ------------------------------------------------------------------------------


def test_entities_are_known_to_the_vocabulary() -> None:
    names = {entity: entity_name(Provider.XERO, entity) for entity in xero.ENTITIES}
    assert names == {
        "Invoice": ("invoice", None),
        "Contact": ("contact", None),
        "CreditNote": ("credit_note", None),
        "Payment": ("payment", None),
        "BankTransaction": ("bank_transaction", None),
        "ManualJournal": ("journal_entry", None),
        "PurchaseOrder": ("purchase_order", None),
        "Item": ("item", None),
        "Account": ("account", None),
    }
    assert set(xero.ENTITIES) <= set(xero.ENDPOINTS)
    assert {entity for entity, _ in names.values()} - {"bank_transaction"} <= set(UNIFIED_ENTITIES)
    # The webhook categories and the polled names are one entity each.
    assert entity_name(Provider.XERO, "CREDITNOTE") == names["CreditNote"]
    assert entity_name(Provider.XERO, "INVOICE") == names["Invoice"]


def test_constants() -> None:
    assert xero.PAGE_SIZE == 100
    assert timedelta(0) < xero.OVERLAP <= timedelta(minutes=10)


# --- requests --------------------------------------------------------------------------------------


def test_first_request_of_a_paged_endpoint_with_archived_records() -> None:
    since = datetime(2019, 3, 1, 1, 30, 15, 999_999, tzinfo=timezone(timedelta(hours=-11)))
    assert xero.first_requests(TARGET, since, ["Invoice"]) == [
        PageRequest(
            method="GET",
            path="/api.xro/2.0/Invoices",
            params=(
                ("page", "1"),
                ("pageSize", "100"),
                ("order", "UpdatedDateUTC ASC"),
                ("includeArchived", "true"),
            ),
            headers=HEADERS,
            body=None,
        )
    ]


@pytest.mark.parametrize(
    ("entity", "path", "params"),
    [
        (
            "Contact",
            "Contacts",
            (
                ("page", "1"),
                ("pageSize", "100"),
                ("order", "UpdatedDateUTC ASC"),
                ("includeArchived", "true"),
            ),
        ),
        ("CreditNote", "CreditNotes", (("page", "1"), ("pageSize", "100"), ("order", "UpdatedDateUTC ASC"))),
        ("Payment", "Payments", (("page", "1"), ("pageSize", "100"), ("order", "UpdatedDateUTC ASC"))),
        (
            "BankTransaction",
            "BankTransactions",
            (("page", "1"), ("pageSize", "100"), ("order", "UpdatedDateUTC ASC")),
        ),
        (
            "ManualJournal",
            "ManualJournals",
            (("page", "1"), ("pageSize", "100"), ("order", "UpdatedDateUTC ASC")),
        ),
        (
            "PurchaseOrder",
            "PurchaseOrders",
            (("page", "1"), ("pageSize", "100"), ("order", "UpdatedDateUTC ASC")),
        ),
        (
            "Overpayment",
            "Overpayments",
            (("page", "1"), ("pageSize", "100"), ("order", "UpdatedDateUTC ASC")),
        ),
        ("Prepayment", "Prepayments", (("page", "1"), ("pageSize", "100"), ("order", "UpdatedDateUTC ASC"))),
        # Items and the chart of accounts do not page: one call each.
        ("Item", "Items", ()),
        ("Account", "Accounts", ()),
    ],
)
def test_first_request_per_endpoint(entity: str, path: str, params: tuple[tuple[str, str], ...]) -> None:
    assert first(entity) == PageRequest("GET", f"/api.xro/2.0/{path}", params, HEADERS)


def test_first_requests_edge_cases() -> None:
    assert xero.first_requests(TARGET, SINCE, []) == []
    assert [r.path for r in xero.first_requests(TARGET, SINCE, xero.ENTITIES)] == [
        f"/api.xro/2.0/{xero.ENDPOINTS[entity].collection}" for entity in xero.ENTITIES
    ]
    assert len(xero.first_requests(TARGET, SINCE, ["Item", "Invoice", "Item"])) == 2
    with pytest.raises(ValueError, match="aware"):
        xero.first_requests(TARGET, datetime(2019, 3, 1), ["Invoice"])
    for unknown in ("INVOICE", "Invoices", "BankTransfer", ""):
        with pytest.raises(ValueError, match="no Xero list endpoint"):
            xero.first_requests(TARGET, SINCE, [unknown])


# --- Xero's documented answers ----------------------------------------------------------------------

# Response examples of Xero's own API description, per operation (getInvoices, getContacts, ...):
# https://github.com/XeroAPI/Xero-OpenAPI/blob/master/xero_accounting.yaml
GOLDEN = [
    (
        "Invoice",
        "invoices.json",  # getInvoices
        1552326816230,
        [
            (
                "d4956132-ed94-4dd7-9eaa-aa22dfdf06f2",
                "VOIDED",
                1541176290160,
                {"status": "VOIDED", "type": "ACCREC"},
            ),
            (
                "046d8a6d-1ae1-4b4d-9340-5601bdf41b87",
                "UPDATE",
                1541176592690,
                {"status": "PAID", "type": "ACCREC"},
            ),
            (
                "7ef31b20-de17-4312-8382-412f869b1510",
                "UPDATE",
                1541176648927,
                {"status": "AUTHORISED", "type": "ACCREC"},
            ),
        ],
    ),
    (
        "Contact",
        "contacts.json",  # getContacts
        1551399323399,
        [
            ("5cc8cf28-567e-4d43-b287-687cfcaec47c", "UPDATE", 1503348544227, {"status": "ACTIVE"}),
            ("3ec601ad-eddc-4ccb-a8ac-736e88293b1b", "UPDATE", 1503348546760, {"status": "ACTIVE"}),
        ],
    ),
    (
        "CreditNote",
        "credit_notes.json",  # getCreditNotes
        1551812506620,
        [
            (
                "249f15fa-f2a7-4acc-8769-0984103f2225",
                "UPDATE",
                1551812346157,
                {"status": "AUTHORISED", "type": "ACCRECCREDIT"},
            ),
            (
                "f8021bd2-9a6a-4c19-8477-163da0b9290f",
                "UPDATE",
                1551812506153,
                {"status": "DRAFT", "type": "ACCPAYCREDIT"},
            ),
        ],
    ),
    (
        "Payment",
        "payments.json",  # getPayments
        1552431874205,
        [
            ("99ea7f6b-c513-4066-bc27-b7c65dcd76c2", "UPDATE", 1541176592690, {"status": "AUTHORISED"}),
            ("6b037c9b-2e5d-4905-84d3-eabfb3438242", "UPDATE", 1551812346173, {"status": "AUTHORISED"}),
        ],
    ),
    (
        "BankTransaction",
        "bank_transactions.json",  # getBankTransactions
        1551212901659,
        [
            (
                "db54aab0-ad40-4ced-bcff-0940ba20db2c",
                "UPDATE",
                1476389616437,
                {"status": "AUTHORISED", "type": "RECEIVE"},
            ),
            (
                "29a69c45-64ca-4805-a1cc-34990de837b3",
                "UPDATE",
                1476389930500,
                {"status": "AUTHORISED", "type": "SPEND-OVERPAYMENT"},
            ),
            (
                "0b89bf5c-d40b-4514-96be-36a739fb0188",
                "UPDATE",
                1476392487037,
                {"status": "AUTHORISED", "type": "SPEND-OVERPAYMENT"},
            ),
        ],
    ),
    (
        "ManualJournal",
        "manual_journals.json",  # getManualJournals
        1552357217359,
        [
            ("0b159335-606b-485f-b51b-97b3b32bad32", "UPDATE", 1552357188083, {"status": "POSTED"}),
            ("99cb8353-ce73-4a5d-8e0d-8b0edf86cfc4", "UPDATE", 1552357188147, {"status": "POSTED"}),
            ("ecb6b362-c78f-462a-a229-a66abf115e92", "UPDATE", 1552357216843, {"status": "DRAFT"}),
        ],
    ),
    (
        "PurchaseOrder",
        "purchase_orders.json",  # getPurchaseOrders
        1552523977238,
        [
            (
                "f9627f0d-b715-4039-bb6a-96dc3eae5ec5",
                "DELETED",
                1552522703443,
                {"status": "DELETED", "type": "PURCHASEORDER"},
            ),
            (
                "6afa2e02-c514-4964-ab89-b5c0179b8c50",
                "DELETED",
                1552522834733,
                {"status": "DELETED", "type": "PURCHASEORDER"},
            ),
        ],
    ),
    (
        "Item",
        "items.json",  # getItems
        1552331874897,
        [
            ("c8c54d65-f3f2-452d-926e-bf450b12fb07", "UPDATE", 1551981476267, {}),
            ("a4544d51-48f6-441f-a623-99ecbced6ab7", "UPDATE", 1552331873580, {}),
        ],
    ),
    (
        "Account",
        "account.json",  # getAccount (one account, the same envelope as the list)
        1550797359081,
        [
            (
                "99ce6032-0678-4aa0-8148-240c75fee33a",
                "UPDATE",
                1550797359120,
                {"status": "ACTIVE", "type": "EXPENSE"},
            )
        ],
    ),
]


@pytest.mark.parametrize(("entity", "fixture", "server_ms", "records"), GOLDEN, ids=[g[1] for g in GOLDEN])
def test_documented_answers(
    entity: str, fixture: str, server_ms: int, records: list[tuple[str, str, int, dict[str, str]]]
) -> None:
    request = first(entity)
    page = xero.parse_page(TARGET, request, (PAGES / fixture).read_bytes())
    assert page == PolledPage(
        changes=[
            ProviderChange(TENANT, entity, record_id, operation, ms(updated), attributes=attributes)
            for record_id, operation, updated, attributes in records
        ],
        more=False,  # pageCount 1, or an endpoint that does not page
        server_time=ms(server_ms),
    )
    assert xero.next_requests(TARGET, request, page) == []


def test_documented_answers_in_the_unified_vocabulary() -> None:
    def kinds(entity: str, fixture: str) -> list[tuple[str, str]]:
        page = xero.parse_page(TARGET, first(entity), (PAGES / fixture).read_bytes())
        return [(n.entity, n.operation) for n in (normalize(Provider.XERO, c) for c in page.changes)]

    assert kinds("Invoice", "invoices.json") == [
        ("invoice", "voided"),
        ("invoice", "updated"),
        ("invoice", "updated"),
    ]
    assert kinds("PurchaseOrder", "purchase_orders.json") == [("purchase_order", "deleted")] * 2
    assert kinds("ManualJournal", "manual_journals.json") == [("journal_entry", "updated")] * 3


def test_the_abridged_chart_of_accounts_example_has_no_version() -> None:
    # getAccounts' example leaves UpdatedDateUTC out: a record without a version fails the page, or a
    # watermark would move past a change nobody read.
    with pytest.raises(ParseError, match=r"^Accounts\[0\]\.UpdatedDateUTC is missing$"):
        xero.parse_page(TARGET, first("Account"), (PAGES / "accounts_abridged.json").read_bytes())


def invoices(count: int, **envelope: Any) -> bytes:
    records = [
        {
            "InvoiceID": f"inv-{i}",
            "Status": "AUTHORISED",
            "UpdatedDateUTC": f"/Date({1541176290160 + i}+0000)/",
        }
        for i in range(count)
    ]
    return json.dumps({"Id": "x", "Status": "OK", **envelope, "Invoices": records}).encode()


def test_pages_follow_until_page_count() -> None:
    request = first("Invoice")
    page = xero.parse_page(
        TARGET, request, invoices(100, pagination={"page": 1, "pageSize": 100, "pageCount": 3})
    )
    assert page.more is True
    (second,) = xero.next_requests(TARGET, request, page)
    assert second == PageRequest(
        "GET",
        "/api.xro/2.0/Invoices",
        (("page", "2"), ("pageSize", "100"), ("order", "UpdatedDateUTC ASC"), ("includeArchived", "true")),
        HEADERS,
    )
    page = xero.parse_page(TARGET, second, invoices(100, pagination={"page": 2, "pageCount": 3}))
    (third,) = xero.next_requests(TARGET, second, page)
    assert dict(third.params)["page"] == "3"
    last = xero.parse_page(TARGET, third, invoices(100, pagination={"page": 3, "pageCount": 3}))
    assert last.more is False
    assert xero.next_requests(TARGET, third, last) == []


def test_an_empty_body_is_an_empty_last_page() -> None:
    # What the fetcher hands over for a 304 Not Modified.
    request = first("Invoice")
    page = xero.parse_page(TARGET, request, b"")
    assert page.changes == [] and not page.more
    assert xero.next_requests(TARGET, request, page) == []


def test_without_pagination_a_short_page_is_the_last() -> None:
    request = first("Invoice")
    assert xero.parse_page(TARGET, request, invoices(100)).more is True
    assert xero.parse_page(TARGET, request, invoices(99)).more is False
    assert xero.parse_page(TARGET, request, invoices(100, pagination={"page": 1})).more is True
    assert xero.parse_page(TARGET, request, invoices(0)) == PolledPage()


def test_an_endpoint_that_does_not_page_is_one_call() -> None:
    body = json.dumps(
        {
            "Items": [{"ItemID": str(i), "UpdatedDateUTC": "/Date(1552331873580+0000)/"} for i in range(250)],
            "pagination": {"page": 1, "pageCount": 7},
        }
    ).encode()
    page = xero.parse_page(TARGET, first("Item"), body)
    assert len(page.changes) == 250
    assert page.more is False
    assert xero.next_requests(TARGET, first("Item"), page) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<Response/>", "not JSON"),
        (b"[]", "body must be a JSON object"),
        (b'{"Status":"OK"}', "^Invoices must be a JSON array$"),
        (b'{"Contacts":[]}', "^Invoices must be a JSON array$"),
        (
            b'{"ErrorNumber":10,"Type":"ValidationException","Message":"A validation exception occurred"}',
            "Invoices",
        ),
        (b'{"Invoices":[7]}', r"^Invoices\[0\] must be a JSON object$"),
        (
            b'{"Invoices":[{"UpdatedDateUTC":"/Date(1541176290160+0000)/"}]}',
            r"^Invoices\[0\]: InvoiceID is missing$",
        ),
        (b'{"Invoices":[{"InvoiceID":"1"}]}', r"UpdatedDateUTC is missing"),
        (b'{"Invoices":[{"InvoiceID":"1","UpdatedDateUTC":"/Date(abc)/"}]}', "UpdatedDateUTC is unreadable"),
        (
            b'{"Invoices":[{"InvoiceID":"1","UpdatedDateUTC":1541176290160}]}',
            "UpdatedDateUTC must be a string",
        ),
        (b'{"Invoices":[],"DateTimeUTC":"later"}', "DateTimeUTC is unreadable"),
        (b'{"Invoices":[],"pagination":[1]}', "pagination must be a JSON object"),
        (b'{"Invoices":[],"pagination":{"pageCount":"3"}}', "pageCount must be an integer"),
        (b'{"Invoices":[],"pagination":{"pageCount":true}}', "pageCount must be an integer"),
    ],
)
def test_unreadable_answers(body: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        xero.parse_page(TARGET, first("Invoice"), body)


def test_statuses_and_their_operations() -> None:
    def operation(status: Any, entity: str = "Invoice") -> tuple[str, dict[str, str]]:
        endpoint = xero.ENDPOINTS[entity]
        item = {
            endpoint.id_field: "1",
            "UpdatedDateUTC": "2019-03-01T12:30:15",
            endpoint.status_field: status,
        }
        body = json.dumps({endpoint.collection: [item]}).encode()
        (found,) = xero.parse_page(TARGET, first(entity), body).changes
        return found.operation, found.attributes

    assert operation("DELETED") == ("DELETED", {"status": "DELETED"})
    assert operation("voided") == ("VOIDED", {"status": "voided"})
    assert operation("ARCHIVED", "Contact") == ("UPDATE", {"status": "ARCHIVED"})
    assert operation("DELETED", "Contact") == ("DELETED", {"status": "DELETED"})
    assert operation(None) == ("UPDATE", {})
    assert operation(["DELETED"]) == ("UPDATE", {})
    # Contacts keep their status in ContactStatus: a `Status` there is not theirs.
    body = b'{"Contacts":[{"ContactID":"1","UpdatedDateUTC":"/Date(0)/","Status":"DELETED"}]}'
    assert xero.parse_page(TARGET, first("Contact"), body).changes[0].operation == "UPDATE"


def test_a_request_not_built_here_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Xero list request"):
        xero.parse_page(TARGET, PageRequest("GET", "/api.xro/2.0/BankTransfers"), b'{"BankTransfers":[]}')
    with pytest.raises(ValueError, match="not a paged Xero request"):
        xero.parse_page(
            TARGET, PageRequest("GET", "/api.xro/2.0/Invoices"), invoices(1, pagination={"pageCount": 2})
        )


# --- hostile input ----------------------------------------------------------------------------------

JSON = json_values(["DELETED", "VOIDED", "/Date(1541176290160+0000)/", "/Date(-99999999999999)/", "\ud800"])


def _obj(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not MISSING}


def sound_page(request: PageRequest, body: bytes) -> PolledPage | None:
    """The page after checking every promise, or None for a ParseError; any other error fails."""
    try:
        page = xero.parse_page(TARGET, request, body)
    except ParseError as error:
        assert "\n" not in str(error)
        return None
    for found in page.changes:
        assert found.provider_account_id == TENANT
        assert isinstance(found.entity_id, str) and found.entity_id.strip() == found.entity_id != ""
        assert found.operation in ("UPDATE", "DELETED", "VOIDED")
        assert found.occurred_at is not None and found.occurred_at.utcoffset() == timedelta(0)
        assert found.event_id is None
        assert all(isinstance(v, str) and v for v in found.attributes.values())
        normalize(Provider.XERO, found)
    assert page.server_time is None or page.server_time.utcoffset() == timedelta(0)
    assert xero.parse_page(TARGET, request, body) == page  # pure
    follow_ups = xero.next_requests(TARGET, request, page)
    assert len(follow_ups) == (1 if page.more else 0)
    return page


@FUZZ
@given(body=st.binary(max_size=3000), entity=st.sampled_from(["Invoice", "Item"]))
def test_arbitrary_bytes(body: bytes, entity: str) -> None:
    sound_page(first(entity), body)


@FUZZ
@given(value=JSON, entity=st.sampled_from(["Invoice", "Item"]))
def test_arbitrary_json(value: Any, entity: str) -> None:
    sound_page(first(entity), dumps(value))


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"Invoices":' * 5_000 + b"[]" + b"}" * 5_000,
        b'{"Invoices":[],"DateTimeUTC":NaN}',
        b'{"Invoices":[{"InvoiceID":1e999}]}',
        b'{"Invoices":[{"InvoiceID":123456789012345678901234567890,"UpdatedDateUTC":"/Date(0)/"}]}',
        b'{"Invoices":[\xff\xfe]}',
        '{"Invoices":[{"InvoiceID":"é"}]}'.encode("latin-1"),
        b'{"Invoices":[{"InvoiceID":"\\ud800","UpdatedDateUTC":"/Date(0)/"}]}',
        b'{"Invoices":[{"InvoiceID":"1","UpdatedDateUTC":"/Date(-99999999999999)/"}]}',
        b'{"Invoices":[{"InvoiceID":"1","UpdatedDateUTC":"/Date(9999999999999999)/"}]}',
        b'{"Invoices":[],"pagination":{"pageCount":1e400}}',
    ],
)
def test_hostile_bodies_are_parse_errors(body: bytes) -> None:
    with pytest.raises(ParseError):
        xero.parse_page(TARGET, first("Invoice"), body)


def test_duplicate_keys_keep_the_last_like_every_parser() -> None:
    body = b'{"Invoices":[{"InvoiceID":"1","UpdatedDateUTC":"/Date(0)/"}],"Invoices":[]}'
    assert sound_page(first("Invoice"), body) == PolledPage()


DOTNET = st.integers(min_value=0, max_value=4_102_444_800_000)  # to 2100, in milliseconds


@st.composite
def dotnet_date(draw: st.DrawFn) -> tuple[str, datetime]:
    """A Xero JSON date (/Date(ms+zzzz)/, the offset only says where it was written) and its instant."""
    value = draw(DOTNET)
    offset = draw(st.sampled_from(["", "+0000", "+1300", "-0500"]))
    return f"/Date({value}{offset})/", ms(value)


@st.composite
def hostile_answer(draw: st.DrawFn) -> Any:
    record = st.builds(
        _obj,
        InvoiceID=hostile(st.one_of(st.text(max_size=5), st.integers()), JSON),
        UpdatedDateUTC=hostile(dotnet_date().map(lambda pair: pair[0]), JSON),
        Status=hostile(st.sampled_from(["DELETED", "VOIDED", "PAID"]), JSON),
        Type=hostile(st.sampled_from(["ACCREC", "ACCPAY"]), JSON),
    )
    pagination = st.builds(
        _obj, page=hostile(st.integers(), JSON), pageCount=hostile(st.integers(-5, 2**70), JSON)
    )
    return _obj(
        Invoices=draw(hostile(st.lists(hostile(record, JSON), max_size=4), JSON)),
        pagination=draw(hostile(pagination, JSON)),
        DateTimeUTC=draw(hostile(dotnet_date().map(lambda pair: pair[0]), JSON)),
        Status=draw(hostile(st.just("OK"), JSON)),
    )


@FUZZ
@given(value=hostile_answer())
def test_hostile_field_values(value: Any) -> None:
    sound_page(first("Invoice"), dumps(value))


# --- generated answers ------------------------------------------------------------------------------


@st.composite
def valid_answer(draw: st.DrawFn) -> tuple[PageRequest, bytes, PolledPage]:
    entity = draw(st.sampled_from(sorted(xero.ENDPOINTS)))
    endpoint = xero.ENDPOINTS[entity]
    request = first(entity)
    for _ in range(draw(st.integers(0, 3)) if endpoint.paged else 0):
        request = xero.next_requests(TARGET, request, PolledPage(more=True))[0]
    number = int(dict(request.params).get("page", "1"))
    count = draw(st.sampled_from([0, 1, 3, xero.PAGE_SIZE - 1, xero.PAGE_SIZE, xero.PAGE_SIZE + 1]))
    statuses = st.one_of(
        st.none(), st.sampled_from(["DELETED", "VOIDED", "AUTHORISED", "ARCHIVED", "Deleted"])
    )
    records, expected = [], []
    for i in range(count):
        record_id = draw(st.one_of(st.uuids().map(str), st.integers(0, 2**63 - 1))) if i < 5 else f"r{i}"
        when_text, when = draw(dotnet_date())
        status = draw(statuses) if i < 5 else "PAID"
        kind = draw(st.one_of(st.none(), st.sampled_from(["ACCREC", "SPEND"]))) if i < 5 else None
        item: dict[str, Any] = {
            endpoint.id_field: record_id,
            "UpdatedDateUTC": when_text,
            "LineItems": [{"x": 1}],
        }
        attributes = {}
        if status is not None:
            item[endpoint.status_field] = status
            attributes["status"] = status
        if kind is not None:
            item["Type"] = kind
            attributes["type"] = kind
        records.append(item)
        operation = {"DELETED": "DELETED", "VOIDED": "VOIDED"}.get((status or "").upper(), "UPDATE")
        expected.append(
            ProviderChange(TENANT, entity, str(record_id), operation, when, attributes=attributes)
        )
    body: dict[str, Any] = {"Id": "x", "Status": "OK", "ProviderName": "p", endpoint.collection: records}
    server = draw(st.one_of(st.none(), dotnet_date()))
    if server is not None:
        body["DateTimeUTC"] = server[0]
    page_count = draw(st.one_of(st.none(), st.integers(1, 10)))
    if page_count is not None:
        body["pagination"] = {
            "page": number,
            "pageSize": xero.PAGE_SIZE,
            "pageCount": page_count,
            "itemCount": 7,
        }
    if not endpoint.paged:
        more = False
    elif page_count is None:
        more = count >= xero.PAGE_SIZE
    else:
        more = number < page_count
    page = PolledPage(changes=expected, more=more, server_time=server[1] if server else None)
    return request, json.dumps(body).encode(), page


@FUZZ
@given(generated=valid_answer())
def test_generated_answers_come_out_as_they_went_in(generated: tuple[PageRequest, bytes, PolledPage]) -> None:
    request, body, expected = generated
    page = sound_page(request, body)
    assert page == expected
    follow_ups = xero.next_requests(TARGET, request, page)
    if page.more:
        (following,) = follow_ups
        assert following.path == request.path and following.headers == request.headers
        asked, next_asked = dict(request.params), dict(following.params)
        assert int(next_asked.pop("page")) == int(asked.pop("page")) + 1
        assert next_asked == asked
    else:
        assert follow_ups == []
