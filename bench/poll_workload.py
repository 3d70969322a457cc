"""Workload of the poll benchmark (bench/poll.py): emulated accounts, changes to their books, events.

- Accounts: half QuickBooks realms, half Xero organisations, each with an emulator grant and one
  connection of its own tenant (created as the admin API does), its tokens handed over through the
  token manager, as `PUT /admin/v1/connections/{id}/credentials` does.
- Changes: records created or updated in the emulated books at a steady rate (open loop: each change
  has a due time and is made then, whatever the worker does), through the emulator's control
  endpoint, each noted with the moment it was asked and the version (last-updated time) it made.
- Events: every change event read from `ledgerhook.changes`, by provider account and record id, with
  its version, its origin (webhook, poll, backfill) and the moment it was read; a change is seen when
  an event of that record at that version or a later one was read.
- History (the backfill phase): books filled with records spread over the last days, for a backfill
  to read, and the `integrated_account:history_gap` events its jobs announced.
"""

import asyncio
import bisect
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from fanout.account_events import HISTORY_GAP, AccountEventPublisher
from gateway.settings import Settings
from provider_auth.accounts.status import StatusTransitions
from provider_auth.accounts.store import ConnectionStore
from provider_auth.oauth.apps import OAuthApp
from provider_auth.oauth.client import TokenClient
from provider_auth.providers import Provider
from provider_auth.tokens import ConnectionRef, Credentials, CredentialStore, TokenManager
from provider_auth.vault import KeyRing

QB, XERO = Provider.QUICKBOOKS, Provider.XERO
# Entities the changes touch: a few of each provider's polled ones (fanout/polling/quickbooks.py,
# xero.py), so changes land on several Xero endpoints and in several CDC groups.
CHANGED_ENTITIES: dict[Provider, tuple[str, ...]] = {
    QB: ("Invoice", "Customer", "Bill", "Payment"),
    XERO: ("Invoice", "Contact", "Payment", "BankTransaction"),
}
# Share of changes that update an earlier record rather than create one.
UPDATE_SHARE = 0.5
# At most this many changes in flight at once (a change is one loopback call to the emulator).
IN_FLIGHT = 32
_XERO_DATE = re.compile(r"/Date\((-?\d+)")


@dataclass(frozen=True)
class Account:
    """One emulated provider account and its connection."""

    provider: Provider
    account_id: str
    connection_id: str
    access_token: str


def account_ids(rng: random.Random, quickbooks: int, xero: int) -> list[tuple[Provider, str]]:
    """Realm ids like Intuit's (16 digits) and Xero tenant ids (UUIDs), interleaved."""
    realms = [(QB, str(9_130_000_000_000_000 + i)) for i in range(quickbooks)]
    tenants = [(XERO, str(uuid.UUID(int=rng.getrandbits(128), version=4))) for _ in range(xero)]
    mixed = [*realms, *tenants]
    rng.shuffle(mixed)
    return mixed


def emulator_tokens(
    settings: Settings,
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    producer: AIOKafkaProducer,
    emulator: str,
    client: tuple[str, str],
) -> TokenManager:
    """A token manager whose QuickBooks and Xero apps are the provider emulator's at `emulator`."""
    assert settings.encryption_keys is not None
    apps = {
        p: OAuthApp(
            provider=p,
            client_id=client[0],
            client_secret=client[1],
            token_url=f"{emulator}/{p.value}/oauth/token",
            api_base_url=f"{emulator}/{p.value}",
        )
        for p in (QB, XERO)
    }
    return TokenManager(
        CredentialStore(pool, KeyRing.parse(settings.encryption_keys.get_secret_value())),
        TokenClient(http, timeout=10.0),
        apps,
        StatusTransitions(AccountEventPublisher(producer, settings.topic_account_events)),
    )


async def register(
    settings: Settings,
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    emulator: str,
    client: tuple[str, str],
    accounts: Sequence[tuple[Provider, str]],
    token_lifetime: float,
) -> list[Account]:
    """A grant at the emulator, a connection and its handed-over tokens for each account."""
    pool = await asyncpg.create_pool(
        settings.database_url.get_secret_value(),
        min_size=2,
        max_size=16,
        server_settings={"application_name": "ledgerhook-bench"},
    )
    try:
        tokens = emulator_tokens(settings, pool, http, producer, emulator, client)
        store = ConnectionStore(pool, keyring=None)
        gate = asyncio.Semaphore(16)

        async def one(index: int, provider: Provider, account_id: str) -> Account:
            async with gate:
                grant = await control(
                    http,
                    f"{emulator}/_emulator/grants",
                    {"provider": provider.value, "client_id": client[0], "accounts": [account_id]},
                )
                connection = await store.create(f"tenant-{index}", provider, account_id)
                await tokens.put_credentials(
                    ConnectionRef(connection.id, provider, account_id),
                    Credentials(
                        access_token=grant["access_token"],
                        refresh_token=grant["refresh_token"],
                        expires_at=time.time() + token_lifetime,
                    ),
                )
                return Account(provider, account_id, connection.id, grant["access_token"])

        registered = await asyncio.gather(*(one(i, p, a) for i, (p, a) in enumerate(accounts)))
        await tokens.close()
        return list(registered)
    finally:
        await pool.close()


async def control(http: aiohttp.ClientSession, url: str, body: Any) -> Any:
    """One call to the emulator's control endpoints; its JSON answer."""
    async with http.post(url, data=orjson.dumps(body)) as response:
        text = await response.read()
        if response.status >= 300:
            raise RuntimeError(f"{url}: {response.status} {text[:200]!r}")
        return orjson.loads(text) if text else None


def version_of(provider: Provider, record: dict[str, Any]) -> float:
    """A record's last-updated time as its API renders it (epoch seconds)."""
    if provider is QB:
        return datetime.fromisoformat(record["MetaData"]["LastUpdatedTime"]).timestamp()
    found = _XERO_DATE.match(record["UpdatedDateUTC"])
    assert found is not None, record["UpdatedDateUTC"]
    return int(found.group(1)) / 1000.0


# ---------------------------------------------------------------------------------------------
# Changes


@dataclass(frozen=True)
class Change:
    """One change made in an emulated book."""

    provider: Provider
    account: str
    entity: str
    record_id: str
    operation: str
    asked_at: float  # wall clock just before the change was asked of the emulator
    version: float  # the version it made: the record's last-updated time (epoch seconds)


@dataclass
class ChangeMaker:
    """Makes changes at `rate` per second, spread over the accounts, until stopped.

    An update goes to a record this maker created at least `min_age` seconds before and has not
    updated yet, so each record is changed at most twice, the second time long after its first
    version was polled: every change then has an event of its own version.
    """

    http: aiohttp.ClientSession
    emulator: str
    accounts: Sequence[Account]
    rate: float
    min_age: float
    rng: random.Random
    changes: list[Change] = field(default_factory=list)
    failures: int = 0
    send_lag: list[float] = field(default_factory=list)  # seconds each change was asked late
    _created: deque[tuple[float, Account, str, str]] = field(default_factory=deque)

    async def run(self, stop: asyncio.Event) -> None:
        """Change records on schedule until `stop` is set; waits for the changes in flight."""
        gate = asyncio.Semaphore(IN_FLIGHT)
        pending: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        index = 0
        while not stop.is_set():
            due = start + index / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            self.send_lag.append(max(0.0, time.monotonic() - due))
            await gate.acquire()
            task = asyncio.create_task(self._one(gate))
            pending.add(task)
            task.add_done_callback(pending.discard)
            index += 1
        await asyncio.gather(*pending)

    def _pick(self) -> tuple[Account, str, str, str | None]:
        """(account, entity, operation, record id or None for a creation)."""
        now = time.time()
        if self._created and self.rng.random() < UPDATE_SHARE and self._created[0][0] <= now - self.min_age:
            _, account, entity, record_id = self._created.popleft()
            return account, entity, "update", record_id
        account = self.rng.choice(self.accounts)
        return account, self.rng.choice(CHANGED_ENTITIES[account.provider]), "create", None

    async def _one(self, gate: asyncio.Semaphore) -> None:
        try:
            account, entity, operation, record_id = self._pick()
            body: dict[str, Any] = {"entity": entity, "operation": operation}
            if record_id is not None:
                body["id"] = record_id
            asked = time.time()
            url = f"{self.emulator}/_emulator/books/{account.provider.value}/{account.account_id}/changes"
            try:
                [made] = (await control(self.http, url, body))["changes"]
            except (RuntimeError, aiohttp.ClientError, TimeoutError):
                self.failures += 1
                return
            version = version_of(account.provider, made["record"])
            self.changes.append(
                Change(account.provider, account.account_id, entity, made["id"], operation, asked, version)
            )
            if operation == "create":
                self._created.append((asked, account, entity, made["id"]))
        finally:
            gate.release()


def most_in_window(changes: Sequence[Change], span: float, by_entity: bool) -> int:
    """The most changes one account (and entity, if `by_entity`) had within any `span` seconds: how
    many records one poll could find for it, overlap included."""
    times: dict[tuple[str, ...], list[float]] = {}
    for change in changes:
        key = (change.account, change.entity) if by_entity else (change.account,)
        times.setdefault(key, []).append(change.asked_at)
    most = 0
    for stamps in times.values():
        stamps.sort()
        for i, start in enumerate(stamps):
            most = max(most, bisect.bisect_right(stamps, start + span) - i)
    return most


# ---------------------------------------------------------------------------------------------
# Events


@dataclass
class EventLog:
    """Change events read from the changes topic: (version, read at, origin) per (account, record id)."""

    seen: dict[tuple[str, str], list[tuple[float, float, str]]] = field(default_factory=dict)
    count: int = 0

    def note(self, value: bytes, read_at: float) -> None:
        """One event's data, read at `read_at` (wall clock)."""
        data = orjson.loads(value)
        occurred = datetime.fromisoformat(data["occurred_at"].replace("Z", "+00:00")).timestamp()
        self.seen.setdefault((data["provider_account_id"], data["entity_id"]), []).append(
            (occurred, read_at, str(data.get("origin", "")))
        )
        self.count += 1

    def seen_at(self, change: Change) -> float | None:
        """When the change was first visible: the first event read of its record at its version or
        a later one (half a millisecond of slack for the renderings' rounding)."""
        first = self.first_seen(change)
        return None if first is None else first[0]

    def first_seen(self, change: Change) -> tuple[float, str] | None:
        """(read at, origin) of the first event that made the change visible (see `seen_at`)."""
        found = [
            (read_at, origin)
            for version, read_at, origin in self.seen.get((change.account, change.record_id), ())
            if version >= change.version - 0.0005
        ]
        return min(found) if found else None


async def read_changes(
    settings: Settings, log: EventLog, ready: asyncio.Event, stop: asyncio.Event, fetch_wait_ms: int
) -> None:
    """Note every event arriving on the changes topic from now until `stop`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_wait_ms,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition(settings.topic_changes, p)
            for p in sorted(consumer.partitions_for_topic(settings.topic_changes) or ())
        ]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # resolve the end offsets before anything is polled
        ready.set()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time()
            for records in batch.values():
                for record in records:
                    log.note(record.value or b"{}", now)
    finally:
        await consumer.stop()


# ---------------------------------------------------------------------------------------------
# History


async def add_history(
    http: aiohttp.ClientSession, emulator: str, account: Account, records: int, span: float
) -> None:
    """`records` new records in the account's book over its changed entities, each entity's spread
    evenly over the `span` seconds up to now (the emulator's `create_many(..., spacing=...)`): the
    history a backfill reads. `span / count` seconds apart: days hold far fewer changes a second
    than the 1,000 QuickBooks CDC could not read past."""
    entities = CHANGED_ENTITIES[account.provider]
    url = f"{emulator}/_emulator/books/{account.provider.value}/{account.account_id}/changes"
    for i, entity in enumerate(entities):
        count = records // len(entities) + (i < records % len(entities))
        if count:
            body = {"entity": entity, "operation": "create", "count": count, "spacing": span / count}
            await control(http, url, body)


async def history_gaps(settings: Settings, connections: set[str], origin: str) -> int:
    """The `integrated_account:history_gap` events of `origin` on the account-events topic, from its
    beginning to its end now, naming one of `connections`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        topic = settings.topic_account_events
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found = 0
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and await _behind(consumer, ends):
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batch.values():
                for record in records:
                    headers = {name: value for name, value in record.headers}
                    if headers.get("ce_type") != HISTORY_GAP.encode():
                        continue
                    data = orjson.loads(record.value or b"{}")
                    found += data.get("connection_id") in connections and data.get("origin") == origin
        return found
    finally:
        await consumer.stop()


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    """Whether the consumer has yet to read up to `ends` on any partition."""
    for partition, end in ends.items():
        if await consumer.position(partition) < end:
            return True
    return False
