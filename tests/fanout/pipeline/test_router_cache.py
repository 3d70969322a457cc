"""The worker's connection lookups: found connections are reused briefly; misses, and lookups that
found a paused connection, never are."""

import asyncio
import uuid

import asyncpg

from fanout.pipeline import Router, WorkerConfig
from gateway.runtime.migrate import migrate
from provider_auth.accounts.store import ConnectionStatus, ConnectionStore
from provider_auth.providers import Provider


async def test_positive_lookups_are_reused_for_the_ttl_and_misses_are_not(postgres_url: str) -> None:
    await migrate(postgres_url)
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=2)
    try:
        store = ConnectionStore(pool, None)
        config = WorkerConfig("raw", "changes", "quarantine", "group", connection_cache_seconds=0.5)
        router = Router(config, store)
        account = f"realm-{uuid.uuid4().hex[:8]}"
        key = ("account", Provider.QUICKBOOKS, account)

        assert await router._lookup(key, {}) == []  # unknown: not remembered
        created = await store.create("tenant-a", Provider.QUICKBOOKS, account)
        found = await router._lookup(key, {})  # a new batch sees the registration at once
        assert [c.id for c in found] == [created.id]

        await store.disconnect(created.id)
        still = await router._lookup(key, {})  # within the TTL: the remembered answer
        assert [c.receives_events for c in still] == [True]
        await asyncio.sleep(0.6)
        after = await router._lookup(key, {})  # after it: PostgreSQL again
        assert [c.receives_events for c in after] == [False]
        assert [c.receives_events for c in await router._lookup(key, {})] == [False]  # not remembered
    finally:
        await pool.close()


async def test_lookups_finding_a_paused_connection_are_not_reused(postgres_url: str) -> None:
    await migrate(postgres_url)
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=2)
    try:
        store = ConnectionStore(pool, None)
        config = WorkerConfig("raw", "changes", "quarantine", "group", connection_cache_seconds=60)
        router = Router(config, store)
        account = f"realm-{uuid.uuid4().hex[:8]}"
        by_account = ("account", Provider.QUICKBOOKS, account)
        sibling = await store.create("tenant-a", Provider.QUICKBOOKS, account)
        held = await store.create("tenant-b", Provider.QUICKBOOKS, account)
        await store.update(held.id, status=ConnectionStatus.PAUSED)
        by_id = ("id", held.id)

        assert [c.paused for c in await router._lookup(by_account, {})] == [False, True]
        assert (await router._lookup(by_id, {})).paused
        await store.update(held.id, status=ConnectionStatus.ACTIVE)
        # A resume is seen by the next batch, though the TTL is long: neither lookup was remembered.
        assert [c.paused for c in await router._lookup(by_account, {})] == [False, False]
        assert not (await router._lookup(by_id, {})).paused
        # Without a paused connection the answer is remembered again, for the TTL.
        await store.update(sibling.id, status=ConnectionStatus.PAUSED)
        assert [c.paused for c in await router._lookup(by_account, {})] == [False, False]
    finally:
        await pool.close()
