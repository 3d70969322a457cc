"""`ledgerhook keys`: encryption key ring chores (generate an entry, rotate the stored secrets).

`rotate` re-encrypts every stored secret under the key ring's first key; each store does its own
rows. The rotation procedure: docs/tokens.md, "Storage".
"""

import argparse
import asyncio
import sys
from dataclasses import dataclass

import asyncpg

from gateway.runtime.preflight import PreflightError, check_database
from gateway.settings import load_settings
from provider_auth.accounts.store import ConnectionStore
from provider_auth.tokens.store import CredentialStore
from provider_auth.vault import KeyRing

__all__ = ["RotationReport", "generate_entry", "rotate_keys", "run_keys", "run_rotate"]


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


async def rotate_keys(pool: asyncpg.Pool, keyring: KeyRing, batch: int = 500) -> RotationReport:
    """Re-encrypt every stored secret under the key ring's current (first) key."""
    grants_changed, grants_left = await CredentialStore(pool, keyring).reencrypt(batch)
    connections_changed, connections_left = await ConnectionStore(pool, keyring).reencrypt_webhook_secrets(
        batch
    )
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


def run_keys(args: argparse.Namespace) -> int:
    """`ledgerhook keys generate|rotate`."""
    if args.action == "generate":
        try:
            print(generate_entry(args.id))
        except ValueError as exc:
            print(f"ledgerhook keys generate: {exc}", file=sys.stderr)
            return 2
        return 0
    settings = load_settings()
    if settings.encryption_keys is None:
        print("ledgerhook keys rotate: LEDGERHOOK_ENCRYPTION_KEYS is not set", file=sys.stderr)
        return 2
    database_url = settings.database_url.get_secret_value()
    try:
        asyncio.run(check_database(database_url, settings.startup_timeout_seconds))
    except PreflightError as exc:
        print(f"ledgerhook keys rotate: {exc}", file=sys.stderr)
        return 3
    report = run_rotate(database_url, settings.encryption_keys.get_secret_value(), args.batch_size)
    print(
        f"re-encrypted under key {report.key_id!r}: {report.grants_reencrypted} OAuth grants, "
        f"{report.connections_reencrypted} connections' webhook secrets"
    )
    if report.done:
        print("nothing is left under another key: older keys can be removed from LEDGERHOOK_ENCRYPTION_KEYS")
        return 0
    print(
        f"still under other keys: {report.grants_left} grants, {report.connections_left} connections "
        "(rows busy during the pass); run it again",
        file=sys.stderr,
    )
    return 1
