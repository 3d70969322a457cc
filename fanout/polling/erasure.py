"""Erasing the polling and reconciliation state of a tenant's connections, in the caller's
transaction: their record versions and backfill jobs, and the polling rows, watermarks and rate
budget scopes of the provider accounts no other connection uses (an account another tenant also
connected keeps its state, so its polling goes on where it was).

The connection rows themselves are `provider_auth.accounts.erasure`'s. What stays elsewhere:
docs/operations.md, "Erasing a tenant".
"""

from collections.abc import Sequence

import asyncpg

from fanout.polling.budget import DAY, IN_FLIGHT, MINUTE
from provider_auth.accounts.erasure import TenantConnection
from provider_auth.providers import Provider

__all__ = ["ACCOUNT_SCOPE_LABELS", "ERASED_TABLES", "account_scope_keys", "erase_polling"]

# The tables this module erases from, for the check against the schema's catalogue.
ERASED_TABLES = frozenset(
    {
        "poll_accounts",
        "poll_watermarks",
        "record_versions",
        "poll_backfills",
        "rate_budget_entries",
        "rate_budget_scopes",
    }
)
# An account's own rate budget scopes (the app-wide one belongs to no account).
ACCOUNT_SCOPE_LABELS = (MINUTE, DAY, IN_FLIGHT)


def account_scope_keys(provider: Provider, account: str) -> list[str]:
    """The keys of an account's own rate budget scopes, as `RateBudgets.scope_key` names them."""
    return [f"{provider.value}/account/{account}/{label}" for label in ACCOUNT_SCOPE_LABELS]


async def erase_polling(conn: asyncpg.Connection, connections: Sequence[TenantConnection]) -> int:
    """Erase the connections' polling and reconciliation state in the caller's open transaction,
    before or after their rows go; returns how many provider accounts no other connection uses
    (their state went too)."""
    if not conn.is_in_transaction():
        raise RuntimeError("erase_polling() runs inside the caller's transaction")
    ids = [c.id for c in connections]
    unused = await conn.fetch(
        "SELECT DISTINCT a.provider, a.account FROM unnest($1::text[], $2::text[]) AS a (provider, account)"
        " WHERE NOT EXISTS (SELECT 1 FROM connections c WHERE c.provider = a.provider"
        "  AND c.provider_account_id = a.account AND c.id <> ALL($3::uuid[]))",
        [c.provider.value for c in connections],
        [c.provider_account_id for c in connections],
        ids,
    )
    providers = [row["provider"] for row in unused]
    accounts = [row["account"] for row in unused]
    # A poll in flight loses its lease with the account's row: it cannot move a watermark back.
    for table in ("poll_watermarks", "poll_accounts"):
        await conn.execute(
            f"DELETE FROM {table} WHERE (provider, provider_account_id) IN"
            " (SELECT * FROM unnest($1::text[], $2::text[]))",
            providers,
            accounts,
        )
    keys = [key for row in unused for key in account_scope_keys(Provider(row["provider"]), row["account"])]
    for table in ("rate_budget_entries", "rate_budget_scopes"):
        await conn.execute(f"DELETE FROM {table} WHERE scope_key = ANY($1::text[])", keys)
    for table in ("record_versions", "poll_backfills"):
        await conn.execute(f"DELETE FROM {table} WHERE connection_id = ANY($1::uuid[])", ids)
    return len(unused)
