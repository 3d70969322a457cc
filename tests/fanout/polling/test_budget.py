"""Rate budgets against the real PostgreSQL: exact windows and in-flight limits across processes,
permits that die with their process, all-or-nothing scopes, shared parking, the backfill share, and
the back-off and 429 rules."""

import asyncio
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, cast

import asyncpg
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.polling.budget import (
    APP_MINUTE,
    DAY,
    DEFAULT_LIMITS,
    IN_FLIGHT,
    MINUTE,
    BudgetTimeout,
    Kind,
    Permit,
    ProviderLimits,
    RateBudgets,
    Scope,
    backoff_seconds,
    throttle_for_429,
)
from gateway.runtime.migrate import migrate
from provider_auth.providers import Provider
from tests.paths import REPO_ROOT


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the migrated session database; every test uses scope keys of its own."""
    await migrate(postgres_url)
    created = await asyncpg.create_pool(postgres_url, min_size=1, max_size=8)
    yield created
    await created.close()


def unique(name: str) -> str:
    """A scope key no other test (or earlier run) uses."""
    return f"test/{name}/{uuid.uuid4().hex}"


async def counts(pool: asyncpg.Pool, key: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """A rate scope's kept count (entries, backfill entries) and the same counted in its rows, read
    under the scope's advisory lock (the one `rate_budget_take` takes), so no take is half done."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
        kept = await connection.fetchrow(
            "SELECT live, backfills FROM rate_budget_scopes WHERE scope_key = $1", key
        )
        rows = await connection.fetchrow(
            "SELECT count(*) AS live, count(*) FILTER (WHERE backfill) AS backfills"
            " FROM rate_budget_entries WHERE scope_key = $1",
            key,
        )
    assert kept is not None and rows is not None
    return (kept["live"], kept["backfills"]), (rows["live"], rows["backfills"])


def busiest_span(times: Sequence[float], window: float) -> int:
    """The most of `times` that fall in any `window`-long span (a span holds t with s <= t < s + window)."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(ordered):
        # A microsecond of slack: grant times are PostgreSQL microseconds seen as floats.
        while t - ordered[first] >= window - 1e-6:
            first += 1
        most = max(most, last - first + 1)
    return most


def most_overlapping(intervals: Sequence[Sequence[float]]) -> int:
    """The most intervals [start, end] in progress at one instant."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


class Process:
    """One `budget_process` child: started, ready, then told to go."""

    def __init__(self, child: asyncio.subprocess.Process) -> None:
        self.child = child

    @classmethod
    async def start(cls, dsn: str, **config: Any) -> "Process":
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.fanout.polling.budget_process",
            orjson.dumps({"dsn": dsn, **config}).decode(),
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"ready", line
        return cls(child)

    async def go(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.write(b"go\n")
        await self.child.stdin.drain()

    async def answer(self, within: float = 30.0) -> Any:
        assert self.child.stdout is not None
        line = await asyncio.wait_for(self.child.stdout.readline(), within)
        assert line, "the process ended without answering"
        return orjson.loads(line)

    async def finish(self) -> None:
        await asyncio.wait_for(self.child.wait(), 30)


async def test_three_processes_never_exceed_the_window_or_the_in_flight_limit(postgres_url: str) -> None:
    limit, window, in_flight, seconds = 6, 1.0, 2, 3.5
    await migrate(postgres_url)
    scopes = [
        [unique("minute"), limit, window, False],
        [unique("in-flight"), in_flight, 30.0, True],
    ]
    config = {"mode": "hammer", "scopes": scopes, "tasks": 3, "seconds": seconds, "work": [0.02, 0.3]}
    processes = await asyncio.gather(*(Process.start(postgres_url, **config) for _ in range(3)))
    await asyncio.gather(*(p.go() for p in processes))
    answers = await asyncio.gather(*(p.answer() for p in processes))
    await asyncio.gather(*(p.finish() for p in processes))

    grants = [t for answer in answers for t in answer["grants"]]
    requests = [r for answer in answers for r in answer["requests"]]
    assert all(answer["grants"] for answer in answers), "every process got permits"
    # Span by span: no window-long span holds more than the limit...
    assert busiest_span(grants, window) == limit
    ordered = sorted(grants)
    assert all(ordered[i + limit] - ordered[i] >= window - 1e-6 for i in range(len(ordered) - limit))
    # ...while the budget is used: about `limit` per window over the run.
    assert len(grants) >= limit * int(seconds / window)
    assert most_overlapping(requests) == in_flight


async def test_a_full_in_flight_scope_keeps_its_next_slot_for_the_attempt_whose_turn_it_is(
    pool: asyncpg.Pool,
) -> None:
    """Two processes' budgets on one in-flight slot: the one that releases and asks again at once
    does not take the slot from the one that was waiting (its turn), which gives the turn back when
    granted; a turn whose attempt never comes back lapses after its wait and a recheck."""
    releaser, waiter = RateBudgets(pool, recheck=0.2), RateBudgets(pool, recheck=0.2)
    scope = Scope(unique("in-flight"), 1, 30.0, held=True)
    held = await releaser.acquire([scope], max_wait=1.0)
    waiting = uuid.uuid4()  # the waiter's permit id, the same for each of its attempts
    refused = await waiter.try_acquire([scope], "poll", waiting)
    assert isinstance(refused, float) and 0 < refused <= 0.2
    await releaser.release(held)
    kept = await releaser.try_acquire([scope])
    assert isinstance(kept, float) and 0 < kept <= 0.2, "the free slot is the waiter's turn"
    granted = await waiter.try_acquire([scope], "poll", waiting)
    assert isinstance(granted, Permit) and granted.id == waiting
    turn = await pool.fetchrow(
        "SELECT turn_permit, turn_until FROM rate_budget_scopes WHERE scope_key = $1", scope.key
    )
    assert turn is not None and (turn["turn_permit"], turn["turn_until"]) == (None, None)
    await waiter.release(granted)

    # A turn taken by an attempt that never comes back (a caller that gave up) keeps the slot idle
    # for its wait and a recheck at most, then anyone takes it.
    held = await releaser.acquire([scope], max_wait=1.0)
    assert isinstance(await waiter.try_acquire([scope]), float)
    await releaser.release(held)
    assert isinstance(await releaser.try_acquire([scope]), float)
    await asyncio.sleep(0.45)
    assert isinstance(await releaser.try_acquire([scope]), Permit)


async def test_a_dead_process_permit_expires_on_its_own(postgres_url: str, pool: asyncpg.Pool) -> None:
    lifetime = 1.5
    scope = Scope(unique("in-flight"), 1, lifetime, held=True)
    holder = await Process.start(
        postgres_url, mode="hold", scopes=[[scope.key, 1, lifetime, True]], lifetime=lifetime
    )
    await holder.go()
    held_at = (await holder.answer())["granted_at"]
    holder.child.send_signal(signal.SIGKILL)
    await holder.finish()

    budgets = RateBudgets(pool, recheck=0.05)
    assert isinstance(await budgets.try_acquire([scope]), float), "the dead process's permit still counts"
    permit = await budgets.acquire([scope], max_wait=5.0)
    assert permit.granted_at.timestamp() >= held_at + lifetime
    await budgets.release(permit)
    # Released, it is free again at once.
    again = await budgets.try_acquire([scope])
    assert not isinstance(again, float)


async def test_scopes_are_granted_all_or_none_and_say_how_long_to_wait(pool: asyncpg.Pool) -> None:
    budgets = RateBudgets(pool)
    full = Scope(unique("minute"), 1, 10.0)
    other = Scope(unique("day"), 2, 10.0)
    flight = Scope(unique("in-flight"), 1, 10.0, held=True)
    assert not isinstance(await budgets.try_acquire([full]), float)

    wait = await budgets.try_acquire([other, flight, full])
    assert isinstance(wait, float) and 9.0 < wait <= 10.0
    taken = await pool.fetchval(
        "SELECT count(*) FROM rate_budget_entries WHERE scope_key = ANY($1)", [other.key, flight.key]
    )
    assert taken == 0
    with pytest.raises(BudgetTimeout) as refused:
        await budgets.acquire([other, full], max_wait=1.0)
    assert 9.0 < refused.value.wait_seconds <= 10.0
    # The other scopes kept their whole budget.
    assert not isinstance(await budgets.try_acquire([other, flight]), float)
    assert not isinstance(await budgets.try_acquire([other]), float)
    assert isinstance(await budgets.try_acquire([other]), float)


async def test_a_park_from_one_process_holds_in_every_process(postgres_url: str, pool: asyncpg.Pool) -> None:
    account = uuid.uuid4().hex
    budgets = RateBudgets(pool)
    parker = await Process.start(
        postgres_url,
        mode="park",
        provider="xero",
        account=account,
        headers={"Retry-After": "1", "X-Rate-Limit-Problem": "day"},
    )
    await parker.go()
    assert await parker.answer() == {"scope": DAY, "seconds": 1.0}
    await parker.finish()

    use = await budgets.in_use(Provider.XERO, account)
    assert 0.0 < use[DAY].parked_seconds <= 1.0 and use[MINUTE].parked_seconds == 0.0
    wait = await budgets.try_acquire(budgets.scopes(Provider.XERO, account))
    assert isinstance(wait, float) and 0.0 < wait <= 1.0
    started = time.monotonic()
    async with budgets.permit(Provider.XERO, account, max_wait=3.0):
        assert time.monotonic() - started >= wait - 0.05
        use = await budgets.in_use(Provider.XERO, account)
        assert (use[MINUTE].used, use[DAY].used, use[IN_FLIGHT].used) == (1, 1, 1)
    use = await budgets.in_use(Provider.XERO, account)
    assert (use[MINUTE].used, use[IN_FLIGHT].used) == (1, 0)
    assert use[MINUTE].limit == 60 and use[DAY].limit == 5_000 and use[APP_MINUTE].limit == 10_000


async def test_a_429_parks_a_scope_the_account_has(pool: asyncpg.Pool) -> None:
    budgets = RateBudgets(pool)
    account = uuid.uuid4().hex
    throttle = await budgets.park_after_429(Provider.NETSUITE, account, {"Retry-After": "5"}, 0)
    assert throttle.scope == MINUTE and throttle.seconds == 5.0
    # NetSuite limits only concurrency, so its in-flight scope is the one parked.
    assert 4.0 < (await budgets.in_use(Provider.NETSUITE, account))[IN_FLIGHT].parked_seconds <= 5.0
    with pytest.raises(BudgetTimeout) as refused:
        async with budgets.permit(Provider.NETSUITE, account, max_wait=0.5):
            pass
    assert 4.0 < refused.value.wait_seconds <= 5.0


async def test_a_longer_park_is_kept(pool: asyncpg.Pool) -> None:
    budgets = RateBudgets(pool)
    scope = Scope(unique("minute"), 5, 1.0)
    await budgets.park(scope.key, 5.0)
    await budgets.park(scope.key, 0.5)
    wait = await budgets.try_acquire([scope])
    assert isinstance(wait, float) and 4.0 < wait <= 5.0


async def test_backfills_keep_to_their_share_while_polls_wait(pool: asyncpg.Pool) -> None:
    limit, window, share = 10, 1.0, 0.5
    budgets = RateBudgets(pool, backfill_share=share)
    scope = Scope(unique("minute"), limit, window)
    grants: dict[Kind, list[float]] = {"poll": [], "backfill": []}
    stop = asyncio.Event()

    async def take(kind: Kind) -> None:
        while not stop.is_set():
            permit = await budgets.acquire([scope], kind, max_wait=5.0)
            grants[kind].append(permit.granted_at.timestamp())

    backfills = [asyncio.create_task(take("backfill")) for _ in range(3)]
    await asyncio.sleep(1.5 * window)
    # Alone, backfills may use the whole budget.
    assert busiest_span(grants["backfill"], window) == limit
    polls_from = await pool.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
    polls = [asyncio.create_task(take("poll")) for _ in range(2)]
    await asyncio.sleep(4.5 * window)
    polls_until = await pool.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
    stop.set()
    await asyncio.gather(*backfills, *polls)

    # Once the backfills taken before the polls came have aged out, they hold at most their share
    # for as long as polls keep asking.
    settled = polls_from + window
    late_backfills = [t for t in grants["backfill"] if settled <= t <= polls_until]
    assert busiest_span(late_backfills, window) <= int(limit * share)
    assert late_backfills, "backfills still progress beside the polls"
    late_polls = [t for t in grants["poll"] if settled <= t <= polls_until]
    # Polls get at least the rest, window after window (3.5 windows here).
    assert len(late_polls) >= int(limit * (1 - share)) * 3
    assert busiest_span(grants["poll"] + grants["backfill"], window) <= limit


async def test_an_account_without_limits_is_never_held_up(pool: asyncpg.Pool) -> None:
    budgets = RateBudgets(pool, limits={Provider.ZOHO_BOOKS: ProviderLimits()})
    assert budgets.scopes(Provider.ZOHO_BOOKS, "org") == ()
    async with budgets.permit(Provider.ZOHO_BOOKS, "org", max_wait=0.0):
        pass
    assert await budgets.in_use(Provider.ZOHO_BOOKS, "org") == {}


async def test_a_rate_scope_keeps_its_count_through_grants_expiries_and_releases(pool: asyncpg.Pool) -> None:
    budgets = RateBudgets(pool)
    key = unique("minute")
    # Taken with a short life, then with a long one: a take counts the rows themselves only once the
    # scope's lifetime has passed since the last count, so every count below is the takes' own
    # bookkeeping (+1 per grant, -1 per expired entry pruned).
    short, long = Scope(key, 5, 0.5), Scope(key, 5, 60.0)
    flight = Scope(unique("in-flight"), 10, 60.0, held=True)
    for kind in ("poll", "backfill", "backfill"):
        assert not isinstance(await budgets.try_acquire([short], kind), float)
    assert await counts(pool, key) == ((3, 2), (3, 2))
    await asyncio.sleep(0.7)

    held = await budgets.acquire([long, flight], "backfill", max_wait=0.0)
    assert await counts(pool, key) == ((1, 1), (1, 1)), "three expired entries pruned, one granted"
    # A release ends the in-flight entry and restarts the rate entry's window: no count changes.
    await budgets.release(held)
    assert await counts(pool, key) == ((1, 1), (1, 1))
    assert (
        await pool.fetchval("SELECT count(*) FROM rate_budget_entries WHERE scope_key = $1", flight.key) == 0
    )
    # The kept count is what decides: four more fill the scope.
    for _ in range(4):
        assert not isinstance(await budgets.try_acquire([long]), float)
    wait = await budgets.try_acquire([long])
    assert isinstance(wait, float) and 59.0 < wait <= 60.0
    assert await counts(pool, key) == ((5, 1), (5, 1))


async def test_counts_stay_right_with_three_processes_taking_at_once(
    postgres_url: str, pool: asyncpg.Pool
) -> None:
    # `kept`: a scope nothing expires from during the run, so its count is every grant of every
    # process; `window`: one whose entries expire and are pruned all along; `flight`: in flight.
    kept, window, flight = unique("minute"), unique("minute"), unique("in-flight")
    scopes = [[kept, 100_000, 60.0, False], [window, 8, 0.5, False], [flight, 3, 30.0, True]]
    config = {"mode": "hammer", "scopes": scopes, "tasks": 3, "seconds": 2.5, "work": [0.0, 0.05]}
    processes = await asyncio.gather(*(Process.start(postgres_url, **config) for _ in range(3)))
    await asyncio.gather(*(p.go() for p in processes))
    answers = await asyncio.gather(*(p.answer() for p in processes))
    await asyncio.gather(*(p.finish() for p in processes))

    grants = [t for answer in answers for t in answer["grants"]]
    assert len(grants) >= 8 * 4
    assert await counts(pool, kept) == ((len(grants), 0), (len(grants), 0))
    (kept_window, _), (rows_window, _) = await counts(pool, window)
    assert kept_window == rows_window
    assert busiest_span(grants, 0.5) <= 8
    assert await pool.fetchval("SELECT count(*) FROM rate_budget_entries WHERE scope_key = $1", flight) == 0


async def test_a_killed_process_entries_leave_the_count_as_they_expire(
    postgres_url: str, pool: asyncpg.Pool
) -> None:
    lifetime = 1.0
    rate, flight = unique("minute"), unique("in-flight")
    holder = await Process.start(
        postgres_url, mode="hold", scopes=[[rate, 1, lifetime, False], [flight, 1, lifetime, True]]
    )
    await holder.go()
    held_at = (await holder.answer())["granted_at"]
    holder.child.send_signal(signal.SIGKILL)
    await holder.finish()

    budgets = RateBudgets(pool, recheck=0.05)
    # The same rate scope with a longer life: its entry leaves the count by a prune, not a recount.
    scopes = [Scope(rate, 1, 60.0), Scope(flight, 1, lifetime, held=True)]
    assert isinstance(await budgets.try_acquire(scopes), float), "the dead process's entries still count"
    assert await counts(pool, rate) == ((1, 0), (1, 0))
    permit = await budgets.acquire(scopes, max_wait=5.0)
    assert permit.granted_at.timestamp() >= held_at + lifetime
    assert await counts(pool, rate) == ((1, 0), (1, 0))


async def test_a_wrong_count_is_put_right(pool: asyncpg.Pool) -> None:
    budgets = RateBudgets(pool)

    async def insert_behind_its_back(key: str, seconds: float) -> None:
        # What a take of the previous version of `rate_budget_take` writes: an entry, no count.
        await pool.execute(
            "INSERT INTO rate_budget_entries (scope_key, permit_id, backfill, held, granted_at, expires_at)"
            " VALUES ($1, $2, false, false, clock_timestamp(),"
            " clock_timestamp() + make_interval(secs => $3))",
            key,
            uuid.uuid4(),
            seconds,
        )

    # Entries from before the counts existed: the scope's first take counts them.
    old = Scope(unique("minute"), 2, 30.0)
    for _ in range(2):
        await insert_behind_its_back(old.key, 30.0)
    assert isinstance(await budgets.try_acquire([old]), float)
    assert await counts(pool, old.key) == ((2, 0), (2, 0))

    # A count too high (entries deleted by hand): the refusal that finds fewer rows counts them.
    high = Scope(unique("minute"), 3, 30.0)
    for _ in range(3):
        assert not isinstance(await budgets.try_acquire([high]), float)
    await pool.execute("DELETE FROM rate_budget_entries WHERE scope_key = $1", high.key)
    assert not isinstance(await budgets.try_acquire([high]), float)
    assert await counts(pool, high.key) == ((1, 0), (1, 0))

    # A count too low (an entry it never saw): right again once a window has passed.
    low = Scope(unique("minute"), 3, 0.5)
    assert not isinstance(await budgets.try_acquire([low]), float)
    await insert_behind_its_back(low.key, 0.5)
    assert await counts(pool, low.key) == ((1, 0), (2, 0))
    await asyncio.sleep(0.6)
    assert not isinstance(await budgets.try_acquire([low]), float)
    assert await counts(pool, low.key) == ((1, 0), (1, 0))


async def test_the_app_wide_scope_is_locked_last(pool: asyncpg.Pool) -> None:
    budgets = RateBudgets(pool)
    account = uuid.uuid4().hex
    scopes = budgets.scopes(Provider.XERO, account)
    app = budgets.scope_key(Provider.XERO, account, APP_MINUTE)
    locks = (
        "SELECT k.key, l.pid, l.granted FROM unnest($1::text[]) AS k(key)"
        " JOIN pg_locks l ON l.locktype = 'advisory' AND l.objsubid = 1"
        "  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(k.key, 0)"
        " WHERE l.pid <> pg_backend_pid()"
    )
    async with pool.acquire() as holder:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", app)
            taking = asyncio.create_task(budgets.try_acquire(scopes))
            async with pool.acquire() as watcher:
                for _ in range(200):
                    rows = await watcher.fetch(locks, [s.key for s in scopes])
                    if any(row["key"] == app and not row["granted"] for row in rows):
                        break
                    await asyncio.sleep(0.01)
            # The take waits for the app's lock holding its account's three: it takes that one last.
            taker = {row["pid"] for row in rows if row["key"] == app and not row["granted"]}
            assert len(taker) == 1
            held = {row["key"] for row in rows if row["pid"] in taker and row["granted"]}
            assert held == {s.key for s in scopes} - {app}
            assert not taking.done()
        assert not isinstance(await taking, float)


async def test_attempts_made_at_once_go_together_and_keep_every_limit(pool: asyncpg.Pool) -> None:
    budgets = RateBudgets(pool, batch_size=7)
    rate = Scope(unique("minute"), 10, 30.0)
    flight = Scope(unique("in-flight"), 4, 30.0, held=True)
    kinds: list[Kind] = ["poll", "backfill"] * 20
    answers = await asyncio.gather(*(budgets.try_acquire([rate, flight], kind) for kind in kinds))

    granted = [a for a in answers if not isinstance(a, float)]
    # Each caller got its own answer: four in flight at most, all or none.
    assert len(granted) == 4 and len({permit.id for permit in granted}) == 4
    assert all(isinstance(a, float) and 0.0 < a <= 0.25 for a in answers if a not in granted)
    for permit in granted:
        await budgets.release(permit)
    answers = await asyncio.gather(*(budgets.try_acquire([rate]) for _ in range(20)))
    assert sum(not isinstance(a, float) for a in answers) == 6, "ten in the window in all"
    assert all(29.0 < a <= 30.0 for a in answers if isinstance(a, float))
    assert await counts(pool, rate.key) == ((10, 2), (10, 2))


async def test_a_batch_takes_its_permits_in_turn(pool: asyncpg.Pool) -> None:
    # Three permits in one call of the batch function: the second finds the first's entry.
    one, two = unique("minute"), unique("in-flight")
    permits = [uuid.uuid4() for _ in range(3)]
    rows = await pool.fetch(
        "SELECT permit, wait, granted_at"
        " FROM rate_budget_take_batch($1, $2, $3, $4, $5, $6, $7, 0.5, 1.0, 0.25)",
        [2, 1, 0],
        [one, two, one],
        [1, 1, 1],
        [30.0, 30.0, 30.0],
        [False, True, False],
        permits,
        [False, False, False],
    )
    assert [row["permit"] for row in rows] == permits
    assert rows[0]["wait"] == 0 and rows[0]["granted_at"] is not None
    assert 29.0 < rows[1]["wait"] <= 30.0 and rows[1]["granted_at"] is None
    # A permit without scopes is granted at once.
    assert rows[2]["wait"] == 0 and rows[2]["granted_at"] >= rows[0]["granted_at"]
    assert await counts(pool, one) == ((1, 0), (1, 0))


async def test_a_permit_granted_to_a_caller_gone_is_released(pool: asyncpg.Pool) -> None:
    budgets = RateBudgets(pool)
    flight = Scope(unique("in-flight"), 1, 30.0, held=True)
    async with pool.acquire() as holder:
        async with holder.transaction():
            # The scope's lock held elsewhere: the attempt's batch waits for it in PostgreSQL.
            await holder.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", flight.key)
            attempt = asyncio.create_task(budgets.try_acquire([flight]))
            for _ in range(200):
                waiting = await pool.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                if waiting:
                    break
                await asyncio.sleep(0.01)
            attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt
    # The batch was granted after its caller left: the permit is released, the slot free again.
    for _ in range(200):
        if not await pool.fetchval(
            "SELECT count(*) FROM rate_budget_entries WHERE scope_key = $1", flight.key
        ):
            break
        await asyncio.sleep(0.01)
    assert not isinstance(await budgets.try_acquire([flight]), float)


@given(account=st.text(min_size=1))
def test_an_app_wide_key_sorts_after_its_accounts_keys(account: str) -> None:
    # `rate_budget_take` locks in byte order of the keys (migration 0008): the app's last.
    budgets = RateBudgets(cast(asyncpg.Pool, None))
    keys = [scope.key.encode() for scope in budgets.scopes(Provider.XERO, account)]
    assert max(keys) == budgets.scope_key(Provider.XERO, account, APP_MINUTE).encode()


def test_defaults_are_the_documented_limits() -> None:
    assert DEFAULT_LIMITS[Provider.QUICKBOOKS] == ProviderLimits(requests_per_minute=500, concurrency=10)
    assert DEFAULT_LIMITS[Provider.XERO] == ProviderLimits(60, 5, 5_000, 10_000)
    assert DEFAULT_LIMITS[Provider.ZOHO_BOOKS].requests_per_minute == 100


@given(
    attempt=st.integers(min_value=0, max_value=2_000),
    base=st.floats(min_value=0.001, max_value=60.0),
    cap=st.floats(min_value=0.001, max_value=3_600.0),
    seed=st.integers(),
)
def test_backoff_stays_in_the_upper_half_of_its_capped_ceiling(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    ceiling = min(cap, base * 2.0 ** min(attempt, 64))
    delay = backoff_seconds(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert ceiling / 2 <= delay <= ceiling
    assert delay <= cap


def test_backoff_grows_then_stops_at_the_cap() -> None:
    rng = random.Random(7)
    lows = [backoff_seconds(a, base=1.0, cap=60.0, rng=rng) for a in range(12)]
    assert lows[0] <= 1.0 and lows[3] >= 4.0 and all(30.0 <= d <= 60.0 for d in lows[6:])
    # Jitter: the same attempt does not always wait the same.
    assert len({backoff_seconds(5, rng=rng) for _ in range(20)}) > 1


def test_what_a_429_parks() -> None:
    assert throttle_for_429(Provider.QUICKBOOKS, {}, 3).seconds == 60.0
    xero = throttle_for_429(Provider.XERO, {"retry-after": "42", "x-rate-limit-problem": "Day"}, 0)
    assert (xero.scope, xero.seconds) == (DAY, 42.0)
    app = throttle_for_429(Provider.XERO, {"Retry-After": "3", "X-Rate-Limit-Problem": "appminute"}, 0)
    assert (app.scope, app.seconds) == (APP_MINUTE, 3.0)
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    dated = throttle_for_429(Provider.XERO, {"Retry-After": when, "X-Rate-Limit-Problem": "minute"}, 0)
    assert dated.scope == MINUTE and 25.0 <= dated.seconds <= 30.0
    assert throttle_for_429(Provider.XERO, {"Retry-After": "1e9"}, 0).seconds == 86_400.0
    # No usable Retry-After: back off like the others.
    for unusable in ("soon", "nan", "inf"):
        blind = throttle_for_429(Provider.XERO, {"Retry-After": unusable}, 2, random.Random(1))
        assert blind.scope == MINUTE and 2.0 <= blind.seconds <= 4.0
    zoho = throttle_for_429(Provider.ZOHO_BOOKS, {}, 0, random.Random(1))
    assert zoho.scope == MINUTE and 0.5 <= zoho.seconds <= 1.0
    # The others back off, but never sooner than a `Retry-After` they sent.
    told = throttle_for_429(Provider.FRESHBOOKS, {"Retry-After": "30"}, 0, random.Random(1))
    assert told.seconds == 30.0
