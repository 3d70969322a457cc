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


@asynccontextmanager
async def open_infrastructure(settings: Settings) -> AsyncIterator[Infrastructure]:
    """Open everything on entry; on exit flush the producer, then close the rest."""
    # min_size=0: the gateway starts (and reports not ready) even while the database is down.
    pool = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=0, max_size=10)
    producer = make_producer(settings)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        await producer.start()
        yield Infrastructure(pool=pool, producer=producer, http=http)
    finally:
        await producer.stop()  # flushes pending records first
        await http.close()
        await pool.close()
