"""Shared pieces of the token tests: apps pointing at the emulator, a manager on real infrastructure,
connections, account events read back from Kafka and checked against their documented schema."""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import jsonschema
from aiokafka import AIOKafkaProducer
from cloudevents.v1.kafka import KafkaMessage, from_binary

from fanout.account_events import AccountEventPublisher
from gateway.dev.emulator import Emulator
from gateway.runtime.kafka import make_producer
from gateway.settings import Settings
from provider_auth.accounts.events import ConnectionEvents
from provider_auth.accounts.status import StatusTransitions
from provider_auth.accounts.store import ConnectionStore
from provider_auth.oauth.apps import OAuthApp
from provider_auth.oauth.client import TokenClient
from provider_auth.oauth.specs import OAUTH_PROVIDERS
from provider_auth.providers import Provider
from provider_auth.tokens import (
    ConnectionRef,
    Credentials,
    CredentialStore,
    TokenManager,
    TokenMetrics,
    TokenPolicy,
)
from provider_auth.vault import KeyRing
from tests.paths import REPO_ROOT
from tests.support import read_topic

CLIENT_ID, CLIENT_SECRET = "ledgerhook-app", "ledgerhook-app-secret"
SCHEMAS = REPO_ROOT / "docs" / "schemas"


def emulator_apps(emu: Emulator, **jwt: Any) -> dict[Provider, OAuthApp]:
    """One app per provider, every URL on the emulator (as the dev `--emulator` flag does)."""
    return {
        provider: OAuthApp(
            provider=provider,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            token_url=emu.token_url(provider),
            api_base_url=emu.url(f"/{provider.value}"),
            revoke_url=emu.revoke_url(provider),
            **(jwt if provider is Provider.NETSUITE else {}),
        )
        for provider in OAUTH_PROVIDERS
    }


def emulator_settings(emu: Emulator, *, skip: tuple[Provider, ...] = ()) -> dict[str, Any]:
    """Gateway settings pointing each provider (but `skip`) at the emulator."""
    values: dict[str, Any] = {}
    for provider in OAUTH_PROVIDERS:
        if provider in skip:
            continue
        prefix = provider.env_name.lower()
        values |= {
            f"{prefix}_client_id": CLIENT_ID,
            f"{prefix}_client_secret": CLIENT_SECRET,
            f"{prefix}_token_url": emu.token_url(provider),
            f"{prefix}_api_base_url": emu.url(f"/{provider.value}"),
        }
    values["quickbooks_revoke_url"] = emu.revoke_url(Provider.QUICKBOOKS)
    return values


def register_clients(emu: Emulator) -> None:
    """Ledgerhook's app at every emulated provider."""
    for provider in OAUTH_PROVIDERS:
        emu.register_client(provider, CLIENT_ID, CLIENT_SECRET)


@dataclass
class TokenStack:
    """A token manager on the session's PostgreSQL and broker, against one emulator."""

    settings: Settings
    emu: Emulator
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    http: aiohttp.ClientSession
    keyring: KeyRing
    connections: ConnectionStore
    manager: TokenManager

    def another_manager(self, pool: asyncpg.Pool | None = None, **policy: Any) -> TokenManager:
        """A second manager (another 'process') sharing the database, broker and emulator."""
        return build_manager(
            pool or self.pool,
            self.http,
            self.keyring,
            self.emu,
            connection_events(self.producer, self.settings.topic_account_events),
            clock=self.manager.clock,
            **policy,
        )

    async def connection(
        self, provider: Provider, account: str | None = None, tenant: str | None = None
    ) -> str:
        """A new active connection; returns its id."""
        created = await self.connections.create(
            tenant or f"tenant-{uuid.uuid4().hex[:8]}", provider, account or f"acct-{uuid.uuid4().hex[:8]}"
        )
        return created.id

    async def connect(
        self,
        provider: Provider,
        *,
        expires_in: float = 3600.0,
        account: str | None = None,
        grant: tuple[str, str] | None = None,
        manager: TokenManager | None = None,
        **credentials: Any,
    ) -> tuple[str, str, str]:
        """A connection with a fresh emulator grant handed over; returns (connection id, access, refresh)."""
        account = account or f"acct-{uuid.uuid4().hex[:8]}"
        if grant is None:
            grant = self.emu.issue_grant(provider, CLIENT_ID, accounts=[account])
        access, refresh = grant
        connection_id = await self.connection(provider, account)
        await (manager or self.manager).put_credentials(
            ConnectionRef(connection_id, provider, account),
            Credentials(
                access_token=access,
                refresh_token=refresh,
                expires_at=self.manager.clock() + expires_in,
                **credentials,
            ),
        )
        return connection_id, access, refresh

    async def status(self, connection_id: str) -> str:
        """The connection's status in the connections table."""
        connection = await self.connections.get(connection_id)
        assert connection is not None
        return connection.status.value

    async def account_events(self, connection_id: str | None = None) -> list[dict[str, Any]]:
        """Account events on this test's topic (optionally of one connection), each checked as a
        CloudEvent with the official SDK and its data against the documented JSON Schema."""
        records = await read_topic(self.settings.kafka_bootstrap_servers, self.settings.topic_account_events)
        events = []
        for record in records:
            message = KafkaMessage(dict(record.headers), record.key, record.value or b"")
            event = from_binary(message)
            data = event.get_data()
            assert isinstance(data, dict)
            event_type = event["type"]
            schema = json.loads((SCHEMAS / f"{event_type.replace(':', '.')}.json").read_text())
            jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(data)
            assert record.key == data["connection_id"].encode()
            assert event["connectionid"] == data["connection_id"]
            # The subject and source docs/events.md documents for account events.
            assert event["subject"] == f"connection/{data['connection_id']}"
            assert event["source"] == f"/ledgerhook/{data['provider']}/{data['provider_account_id']}"
            if connection_id is None or data["connection_id"] == connection_id:
                events.append({"type": event_type, "id": event["id"], **data})
        return events


def key_entries(settings: Settings) -> str:
    """The settings' `LEDGERHOOK_ENCRYPTION_KEYS` (the token tests always set one)."""
    assert settings.encryption_keys is not None
    return settings.encryption_keys.get_secret_value()


def connection_events(producer: AIOKafkaProducer, topic: str) -> ConnectionEvents:
    """Connection status transitions published on `topic`, as the processes wire them."""
    return StatusTransitions(AccountEventPublisher(producer, topic))


def build_manager(
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    keyring: KeyRing,
    emu: Emulator,
    events: ConnectionEvents,
    *,
    clock: Callable[[], float] = time.time,
    timeout: float = 2.0,
    **policy: Any,
) -> TokenManager:
    """A token manager against the emulator."""
    return TokenManager(
        CredentialStore(pool, keyring),
        TokenClient(http, timeout=timeout, clock=clock),
        emulator_apps(emu),
        events,
        policy=TokenPolicy(**({"backoff_base": 0.05, "backoff_cap": 0.5} | policy)),
        metrics=TokenMetrics(),
        clock=clock,
    )


@asynccontextmanager
async def token_stack(
    settings: Settings,
    *,
    clock: Callable[[], float] | None = None,
    timeout: float = 2.0,
    emulator: Emulator | None = None,
    **policy: Any,
) -> AsyncIterator[TokenStack]:
    """Emulator (a new one unless given), pool, producer, session and a manager, torn down at the end."""
    from tests.support import migrate_and_create_topics

    await migrate_and_create_topics(settings)
    keyring = KeyRing.parse(key_entries(settings))
    async with contextlib.AsyncExitStack() as own:
        if emulator is None:
            emulator = await own.enter_async_context(Emulator(clock=clock))
            register_clients(emulator)
        emu = emulator
        pool = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=10)
        producer = make_producer(settings)
        await producer.start()
        http = aiohttp.ClientSession()
        try:
            events = connection_events(producer, settings.topic_account_events)
            manager = build_manager(
                pool, http, keyring, emu, events, clock=clock or time.time, timeout=timeout, **policy
            )
            yield TokenStack(
                settings, emu, pool, producer, http, keyring, ConnectionStore(pool, keyring), manager
            )
            await manager.close()
        finally:
            await http.close()
            await producer.stop()
            await pool.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until `predicate()` holds (for events happening in another task or process)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
