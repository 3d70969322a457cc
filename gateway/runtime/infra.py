"""The process's infrastructure objects, created once here and passed to whoever needs them."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import asyncpg
from aiokafka import AIOKafkaProducer

from gateway.runtime.kafka import make_producer
from gateway.settings import Settings

# What a failed database call may raise: the database unreachable, slow, or refusing.
DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class Infrastructure:
    """Pool, producer and outbound HTTP session of one process."""

    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    http: aiohttp.ClientSession


async def open_pool(database_url: str, max_size: int = 10) -> asyncpg.Pool:
    """The process's PostgreSQL pool; min_size=0, so a process starts (and reports not ready) even
    while the database is down."""
    return await asyncpg.create_pool(database_url, min_size=0, max_size=max_size, reset=release_as_is)


async def release_as_is(connection: asyncpg.Connection) -> None:
    """Return a connection to the pool without a statement of its own.

    asyncpg's default reset runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL` on every release: about three of every four statements PostgreSQL ran per published event
    at 100,000 connections (bench/README.md, "bench/scale.py"). Ledgerhook leaves no session state on
    a pooled connection: settings are `SET LOCAL` inside transactions, cursors live inside
    transactions, nothing listens, and the one session-level advisory lock (the dedupe maintenance)
    is released in a `finally`; tests/gateway/runtime/test_pool_reset.py holds the code to that. An
    open transaction is still rolled back: asyncpg does that before calling this.
    """


@asynccontextmanager
async def open_infrastructure(settings: Settings) -> AsyncIterator[Infrastructure]:
    """Open everything on entry; on exit flush the producer, then close the rest."""
    pool = await open_pool(settings.database_url.get_secret_value())
    producer = make_producer(settings)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        await producer.start()
        yield Infrastructure(pool=pool, producer=producer, http=http)
    finally:
        await producer.stop()  # flushes pending records first
        await http.close()
        await pool.close()
