"""The worker's connection lookups: found connections are reused briefly, misses never are."""

import asyncio
import uuid

import asyncpg

from fanout.pipeline import Router, WorkerConfig
from gateway.runtime.migrate import migrate
from provider_auth.accounts.store import ConnectionStore
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
