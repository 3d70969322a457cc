"""The connection store on real PostgreSQL: CRUD, uniqueness, cursor pages, routing lookups, polling
settings, and webhook secrets that exist only encrypted and move to a new key."""

import uuid

import asyncpg
import pytest

from provider_auth.accounts.store import (
    ConnectionExists,
    ConnectionStatus,
    ConnectionStore,
    MissingKeyRing,
    Polling,
    PollingMode,
)
from provider_auth.providers import Provider
from provider_auth.vault import KeyRing, VaultError


@pytest.fixture
async def store(database_url: str):  # type: ignore[no-untyped-def]
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    ring = KeyRing.parse(f"k1:{KeyRing.generate_key()}")
    yield ConnectionStore(pool, ring), pool
    await pool.close()


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


async def test_create_get_update_disconnect(store) -> None:  # type: ignore[no-untyped-def]
    connections, _ = store
    owner = tenant()
    created = await connections.create(
        owner, Provider.QUICKBOOKS, "1185883450", display_name="Books", metadata={"plan": "pro"}
    )
    assert created.status is ConnectionStatus.ACTIVE and created.metadata == {"plan": "pro"}
    assert await connections.get(created.id) == created
    assert await connections.get(created.id.upper()) == created  # any spelling of the UUID
    assert await connections.get("not-a-uuid") is None
    assert await connections.update("not-a-uuid", display_name="x") is None
    assert await connections.page(after="not-a-uuid") == []
    with pytest.raises(ConnectionExists):
        await connections.create(owner, Provider.QUICKBOOKS, "1185883450")
    # Another tenant may connect the same account.
    other = await connections.create(tenant(), Provider.QUICKBOOKS, "1185883450")
    routed = await connections.by_account(Provider.QUICKBOOKS, "1185883450")
    assert [c.id for c in routed][-2:] == [created.id, other.id]

    paused = await connections.update(created.id, status=ConnectionStatus.PAUSED, display_name=None)
    assert paused is not None and paused.status is ConnectionStatus.PAUSED and paused.display_name is None
    assert paused.metadata == {"plan": "pro"} and paused.updated_at >= created.updated_at
    # Paused: still routed for (its changes go to quarantine), unlike a disconnected one.
    assert paused.paused and paused.receives_events
    gone = await connections.disconnect(created.id)
    assert gone is not None and not gone.receives_events and not gone.paused
    assert await connections.update(str(uuid.uuid4()), display_name="x") is None


async def test_polling_is_stored_replaced_whole_and_checked(store) -> None:  # type: ignore[no-untyped-def]
    connections, pool = store
    plain = await connections.create(tenant(), Provider.XERO, "org-p")
    assert plain.polling == Polling(PollingMode.AUTO, None)
    swept = await connections.create(
        tenant(), Provider.NETSUITE, "TSTDRV9", polling=Polling(PollingMode.SWEEP, 900)
    )
    assert swept.polling == Polling(PollingMode.SWEEP, 900)
    assert (await connections.get(swept.id)).polling == swept.polling  # type: ignore[union-attr]
    assert [c.polling for c in await connections.by_account(Provider.NETSUITE, "TSTDRV9")] == [swept.polling]

    renamed = await connections.update(swept.id, display_name="kept")
    assert renamed is not None and renamed.polling == swept.polling
    off = await connections.update(swept.id, polling=Polling(PollingMode.OFF))
    assert off is not None and off.polling == Polling(PollingMode.OFF, None)
    # The table holds the same rules as the API: a known mode, an interval of at least a second.
    with pytest.raises(asyncpg.CheckViolationError):
        await connections.update(swept.id, polling=Polling(PollingMode.POLL, 0))
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE connections SET polling_mode = 'hourly' WHERE id = $1", swept.id)
    assert (await connections.get(swept.id)).polling == Polling(PollingMode.OFF)  # type: ignore[union-attr]


async def test_pages_follow_the_cursor_and_filters(store) -> None:  # type: ignore[no-untyped-def]
    connections, _ = store
    owner = tenant()
    made = [await connections.create(owner, Provider.XERO, f"org-{i}") for i in range(5)]
    first = await connections.page(tenant_id=owner, limit=2)
    second = await connections.page(tenant_id=owner, limit=2, after=first[-1].id)
    third = await connections.page(tenant_id=owner, limit=2, after=second[-1].id)
    # Pages follow id order (ids minted in the same millisecond need not follow creation order).
    assert [c.id for c in first + second + third] == sorted(c.id for c in made)
    await connections.update(made[0].id, status=ConnectionStatus.NEEDS_REAUTH)
    assert [c.id for c in await connections.page(tenant_id=owner, status=ConnectionStatus.NEEDS_REAUTH)] == [
        made[0].id
    ]
    assert await connections.page(tenant_id=owner, provider=Provider.QUICKBOOKS) == []


async def test_webhook_secrets_are_encrypted_and_bound_to_their_row(store) -> None:  # type: ignore[no-untyped-def]
    connections, pool = store
    first = await connections.create(
        tenant(), Provider.ZOHO_BOOKS, "org-1", webhook_secrets=["zoho-secret-one"]
    )
    second = await connections.create(
        tenant(), Provider.ZOHO_BOOKS, "org-2", webhook_secrets=["zoho-secret-two"]
    )
    assert first.has_webhook_secret
    assert await connections.webhook_secrets(first.id) == ["zoho-secret-one"]
    raw = await pool.fetchval("SELECT webhook_secrets FROM connections WHERE id = $1", first.id)
    assert b"zoho-secret-one" not in raw
    # A ciphertext copied into another row does not decrypt there.
    await pool.execute("UPDATE connections SET webhook_secrets = $1 WHERE id = $2", raw, second.id)
    with pytest.raises(VaultError):
        await connections.webhook_secrets(second.id)
    # Disconnect erases the secret at once.
    await connections.disconnect(first.id)
    assert await connections.webhook_secrets(first.id) == []
    assert await pool.fetchval("SELECT webhook_secrets FROM connections WHERE id = $1", first.id) is None


async def test_secrets_need_a_key_ring(store) -> None:  # type: ignore[no-untyped-def]
    _, pool = store
    with pytest.raises(MissingKeyRing):
        await ConnectionStore(pool, None).create(tenant(), Provider.FRESHBOOKS, "acct", webhook_secrets=["v"])


async def test_webhook_secrets_move_to_the_new_key_and_the_old_key_can_go(store) -> None:  # type: ignore[no-untyped-def]
    _, pool = store
    old_entry = f"k1:{KeyRing.generate_key()}"
    new_entry = f"k2:{KeyRing.generate_key()}"
    before = ConnectionStore(pool, KeyRing.parse(old_entry))
    owners = [
        await before.create(tenant(), Provider.ZOHO_BOOKS, f"org-{i}", webhook_secrets=[f"s{i}", "next"])
        for i in range(3)
    ]
    await before.create(tenant(), Provider.QUICKBOOKS, "realm-without-secrets")
    stamps = await pool.fetch("SELECT id, updated_at FROM connections ORDER BY id")

    both = ConnectionStore(pool, KeyRing.parse(f"{new_entry},{old_entry}"))
    assert await both.reencrypt_webhook_secrets(batch=2) == (3, 0)  # two batches: the paging is exercised
    assert await both.reencrypt_webhook_secrets() == (0, 0)
    sealed = await pool.fetch("SELECT webhook_secrets FROM connections WHERE webhook_secrets IS NOT NULL")
    assert sorted(KeyRing.key_id_of(row["webhook_secrets"]) for row in sealed) == ["k2", "k2", "k2"]
    # The connections themselves did not change.
    assert await pool.fetch("SELECT id, updated_at FROM connections ORDER BY id") == stamps
    only_new = ConnectionStore(pool, KeyRing.parse(new_entry))
    for i, owner in enumerate(owners):
        assert await only_new.webhook_secrets(owner.id) == [f"s{i}", "next"]
    with pytest.raises(MissingKeyRing):
        await ConnectionStore(pool, None).reencrypt_webhook_secrets()
