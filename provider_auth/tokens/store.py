"""Credentials in PostgreSQL: the `oauth_grants`, `oauth_connection_grants` tables (migration 0002).

Tokens are stored only encrypted with the key ring. The associated data binds a ciphertext to its
grant and purpose (`oauth_grant:<id>:access_token`), so a ciphertext copied into another row or
column no longer decrypts. Every method that takes `conn` runs in the caller's transaction; the
others use the pool. `queries` counts the statements sent (for the benchmark and for tests).
"""

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, overload

import asyncpg
import orjson

from provider_auth.accounts.store import ConnectionStatus
from provider_auth.ids import canonical_uuid
from provider_auth.oauth.apps import GrantParams
from provider_auth.providers import Provider
from provider_auth.tokens.grants import ConnectionGrant, GrantRecord, GrantStatus, GrantType, NewTokens
from provider_auth.vault import KeyRing

__all__ = ["FINGERPRINTS_KEPT", "CredentialStore", "epoch", "fingerprint", "timestamp"]

# How many superseded refresh tokens a grant still recognises when a token set is handed over late.
FINGERPRINTS_KEPT = 5

# A grant is refreshed ahead of time only while it serves a connection in use: one that is
# neither paused nor disconnected (a grant may serve several connections).
_SERVES_A_CONNECTION_IN_USE = (
    "EXISTS (SELECT 1 FROM oauth_connection_grants l JOIN connections c ON c.id = l.connection_id"
    f" WHERE l.grant_id = g.id AND c.status NOT IN ('{ConnectionStatus.PAUSED.value}',"
    f" '{ConnectionStatus.DISCONNECTED.value}'))"
)


@overload
def timestamp(seconds: float) -> datetime: ...
@overload
def timestamp(seconds: None) -> None: ...
@overload
def timestamp(seconds: float | None) -> datetime | None: ...
def timestamp(seconds: float | None) -> datetime | None:
    """Epoch seconds as an aware UTC datetime (None stays None)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def epoch(value: datetime | None) -> float | None:
    """An aware datetime as epoch seconds (None stays None)."""
    return None if value is None else value.timestamp()


def fingerprint(refresh_token: str) -> bytes:
    """SHA-256 of a refresh token: recognises a token set without storing it.

    Refresh tokens are long random strings, so the digest reveals nothing usable.
    """
    return hashlib.sha256(refresh_token.encode()).digest()


_COLUMNS = (
    "id, provider, grant_type, status, access_token, access_expires_at, refresh_token, refresh_expires_at,"
    " scope, params, extra, token_version, refreshed_at, refresh_due_at, lost_at, failure_count,"
    " next_attempt_at, last_error, fingerprints[1] AS current_fingerprint"
)
# The link table shares no column name with oauth_grants, so joins use the same list unqualified.


def _record(row: asyncpg.Record) -> GrantRecord:
    extra: dict[str, Any] = orjson.loads(row["extra"])
    return GrantRecord(
        id=str(row["id"]),
        provider=Provider(row["provider"]),
        grant_type=GrantType(row["grant_type"]),
        status=GrantStatus(row["status"]),
        sealed_access=row["access_token"],
        access_expires_at=epoch(row["access_expires_at"]),
        sealed_refresh=row["refresh_token"],
        refresh_expires_at=epoch(row["refresh_expires_at"]),
        scope=row["scope"],
        params=GrantParams.from_dict(orjson.loads(row["params"])),
        extra={str(k): str(v) for k, v in extra.items()},
        token_version=int(row["token_version"]),
        refreshed_at=epoch(row["refreshed_at"]),
        refresh_due_at=epoch(row["refresh_due_at"]),
        lost_at=epoch(row["lost_at"]),
        failure_count=int(row["failure_count"]),
        next_attempt_at=epoch(row["next_attempt_at"]),
        last_error=row["last_error"],
        current_fingerprint=row["current_fingerprint"],
    )


def _existing(row: asyncpg.Record | None, grant_id: str) -> GrantRecord:
    """The row a write on a locked or new grant returned; it cannot be missing."""
    if row is None:
        raise LookupError(f"grant {grant_id} does not exist")
    return _record(row)


def _aad(grant_id: str, purpose: str) -> bytes:
    return f"oauth_grant:{grant_id}:{purpose}".encode()


class CredentialStore:
    """SQL on provider_auth's own tables, with the key ring for the token columns."""

    def __init__(self, pool: asyncpg.Pool, keyring: KeyRing) -> None:
        self.pool = pool
        self._keyring = keyring
        self.queries = 0

    # ----- sealing -----------------------------------------------------------------------

    def seal(self, grant_id: str, purpose: str, value: str | None) -> bytes | None:
        """Encrypt a token for one grant and column (None stays None)."""
        return None if value is None else self._keyring.encrypt_str(value, _aad(grant_id, purpose))

    def open_access(self, record: GrantRecord) -> str | None:
        """The grant's access token in clear."""
        if record.sealed_access is None:
            return None
        return self._keyring.decrypt_str(record.sealed_access, _aad(record.id, "access_token"))

    def open_refresh(self, record: GrantRecord) -> str | None:
        """The grant's refresh token in clear."""
        if record.sealed_refresh is None:
            return None
        return self._keyring.decrypt_str(record.sealed_refresh, _aad(record.id, "refresh_token"))

    # ----- reads -------------------------------------------------------------------------

    async def for_connection(self, connection_id: str) -> ConnectionGrant | None:
        """The grant a connection uses, with the connection's provider account id and status (no lock).

        None when the connection has no credentials (or the id is not a UUID).
        """
        canonical = canonical_uuid(connection_id)
        if canonical is None:
            return None
        self.queries += 1
        # The status comes from a subquery: `connections` shares column names with oauth_grants.
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS}, l.provider_account_id,"
            " (SELECT status FROM connections WHERE id = l.connection_id) AS connection_status"
            " FROM oauth_connection_grants l JOIN oauth_grants g ON g.id = l.grant_id"
            " WHERE l.connection_id = $1",
            canonical,
        )
        if row is None:
            return None
        return ConnectionGrant(
            _record(row), row["provider_account_id"], ConnectionStatus(row["connection_status"])
        )

    async def lock(self, conn: asyncpg.Connection, grant_id: str) -> GrantRecord | None:
        """The grant row, locked until the transaction ends (other lockers wait, then see our writes)."""
        self.queries += 1
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM oauth_grants WHERE id = $1 FOR UPDATE", grant_id)
        return _record(row) if row else None

    async def link_of(self, conn: asyncpg.Connection, connection_id: str) -> tuple[str, str] | None:
        """(grant id, provider account id) of a connection, its link row locked."""
        self.queries += 1
        row = await conn.fetchrow(
            "SELECT grant_id, provider_account_id FROM oauth_connection_grants"
            " WHERE connection_id = $1 FOR UPDATE",
            connection_id,
        )
        return (str(row["grant_id"]), row["provider_account_id"]) if row else None

    async def connection_ids(self, conn: asyncpg.Connection | asyncpg.Pool, grant_id: str) -> list[str]:
        """The connections a grant serves, in link order."""
        self.queries += 1
        rows = await conn.fetch(
            "SELECT connection_id FROM oauth_connection_grants WHERE grant_id = $1"
            " ORDER BY linked_at, connection_id",
            grant_id,
        )
        return [str(r["connection_id"]) for r in rows]

    async def find_by_fingerprint(
        self, conn: asyncpg.Connection, provider: Provider, digest: bytes
    ) -> GrantRecord | None:
        """The grant whose current or a recent refresh token has this fingerprint, locked."""
        self.queries += 1
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM oauth_grants WHERE provider = $1 AND fingerprints @> ARRAY[$2::bytea]"
            " ORDER BY updated_at DESC LIMIT 1 FOR UPDATE",
            provider.value,
            digest,
        )
        return _record(row) if row else None

    # ----- writes ------------------------------------------------------------------------

    async def create_grant(
        self,
        conn: asyncpg.Connection,
        *,
        provider: Provider,
        grant_type: GrantType,
        tokens: NewTokens,
        params: GrantParams,
        due_at: float | None,
    ) -> GrantRecord:
        """A new active grant holding `tokens`."""
        grant_id = str(uuid.uuid4())
        self.queries += 1
        row = await conn.fetchrow(
            "INSERT INTO oauth_grants (id, provider, grant_type, access_token, access_expires_at,"
            " refresh_token, refresh_expires_at, fingerprints, scope, params, extra, refresh_due_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb, $12)"
            f" RETURNING {_COLUMNS}",
            grant_id,
            provider.value,
            grant_type.value,
            *self._token_values(grant_id, tokens, params, due_at),
        )
        return _existing(row, grant_id)

    def _token_values(
        self, grant_id: str, tokens: NewTokens, params: GrantParams, due_at: float | None
    ) -> tuple[Any, ...]:
        """Sealed tokens and their state, in the column order `access_token` .. `refresh_due_at`."""
        return (
            self.seal(grant_id, "access_token", tokens.access_token),
            timestamp(tokens.access_expires_at),
            self.seal(grant_id, "refresh_token", tokens.refresh_token),
            timestamp(tokens.refresh_expires_at),
            [fingerprint(tokens.refresh_token)] if tokens.refresh_token else [],
            tokens.scope,
            orjson.dumps(params.as_dict()).decode(),
            orjson.dumps(tokens.extra).decode(),
            timestamp(due_at),
        )

    async def replace_tokens(
        self,
        conn: asyncpg.Connection,
        grant_id: str,
        *,
        grant_type: GrantType,
        tokens: NewTokens,
        params: GrantParams,
        due_at: float | None,
    ) -> GrantRecord:
        """Handed-over credentials replace a grant's tokens and state: active, no failures."""
        self.queries += 1
        row = await conn.fetchrow(
            "UPDATE oauth_grants SET grant_type = $2, status = 'active', access_token = $3,"
            " access_expires_at = $4, refresh_token = $5, refresh_expires_at = $6, fingerprints = $7,"
            " scope = $8, params = $9::jsonb, extra = $10::jsonb, token_version = token_version + 1,"
            " refreshed_at = NULL, refresh_due_at = $11, claimed_until = NULL, lost_at = NULL,"
            " failure_count = 0, next_attempt_at = NULL, last_error = NULL, updated_at = now()"
            f" WHERE id = $1 RETURNING {_COLUMNS}",
            grant_id,
            grant_type.value,
            *self._token_values(grant_id, tokens, params, due_at),
        )
        return _existing(row, grant_id)

    async def save_refreshed(
        self,
        conn: asyncpg.Connection,
        grant_id: str,
        *,
        tokens: NewTokens,
        rotated: bool,
        now: float,
        due_at: float | None,
    ) -> GrantRecord:
        """Store the result of a refresh: new tokens, active, failures cleared, version bumped.

        `rotated`: `tokens.refresh_token` replaces the stored one. The caller holds the row lock.
        """
        row = await self._save_refreshed(conn, grant_id, tokens, rotated, now, due_at, None)
        return _existing(row, grant_id)

    async def save_refreshed_if_unchanged(
        self,
        conn: asyncpg.Connection,
        grant_id: str,
        *,
        tokens: NewTokens,
        rotated: bool,
        now: float,
        due_at: float | None,
        token_version: int,
    ) -> GrantRecord | None:
        """`save_refreshed` only if the grant still holds `token_version` (compare-and-set, for a
        write that lost its lock); None when another token set was stored since."""
        row = await self._save_refreshed(conn, grant_id, tokens, rotated, now, due_at, token_version)
        return _record(row) if row else None

    async def _save_refreshed(
        self,
        conn: asyncpg.Connection,
        grant_id: str,
        tokens: NewTokens,
        rotated: bool,
        now: float,
        due_at: float | None,
        expected_version: int | None,
    ) -> asyncpg.Record | None:
        sealed_refresh = self.seal(grant_id, "refresh_token", tokens.refresh_token) if rotated else None
        digest = fingerprint(tokens.refresh_token) if rotated and tokens.refresh_token else None
        self.queries += 1
        row = await conn.fetchrow(
            "UPDATE oauth_grants SET status = 'active', access_token = $2, access_expires_at = $3,"
            " refresh_token = coalesce($4, refresh_token),"
            " refresh_expires_at = coalesce($5, refresh_expires_at),"
            " fingerprints = CASE WHEN $6::bytea IS NULL THEN fingerprints"
            f"   ELSE (ARRAY[$6::bytea] || fingerprints)[1:{FINGERPRINTS_KEPT + 1}] END,"
            " scope = coalesce($7, scope), extra = extra || $8::jsonb, token_version = token_version + 1,"
            " refreshed_at = $9, refresh_due_at = $10, claimed_until = NULL, lost_at = NULL,"
            " failure_count = 0, next_attempt_at = NULL, last_error = NULL, updated_at = now()"
            " WHERE id = $1 AND ($11::bigint IS NULL OR token_version = $11)"
            f" RETURNING {_COLUMNS}",
            grant_id,
            self.seal(grant_id, "access_token", tokens.access_token),
            timestamp(tokens.access_expires_at),
            sealed_refresh,
            timestamp(tokens.refresh_expires_at),
            digest,
            tokens.scope,
            orjson.dumps(tokens.extra).decode(),
            timestamp(now),
            timestamp(due_at),
            expected_version,
        )
        return row

    async def save_failure(
        self,
        conn: asyncpg.Connection,
        grant_id: str,
        *,
        status: GrantStatus,
        failure_count: int,
        next_attempt_at: float | None,
        lost_at: float | None,
        last_error: str,
    ) -> None:
        """Record a failed refresh: counters, the next allowed attempt, the state."""
        self.queries += 1
        await conn.execute(
            "UPDATE oauth_grants SET status = $2::text, failure_count = $3,"
            " next_attempt_at = $4::timestamptz,"
            " refresh_due_at = CASE WHEN $2::text = 'needs_reauth' THEN NULL ELSE $4::timestamptz END,"
            " claimed_until = NULL,"
            " lost_at = $5, last_error = $6, updated_at = now() WHERE id = $1",
            grant_id,
            status.value,
            failure_count,
            timestamp(next_attempt_at),
            timestamp(lost_at),
            last_error[:300],
        )

    async def set_status(
        self, conn: asyncpg.Connection, grant_id: str, status: GrantStatus, due_at: float | None
    ) -> None:
        """Change a grant's status (and its due time) without touching its tokens."""
        self.queries += 1
        await conn.execute(
            "UPDATE oauth_grants SET status = $2, refresh_due_at = $3, claimed_until = NULL,"
            " updated_at = now() WHERE id = $1",
            grant_id,
            status.value,
            timestamp(due_at),
        )

    async def link(
        self, conn: asyncpg.Connection, connection_id: str, grant_id: str, provider_account_id: str
    ) -> None:
        """Point a connection at a grant (replacing any previous link)."""
        self.queries += 1
        await conn.execute(
            "INSERT INTO oauth_connection_grants (connection_id, grant_id, provider_account_id)"
            " VALUES ($1, $2, $3) ON CONFLICT (connection_id) DO UPDATE"
            " SET grant_id = excluded.grant_id, provider_account_id = excluded.provider_account_id,"
            " linked_at = now()",
            connection_id,
            grant_id,
            provider_account_id,
        )

    async def unlink(self, conn: asyncpg.Connection, connection_id: str) -> None:
        """Remove a connection's link."""
        self.queries += 1
        await conn.execute("DELETE FROM oauth_connection_grants WHERE connection_id = $1", connection_id)

    async def delete_if_orphaned(self, conn: asyncpg.Connection, grant_id: str) -> bool:
        """Delete a grant no connection uses any more (its tokens go with it); True if deleted."""
        self.queries += 1
        deleted = await conn.fetchval(
            "DELETE FROM oauth_grants WHERE id = $1 AND NOT EXISTS"
            " (SELECT 1 FROM oauth_connection_grants WHERE grant_id = $1) RETURNING id",
            grant_id,
        )
        return deleted is not None

    # ----- the refresher -------------------------------------------------------------------

    async def claim_due(self, now: float, limit: int, lease: float) -> list[str]:
        """Lease up to `limit` grants whose refresh is due; safe with any number of replicas.

        `FOR UPDATE SKIP LOCKED` skips rows another replica is claiming or refreshing right now,
        and the lease (`claimed_until`) keeps a claimed row out of the others' batches until it is
        refreshed or the lease runs out (a replica that died mid-batch). A grant none of whose
        connections is in use (all paused) is left alone, its due time untouched: resumed, it is
        due again at once if its time came meanwhile.
        """
        self.queries += 1
        rows = await self.pool.fetch(
            "UPDATE oauth_grants SET claimed_until = $2 WHERE id IN ("
            " SELECT g.id FROM oauth_grants g"
            " WHERE g.status IN ('active', 'unavailable') AND g.refresh_due_at <= $1"
            " AND (g.claimed_until IS NULL OR g.claimed_until <= $1)"
            f" AND {_SERVES_A_CONNECTION_IN_USE}"
            " ORDER BY g.refresh_due_at LIMIT $3 FOR UPDATE OF g SKIP LOCKED) RETURNING id",
            timestamp(now),
            timestamp(now + lease),
            limit,
        )
        return [str(r["id"]) for r in rows]

    async def status_counts(self) -> list[tuple[str, str, int]]:
        """(provider, credential status, connections) for every pair present."""
        self.queries += 1
        rows = await self.pool.fetch(
            "SELECT g.provider, g.status, count(*) AS n FROM oauth_connection_grants l"
            " JOIN oauth_grants g ON g.id = l.grant_id GROUP BY g.provider, g.status"
        )
        return [(r["provider"], r["status"], int(r["n"])) for r in rows]

    # ----- key rotation --------------------------------------------------------------------

    async def reencrypt(self, batch: int = 500) -> tuple[int, int]:
        """Re-encrypt every grant's tokens under the key ring's current key.

        Rows are taken in batches under `FOR UPDATE SKIP LOCKED` (a grant being refreshed is
        skipped and picked up by the next pass). Returns (rows re-encrypted, rows still under
        another key); run again while the second number is not zero.
        """
        changed = 0
        last = "00000000-0000-0000-0000-000000000000"
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                self.queries += 1
                rows = await conn.fetch(
                    "SELECT id, access_token, refresh_token FROM oauth_grants WHERE id > $1"
                    " ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                    last,
                    batch,
                )
                for row in rows:
                    grant_id = str(row["id"])
                    updates = {
                        purpose: self._keyring.reencrypt(sealed, _aad(grant_id, purpose))
                        for purpose, sealed in (
                            ("access_token", row["access_token"]),
                            ("refresh_token", row["refresh_token"]),
                        )
                        if sealed is not None and self._keyring.needs_rotation(sealed)
                    }
                    if updates:
                        self.queries += 1
                        await conn.execute(
                            "UPDATE oauth_grants SET access_token = coalesce($2, access_token),"
                            " refresh_token = coalesce($3, refresh_token) WHERE id = $1",
                            grant_id,
                            updates.get("access_token"),
                            updates.get("refresh_token"),
                        )
                        changed += 1
            if len(rows) < batch:
                break
            last = str(rows[-1]["id"])
        return changed, await self.count_stale_keys()

    async def count_stale_keys(self) -> int:
        """Grants with a token still encrypted under a key other than the current one."""
        stale = 0
        self.queries += 1
        async with self.pool.acquire() as conn, conn.transaction():
            async for row in conn.cursor("SELECT access_token, refresh_token FROM oauth_grants"):
                sealed_values: Sequence[bytes | None] = (row["access_token"], row["refresh_token"])
                if any(s is not None and self._keyring.needs_rotation(s) for s in sealed_values):
                    stale += 1
        return stale
