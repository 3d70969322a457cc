"""The page fetcher over real loopback HTTP against the provider emulator, with its rate budgets in the
real PostgreSQL: pages fetched and parsed, 429s parking the account's budget as each provider asks,
5xx and timeouts retried, one refreshed token after a 401, typed errors for the rest, and tokens that
never reach the logs."""

import asyncio
import base64
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from fanout.polling import quickbooks, xero
from fanout.polling.budget import DAY, IN_FLIGHT, MINUTE, RateBudgets
from fanout.polling.fetcher import (
    DETAIL_LIMIT,
    FetchError,
    NotAuthorized,
    PageFetcher,
    Refused,
    RequestOutcome,
    Throttled,
    Unavailable,
)
from fanout.polling.pages import PageRequest, PollTarget
from fanout.timestamps import parse_timestamp
from gateway.dev.emulator import Emulator, IssuedGrant, ManualClock
from gateway.dev.emulator.books import quickbooks_time
from gateway.runtime.migrate import migrate
from provider_auth.providers import Provider
from provider_auth.tokens.errors import (
    ConnectionPaused,
    NoCredentials,
    ReauthRequired,
    TokenError,
    TokenUnavailable,
)

CONNECTION = "conn-1"
QB = Provider.QUICKBOOKS
XERO = Provider.XERO


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the migrated session database; every test polls accounts of its own."""
    await migrate(postgres_url)
    created = await asyncpg.create_pool(postgres_url, min_size=1, max_size=8)
    yield created
    await created.close()


@pytest.fixture
def budgets(pool: asyncpg.Pool) -> RateBudgets:
    return RateBudgets(pool)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(float(int(time.time())))


@pytest.fixture
async def emu(clock: ManualClock) -> AsyncIterator[Emulator]:
    async with Emulator(clock=clock) as emulator:
        for provider in (QB, XERO):
            emulator.register_client(provider, "app-id", "app-secret")
        yield emulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def new_realm() -> str:
    return str(uuid.uuid4().int)[:16]


@dataclass
class EmulatorTokens:
    """The token layer as the fetcher sees it, over the emulator: the grant's access token, and a
    refresh through the emulator's token endpoint (a refusal there reads as a dead grant)."""

    emu: Emulator
    http: aiohttp.ClientSession
    provider: Provider
    access_token: str
    refresh_token: str
    refreshes: int = 0
    asked: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls, emu: Emulator, http: aiohttp.ClientSession, provider: Provider, grant: IssuedGrant
    ) -> "EmulatorTokens":
        return cls(emu, http, provider, grant.access_token, grant.refresh_token)

    @property
    def base_url(self) -> str:
        return self.emu.url(f"/{self.provider.value}")

    async def access(self, connection_id: str) -> tuple[str, str]:
        self.asked.append(connection_id)
        return self.access_token, self.base_url

    async def refreshed(self, connection_id: str) -> tuple[str, str]:
        self.refreshes += 1
        basic = base64.b64encode(b"app-id:app-secret").decode()
        form = {"grant_type": "refresh_token", "refresh_token": self.refresh_token}
        async with self.http.post(
            self.emu.token_url(self.provider), data=form, headers={"Authorization": f"Basic {basic}"}
        ) as resp:
            answer = await resp.json()
        if resp.status != 200:
            raise ReauthRequired("the provider refused the grant", "invalid_grant")
        self.access_token = answer["access_token"]
        self.refresh_token = answer.get("refresh_token", self.refresh_token)
        return self.access_token, self.base_url


@dataclass
class FailingTokens:
    """A token layer that has no token to give."""

    error: TokenError

    async def access(self, connection_id: str) -> tuple[str, str]:
        raise self.error

    async def refreshed(self, connection_id: str) -> tuple[str, str]:
        raise self.error


Outcomes = Counter[RequestOutcome]


def fetcher_for(
    http: aiohttp.ClientSession, budgets: RateBudgets, tokens: Any, outcomes: Outcomes, **options: Any
) -> PageFetcher:
    options.setdefault("backoff_base", 0.05)
    options.setdefault("permit_wait", 2.0)

    def observe(provider: Provider, outcome: RequestOutcome) -> None:
        outcomes[outcome] += 1

    return PageFetcher(http, budgets, tokens, observe=observe, **options)


def cdc_request(realm: str, clock: ManualClock, *, ago: timedelta = timedelta(minutes=5)) -> PageRequest:
    since = parse_timestamp(quickbooks_time(clock())) - ago
    return quickbooks.first_requests(PollTarget(realm), since, ["Invoice", "Customer"])[0]


def xero_request(tenant: str, clock: ManualClock) -> PageRequest:
    since = parse_timestamp(quickbooks_time(clock() - 300))
    return xero.first_requests(PollTarget(tenant), since, ["Invoice"])[0]


async def test_a_quickbooks_cdc_page_is_fetched_under_a_permit_and_parsed(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession, budgets: RateBudgets
) -> None:
    realm = new_realm()
    tokens = EmulatorTokens.of(emu, http, QB, emu.issue_grant(QB, accounts=[realm]))
    book = emu.book(QB, realm)
    request = cdc_request(realm, clock)
    clock.advance(1)
    invoice = book.create("Invoice", TotalAmt=10)
    customer = book.create("Customer", DisplayName="Acme")
    outcomes: Outcomes = Counter()
    fetcher = fetcher_for(http, budgets, tokens, outcomes)
    target = PollTarget(realm)
    emu.set_latency(QB, 0.5, endpoint="cdc")

    fetching = asyncio.create_task(fetcher.fetch(QB, CONNECTION, target, request))
    # The permit is held in the realm's in-flight scope while the request runs, and only then.
    for _ in range(100):
        if (await budgets.in_use(QB, realm))[IN_FLIGHT].used == 1:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("no in-flight permit while the request ran")
    body = await fetching

    page = quickbooks.parse_page(target, request, body)
    assert {(c.entity, c.entity_id, c.operation) for c in page.changes} == {
        ("Invoice", invoice.id, "Create"),
        ("Customer", customer.id, "Create"),
    }
    assert page.server_time is not None and not page.more
    use = await budgets.in_use(QB, realm)
    assert use[IN_FLIGHT].used == 0
    assert use[MINUTE].used == 1
    assert tokens.asked == [CONNECTION]
    assert emu.calls(QB, "cdc") == 1
    assert outcomes == {"ok": 1}


async def test_a_quickbooks_xml_429_parks_the_realm_for_a_minute(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession, budgets: RateBudgets
) -> None:
    realm = new_realm()
    tokens = EmulatorTokens.of(emu, http, QB, emu.issue_grant(QB, accounts=[realm]))
    emu.set_api_limits(QB, per_minute=1)
    outcomes: Outcomes = Counter()
    fetcher = fetcher_for(http, budgets, tokens, outcomes, retries=3, permit_wait=1.0)
    target, request = PollTarget(realm), cdc_request(realm, clock)
    await fetcher.fetch(QB, CONNECTION, target, request)

    with pytest.raises(Throttled) as caught:
        await fetcher.fetch(QB, CONNECTION, target, request)

    # The 429 (XML, ThrottleExceeded) parked the realm's minute for 60 s in every process; the retry
    # would have to wait longer than the fetcher waits for a permit, so it says when to come back.
    assert emu.events(QB, "throttled") == 1
    use = await budgets.in_use(QB, realm)
    assert 55.0 < use[MINUTE].parked_seconds <= 60.0
    assert caught.value.retry_after is not None and 55.0 < caught.value.retry_after <= 60.0
    assert caught.value.retry_later
    assert emu.calls(QB, "cdc") == 2
    assert outcomes == {"ok": 1, "throttled": 1}
    # The park holds for the next fetch too: no request reaches the provider.
    with pytest.raises(Throttled):
        await fetcher.fetch(QB, CONNECTION, target, request, kind="backfill")
    assert emu.calls(QB, "cdc") == 2


async def test_xero_retry_after_is_honoured_then_the_page_comes(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession, budgets: RateBudgets
) -> None:
    tenant = str(uuid.uuid4())
    tokens = EmulatorTokens.of(emu, http, XERO, emu.issue_grant(XERO, accounts=[tenant]))
    emu.book(XERO, tenant).create("Invoice")
    emu.fail_next(XERO, 1, status=429, retry_after=1, endpoint="Invoices")
    outcomes: Outcomes = Counter()
    fetcher = fetcher_for(http, budgets, tokens, outcomes)
    request = xero_request(tenant, clock)
    loop = asyncio.get_running_loop()

    started = loop.time()
    body = await fetcher.fetch(XERO, CONNECTION, PollTarget(tenant), request)

    assert loop.time() - started >= 0.9  # Retry-After: 1, whole seconds
    assert len(xero.parse_page(PollTarget(tenant), request, body).changes) == 1
    assert emu.calls(XERO, "Invoices") == 2
    assert outcomes == {"throttled": 1, "ok": 1}


async def test_a_xero_day_limit_parks_the_tenant_until_its_day_resets(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession, budgets: RateBudgets
) -> None:
    tenant = str(uuid.uuid4())
    tokens = EmulatorTokens.of(emu, http, XERO, emu.issue_grant(XERO, accounts=[tenant]))
    emu.set_api_limits(XERO, per_day=1)
    fetcher = fetcher_for(http, budgets, tokens, Counter())
    target, request = PollTarget(tenant), xero_request(tenant, clock)
    await fetcher.fetch(XERO, CONNECTION, target, request)

    with pytest.raises(Throttled) as caught:
        await fetcher.fetch(XERO, CONNECTION, target, request)

    use = await budgets.in_use(XERO, tenant)
    assert 86_000 < use[DAY].parked_seconds <= 86_400  # X-Rate-Limit-Problem: day
    assert use[MINUTE].parked_seconds == 0.0
    assert caught.value.retry_after is not None and caught.value.retry_after > 86_000
    assert emu.calls(XERO, "Invoices") == 2


async def test_a_5xx_is_retried_with_backoff_then_the_page_comes(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession, budgets: RateBudgets
) -> None:
    realm = new_realm()
    tokens = EmulatorTokens.of(emu, http, QB, emu.issue_grant(QB, accounts=[realm]))
    emu.fail_next(QB, 2, status=503, endpoint="cdc")
    outcomes: Outcomes = Counter()
    fetcher = fetcher_for(http, budgets, tokens, outcomes, retries=2, backoff_base=0.2)
    request = cdc_request(realm, clock)
    loop = asyncio.get_running_loop()

    started = loop.time()
    body = await fetcher.fetch(QB, CONNECTION, PollTarget(realm), request)

    # Back-off: at least half of 0.2 s, then of 0.4 s.
    assert loop.time() - started >= 0.3
    assert quickbooks.parse_page(PollTarget(realm), request, body).changes == []
    assert emu.calls(QB, "cdc") == 3
    assert outcomes == {"server_error": 2, "ok": 1}

    # A Retry-After sent with a 5xx is waited out when it is longer than the back-off.
    emu.fail_next(QB, 1, status=503, retry_after=1, endpoint="cdc")
    started = loop.time()
    await fetcher.fetch(QB, CONNECTION, PollTarget(realm), request)
    assert loop.time() - started >= 0.9
    assert emu.calls(QB, "cdc") == 5


async def test_5xx_and_timeouts_past_the_retries_are_unavailable(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession, budgets: RateBudgets
) -> None:
    realm = new_realm()
    tokens = EmulatorTokens.of(emu, http, QB, emu.issue_grant(QB, accounts=[realm]))
    target, request = PollTarget(realm), cdc_request(realm, clock)
    emu.fail_next(QB, 5, status=500, endpoint="cdc")
    outcomes: Outcomes = Counter()
    fetcher = fetcher_for(http, budgets, tokens, outcomes, retries=2)
    with pytest.raises(Unavailable) as caught:
        await fetcher.fetch(QB, CONNECTION, target, request)
    assert caught.value.status == 500 and caught.value.retry_later
    assert emu.calls(QB, "cdc") == 3
    assert outcomes == {"server_error": 3}

    emu.config(QB).faults.clear()
    emu.set_latency(QB, 2.0, endpoint="cdc")
    outcomes.clear()
    slow = fetcher_for(http, budgets, tokens, outcomes, retries=1, timeout=0.2)
    with pytest.raises(Unavailable) as caught:
        await slow.fetch(QB, CONNECTION, target, request)
    assert caught.value.status is None
    assert outcomes == {"timeout": 2}
    # A request cut short gives its in-flight slot back.
    assert (await budgets.in_use(QB, realm))[IN_FLIGHT].used == 0


async def test_a_401_gets_one_refreshed_token_and_the_page_comes(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession, budgets: RateBudgets
) -> None:
    realm = new_realm()
    emu.set_access_ttl(QB, 3600)
    tokens = EmulatorTokens.of(emu, http, QB, emu.issue_grant(QB, accounts=[realm]))
    expired = tokens.access_token
    request = cdc_request(realm, clock)
    clock.advance(3601)  # the provider's token expired before the token layer thought it would
    outcomes: Outcomes = Counter()
    fetcher = fetcher_for(http, budgets, tokens, outcomes)

    body = await fetcher.fetch(QB, CONNECTION, PollTarget(realm), request)

    assert orjson.loads(body)["CDCResponse"] == [{"QueryResponse": []}]
    assert tokens.refreshes == 1 and emu.refreshes(QB) == 1
    assert tokens.access_token != expired
    assert outcomes == {"unauthorized": 1, "ok": 1}


async def test_a_second_401_is_not_authorized(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession, budgets: RateBudgets
) -> None:
    realm = new_realm()
    tokens = EmulatorTokens.of(emu, http, QB, emu.issue_grant(QB, accounts=[realm]))
    emu.fail_next(QB, 2, status=401, endpoint="cdc")
    outcomes: Outcomes = Counter()
    fetcher = fetcher_for(http, budgets, tokens, outcomes, retries=3)

    with pytest.raises(NotAuthorized) as caught:
        await fetcher.fetch(QB, CONNECTION, PollTarget(realm), cdc_request(realm, clock))

    assert not caught.value.retry_later
    assert caught.value.status == 401
    assert tokens.refreshes == 1
    assert emu.calls(QB, "cdc") == 2
    assert outcomes == {"unauthorized": 2}


async def test_a_dead_grant_or_an_unusable_connection_is_not_authorized(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession, budgets: RateBudgets
) -> None:
    realm = new_realm()
    grant = emu.issue_grant(QB, accounts=[realm])
    tokens = EmulatorTokens.of(emu, http, QB, grant)
    emu.revoke(QB, grant.grant_id)  # the customer disconnected the app at the provider
    target, request = PollTarget(realm), cdc_request(realm, clock)
    with pytest.raises(NotAuthorized) as caught:
        await fetcher_for(http, budgets, tokens, Counter()).fetch(QB, CONNECTION, target, request)
    assert caught.value.reason == "invalid_grant"
    assert emu.calls(QB, "cdc") == 1 and emu.events(QB, "invalid_grant") == 1

    for error, reason in (
        (NoCredentials("connection conn-1 has no credentials"), "no_credentials"),
        (ConnectionPaused("connection conn-1 is paused"), "paused"),
        (ReauthRequired("the grant needs reauthorization", "invalid_client"), "invalid_client"),
    ):
        fetcher = fetcher_for(http, budgets, FailingTokens(error), Counter())
        with pytest.raises(NotAuthorized) as caught:
            await fetcher.fetch(QB, CONNECTION, target, request)
        assert caught.value.reason == reason and not caught.value.retry_later
    fetcher = fetcher_for(http, budgets, FailingTokens(TokenUnavailable("down", 12.0)), Counter())
    with pytest.raises(Unavailable) as unavailable:
        await fetcher.fetch(QB, CONNECTION, target, request)
    assert unavailable.value.retry_after == 12.0 and unavailable.value.retry_later
    assert emu.calls(QB, "cdc") == 1  # none of them sent a request


async def test_other_4xx_are_refused_with_a_short_safe_detail(
    emu: Emulator, clock: ManualClock, http: aiohttp.ClientSession, budgets: RateBudgets
) -> None:
    realm = new_realm()
    tokens = EmulatorTokens.of(emu, http, QB, emu.issue_grant(QB, accounts=[realm]))
    outcomes: Outcomes = Counter()
    fetcher = fetcher_for(http, budgets, tokens, outcomes, retries=3)
    target = PollTarget(realm)

    too_old = cdc_request(realm, clock, ago=timedelta(days=31))
    with pytest.raises(Refused) as caught:
        await fetcher.fetch(QB, CONNECTION, target, too_old)
    assert caught.value.status == 400 and not caught.value.retry_later
    assert "ValidationFault" in caught.value.detail and "2030" in caught.value.detail
    assert "30 days" in caught.value.detail

    other = new_realm()  # a company the grant does not cover
    with pytest.raises(Refused) as caught:
        await fetcher.fetch(QB, CONNECTION, PollTarget(other), cdc_request(other, clock))
    assert caught.value.status == 403 and "3100" in caught.value.detail

    # A long message echoing the request's token is cut, and the token never comes back.
    echoed = {"Fault": {"Error": [{"code": "6000", "Message": f"bad {tokens.access_token} " + "x" * 500}]}}
    emu.fail_next(QB, 1, status=422, endpoint="cdc", body=echoed)
    with pytest.raises(Refused) as caught:
        await fetcher.fetch(QB, CONNECTION, target, cdc_request(realm, clock))
    assert caught.value.status == 422
    assert len(caught.value.detail) <= DETAIL_LIMIT
    assert caught.value.detail.startswith("code=6000; Message=bad [redacted] xxx")
    assert tokens.access_token not in str(caught.value)
    assert emu.calls(QB, "cdc") == 3  # none retried
    assert outcomes == {"refused": 3}


async def test_tokens_never_reach_the_logs(
    emu: Emulator,
    clock: ManualClock,
    http: aiohttp.ClientSession,
    budgets: RateBudgets,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    realm = new_realm()
    tokens = EmulatorTokens.of(emu, http, QB, emu.issue_grant(QB, accounts=[realm]))
    seen = [tokens.access_token]
    request = cdc_request(realm, clock)
    for status in (401, 503, 429):
        emu.fail_next(QB, 1, status=status, endpoint="cdc")
    fetcher = fetcher_for(http, budgets, tokens, Counter(), retries=3)
    with pytest.raises(Throttled):
        await fetcher.fetch(QB, CONNECTION, PollTarget(realm), request)
    seen.append(tokens.access_token)
    emu.fail_next(QB, 2, status=401, endpoint="cdc")
    other = new_realm()
    with pytest.raises(NotAuthorized):
        await fetcher.fetch(QB, CONNECTION, PollTarget(other), cdc_request(other, clock))
    seen.append(tokens.access_token)

    assert tokens.refreshes == 2
    messages = [record.getMessage() for record in caplog.records]
    assert "token refused; asking for a refreshed one" in messages
    assert "no usable answer; retrying" in messages
    assert "throttled; the account's budget is parked" in messages
    logged = "\n".join(messages + [repr(record.__dict__) for record in caplog.records])
    for token in seen:
        assert token not in logged
    assert "Bearer" not in logged


@dataclass
class Seen:
    """What a stand-in provider received."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[str, list[Seen], Callable[[int], None]]]:
    """A provider on loopback that records each request and answers with the status it is told."""
    seen: list[Seen] = []
    statuses: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(
            Seen(
                request.method,
                request.path,
                list(request.query.items()),
                dict(request.headers),
                await request.read(),
            )
        )
        status = statuses.pop(0) if statuses else 200
        return web.Response(status=status, body=None if status == 304 else b'{"code": 0}')

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/books/v3/", seen, statuses.append
    await runner.cleanup()


async def test_zoho_books_gets_its_own_scheme_and_the_request_goes_as_built(
    stand_in: tuple[str, list[Seen], Callable[[int], None]],
    http: aiohttp.ClientSession,
    budgets: RateBudgets,
) -> None:
    base_url, seen, answer_with = stand_in

    @dataclass
    class Tokens:
        async def access(self, connection_id: str) -> tuple[str, str]:
            return "zoho-token", base_url

        async def refreshed(self, connection_id: str) -> tuple[str, str]:
            raise AssertionError("no 401 here")

    organization = new_realm()
    fetcher = fetcher_for(http, budgets, Tokens(), Counter())
    request = PageRequest(
        method="POST",
        path="/invoices",
        params=(("organization_id", organization), ("page", "2")),
        headers=(("Accept", "application/json"), ("authorization", "not this one")),
        body=b'{"q": 1}',
    )
    body = await fetcher.fetch(Provider.ZOHO_BOOKS, CONNECTION, PollTarget(organization), request)

    assert body == b'{"code": 0}'
    [sent] = seen
    assert (sent.method, sent.path) == ("POST", "/books/v3/invoices")  # one slash between the parts
    assert sent.query == [("organization_id", organization), ("page", "2")]
    assert sent.headers["Authorization"] == "Zoho-oauthtoken zoho-token"
    assert sent.headers["Accept"] == "application/json"
    assert sent.body == b'{"q": 1}'

    # Not Modified: an empty body, which the provider module reads as an empty last page.
    answer_with(304)
    assert await fetcher.fetch(Provider.ZOHO_BOOKS, CONNECTION, PollTarget(organization), request) == b""
    # Any other 4xx is refused, the body's error code kept.
    answer_with(404)
    with pytest.raises(Refused) as caught:
        await fetcher.fetch(Provider.ZOHO_BOOKS, CONNECTION, PollTarget(organization), request)
    assert isinstance(caught.value, FetchError)
    assert (caught.value.status, caught.value.detail) == (404, "code=0")
    assert len(seen) == 3
