"""Connections in PostgreSQL: who (tenant) connected which provider account, in what state, and how
its account is to be polled.

The admin API manages them; the fan-out worker routes by them; the change poller reads their polling
setting; webhook secrets of per-connection endpoints are stored encrypted with the key ring (never
returned by any endpoint). Statuses and polling modes: docs/admin-api.md.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any

import asyncpg
import orjson

from provider_auth.ids import canonical_uuid, uuid7
from provider_auth.providers import Provider
from provider_auth.queries import fetch_planned_per_call
from provider_auth.vault import KeyRing


class ConnectionStatus(StrEnum):
    """Lifecycle of a connection.

    `paused`: its webhooks are still accepted, but its change events go to quarantine (reason
    `paused`) until it is active again; `disconnected`: its endpoint is gone and nothing is routed to
    it until it is reconnected.
    """

    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"
    PAUSED = "paused"
    DISCONNECTED = "disconnected"


class PollingMode(StrEnum):
    """How a connection wants its provider account polled.

    `auto` is `poll` or `sweep` depending on whether the connection gets webhooks, which the change
    poller decides; `off`: never polled for this connection.
    """

    AUTO = "auto"
    POLL = "poll"
    SWEEP = "sweep"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class Polling:
    """A connection's polling setting: its mode, and its interval (None: the mode's default)."""

    mode: PollingMode = PollingMode.AUTO
    interval_seconds: int | None = None


class ConnectionExists(Exception):
    """The tenant already has a connection to that provider account."""


class MissingKeyRing(Exception):
    """Webhook secrets are to be stored or re-encrypted, but no `LEDGERHOOK_ENCRYPTION_KEYS` is configured."""


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET
_FIRST_ID = "00000000-0000-0000-0000-000000000000"  # below every id: where a pass over all rows starts


@dataclass(frozen=True, slots=True)
class Connection:
    """One tenant's link to one provider account."""

    id: str
    tenant_id: str
    provider: Provider
    provider_account_id: str
    status: ConnectionStatus
    display_name: str | None
    metadata: dict[str, Any]
    has_webhook_secret: bool
    created_at: datetime
    updated_at: datetime
    polling: Polling = field(default_factory=Polling)

    @property
    def receives_events(self) -> bool:
        """Every connection but a disconnected one: its webhooks are accepted and its account's
        changes routed for it (to quarantine while it is `paused`)."""
        return self.status is not ConnectionStatus.DISCONNECTED

    @property
    def paused(self) -> bool:
        """Paused: its change events are held in quarantine until it is resumed."""
        return self.status is ConnectionStatus.PAUSED


_COLUMNS = (
    "id, tenant_id, provider, provider_account_id, status, display_name, metadata, "
    "webhook_secrets IS NOT NULL AS has_webhook_secret, created_at, updated_at, polling_mode,"
    " polling_interval_seconds"
)


def _row(record: Mapping[str, Any]) -> Connection:
    return Connection(
        id=str(record["id"]),
        tenant_id=record["tenant_id"],
        provider=Provider(record["provider"]),
        provider_account_id=record["provider_account_id"],
        status=ConnectionStatus(record["status"]),
        display_name=record["display_name"],
        metadata=orjson.loads(record["metadata"]),
        has_webhook_secret=record["has_webhook_secret"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        polling=Polling(PollingMode(record["polling_mode"]), record["polling_interval_seconds"]),
    )


PAGE_FILTERS = ("tenant_id", "provider", "status")  # what `page` filters on: the only names its SQL holds


def page_query(filters: Sequence[str]) -> str:
    """The SQL text of a page of connections filtered on `filters` (names of PAGE_FILTERS, in that
    order): their values are $1..$n, then the cursor (an id; rows after it) and the limit. One text
    per combination, so each is planned as what it is, never one text with optional conditions."""
    unknown = [name for name in filters if name not in PAGE_FILTERS]
    if unknown or list(filters) != sorted(filters, key=PAGE_FILTERS.index):
        raise ValueError(f"page filters must be among {PAGE_FILTERS}, in that order: {list(filters)}")
    conditions = [f"{column} = ${n}" for n, column in enumerate(filters, start=1)]
    conditions.append(f"id > ${len(filters) + 1}")
    return (
        f"SELECT {_COLUMNS} FROM connections WHERE {' AND '.join(conditions)}"
        f" ORDER BY id LIMIT ${len(filters) + 2}"
    )


def _webhook_secrets_aad(connection_id: str) -> bytes:
    # Binds the ciphertext to its row: copied to another connection, it no longer decrypts.
    return f"connection:{connection_id}:webhook_secrets".encode()


class ConnectionStore:
    """CRUD, routing lookups and webhook secret re-encryption, on a pool handed in by the caller.

    Status transitions driven by credentials are `provider_auth.accounts.status`'s.
    """

    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection, keyring: KeyRing | None) -> None:
        self._pool = pool  # a Connection only through `within`
        self._keyring = keyring

    def within(self, connection: asyncpg.Connection) -> "ConnectionStore":
        """The store on `connection`, in the caller's transaction: a change and what records it
        commit together. Every method but the re-encryption (which runs transactions of its own)."""
        return ConnectionStore(connection, self._keyring)

    def _seal(self, connection_id: str, secrets: Sequence[str]) -> bytes | None:
        if not secrets:
            return None
        return self._require_keyring().encrypt(
            orjson.dumps(list(secrets)), _webhook_secrets_aad(connection_id)
        )

    async def create(
        self,
        tenant_id: str,
        provider: Provider,
        provider_account_id: str,
        *,
        display_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        webhook_secrets: Sequence[str] = (),
        polling: Polling = Polling(),
    ) -> Connection:
        """Register a connection (status active); ConnectionExists if the tenant already has it."""
        connection_id = uuid7()
        try:
            record = await self._pool.fetchrow(
                "INSERT INTO connections (id, tenant_id, provider, provider_account_id, display_name,"
                " metadata, webhook_secrets, polling_mode, polling_interval_seconds)"
                " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9)"
                f" RETURNING {_COLUMNS}",
                connection_id,
                tenant_id,
                provider.value,
                provider_account_id,
                display_name,
                orjson.dumps(dict(metadata or {})).decode(),
                self._seal(connection_id, webhook_secrets),
                polling.mode.value,
                polling.interval_seconds,
            )
        except asyncpg.UniqueViolationError:
            raise ConnectionExists(
                f"tenant {tenant_id!r} already has a {provider.value} connection to "
                f"account {provider_account_id!r}"
            ) from None
        assert record is not None
        return _row(record)

    async def get(self, connection_id: str) -> Connection | None:
        """The connection, or None (also for ids that are not UUIDs)."""
        key = canonical_uuid(connection_id)
        if key is None:
            return None
        record = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM connections WHERE id = $1", key)
        return _row(record) if record else None

    async def page(
        self,
        *,
        tenant_id: str | None = None,
        provider: Provider | None = None,
        status: ConnectionStatus | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> list[Connection]:
        """A page of connections in id (creation) order, after the cursor `after`.

        Each filter combination has a SQL text of its own (`page_query`), planned for the values of
        each call: docs/architecture.md, "Listing connections".
        """
        cursor = canonical_uuid(after) if after is not None else _FIRST_ID
        if cursor is None:
            return []
        wanted = {
            "tenant_id": tenant_id,
            "provider": provider.value if provider else None,
            "status": status.value if status else None,
        }
        given = {column: value for column, value in wanted.items() if value is not None}
        sql = page_query(tuple(given))
        records = await fetch_planned_per_call(self._pool, sql, *given.values(), cursor, limit)
        return [_row(r) for r in records]

    async def update(
        self,
        connection_id: str,
        *,
        display_name: _Unset | str | None = UNSET,
        metadata: Mapping[str, Any] | _Unset = UNSET,
        status: ConnectionStatus | _Unset = UNSET,
        webhook_secrets: Sequence[str] | _Unset = UNSET,
        polling: Polling | _Unset = UNSET,
    ) -> Connection | None:
        """Change the given fields (`polling` replaced whole); None when there is no such connection."""
        key = canonical_uuid(connection_id)
        if key is None:
            return None
        sets: list[str] = []
        values: list[Any] = [key]
        for column, value in (("display_name", display_name), ("status", status)):
            if value is not UNSET:
                values.append(value.value if isinstance(value, ConnectionStatus) else value)
                sets.append(f"{column} = ${len(values)}")
        if metadata is not UNSET:
            values.append(orjson.dumps(dict(metadata)).decode())
            sets.append(f"metadata = ${len(values)}::jsonb")
        if webhook_secrets is not UNSET:
            values.append(self._seal(key, webhook_secrets))
            sets.append(f"webhook_secrets = ${len(values)}")
        if polling is not UNSET:
            values.extend((polling.mode.value, polling.interval_seconds))
            sets.append(f"polling_mode = ${len(values) - 1}, polling_interval_seconds = ${len(values)}")
        sets.append("updated_at = now()")
        record = await self._pool.fetchrow(
            f"UPDATE connections SET {', '.join(sets)} WHERE id = $1 RETURNING {_COLUMNS}", *values
        )
        return _row(record) if record else None

    async def disconnect(self, connection_id: str) -> Connection | None:
        """Mark disconnected and erase its secrets at once; the row stays for routing decisions."""
        return await self.update(connection_id, status=ConnectionStatus.DISCONNECTED, webhook_secrets=())

    async def by_account(self, provider: Provider, provider_account_id: str) -> list[Connection]:
        """Every connection (any status) of one provider account, in creation order."""
        records = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM connections WHERE provider = $1 AND provider_account_id = $2"
            " ORDER BY id",
            provider.value,
            provider_account_id,
        )
        return [_row(r) for r in records]

    async def status_counts(self) -> dict[tuple[Provider, ConnectionStatus], int]:
        """How many connections each (provider, status) pair has, in one grouped count; pairs
        without any connection are absent."""
        records = await self._pool.fetch(
            "SELECT provider, status, count(*) AS n FROM connections GROUP BY provider, status"
        )
        return {(Provider(r["provider"]), ConnectionStatus(r["status"])): int(r["n"]) for r in records}

    async def webhook_secrets(self, connection_id: str) -> list[str]:
        """The connection's active webhook secrets, decrypted; [] when it has none."""
        key = canonical_uuid(connection_id)
        if key is None:
            return []
        sealed = await self._pool.fetchval("SELECT webhook_secrets FROM connections WHERE id = $1", key)
        if sealed is None or self._keyring is None:
            return []
        secrets: list[str] = orjson.loads(self._keyring.decrypt(sealed, _webhook_secrets_aad(key)))
        return secrets

    async def reencrypt_webhook_secrets(self, batch: int = 500) -> tuple[int, int]:
        """Re-encrypt webhook secrets under the key ring's current key, in batches, each row under
        its row lock; returns (re-encrypted, still under another key)."""
        keyring = self._require_keyring()
        changed, last = 0, _FIRST_ID
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    "SELECT id, webhook_secrets FROM connections"
                    " WHERE id > $1 AND webhook_secrets IS NOT NULL"
                    " ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                    last,
                    batch,
                )
                for row in rows:
                    sealed = row["webhook_secrets"]
                    if not keyring.needs_rotation(sealed):
                        continue
                    connection_id = str(row["id"])
                    # updated_at stays: the connection itself did not change.
                    await conn.execute(
                        "UPDATE connections SET webhook_secrets = $2 WHERE id = $1",
                        connection_id,
                        keyring.reencrypt(sealed, _webhook_secrets_aad(connection_id)),
                    )
                    changed += 1
            if len(rows) < batch:
                break
            last = str(rows[-1]["id"])
        return changed, await self._count_stale_webhook_secrets(keyring)

    async def _count_stale_webhook_secrets(self, keyring: KeyRing) -> int:
        """Connections whose webhook secrets are still under a key other than the current one."""
        stale = 0
        async with self._pool.acquire() as conn, conn.transaction():
            async for row in conn.cursor(
                "SELECT webhook_secrets FROM connections WHERE webhook_secrets IS NOT NULL"
            ):
                stale += keyring.needs_rotation(row["webhook_secrets"])
        return stale

    def _require_keyring(self) -> KeyRing:
        if self._keyring is None:
            raise MissingKeyRing("set LEDGERHOOK_ENCRYPTION_KEYS to store webhook secrets")
        return self._keyring
