"""`ConnectionStore.status_counts` on real PostgreSQL: one count per (provider, status) pair present,
following status changes."""

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from provider_auth.accounts.store import ConnectionStatus, ConnectionStore
from provider_auth.providers import Provider

QB, XERO, ZOHO = Provider.QUICKBOOKS, Provider.XERO, Provider.ZOHO_BOOKS
ACTIVE, PAUSED = ConnectionStatus.ACTIVE, ConnectionStatus.PAUSED
NEEDS_REAUTH, DISCONNECTED = ConnectionStatus.NEEDS_REAUTH, ConnectionStatus.DISCONNECTED


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[ConnectionStore]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield ConnectionStore(pool, keyring=None)
    await pool.close()


async def connect(store: ConnectionStore, provider: Provider, status: ConnectionStatus) -> str:
    created = await store.create(f"tenant-{uuid.uuid4().hex[:8]}", provider, uuid.uuid4().hex[:12])
    if status is not ACTIVE:
        assert await store.update(created.id, status=status) is not None
    return created.id


async def test_an_empty_table_counts_nothing(store: ConnectionStore) -> None:
    assert await store.status_counts() == {}


async def test_counts_each_provider_and_status_and_follow_changes(store: ConnectionStore) -> None:
    await connect(store, QB, ACTIVE)
    await connect(store, QB, ACTIVE)
    paused = await connect(store, QB, PAUSED)
    broken = await connect(store, XERO, NEEDS_REAUTH)
    await connect(store, XERO, ACTIVE)
    await connect(store, ZOHO, DISCONNECTED)
    assert await store.status_counts() == {
        (QB, ACTIVE): 2,
        (QB, PAUSED): 1,
        (XERO, NEEDS_REAUTH): 1,
        (XERO, ACTIVE): 1,
        (ZOHO, DISCONNECTED): 1,
    }

    await store.update(paused, status=ACTIVE)
    await store.disconnect(broken)
    assert await store.status_counts() == {
        (QB, ACTIVE): 3,
        (XERO, DISCONNECTED): 1,
        (XERO, ACTIVE): 1,
        (ZOHO, DISCONNECTED): 1,
    }
