"""Polling state on real PostgreSQL: one row per provider account at the smallest interval its
connections' polling modes ask for, inactive or `off` connections dropping out and coming back with
their watermarks, leases that concurrent workers never share and that pass on
when they expire, watermarks that only move forward under a held lease, and the lease query's index."""

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from fanout.polling.state import LEASE_DUE_QUERY, AccountLease, AccountsSynced, LeaseLost, PollState
from provider_auth.accounts.store import ConnectionStatus, ConnectionStore, Polling, PollingMode
from provider_auth.providers import Provider
from provider_auth.vault import KeyRing
from tests.support import fresh_database

REALM = "9341453908000000"
INTERVAL = 300  # the poll interval
SWEEP = 3600  # the sweep interval
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PollingDb:
    """A migrated database of the test's own, its pool, the connections and the polling state."""

    pool: asyncpg.Pool
    connections: ConnectionStore
    state: PollState


@pytest.fixture
async def polling(postgres_url: str) -> AsyncIterator[PollingDb]:
    """A fresh database per test: the sync reads the whole connections table."""
    async with fresh_database(postgres_url, "polling", migrated=True) as url:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=12)
        try:
            yield PollingDb(pool, ConnectionStore(pool, keyring=None), PollState(pool))
        finally:
            await pool.close()


async def interval(polling: PollingDb, provider: Provider = Provider.QUICKBOOKS, account: str = REALM) -> int:
    """The interval the account is polled at; it must be enabled."""
    row = await polling.state.account(provider, account)
    assert row is not None and row.enabled
    return row.interval_seconds


async def advance(polling: PollingDb, lease: AccountLease, watermarks: dict[str, datetime]) -> None:
    async with polling.pool.acquire() as conn, conn.transaction():
        await polling.state.advance(conn, lease, watermarks)


async def test_two_tenants_on_one_realm_are_one_account(polling: PollingDb) -> None:
    await polling.connections.create("tenant-a", Provider.QUICKBOOKS, REALM)
    await polling.connections.create("tenant-b", Provider.QUICKBOOKS, REALM)
    await polling.connections.create("tenant-a", Provider.XERO, "xero-tenant-1")
    await polling.connections.create("tenant-a", Provider.CUSTOM, "source-1")  # webhooks only

    assert await polling.state.sync_accounts(INTERVAL, SWEEP) == AccountsSynced(2, 0, 0, 0)
    rows = await polling.pool.fetch("SELECT provider, provider_account_id FROM poll_accounts ORDER BY 1")
    assert [tuple(r) for r in rows] == [("quickbooks", REALM), ("xero", "xero-tenant-1")]
    # Both providers' webhooks reach every connection: their accounts are swept.
    account = await polling.state.account(Provider.QUICKBOOKS, REALM)
    assert account is not None and account.enabled and account.interval_seconds == SWEEP
    assert account.last_polled_at is None and account.lease_owner is None
    assert await polling.state.account(Provider.CUSTOM, "source-1") is None
    # A second sync finds nothing to do.
    assert await polling.state.sync_accounts(INTERVAL, SWEEP) == AccountsSynced(0, 0, 0, 0)

    # New accounts are due at once, each leased once.
    leases = await polling.state.lease_due("worker-a", 10, 30)
    assert sorted((lease.provider, lease.account) for lease in leases) == [
        (Provider.QUICKBOOKS, REALM),
        (Provider.XERO, "xero-tenant-1"),
    ]
    assert all(lease.owner == "worker-a" and lease.interval_seconds == SWEEP for lease in leases)
    assert await polling.state.lease_due("worker-b", 10, 30) == []

    # Connection rows deleted altogether (no API does it; an operator may): the account and its
    # watermarks go.
    realm_lease = next(lease for lease in leases if lease.provider is Provider.QUICKBOOKS)
    await advance(polling, realm_lease, {"invoice": T0})
    await polling.pool.execute("DELETE FROM connections WHERE provider = 'quickbooks'")
    assert await polling.state.sync_accounts(INTERVAL, SWEEP) == AccountsSynced(0, 0, 0, 1)
    assert await polling.state.account(Provider.QUICKBOOKS, REALM) is None
    assert await polling.state.watermarks(Provider.QUICKBOOKS, REALM) == {}


async def test_a_disabled_account_is_not_leased_even_when_due(polling: PollingDb) -> None:
    connection = await polling.connections.create("tenant-a", Provider.ZOHO_BOOKS, "org-1")
    await polling.state.sync_accounts(INTERVAL, SWEEP)
    await polling.connections.update(connection.id, status=ConnectionStatus.PAUSED)
    assert await polling.state.sync_accounts(INTERVAL, SWEEP) == AccountsSynced(0, 0, 1, 0)
    account = await polling.state.account(Provider.ZOHO_BOOKS, "org-1")
    assert account is not None and not account.enabled
    assert await polling.state.lease_due("worker-a", 10, 30) == []  # due since its creation

    await polling.connections.update(connection.id, status=ConnectionStatus.ACTIVE)
    assert await polling.state.sync_accounts(INTERVAL, SWEEP) == AccountsSynced(0, 1, 0, 0)
    assert [lease.account for lease in await polling.state.lease_due("worker-a", 10, 30)] == ["org-1"]


@pytest.mark.parametrize(
    "status", [ConnectionStatus.NEEDS_REAUTH, ConnectionStatus.PAUSED, ConnectionStatus.DISCONNECTED]
)
async def test_inactive_connections_drop_out_and_resume_from_their_watermark(
    polling: PollingDb, status: ConnectionStatus
) -> None:
    a = await polling.connections.create("tenant-a", Provider.QUICKBOOKS, REALM)
    b = await polling.connections.create("tenant-b", Provider.QUICKBOOKS, REALM)
    await polling.state.sync_accounts(INTERVAL, SWEEP)
    [lease] = await polling.state.lease_due("worker-a", 10, 30)
    kept = {"invoice": T0, "bill": T0 - timedelta(minutes=5)}
    await advance(polling, lease, kept)
    await polling.state.finish(lease, "ok")  # due again in INTERVAL seconds
    assert await polling.state.lease_due("worker-a", 10, 30) == []

    # One tenant's connection out: the other still has the account polled.
    await polling.connections.update(a.id, status=status)
    assert await polling.state.sync_accounts(INTERVAL, SWEEP) == AccountsSynced(0, 0, 0, 0)
    # Both out: disabled, its watermarks kept.
    await polling.connections.update(b.id, status=status)
    assert await polling.state.sync_accounts(INTERVAL, SWEEP) == AccountsSynced(0, 0, 1, 0)
    account = await polling.state.account(Provider.QUICKBOOKS, REALM)
    assert account is not None and not account.enabled and account.last_outcome == "ok"
    assert await polling.state.watermarks(Provider.QUICKBOOKS, REALM) == kept

    # Active again (reconnected): due at once, though its last poll set it due minutes from now,
    # and polling starts from the kept watermarks.
    await polling.connections.update(b.id, status=ConnectionStatus.ACTIVE)
    assert await polling.state.sync_accounts(INTERVAL, SWEEP) == AccountsSynced(0, 1, 0, 0)
    [resumed] = await polling.state.lease_due("worker-b", 10, 30)
    assert (resumed.provider, resumed.account) == (Provider.QUICKBOOKS, REALM)
    assert await polling.state.watermarks(Provider.QUICKBOOKS, REALM) == kept


async def test_two_tenants_on_one_realm_are_polled_at_the_smaller_of_their_intervals(
    polling: PollingDb,
) -> None:
    store, state = polling.connections, polling.state
    a = await store.create("tenant-a", Provider.QUICKBOOKS, REALM, polling=Polling(PollingMode.POLL, 600))
    b = await store.create("tenant-b", Provider.QUICKBOOKS, REALM)  # auto: swept
    assert await state.sync_accounts(INTERVAL, SWEEP) == AccountsSynced(1, 0, 0, 0)
    assert await interval(polling) == 600
    [lease] = await state.lease_due("worker-a", 10, 30)
    kept = {"invoice": T0}
    await advance(polling, lease, kept)
    await state.finish(lease, "ok")

    # B asks for less: the account is due that long after its last poll.
    await store.update(b.id, polling=Polling(PollingMode.SWEEP, 120))
    assert await state.sync_accounts(INTERVAL, SWEEP) == AccountsSynced(0, 0, 0, 0)
    account = await state.account(Provider.QUICKBOOKS, REALM)
    assert account is not None and account.interval_seconds == 120 and account.last_polled_at is not None
    assert account.next_due_at == account.last_polled_at + timedelta(seconds=120)

    # One off: the other's interval alone.
    await store.update(b.id, polling=Polling(PollingMode.OFF, 120))
    await state.sync_accounts(INTERVAL, SWEEP)
    assert await interval(polling) == 600
    # Both off: disabled, its watermarks kept.
    await store.update(a.id, polling=Polling(PollingMode.OFF))
    assert await state.sync_accounts(INTERVAL, SWEEP) == AccountsSynced(0, 0, 1, 0)
    account = await state.account(Provider.QUICKBOOKS, REALM)
    assert account is not None and not account.enabled
    assert await state.watermarks(Provider.QUICKBOOKS, REALM) == kept
    assert await state.lease_due("worker-a", 10, 30) == []

    # Off -> auto again: due at once, from the kept watermarks, at the sweep interval.
    await store.update(a.id, polling=Polling())
    assert await state.sync_accounts(INTERVAL, SWEEP) == AccountsSynced(0, 1, 0, 0)
    [resumed] = await state.lease_due("worker-b", 10, 30)
    assert (resumed.account, resumed.interval_seconds) == (REALM, SWEEP)
    assert await state.watermarks(Provider.QUICKBOOKS, REALM) == kept


async def test_an_off_connection_alone_adds_no_account(polling: PollingDb) -> None:
    await polling.connections.create(
        "tenant-a", Provider.NETSUITE, "1234567", polling=Polling(PollingMode.OFF)
    )
    assert await polling.state.sync_accounts(INTERVAL, SWEEP) == AccountsSynced(0, 0, 0, 0)
    assert await polling.state.account(Provider.NETSUITE, "1234567") is None
    # Another tenant's connection in auto mode brings it in.
    await polling.connections.create("tenant-b", Provider.NETSUITE, "1234567")
    assert await polling.state.sync_accounts(INTERVAL, SWEEP) == AccountsSynced(1, 0, 0, 0)
    assert await interval(polling, Provider.NETSUITE, "1234567") == INTERVAL


async def test_auto_is_a_sweep_with_webhooks_and_a_poll_without(polling: PollingDb) -> None:
    store = ConnectionStore(polling.pool, KeyRing.parse(f"k1:{KeyRing.generate_key()}"))
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    # Whose webhooks reach every connection: swept.
    await store.create("t", Provider.QUICKBOOKS, REALM)
    await store.create("t", Provider.XERO, "xero-tenant-1")
    # Per-connection webhooks: swept once the connection holds a secret, polled before.
    await store.create("t", Provider.ZOHO_BOOKS, "org-secret", webhook_secrets=["zohoSecretToken123"])
    await store.create("t", Provider.NETSUITE, "ns-secret", webhook_secrets=[secret])
    plain = await store.create("t", Provider.FRESHBOOKS, "fb-plain")
    await store.create("t", Provider.SAGE_INTACCT, "company-1")
    # Explicit modes win over what auto would pick, and an explicit interval over both.
    await store.create(
        "t",
        Provider.ZOHO_BOOKS,
        "org-poll",
        webhook_secrets=["zohoSecretToken123"],
        polling=Polling(PollingMode.POLL),
    )
    await store.create("t", Provider.XERO, "xero-poll", polling=Polling(PollingMode.POLL))
    await store.create("t", Provider.NETSUITE, "ns-sweep", polling=Polling(PollingMode.SWEEP))
    await store.create("t", Provider.QUICKBOOKS, "realm-own", polling=Polling(PollingMode.AUTO, 45))
    # Custom sources have no change API, whatever their mode.
    await store.create("t", Provider.CUSTOM, "source-1", polling=Polling(PollingMode.POLL, 5))

    assert (await polling.state.sync_accounts(INTERVAL, SWEEP)).added == 10
    rows = await polling.pool.fetch("SELECT provider_account_id, interval_seconds FROM poll_accounts")
    assert {r["provider_account_id"]: r["interval_seconds"] for r in rows} == {
        REALM: SWEEP,
        "xero-tenant-1": SWEEP,
        "org-secret": SWEEP,
        "ns-secret": SWEEP,
        "fb-plain": INTERVAL,
        "company-1": INTERVAL,
        "org-poll": INTERVAL,
        "xero-poll": INTERVAL,
        "ns-sweep": SWEEP,
        "realm-own": 45,
    }

    # The FreshBooks verify handshake stores a secret: from then on it is swept.
    await store.update(plain.id, webhook_secrets=["verifier-code-1"])
    await polling.state.sync_accounts(INTERVAL, SWEEP)
    assert await interval(polling, Provider.FRESHBOOKS, "fb-plain") == SWEEP
    # Which providers' webhooks reach every connection is the caller's to say.
    await polling.state.sync_accounts(INTERVAL, SWEEP, webhook_providers=())
    assert await interval(polling) == INTERVAL
    assert await interval(polling, Provider.FRESHBOOKS, "fb-plain") == SWEEP


async def test_intervals_must_be_positive(polling: PollingDb) -> None:
    with pytest.raises(ValueError, match="sweep_interval_seconds"):
        await polling.state.sync_accounts(INTERVAL, 0)
    with pytest.raises(ValueError, match="poll_interval_seconds"):
        await polling.state.sync_accounts(-1, SWEEP)


async def test_concurrent_leases_never_share_an_account(polling: PollingDb) -> None:
    accounts = [f"org-{n:04d}" for n in range(300)]
    await polling.pool.executemany(
        "INSERT INTO connections (id, tenant_id, provider, provider_account_id) VALUES ($1, $2, $3, $4)",
        [(uuid.uuid4(), "tenant-a", Provider.ZOHO_BOOKS.value, account) for account in accounts],
    )
    assert (await polling.state.sync_accounts(INTERVAL, SWEEP)).added == 300

    owners = ("worker-a", "worker-b")
    # 40 calls of 10: more than there are accounts, racing on 12 connections.
    batches = await asyncio.gather(*(polling.state.lease_due(owners[n % 2], 10, 30) for n in range(40)))
    leased = [lease.account for batch in batches for lease in batch]
    assert len(leased) == len(set(leased))  # never one account in two leases
    assert sorted(leased) == accounts  # and every due account leased
    by_owner = Counter(lease.owner for batch in batches for lease in batch)
    assert set(by_owner) == set(owners)
    rows = await polling.pool.fetch("SELECT lease_owner, count(*) FROM poll_accounts GROUP BY 1")
    assert {r["lease_owner"]: r["count"] for r in rows} == dict(by_owner)
    assert await polling.state.lease_due("worker-c", 10, 30) == []  # all held


async def test_an_expired_lease_is_taken_over_and_the_old_owner_is_shut_out(polling: PollingDb) -> None:
    await polling.connections.create("tenant-a", Provider.XERO, "xero-tenant-1")
    await polling.state.sync_accounts(INTERVAL, SWEEP)
    [old] = await polling.state.lease_due("worker-a", 10, 0.3)
    await advance(polling, old, {"invoice": T0})
    assert await polling.state.lease_due("worker-b", 10, 30) == []  # live: nobody else gets it
    await asyncio.sleep(0.5)

    [new] = await polling.state.lease_due("worker-b", 10, 30)  # worker-a "died"
    assert (new.account, new.owner) == ("xero-tenant-1", "worker-b") and new.lease_id != old.lease_id
    with pytest.raises(LeaseLost, match="taken over by 'worker-b'"):
        await polling.state.renew(old, 30)
    with pytest.raises(LeaseLost):
        await polling.state.finish(old, "ok")
    with pytest.raises(LeaseLost):
        await advance(polling, old, {"invoice": T0 + timedelta(hours=1)})
    assert await polling.state.watermarks(Provider.XERO, "xero-tenant-1") == {"invoice": T0}
    account = await polling.state.account(Provider.XERO, "xero-tenant-1")
    assert account is not None and account.lease_owner == "worker-b" and account.last_outcome is None

    # The new owner carries on from the old owner's watermark.
    renewed = await polling.state.renew(new, 60)
    assert renewed.lease_until > new.lease_until
    await advance(polling, renewed, {"invoice": T0 + timedelta(hours=2)})
    await polling.state.finish(renewed, "ok")
    with pytest.raises(LeaseLost, match="released"):
        await polling.state.finish(renewed, "ok")  # finished once only


async def test_a_lease_taken_again_by_the_same_owner_is_another_lease(polling: PollingDb) -> None:
    await polling.connections.create("tenant-a", Provider.NETSUITE, "1234567")
    await polling.state.sync_accounts(INTERVAL, SWEEP)
    [first] = await polling.state.lease_due("worker-a", 10, 0.3)
    await asyncio.sleep(0.5)
    with pytest.raises(LeaseLost, match="expired"):
        await polling.state.renew(first, 30)  # expired, even before anyone took it
    [second] = await polling.state.lease_due("worker-a", 10, 30)
    # A stalled task of the same worker still holding the first lease cannot act on the second.
    with pytest.raises(LeaseLost, match="taken over by 'worker-a'"):
        await polling.state.finish(first, "ok")
    with pytest.raises(LeaseLost):
        await advance(polling, first, {"record": T0})
    assert await polling.state.watermarks(Provider.NETSUITE, "1234567") == {}
    await polling.state.finish(second, "ok")


async def test_finish_records_the_outcome_and_schedules_the_next_poll(polling: PollingDb) -> None:
    await polling.connections.create("tenant-a", Provider.FRESHBOOKS, "acct-1")
    await polling.connections.create("tenant-a", Provider.FRESHBOOKS, "acct-2")
    await polling.state.sync_accounts(60, SWEEP)
    first, second = await polling.state.lease_due("worker-a", 10, 30)
    due = await polling.state.finish(first, "ok")
    # One interval after the poll started (the lease's start), on PostgreSQL's clock.
    assert due == first.lease_until - timedelta(seconds=30) + timedelta(seconds=60)
    account = await polling.state.account(Provider.FRESHBOOKS, first.account)
    assert account is not None and account.next_due_at == due and account.last_outcome == "ok"
    assert account.last_polled_at is not None and account.lease_owner is None

    # A shorter interval applies from the last poll.
    await polling.state.sync_accounts(10, SWEEP)
    account = await polling.state.account(Provider.FRESHBOOKS, first.account)
    assert account is not None and account.interval_seconds == 10 and account.last_polled_at is not None
    assert account.next_due_at == account.last_polled_at + timedelta(seconds=10)

    # A delay counts from now: zero makes it due at once (a failed poll retried), five seconds
    # five seconds after the poll ended (a provider's Retry-After).
    await polling.state.finish(second, "failed", timedelta(0))
    [again] = await polling.state.lease_due("worker-a", 10, 30)
    assert again.account == second.account
    due = await polling.state.finish(again, "rate_limited", timedelta(seconds=5))
    account = await polling.state.account(Provider.FRESHBOOKS, second.account)
    assert account is not None and account.last_outcome == "rate_limited"
    assert account.last_polled_at is not None and due == account.last_polled_at + timedelta(seconds=5)
    assert await polling.state.lease_due("worker-a", 10, 30) == []


async def test_watermarks_never_go_backwards(polling: PollingDb) -> None:
    await polling.connections.create("tenant-a", Provider.SAGE_INTACCT, "company-1")
    await polling.state.sync_accounts(INTERVAL, SWEEP)
    [lease] = await polling.state.lease_due("worker-a", 10, 30)
    state = polling.state
    assert await state.watermarks(Provider.SAGE_INTACCT, "company-1") == {}

    await advance(polling, lease, {"invoice": T0 + timedelta(hours=2)})
    await advance(polling, lease, {"invoice": T0, "bill": T0})  # invoice behind: ignored
    assert await state.watermarks(Provider.SAGE_INTACCT, "company-1") == {
        "invoice": T0 + timedelta(hours=2),
        "bill": T0,
    }
    await advance(polling, lease, {"invoice": T0 + timedelta(hours=3)})
    assert (await state.watermarks(Provider.SAGE_INTACCT, "company-1"))["invoice"] == T0 + timedelta(hours=3)

    # Only the caller's commit moves it: rolled back (an acknowledgement failed), it stays.
    async with polling.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await state.advance(conn, lease, {"bill": T0 + timedelta(days=1)})
        await transaction.rollback()
    assert (await state.watermarks(Provider.SAGE_INTACCT, "company-1"))["bill"] == T0

    async with polling.pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="transaction"):
            await state.advance(conn, lease, {"bill": T0 + timedelta(days=1)})
        async with conn.transaction():
            with pytest.raises(ValueError, match="time zone"):
                await state.advance(conn, lease, {"bill": datetime(2026, 12, 1, 12, 0)})  # naive
    assert (await state.watermarks(Provider.SAGE_INTACCT, "company-1"))["bill"] == T0


async def test_an_open_advance_keeps_the_account_from_other_workers_until_it_commits(
    polling: PollingDb,
) -> None:
    await polling.connections.create("tenant-a", Provider.QUICKBOOKS, REALM)
    await polling.state.sync_accounts(INTERVAL, SWEEP)
    [lease] = await polling.state.lease_due("worker-a", 10, 0.3)
    async with polling.pool.acquire() as conn, conn.transaction():
        await polling.state.advance(conn, lease, {"invoice": T0})
        await asyncio.sleep(0.5)  # the lease runs out while the events are being acknowledged
        # The row stays locked: a takeover now would read the watermark before it moved.
        assert await polling.state.lease_due("worker-b", 10, 30) == []
    [taken] = await polling.state.lease_due("worker-b", 10, 30)
    assert taken.owner == "worker-b"
    assert await polling.state.watermarks(Provider.QUICKBOOKS, REALM) == {"invoice": T0}


async def test_the_lease_query_uses_its_index(polling: PollingDb) -> None:
    accounts = [f"{9_000_000 + n}" for n in range(5000)]
    await polling.pool.copy_records_to_table(
        "connections",
        records=[(uuid.uuid4(), "tenant-a", Provider.QUICKBOOKS.value, a) for a in accounts],
        columns=["id", "tenant_id", "provider", "provider_account_id"],
    )
    await polling.state.sync_accounts(INTERVAL, SWEEP)
    # The steady state: nearly every account polled and due later, a few due now.
    await polling.pool.execute(
        "UPDATE poll_accounts SET next_due_at = now() + interval '5 minutes' WHERE provider_account_id > $1",
        accounts[9],
    )
    await polling.pool.execute("ANALYZE poll_accounts")
    plan = "\n".join(
        row[0] for row in await polling.pool.fetch(f"EXPLAIN {LEASE_DUE_QUERY}", "worker-a", 100, 30.0)
    )
    assert "Index Scan using poll_accounts_available" in plan, plan
    leases = await polling.state.lease_due("worker-a", 100, 30)
    assert sorted(lease.account for lease in leases) == accounts[:10]
