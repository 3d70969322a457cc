"""What the console works with: the same services the admin API uses, created by the gateway's
lifespan and passed in, so every console action goes through the methods the API calls (and is
audited like them, `via: console`)."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from fanout.polling.status import SyncStatus
from gateway.admin.auth import AdminTokens
from gateway.admin.connections import ConnectionsResource
from gateway.admin.quarantine import QuarantineResource
from gateway.admin.sync import SyncResource
from gateway.admin.tenants import TenantsResource
from gateway.runtime.activity import ActivityHistory
from provider_auth.accounts.store import Connection, ConnectionStore
from provider_auth.tokens import TokenManager

__all__ = ["ConsoleServices"]


@dataclass(frozen=True)
class ConsoleServices:
    """Everything the console's pages read and act through."""

    tokens: AdminTokens
    store: ConnectionStore
    pool: asyncpg.Pool
    public_base_url: str
    session_key: bytes | None  # None: a random key per process
    session_seconds: int
    connections: ConnectionsResource
    sync_status: Callable[[Connection], Awaitable[SyncStatus]]
    sync: SyncResource
    credentials: TokenManager | None
    quarantine: QuarantineResource
    tenants: TenantsResource
    activity: ActivityHistory
