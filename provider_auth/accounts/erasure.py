"""Erasing a tenant from provider_auth's tables, in the caller's transaction: the connection rows
(tenant id, display name, metadata, encrypted webhook secrets), their grant links, the grants no
other connection uses (tokens and fingerprints), and the personal values of the audit trail's
earlier entries about those connections (their ids stay).

Tokens are given back at the provider before, by the token layer's disconnect; the polling state
is `fanout.polling.erasure`'s. What stays elsewhere, and for how long: docs/operations.md,
"Erasing a tenant".
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import asyncpg

from provider_auth.providers import Provider

__all__ = [
    "ERASED",
    "ERASED_TABLES",
    "PERSONAL_MEMBERS",
    "ConnectionsErased",
    "TenantConnection",
    "erase_connections",
    "linked_grants",
    "lock_tenant",
    "tenant_connections",
]

# The tables this module erases from (or scrubs), for the check against the schema's catalogue.
ERASED_TABLES = frozenset({"connections", "oauth_connection_grants", "oauth_grants", "audit_log"})
# Members of an audit entry's `changes` that hold what the tenant told us about itself.
PERSONAL_MEMBERS = ("tenant_id", "display_name", "metadata")
ERASED = "[erased]"  # what an erased member of an audit entry reads afterwards


@dataclass(frozen=True, slots=True)
class TenantConnection:
    """One connection of a tenant, as erasure needs it: which provider account it covers."""

    id: str
    provider: Provider
    provider_account_id: str


@dataclass(frozen=True, slots=True)
class ConnectionsErased:
    """What `erase_connections` removed."""

    connections: int
    grants: int
    audit_entries: int  # earlier entries whose personal members now read ERASED


_SELECT = "SELECT id, provider, provider_account_id FROM connections WHERE tenant_id = $1 ORDER BY id"


def _connection(row: asyncpg.Record) -> TenantConnection:
    return TenantConnection(str(row["id"]), Provider(row["provider"]), row["provider_account_id"])


async def tenant_connections(
    conn: asyncpg.Connection | asyncpg.Pool, tenant_id: str
) -> list[TenantConnection]:
    """Every connection of the tenant, whatever its status, in creation order."""
    return [_connection(row) for row in await conn.fetch(_SELECT, tenant_id)]


async def lock_tenant(conn: asyncpg.Connection, tenant_id: str) -> tuple[list[TenantConnection], set[str]]:
    """Lock the tenant's connections and the grants they use, in the caller's transaction; returns
    the connections and the grant ids.

    Grants are locked first, as the token layer does (a refresh holds its grant while it changes a
    connection's status), so an erasure and a refresh cannot deadlock.
    """
    grants = await conn.fetch(
        "SELECT g.id FROM oauth_grants g WHERE g.id IN (SELECT l.grant_id FROM oauth_connection_grants l"
        " JOIN connections c ON c.id = l.connection_id WHERE c.tenant_id = $1)"
        " ORDER BY g.id FOR UPDATE OF g",
        tenant_id,
    )
    rows = await conn.fetch(_SELECT + " FOR UPDATE", tenant_id)
    return [_connection(row) for row in rows], {str(row["id"]) for row in grants}


async def linked_grants(conn: asyncpg.Connection | asyncpg.Pool, connection_ids: Collection[str]) -> set[str]:
    """The ids of the grants the connections use."""
    rows = await conn.fetch(
        "SELECT DISTINCT grant_id FROM oauth_connection_grants WHERE connection_id = ANY($1::uuid[])",
        list(connection_ids),
    )
    return {str(row["grant_id"]) for row in rows}


async def erase_connections(
    conn: asyncpg.Connection, connections: Sequence[TenantConnection], grant_ids: Collection[str]
) -> ConnectionsErased:
    """Delete the connections, their grant links and each of `grant_ids` no connection uses any
    more, and erase the personal members of the audit entries about the connections, in the
    caller's open transaction.

    `grants` counts every one of `grant_ids` that is gone afterwards, also those the token layer's
    disconnect erased before.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("erase_connections() runs inside the caller's transaction")
    ids = [c.id for c in connections]
    grants = list(grant_ids)
    await conn.execute("DELETE FROM oauth_connection_grants WHERE connection_id = ANY($1::uuid[])", ids)
    deleted = await conn.fetchval(
        "WITH gone AS (DELETE FROM connections WHERE id = ANY($1::uuid[]) RETURNING 1)"
        " SELECT count(*) FROM gone",
        ids,
    )
    await conn.execute(
        "DELETE FROM oauth_grants g WHERE g.id = ANY($1::uuid[])"
        " AND NOT EXISTS (SELECT 1 FROM oauth_connection_grants l WHERE l.grant_id = g.id)",
        grants,
    )
    left = await conn.fetchval("SELECT count(*) FROM oauth_grants WHERE id = ANY($1::uuid[])", grants)
    scrubbed = await conn.fetchval(
        "WITH scrubbed AS ("
        " UPDATE audit_log SET changes = changes || (SELECT jsonb_object_agg(member, to_jsonb($3::text))"
        "  FROM jsonb_object_keys(changes) AS member WHERE member = ANY($2::text[]))"
        " WHERE (connection_id = ANY($1::uuid[]) OR target = ANY($4::text[]))"
        "  AND jsonb_typeof(changes) = 'object' AND changes ?| $2::text[]"
        " RETURNING 1) SELECT count(*) FROM scrubbed",
        ids,
        list(PERSONAL_MEMBERS),
        ERASED,
        [f"connection:{i}" for i in ids],
    )
    return ConnectionsErased(
        connections=int(deleted or 0), grants=len(grants) - int(left or 0), audit_entries=int(scrubbed or 0)
    )
