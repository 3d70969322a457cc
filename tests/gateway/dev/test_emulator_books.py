"""The emulator's data APIs (QuickBooks CDC, Xero list endpoints) over its books, read over real
loopback HTTP with the polling modules that will read the real providers."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDictProxy

from fanout.changes import ProviderChange
from fanout.polling import quickbooks, xero
from fanout.polling.pages import PageRequest, PollTarget
from fanout.timestamps import parse_timestamp
from gateway.dev.emulator import Emulator, ManualClock
from gateway.dev.emulator.books import Record, quickbooks_time, xero_date

START = 1_796_000_000.0  # 2026-11-30, whole seconds
REALM = "9341453908000000"
TENANT = "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"

Fetched = tuple[int, CIMultiDictProxy[str], bytes]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def emu(clock: ManualClock) -> AsyncIterator[Emulator]:
    async with Emulator(clock=clock) as emulator:
        for provider in ("quickbooks", "xero"):
            emulator.register_client(provider, "app-id", "app-secret")
            # Tests move the clock by a day; tokens must outlive that.
            emulator.set_access_ttl(provider, 10 * 86_400)
        yield emulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def at(timestamp: float) -> datetime:
    """A clock reading as the polling modules see times."""
    return parse_timestamp(quickbooks_time(timestamp))


async def fetch(
    http: aiohttp.ClientSession, emu: Emulator, provider: str, request: PageRequest, token: str | None
) -> Fetched:
    """Send a `PageRequest` to the emulator's API base for the provider, as the poller will."""
    headers = dict(request.headers)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    url = emu.url(f"/{provider}{request.path}")
    async with http.request(
        request.method, url, params=list(request.params), headers=headers, data=request.body
    ) as resp:
        return resp.status, resp.headers, await resp.read()


async def poll(
    http: aiohttp.ClientSession,
    emu: Emulator,
    module: ModuleType,
    provider: str,
    account: str,
    since: datetime,
    entities: Sequence[str],
    token: str,
) -> list[ProviderChange]:
    """Every change a poll from `since` reads, following `next_requests` until done."""
    target = PollTarget(account=account)
    pending: list[PageRequest] = module.first_requests(target, since, entities)
    changes: list[ProviderChange] = []
    while pending:
        request = pending.pop(0)
        status, _, body = await fetch(http, emu, provider, request, token)
        assert status == 200, body
        page = module.parse_page(target, request, body)
        changes += page.changes
        pending += module.next_requests(target, request, page)
    return changes


def qb_expected(records: Sequence[Record]) -> set[tuple[str, str, str, datetime]]:
    out = set()
    for r in records:
        operation = {"deleted": "Delete"}.get(r.state, "Create" if r.version == 0 else "Update")
        out.add((r.entity, r.id, operation, at(r.updated_at)))
    return out


def seen(changes: Sequence[ProviderChange]) -> set[tuple[str, str, str, datetime | None]]:
    return {(c.entity, c.entity_id, c.operation, c.occurred_at) for c in changes}


# ----- QuickBooks ------------------------------------------------------------------------------


async def test_quickbooks_cdc_gives_exactly_the_changes_in_the_book(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("quickbooks", accounts=[REALM]).access_token
    book = emu.book("quickbooks", REALM)
    book.create("Invoice", at=START - 3600)  # before the poll's window
    since = at(START)
    clock.advance(10)
    created = book.create("Invoice", TotalAmt=120)
    updated = book.create("Invoice")
    deleted = book.create("Invoice")
    voided = book.create("Invoice")
    customer = book.create("customer", DisplayName="Acme")  # any spelling of an entity
    clock.advance(5)
    book.update("Invoice", updated.id, TotalAmt=99)
    book.void("Invoice", voided.id)
    clock.advance(5)
    book.delete("Invoice", deleted.id)

    changes = await poll(http, emu, quickbooks, "quickbooks", REALM, since, ["Invoice", "Customer"], token)

    now = [book.get("Invoice", r.id) for r in (created, updated, deleted, voided)]
    expected = qb_expected([r for r in now if r is not None] + [customer])
    assert seen(changes) == expected
    assert len(changes) == 5
    assert ("Invoice", deleted.id, "Delete", at(START + 20)) in expected
    assert ("Invoice", voided.id, "Update", at(START + 15)) in expected  # CDC has no void mark
    # Deleted objects close their entity's group; oldest first before them.
    invoices = [c for c in changes if c.entity == "Invoice"]
    assert invoices[-1].entity_id == deleted.id
    assert [c.entity_id for c in invoices[:3]] == [created.id, updated.id, voided.id]
    assert emu.calls("quickbooks", "cdc") == 1


async def test_quickbooks_cdc_answer_shape(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("quickbooks", accounts=[REALM]).access_token
    book = emu.book("quickbooks", REALM)
    invoice = book.create("Invoice", TotalAmt=5)
    clock.advance(1)
    book.delete("Invoice", invoice.id)
    request = quickbooks.first_requests(PollTarget(REALM), at(START), ["Invoice"])[0]
    status, headers, body = await fetch(http, emu, "quickbooks", request, token)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    document = orjson.loads(body)
    assert document["time"] == quickbooks_time(START + 1, millis=True)
    assert document["time"].endswith("-08:00")
    group = document["CDCResponse"][0]["QueryResponse"][0]
    assert group["Invoice"] == [
        {
            "domain": "QBO",
            "status": "Deleted",
            "Id": invoice.id,
            "MetaData": {"LastUpdatedTime": quickbooks_time(START + 1)},
        }
    ]
    page = quickbooks.parse_page(PollTarget(REALM), request, body)
    assert page.server_time == parse_timestamp(document["time"])


async def test_quickbooks_2500_changes_in_one_window_are_all_read(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("quickbooks", accounts=[REALM]).access_token
    book = emu.book("quickbooks", REALM)
    since = at(START - 1000)
    invoices = book.create_many("Invoice", 2500, spacing=0.125)  # 8 a second over 312 s
    customers = book.create_many("Customer", 300, spacing=0.5)
    clock.advance(30)
    for invoice in invoices[::125]:
        book.delete("Invoice", invoice.id)
    for customer in customers[:40]:
        book.update("Customer", customer.id)

    changes = await poll(http, emu, quickbooks, "quickbooks", REALM, since, ["Invoice", "Customer"], token)

    current = book.records()
    assert len(current) == 2800
    assert seen(changes) == qb_expected(current)  # each one read, nothing missed or invented
    assert {c.operation for c in changes if c.entity == "Invoice"} == {"Create", "Delete"}
    # One call for both, cut at 1,000; then one per entity until an answer holds fewer.
    assert emu.calls("quickbooks", "cdc") >= 4
    assert len(changes) < 2 * len(current)


async def test_quickbooks_cdc_refuses_more_than_30_days_and_bad_requests(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("quickbooks", accounts=[REALM]).access_token
    target = PollTarget(REALM)
    old = quickbooks.first_requests(target, at(START) - timedelta(days=31), ["Invoice"])[0]
    status, _, body = await fetch(http, emu, "quickbooks", old, token)
    assert status == 400
    fault = orjson.loads(body)["Fault"]
    assert fault["type"] == "ValidationFault"
    assert "30 days" in fault["Error"][0]["Detail"]
    within = quickbooks.first_requests(target, at(START) - timedelta(days=29), ["Invoice"])[0]
    assert (await fetch(http, emu, "quickbooks", within, token))[0] == 200

    base = emu.url(f"/quickbooks/v3/company/{REALM}/cdc")
    auth = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    for params in (
        {"entities": "TaxRate", "changedSince": "2026-11-29"},  # not served by CDC
        {"entities": "Nonsense", "changedSince": "2026-11-29"},
        {"entities": "Invoice", "changedSince": "yesterday"},
    ):
        async with http.get(base, params=params, headers=auth) as resp:
            assert resp.status == 400, params
    async with http.get(
        base, params={"entities": "Invoice", "changedSince": "2026-11-29"}, headers=auth
    ) as resp:
        assert resp.status == 200  # a bare date is Intuit's documented form


async def test_quickbooks_cdc_needs_a_token_of_the_realm(emu: Emulator, http: aiohttp.ClientSession) -> None:
    grant = emu.issue_grant("quickbooks", accounts=[REALM])
    other = emu.issue_grant("quickbooks", accounts=["123"])
    request = quickbooks.first_requests(PollTarget(REALM), at(START), ["Invoice"])[0]
    status, headers, body = await fetch(http, emu, "quickbooks", request, None)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert orjson.loads(body)["Fault"]["type"] == "AUTHENTICATION"
    assert (await fetch(http, emu, "quickbooks", request, "made-up"))[0] == 401
    assert (await fetch(http, emu, "quickbooks", request, other.access_token))[0] == 403
    emu.revoke("quickbooks", grant.grant_id)
    assert (await fetch(http, emu, "quickbooks", request, grant.access_token))[0] == 401
    assert emu.events("quickbooks", "unauthorized") == 3


async def test_quickbooks_429_is_xml_throttle_exceeded_past_500_a_minute(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("quickbooks", accounts=[REALM]).access_token
    request = quickbooks.first_requests(PollTarget(REALM), at(START), ["Invoice"])[0]
    gate = asyncio.Semaphore(10)

    async def one() -> int:
        async with gate:
            return (await fetch(http, emu, "quickbooks", request, token))[0]

    statuses = await asyncio.gather(*(one() for _ in range(500)))
    assert set(statuses) == {200}
    status, headers, body = await fetch(http, emu, "quickbooks", request, token)
    assert status == 429
    assert headers["Content-Type"].startswith("application/xml")
    assert b"ThrottleExceeded" in body and b"003001" in body
    assert body.startswith(b'<?xml version="1.0"')
    # Another realm has its own budget; this one's frees up as the minute passes.
    other = emu.issue_grant("quickbooks", accounts=["777"]).access_token
    other_request = quickbooks.first_requests(PollTarget("777"), at(START), ["Invoice"])[0]
    assert (await fetch(http, emu, "quickbooks", other_request, other))[0] == 200
    clock.advance(60)
    assert (await fetch(http, emu, "quickbooks", request, token))[0] == 200
    assert emu.events("quickbooks", "throttled") == 1


async def test_quickbooks_more_than_10_in_flight_is_429_and_latency_is_injectable(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("quickbooks", accounts=[REALM]).access_token
    request = quickbooks.first_requests(PollTarget(REALM), at(START), ["Invoice"])[0]
    emu.set_latency("quickbooks", 1.0, endpoint="cdc")
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(fetch(http, emu, "quickbooks", request, token) for _ in range(11)))
    assert loop.time() - started >= 1.0
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 10 + [429]
    assert emu.calls("quickbooks", "cdc") == 11
    emu.set_latency("quickbooks", 0, endpoint="cdc")
    assert (await fetch(http, emu, "quickbooks", request, token))[0] == 200


async def test_quickbooks_injected_faults_reach_cdc(emu: Emulator, http: aiohttp.ClientSession) -> None:
    token = emu.issue_grant("quickbooks", accounts=[REALM]).access_token
    request = quickbooks.first_requests(PollTarget(REALM), at(START), ["Invoice"])[0]
    emu.fail_next("quickbooks", 1, status=503, endpoint="cdc")
    assert (await fetch(http, emu, "quickbooks", request, token))[0] == 503
    assert (await fetch(http, emu, "quickbooks", request, token))[0] == 200


# ----- Xero ------------------------------------------------------------------------------------


def xero_expected(records: Sequence[Record]) -> set[tuple[str, str, str, datetime]]:
    operations = {"DELETED": "DELETED", "VOIDED": "VOIDED"}
    out = set()
    for r in records:
        status = "ARCHIVED" if r.entity == "Contact" and r.state == "deleted" else r.state.upper()
        out.add((r.entity, r.id, operations.get(status, "UPDATE"), parse_timestamp(xero_date(r.updated_at))))
    return out


async def test_xero_three_pages_give_exactly_the_changes_in_the_book(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("xero", accounts=[TENANT]).access_token
    book = emu.book("xero", TENANT)
    book.create("Invoice", at=START - 3600)  # not modified since the poll's start
    since = at(START)
    clock.advance(100.5)
    invoices = book.create_many("Invoice", 250, spacing=0.25)  # over the last 62 s
    contacts = book.create_many("Contact", 3)
    clock.advance(2.75)
    book.delete("Invoice", invoices[10].id)
    book.void("Invoice", invoices[20].id)
    book.delete("Contact", contacts[0].id)  # Xero archives contacts

    changes = await poll(http, emu, xero, "xero", TENANT, since, ["Invoice", "Contact"], token)

    assert emu.calls("xero", "Invoices") == 3
    assert emu.calls("xero", "Contacts") == 1
    current = [r for r in book.records() if r.updated_at >= START]
    assert len(current) == 253
    assert seen(changes) == xero_expected(current)
    assert len(changes) == 253
    by_id = {c.entity_id: c for c in changes}
    assert by_id[invoices[10].id].operation == "DELETED"
    assert by_id[invoices[20].id].operation == "VOIDED"
    assert by_id[contacts[0].id].attributes["status"] == "ARCHIVED"
    assert by_id[invoices[0].id].attributes == {"status": "AUTHORISED", "type": "ACCREC"}


async def test_xero_answer_shape_paging_order_and_archived(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("xero", accounts=[TENANT]).access_token
    book = emu.book("xero", TENANT)
    first, second = book.create("Contact", Name="A"), book.create("Contact", Name="B")
    clock.advance(1)
    book.update("Contact", first.id, Name="A2")
    book.delete("Contact", second.id)
    headers = {"Authorization": f"Bearer {token}", "xero-tenant-id": TENANT, "Accept": "application/json"}
    url = emu.url("/xero/api.xro/2.0/Contacts")

    params = {"page": "1", "pageSize": "1", "order": "UpdatedDateUTC DESC", "includeArchived": "true"}
    async with http.get(url, params=params, headers=headers) as resp:
        assert resp.status == 200
        document = await resp.json()
    assert document["DateTimeUTC"] == f"/Date({round((START + 1) * 1000)})/"
    assert document["pagination"] == {"page": 1, "pageSize": 1, "pageCount": 2, "itemCount": 2}
    assert document["Contacts"] == [
        {
            "ContactID": second.id,
            "ContactStatus": "ARCHIVED",
            "UpdatedDateUTC": xero_date(START + 1),
            "Name": "B",
        }
    ]
    async with http.get(url, headers=headers) as resp:  # no paging asked: everything, no archived
        document = await resp.json()
    assert "pagination" not in document
    assert [c["ContactID"] for c in document["Contacts"]] == [first.id]
    async with http.get(
        url, headers={**headers, "If-Modified-Since": "Sun, 29 Nov 2026 00:00:00 GMT"}
    ) as resp:
        assert len((await resp.json())["Contacts"]) == 1  # an HTTP date works too
    async with http.get(url, headers={**headers, "If-Modified-Since": "2030-01-01T00:00:00"}) as resp:
        assert (await resp.json())["Contacts"] == []
    async with http.get(emu.url("/xero/api.xro/2.0/Accounts"), params={"page": "3"}, headers=headers) as resp:
        assert "pagination" not in await resp.json()  # Accounts do not page
    async with http.get(emu.url("/xero/api.xro/2.0/Nothing"), headers=headers) as resp:
        assert resp.status == 404

    kept, gone = book.create("Item", Code="A"), book.create("Item", Code="B")
    book.delete("Item", gone.id)  # a deleted item leaves the API
    async with http.get(emu.url("/xero/api.xro/2.0/Items"), headers=headers) as resp:
        assert [i["ItemID"] for i in (await resp.json())["Items"]] == [kept.id]
    overpayment = book.create("Overpayment")
    with pytest.raises(ValueError, match="cannot delete"):
        book.delete("Overpayment", overpayment.id)


async def test_xero_needs_a_token_and_a_connected_tenant(emu: Emulator, http: aiohttp.ClientSession) -> None:
    token = emu.issue_grant("xero", accounts=[TENANT]).access_token
    request = xero.first_requests(PollTarget(TENANT), at(START), ["Invoice"])[0]
    status, headers, _ = await fetch(http, emu, "xero", request, None)
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert (await fetch(http, emu, "xero", request, "made-up"))[0] == 401
    unknown = xero.first_requests(PollTarget("another-tenant"), at(START), ["Invoice"])[0]
    status, _, body = await fetch(http, emu, "xero", unknown, token)
    assert status == 403
    assert orjson.loads(body)["Title"] == "Forbidden"
    assert (await fetch(http, emu, "xero", request, token))[0] == 200


async def test_xero_minute_and_day_limits_with_their_headers(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("xero", accounts=[TENANT]).access_token
    request = xero.first_requests(PollTarget(TENANT), at(START), ["Item"])[0]
    emu.set_api_limits("xero", per_day=70)  # 5,000 by default

    status, headers, _ = await fetch(http, emu, "xero", request, token)
    assert status == 200
    assert headers["X-MinLimit-Remaining"] == "59"
    assert headers["X-DayLimit-Remaining"] == "69"
    assert headers["X-AppMinLimit-Remaining"] == "9999"
    for _ in range(59):
        assert (await fetch(http, emu, "xero", request, token))[0] == 200
    clock.advance(20)
    status, headers, _ = await fetch(http, emu, "xero", request, token)
    assert status == 429
    assert headers["X-Rate-Limit-Problem"] == "minute"
    assert headers["Retry-After"] == "40"
    assert headers["X-MinLimit-Remaining"] == "0"

    clock.advance(40)
    for _ in range(10):
        assert (await fetch(http, emu, "xero", request, token))[0] == 200
    status, headers, _ = await fetch(http, emu, "xero", request, token)
    assert status == 429
    assert headers["X-Rate-Limit-Problem"] == "day"
    assert headers["X-DayLimit-Remaining"] == "0"
    assert int(headers["Retry-After"]) == 86_400 - 60
    assert emu.events("xero", "throttled") == 2
    assert emu.calls("xero", "Items") == 72


async def test_xero_app_minute_limit_spans_tenants(emu: Emulator, http: aiohttp.ClientSession) -> None:
    token = emu.issue_grant("xero", accounts=[TENANT, "org-2"]).access_token
    emu.set_api_limits("xero", app_per_minute=3)
    statuses = []
    for tenant in (TENANT, "org-2", TENANT, "org-2"):
        request = xero.first_requests(PollTarget(tenant), at(START), ["Account"])[0]
        status, headers, _ = await fetch(http, emu, "xero", request, token)
        statuses.append(status)
    assert statuses == [200, 200, 200, 429]
    assert headers["X-Rate-Limit-Problem"] == "appminute"
    assert headers["X-AppMinLimit-Remaining"] == "0"
    assert headers["Retry-After"] == "60"


async def test_xero_more_than_5_in_flight_is_429_concurrent(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("xero", accounts=[TENANT]).access_token
    request = xero.first_requests(PollTarget(TENANT), at(START), ["Invoice"])[0]
    emu.set_latency("xero", 1.0, endpoint="Invoices")
    results = await asyncio.gather(*(fetch(http, emu, "xero", request, token) for _ in range(6)))
    throttled = [headers for status, headers, _ in results if status == 429]
    assert sorted(status for status, _, _ in results) == [200] * 5 + [429]
    assert throttled[0]["X-Rate-Limit-Problem"] == "concurrent"
    assert "Retry-After" in throttled[0]


# ----- control endpoints ---------------------------------------------------------------------


async def test_control_endpoints_change_a_book_that_the_api_then_serves(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    token = emu.issue_grant("quickbooks", accounts=[REALM]).access_token
    changes_url = emu.url(f"/_emulator/books/quickbooks/{REALM}/changes")

    async def change(body: object) -> tuple[int, dict[str, Any]]:
        async with http.post(changes_url, data=orjson.dumps(body)) as resp:
            return resp.status, await resp.json()

    status, created = await change({"entity": "invoice", "operation": "create", "fields": {"TotalAmt": 10}})
    assert status == 200
    invoice = created["changes"][0]
    assert invoice["entity"] == "Invoice" and invoice["record"]["TotalAmt"] == 10
    clock.advance(1)
    status, _ = await change({"entity": "Invoice", "operation": "update", "id": invoice["id"]})
    assert status == 200
    status, bulk = await change({"entity": "credit_note", "operation": "create", "count": 3})
    assert status == 200 and len(bulk["changes"]) == 3
    assert {c["entity"] for c in bulk["changes"]} == {"CreditMemo"}
    voided_id = bulk["changes"][0]["id"]
    deleted_id = bulk["changes"][1]["id"]
    clock.advance(1)  # a change in the second of the creation reads as the creation
    status, listed = await change(
        {
            "changes": [
                {"entity": "CreditMemo", "operation": "void", "id": voided_id},
                {"entity": "CreditMemo", "operation": "delete", "id": deleted_id},
            ]
        }
    )
    assert status == 200
    assert [c["state"] for c in listed["changes"]] == ["voided", "deleted"]

    for bad in (
        {"entity": "Invoice", "operation": "explode", "id": invoice["id"]},
        {"entity": "Invoice", "operation": "update", "id": "404"},
        {"entity": "Invoice", "operation": "update"},
        {"entity": "Widget", "operation": "create"},
        {"entity": "CreditMemo", "operation": "update", "id": deleted_id},  # already deleted
    ):
        assert (await change(bad))[0] == 400, bad
    async with http.post(
        emu.url("/_emulator/books/xero/org/changes"),
        data=b'{"entity": "Contact", "operation": "void", "id": "x"}',
    ) as resp:
        assert resp.status == 400  # Xero cannot void a contact
    async with http.post(emu.url("/_emulator/books/netsuite/1/changes"), data=b"{}") as resp:
        assert resp.status == 400

    async with http.get(emu.url(f"/_emulator/books/quickbooks/{REALM}")) as resp:
        records = (await resp.json())["records"]
    assert len(records) == 4

    changes = await poll(
        http, emu, quickbooks, "quickbooks", REALM, at(START), ["Invoice", "CreditMemo"], token
    )
    assert {(c.entity, c.entity_id, c.operation) for c in changes} == {
        ("Invoice", invoice["id"], "Update"),
        ("CreditMemo", voided_id, "Update"),
        ("CreditMemo", deleted_id, "Delete"),
        ("CreditMemo", bulk["changes"][2]["id"], "Create"),
    }
