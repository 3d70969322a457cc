"""The emulator's Zoho Books, FreshBooks, Sage Intacct and NetSuite change APIs over its books, read
over real loopback HTTP with the polling modules that will read the real providers."""

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import orjson
import pytest

from fanout.changes import ProviderChange
from fanout.polling import freshbooks, netsuite, sage_intacct, zoho_books
from fanout.polling.pages import PageRequest, PollTarget
from gateway.dev.emulator import Emulator, ManualClock
from gateway.dev.emulator.books import Record

START = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC, 2026-11-29 19:53:20 in US/Eastern
ORG = "10234695"
ACCOUNT = "6BApk"
COMPANY = "acme-corp"
NS_ACCOUNT = "1234567"
PROVIDERS = ("zoho-books", "freshbooks", "sage-intacct", "netsuite")

Change = tuple[str, str, str, datetime | None]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def emu(clock: ManualClock) -> AsyncIterator[Emulator]:
    async with Emulator(clock=clock) as emulator:
        for provider in PROVIDERS:
            emulator.register_client(provider, "app-id", "app-secret")
            emulator.set_access_ttl(provider, 10 * 86_400)
        yield emulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def utc(timestamp: float) -> datetime:
    """A clock reading as the providers show it: whole seconds, as an aware UTC datetime."""
    return datetime.fromtimestamp(math.floor(timestamp), UTC)


def scheme(provider: str) -> str:
    return "Zoho-oauthtoken" if provider == "zoho-books" else "Bearer"


async def fetch(
    http: aiohttp.ClientSession, emu: Emulator, provider: str, request: PageRequest, token: str | None
) -> tuple[int, bytes]:
    """Send a `PageRequest` to the emulator's API base for the provider, as the poller will."""
    headers = dict(request.headers)
    if token is not None:
        headers["Authorization"] = f"{scheme(provider)} {token}"
    url = emu.url(f"/{provider}{request.path}")
    async with http.request(
        request.method, url, params=list(request.params), headers=headers, data=request.body
    ) as resp:
        return resp.status, await resp.read()


async def poll(
    http: aiohttp.ClientSession,
    emu: Emulator,
    module: ModuleType,
    provider: str,
    target: PollTarget,
    since: datetime,
    entities: Sequence[str],
    token: str,
    sent: list[PageRequest] | None = None,
) -> list[ProviderChange]:
    """Every change a poll from `since` reads, following `next_requests` until done."""
    pending: list[PageRequest] = module.first_requests(target, since, entities)
    changes: list[ProviderChange] = []
    while pending:
        request = pending.pop(0)
        if sent is not None:
            sent.append(request)
        status, body = await fetch(http, emu, provider, request, token)
        assert status == 200, body
        page = module.parse_page(target, request, body)
        changes += page.changes
        pending += module.next_requests(target, request, page)
    return changes


def seen(changes: Sequence[ProviderChange]) -> list[Change]:
    return sorted(
        ((c.entity, c.entity_id, c.operation, c.occurred_at) for c in changes), key=lambda c: (c[0], c[1])
    )


def expected(
    records: Sequence[Record], operation: Callable[[Record], str | None], since: float = -math.inf
) -> list[Change]:
    """What a poll should read: each record changed since `since` as it is now, with the provider's
    operation (None: the provider does not show it)."""
    out = []
    for r in records:
        op = operation(r)
        if op is not None and math.floor(r.updated_at) >= since:
            out.append((r.entity, r.id, op, utc(r.updated_at)))
    return sorted(out, key=lambda c: (c[0], c[1]))


def plain(created: str, updated: str, voided: str | None = None) -> Callable[[Record], str | None]:
    """Created when both times are the same second, voided where shown, deletions not shown."""

    def operation(r: Record) -> str | None:
        if r.state == "deleted":
            return None
        if r.state == "voided" and voided is not None:
            return voided
        return created if math.floor(r.created_at) == math.floor(r.updated_at) else updated

    return operation


# ----- Zoho Books ------------------------------------------------------------------------------


async def test_zoho_books_pages_give_exactly_the_changes_in_the_book(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("zoho-books", accounts=[ORG]).access_token
    book = emu.book("zoho-books", ORG)
    book.create("invoice", at=START - 3600)  # before the poll's window
    clock.advance(200)
    invoices = book.create_many("invoice", 250, spacing=0.5)  # over the last 125 s
    contacts = book.create_many("contact", 2)
    clock.advance(3)
    book.update("invoice", invoices[0].id, total=99)
    book.void("invoice", invoices[1].id)
    book.delete("invoice", invoices[2].id)  # leaves the lists: Zoho has no feed of deletes
    book.update("contact", contacts[0].id, contact_name="Acme")

    target = PollTarget(ORG)
    changes = await poll(
        http, emu, zoho_books, "zoho-books", target, utc(START), ["invoice", "contact"], token
    )

    assert seen(changes) == expected(book.records(), plain("created", "updated", "voided"), START)
    assert len(changes) == 251
    assert emu.calls("zoho-books", "invoices") == 2  # 200 a page
    assert emu.calls("zoho-books", "contacts") == 1
    by_id = {c.entity_id: c for c in changes}
    assert by_id[invoices[1].id].operation == "voided"
    assert by_id[contacts[1].id].attributes == {"contact_type": "customer", "status": "active"}


async def test_zoho_books_answer_shape_and_its_errors(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("zoho-books", accounts=[ORG]).access_token
    book = emu.book("zoho-books", ORG)
    payment = book.create("customerpayment", amount=5)
    url = emu.url("/zoho-books/customerpayments")
    auth = {"Authorization": f"Zoho-oauthtoken {token}"}
    params = {"organization_id": ORG, "per_page": "500", "last_modified_time": "2026-11-30T00:53:20+0000"}
    async with http.get(url, params=params, headers=auth) as resp:
        assert resp.status == 200
        document = await resp.json()
    assert document["code"] == 0
    assert document["page_context"]["per_page"] == 200  # at most 200 a page
    assert document["page_context"]["has_more_page"] is False
    assert document["customerpayments"] == [
        {
            "payment_id": payment.id,
            "created_time": "2026-11-29T16:53:20-0800",
            "last_modified_time": "2026-11-29T16:53:20-0800",
            "amount": 5,
        }
    ]
    later = {**params, "last_modified_time": "2026-11-30T00:53:21+0000"}
    async with http.get(url, params=later, headers=auth) as resp:
        assert (await resp.json())["customerpayments"] == []

    async with http.get(url, params={**params, "organization_id": "999"}, headers=auth) as resp:
        assert resp.status == 400
        assert (await resp.json())["code"] == 6041  # not an organization of this user
    for headers in ({}, {"Authorization": f"Bearer {token}"}, {"Authorization": "Zoho-oauthtoken x"}):
        async with http.get(url, params=params, headers=headers) as resp:
            assert resp.status == 401
            assert (await resp.json())["code"] == 57
    async with http.get(url, params={**params, "page": "0"}, headers=auth) as resp:
        assert resp.status == 400
    async with http.get(emu.url("/zoho-books/nothing"), params=params, headers=auth) as resp:
        assert resp.status == 404
    with pytest.raises(ValueError, match="cannot void"):
        book.void("customerpayment", payment.id)


async def test_zoho_books_allows_100_requests_a_minute_per_organization(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("zoho-books", accounts=[ORG, "777"]).access_token
    request = zoho_books.first_requests(PollTarget(ORG), utc(START), ["item"])[0]
    for _ in range(100):
        assert (await fetch(http, emu, "zoho-books", request, token))[0] == 200
    status, body = await fetch(http, emu, "zoho-books", request, token)
    assert status == 429
    assert orjson.loads(body)["code"] != 0
    other = zoho_books.first_requests(PollTarget("777"), utc(START), ["item"])[0]
    assert (await fetch(http, emu, "zoho-books", other, token))[0] == 200
    clock.advance(60)
    assert (await fetch(http, emu, "zoho-books", request, token))[0] == 200
    assert emu.events("zoho-books", "throttled") == 1


# ----- FreshBooks ------------------------------------------------------------------------------


def freshbooks_operation(r: Record) -> str | None:
    if r.state == "deleted":
        return None if r.entity == "tax" else "deleted"
    # Only invoices carry `created_at`: the others' first version reads as an update.
    same = math.floor(r.created_at) == math.floor(r.updated_at)
    return "created" if r.entity == "invoice" and same else "updated"


async def test_freshbooks_searches_give_exactly_the_changes_in_the_book(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("freshbooks", accounts=[ACCOUNT]).access_token
    book = emu.book("freshbooks", ACCOUNT)
    book.create("invoice", at=START - 86_400)  # the day before: out of the search
    # Earlier the same US/Eastern day as the poll's start: the day-long search brings it back.
    same_day = book.create("client", at=START - 3 * 3600, organization="Early")
    clock.advance(10)
    invoices = book.create_many("invoice", 150, spacing=0.5)
    taxes = book.create_many("tax", 2)
    clock.advance(2)
    book.update("invoice", invoices[0].id, amount={"amount": "10.00", "code": "USD"})
    for invoice in invoices[100:103]:
        book.delete("invoice", invoice.id)  # kept with vis_state 1
    book.delete("tax", taxes[0].id)  # no vis_state: gone

    target = PollTarget(ACCOUNT)
    changes = await poll(
        http, emu, freshbooks, "freshbooks", target, utc(START), ["invoice", "client", "tax"], token
    )

    floor = datetime(2026, 11, 29, tzinfo=ZoneInfo("America/New_York")).timestamp()
    assert seen(changes) == expected(book.records(), freshbooks_operation, floor)
    assert len(changes) == 150 + 1 + 1
    assert [c.entity_id for c in changes if c.entity == "client"] == [same_day.id]
    assert [c.operation for c in changes if c.entity_id == invoices[100].id] == ["deleted"]
    assert emu.calls("freshbooks", "invoices/invoices") == 3  # two pages of 100, one of deleted
    assert emu.calls("freshbooks", "taxes/taxes") == 1


async def test_freshbooks_answer_shape_and_its_errors(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("freshbooks", accounts=[ACCOUNT]).access_token
    book = emu.book("freshbooks", ACCOUNT)
    invoice = book.create("invoice")
    url = emu.url(f"/freshbooks/accounting/account/{ACCOUNT}/invoices/invoices")
    auth = {"Authorization": f"Bearer {token}"}
    async with http.get(url, params={"per_page": "1000"}, headers=auth) as resp:
        assert resp.status == 200
        result = (await resp.json())["response"]["result"]
    assert result["per_page"] == 100  # capped silently
    assert (result["page"], result["pages"], result["total"]) == (1, 1, 1)
    assert result["invoices"] == [
        {
            "id": int(invoice.id),
            "invoiceid": int(invoice.id),
            "accounting_systemid": ACCOUNT,
            "vis_state": 0,
            "created_at": "2026-11-29 19:53:20",  # US/Eastern, no offset
            "updated": "2026-11-29 19:53:20",
        }
    ]
    async with http.get(url, params={"search[updated_min]": "2026-11-30"}, headers=auth) as resp:
        assert (await resp.json())["response"]["result"]["invoices"] == []
    async with http.get(url, params={"page": "2"}, headers=auth) as resp:
        assert (await resp.json())["response"]["result"]["invoices"] == []  # past the last page
    async with http.get(url) as resp:
        assert resp.status == 401
    other = emu.url("/freshbooks/accounting/account/other/invoices/invoices")
    async with http.get(other, headers=auth) as resp:
        assert resp.status == 403
        assert "errno" in (await resp.json())["response"]["errors"][0]
    async with http.get(url, params={"search[updated_min]": "yesterday"}, headers=auth) as resp:
        assert resp.status == 400
    with pytest.raises(ValueError, match="cannot void"):
        book.void("invoice", invoice.id)


# ----- Sage Intacct ----------------------------------------------------------------------------


async def test_sage_intacct_queries_give_exactly_the_changes_in_the_book(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("sage-intacct", accounts=[COMPANY]).access_token
    book = emu.book("sage-intacct", COMPANY)
    book.create("accounts-receivable/invoice", at=START - 3600)
    clock.advance(100)
    # About 100 rows a second: the page boundary at 4,000 falls inside a second.
    invoices = book.create_many("accounts-receivable/invoice", 4100, spacing=0.01)
    # A readable id of its own (`create` takes `id` for the record number).
    (customer,) = book.create_many("accounts-receivable/customer", 1, fields={"id": "CUST-001"})
    clock.advance(2)
    for invoice in invoices[3990:4010]:
        book.update("accounts-receivable/invoice", invoice.id)  # saved mid-window: moves to the end
    book.delete("accounts-receivable/invoice", invoices[5].id)  # leaves the query's results

    target = PollTarget(COMPANY)
    entities = ["accounts-receivable/invoice", "accounts-receivable/customer"]
    changes = await poll(http, emu, sage_intacct, "sage-intacct", target, utc(START), entities, token)

    assert seen(changes) == expected(book.records(), plain("created", "updated"), START)
    assert len(changes) == 4100
    assert emu.calls("sage-intacct", "query") == 3  # two pages of invoices, one of customers
    by_id = {c.entity_id: c for c in changes}
    assert by_id[customer.id].attributes == {"id": "CUST-001"}


async def test_sage_intacct_evaluates_filters_order_and_paging(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("sage-intacct", accounts=[COMPANY]).access_token
    book = emu.book("sage-intacct", COMPANY)
    first = book.create("general-ledger/account")
    clock.advance(1)
    second = book.create("general-ledger/account")
    clock.advance(1)
    book.update("general-ledger/account", first.id)
    url = emu.url("/sage-intacct/services/core/query")
    auth = {"Authorization": f"Bearer {token}"}

    async def query(body: object) -> tuple[int, dict[str, Any]]:
        async with http.post(url, data=orjson.dumps(body), headers=auth) as resp:
            return resp.status, await resp.json()

    status, document = await query(
        {
            "object": "general-ledger/account",
            "fields": ["key", "audit.modifiedDateTime"],
            "filters": [{"$gte": {"audit.modifiedDateTime": "2026-11-30T00:53:21Z"}}],
            "orderBy": [{"audit.modifiedDateTime": "desc"}],
            "start": 1,
            "size": 1,
        }
    )
    assert status == 200
    assert document["ia::result"] == [{"key": first.id, "audit.modifiedDateTime": "2026-11-30T00:53:22Z"}]
    assert document["ia::meta"] == {"totalCount": 2, "start": 1, "pageSize": 1, "next": 2, "previous": None}
    status, document = await query(
        {"object": "general-ledger/account", "fields": ["key"], "orderBy": [{"key": "asc"}], "start": 2}
    )
    assert document["ia::result"] == [{"key": second.id}]
    assert document["ia::meta"]["next"] is None

    for bad in (
        {"object": "general-ledger/nothing", "fields": ["key"]},
        {"object": "general-ledger/account", "fields": []},
        {"object": "general-ledger/account", "fields": ["key"], "size": 4001},
        {"object": "general-ledger/account", "fields": ["key"], "filters": [{"$like": {"key": "1"}}]},
        {"object": "general-ledger/account", "fields": ["key"], "orderBy": [{"name": "asc"}]},
    ):
        status, document = await query(bad)
        assert status == 400, bad
        assert "ia::error" in document["ia::result"]
    async with http.post(url, data=b"{}") as resp:
        assert resp.status == 401
    with pytest.raises(ValueError, match="cannot void"):
        book.void("general-ledger/account", first.id)


# ----- NetSuite --------------------------------------------------------------------------------


async def test_netsuite_equal_timestamps_across_a_page_boundary_are_read_once(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("netsuite", accounts=[NS_ACCOUNT]).access_token
    book = emu.book("netsuite", NS_ACCOUNT)
    book.time_zone = "Europe/Berlin"
    book.create("invoice", at=START - 3600)
    clock.advance(10)
    invoices = book.create_many("invoice", 1500)  # all in one second: pages cut inside it
    customers = book.create_many("customer", 3, spacing=1)
    clock.advance(2)
    book.update("invoice", invoices[0].id)
    book.void("invoice", invoices[1].id)
    book.delete("invoice", invoices[2].id)  # SuiteQL shows no deletions
    book.update("customer", customers[0].id)

    target = PollTarget(NS_ACCOUNT, time_zone="Europe/Berlin")
    changes = await poll(http, emu, netsuite, "netsuite", target, utc(START), ["invoice", "customer"], token)

    assert seen(changes) == expected(book.records(), plain("created", "updated", "voided"), START)
    assert len(changes) == 1500 - 1 + 3
    assert emu.calls("netsuite", "suiteql") == 3  # two pages of invoices, one of customers


async def test_netsuite_window_is_split_under_a_lowered_cap(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = emu.issue_grant("netsuite", accounts=[NS_ACCOUNT]).access_token
    book = emu.book("netsuite", NS_ACCOUNT)
    clock.advance(5000)
    book.create_many("vendorbill", 6000, spacing=0.5)  # over the last 50 minutes
    # One query reaches 2,500 rows here instead of 100,000; the poller is told the same.
    emu.set_api_limits("netsuite", max_results=2500)
    monkeypatch.setattr(netsuite, "MAX_RESULTS", 2500)

    sent: list[PageRequest] = []
    target = PollTarget(NS_ACCOUNT, time_zone="America/Los_Angeles")
    changes = await poll(http, emu, netsuite, "netsuite", target, utc(START), ["vendorbill"], token, sent)

    assert seen(changes) == expected(book.records(), plain("created", "updated"), START)
    assert len({c.entity_id for c in changes}) == len(changes) == 6000
    bounded = [r for r in sent if b"lastmodifieddate <" in (r.body or b"")]
    assert bounded, "the window was never cut"

    # Offset paging stops at the cap: what lies past it is out of reach of one query.
    first = netsuite.first_requests(target, utc(START), ["vendorbill"])[0]
    past = PageRequest(
        first.method, first.path, (("limit", "1000"), ("offset", "3000")), first.headers, first.body
    )
    status, body = await fetch(http, emu, "netsuite", past, token)
    assert status == 400
    assert orjson.loads(body)["o:errorDetails"][0]["o:errorCode"] == "INVALID_PARAMETER"
    last = PageRequest(
        first.method, first.path, (("limit", "1000"), ("offset", "2000")), first.headers, first.body
    )
    status, body = await fetch(http, emu, "netsuite", last, token)
    document = orjson.loads(body)
    assert (document["count"], document["hasMore"], document["totalResults"]) == (500, False, 6000)


async def test_netsuite_answer_shape_and_refused_queries(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("netsuite", accounts=[NS_ACCOUNT]).access_token
    book = emu.book("netsuite", NS_ACCOUNT)
    bill = book.create("vendorbill")
    vendor = book.create("vendor")
    target = PollTarget(NS_ACCOUNT, time_zone="America/Los_Angeles")
    request = netsuite.first_requests(target, utc(START), ["vendorbill"])[0]
    status, body = await fetch(http, emu, "netsuite", request, token)
    assert status == 200
    assert orjson.loads(body) == {
        "links": [],
        "count": 1,
        "hasMore": False,
        "items": [
            {
                "links": [],
                "id": bill.id,
                "modified_at": "2026-11-29 16:53:20",  # the account's wall clock
                "created_at": "2026-11-29 16:53:20",
                "voided": "F",
            }
        ],
        "offset": 0,
        "totalResults": 1,
    }
    vendors = netsuite.first_requests(target, utc(START), ["vendor"])[0]
    rows = orjson.loads((await fetch(http, emu, "netsuite", vendors, token))[1])["items"]
    assert [(row["id"], "voided" in row) for row in rows] == [(vendor.id, False)]

    query = orjson.loads(request.body or b"")["q"]
    for bad in (
        "SELECT * FROM transaction",
        query.replace("ORDER BY lastmodifieddate, id", "ORDER BY id"),
        query.replace("'VendBill'", "'Nothing'"),
        query.replace("createddate", "datecreated"),
        query.replace(">=", ">"),
    ):
        changed = PageRequest(
            request.method, request.path, request.params, request.headers, orjson.dumps({"q": bad})
        )
        status, body = await fetch(http, emu, "netsuite", changed, token)
        assert status == 400, bad
        error = orjson.loads(body)
        assert error["title"] == "Bad Request"
        assert error["o:errorDetails"][0]["detail"].startswith("Invalid search query.")
    no_prefer = PageRequest(request.method, request.path, request.params, (), request.body)
    assert (await fetch(http, emu, "netsuite", no_prefer, token))[0] == 400
    status, body = await fetch(http, emu, "netsuite", request, None)
    assert status == 401
    assert orjson.loads(body)["o:errorDetails"][0]["o:errorCode"] == "INVALID_LOGIN"
    with pytest.raises(ValueError, match="cannot void"):
        book.void("vendor", vendor.id)


async def test_netsuite_more_than_5_in_flight_is_429(emu: Emulator, http: aiohttp.ClientSession) -> None:
    token = emu.issue_grant("netsuite", accounts=[NS_ACCOUNT]).access_token
    request = netsuite.first_requests(PollTarget(NS_ACCOUNT), utc(START), ["item"])[0]
    emu.set_latency("netsuite", 0.5, endpoint="suiteql")
    results = await asyncio.gather(*(fetch(http, emu, "netsuite", request, token) for _ in range(6)))
    assert sorted(status for status, _ in results) == [200] * 5 + [429]
    assert emu.calls("netsuite", "suiteql") == 6


# ----- shared ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "module", "account", "entity", "endpoint"),
    [
        ("zoho-books", zoho_books, ORG, "bill", "bills"),
        ("freshbooks", freshbooks, ACCOUNT, "payment", "payments/payments"),
        ("sage-intacct", sage_intacct, COMPANY, "accounts-payable/bill", "query"),
        ("netsuite", netsuite, NS_ACCOUNT, "vendorpayment", "suiteql"),
    ],
)
async def test_faults_latency_and_counters_reach_every_api(
    emu: Emulator,
    http: aiohttp.ClientSession,
    provider: str,
    module: ModuleType,
    account: str,
    entity: str,
    endpoint: str,
) -> None:
    token = emu.issue_grant(provider, accounts=[account]).access_token
    request = module.first_requests(PollTarget(account), utc(START), [entity])[0]
    emu.fail_next(provider, 1, status=503, endpoint=endpoint)
    assert (await fetch(http, emu, provider, request, token))[0] == 503
    emu.set_latency(provider, 0.3, endpoint=endpoint)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await fetch(http, emu, provider, request, token))[0] == 200
    assert loop.time() - started >= 0.3
    assert emu.calls(provider, endpoint) == 2
    assert emu.events(provider, "fault") == 1


async def test_control_endpoint_changes_a_zoho_books_book_that_the_api_serves(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("zoho-books", accounts=[ORG]).access_token
    async with http.post(
        emu.url(f"/_emulator/books/zoho-books/{ORG}/changes"),
        data=orjson.dumps({"entity": "Invoice", "operation": "create", "fields": {"total": 10}}),
    ) as resp:
        assert resp.status == 200
        created = (await resp.json())["changes"][0]
    assert created["record"]["status"] == "sent"
    changes = await poll(http, emu, zoho_books, "zoho-books", PollTarget(ORG), utc(START), ["invoice"], token)
    assert [(c.entity_id, c.operation) for c in changes] == [(created["id"], "created")]
