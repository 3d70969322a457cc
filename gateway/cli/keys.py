"""`ledgerhook keys`: encryption key ring chores.

Rotation, without downtime (provider_auth/vault.py):

1. generate a key (`ledgerhook keys generate`) and put it first in `LEDGERHOOK_ENCRYPTION_KEYS`,
   keeping the old ones after it; roll that out to every process (they now encrypt with the new key
   and still decrypt with the old);
2. `ledgerhook keys rotate`: every stored secret (OAuth tokens in `oauth_grants`, webhook secrets in
   `connections`) is re-encrypted under the new key, in batches, each row under its row lock;
3. when it reports nothing left under another key, remove the old key from the setting.
"""

import asyncio
from dataclasses import dataclass

import asyncpg

from provider_auth.accounts.store import webhook_secrets_aad
from provider_auth.tokens.store import CredentialStore
from provider_auth.vault import KeyRing

__all__ = ["RotationReport", "generate_entry", "rotate_keys", "run_rotate"]

_FIRST_ID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class RotationReport:
    """What a rotation pass did, and what is still under another key than the current one."""

    key_id: str
    grants_reencrypted: int
    grants_left: int
    connections_reencrypted: int
    connections_left: int

    @property
    def done(self) -> bool:
        """True when no stored secret needs an old key any more."""
        return self.grants_left == 0 and self.connections_left == 0


def generate_entry(key_id: str) -> str:
    """A new key ring entry `kid:base64key` (validated by parsing it)."""
    entry = f"{key_id}:{KeyRing.generate_key()}"
    KeyRing.parse(entry)
    return entry


async def _rotate_connections(pool: asyncpg.Pool, keyring: KeyRing, batch: int) -> tuple[int, int]:
    """Re-encrypt `connections.webhook_secrets` under the current key; (changed, still stale)."""
    current = keyring.current_key_id
    changed, last = 0, _FIRST_ID
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, webhook_secrets FROM connections WHERE id > $1 AND webhook_secrets IS NOT NULL"
                " ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                last,
                batch,
            )
            for row in rows:
                sealed = row["webhook_secrets"]
                if KeyRing.key_id_of(sealed) == current:
                    continue
                connection_id = str(row["id"])
                await conn.execute(
                    "UPDATE connections SET webhook_secrets = $2 WHERE id = $1",
                    connection_id,
                    keyring.reencrypt(sealed, webhook_secrets_aad(connection_id)),
                )
                changed += 1
        if len(rows) < batch:
            break
        last = str(rows[-1]["id"])
    stale = 0
    async with pool.acquire() as conn, conn.transaction():
        async for row in conn.cursor(
            "SELECT webhook_secrets FROM connections WHERE webhook_secrets IS NOT NULL"
        ):
            stale += KeyRing.key_id_of(row["webhook_secrets"]) != current
    return changed, stale


async def rotate_keys(pool: asyncpg.Pool, keyring: KeyRing, batch: int = 500) -> RotationReport:
    """Re-encrypt every stored secret under the key ring's current (first) key."""
    grants_changed, grants_left = await CredentialStore(pool, keyring).reencrypt(batch)
    connections_changed, connections_left = await _rotate_connections(pool, keyring, batch)
    return RotationReport(
        key_id=keyring.current_key_id,
        grants_reencrypted=grants_changed,
        grants_left=grants_left,
        connections_reencrypted=connections_changed,
        connections_left=connections_left,
    )


def run_rotate(database_url: str, keys: str, batch: int) -> RotationReport:
    """`ledgerhook keys rotate` body: one pass on a pool of its own."""

    async def main() -> RotationReport:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            return await rotate_keys(pool, KeyRing.parse(keys), batch)
        finally:
            await pool.close()

    return asyncio.run(main())
