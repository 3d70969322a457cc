"""A separate process asking for one connection's token with many concurrent callers.

    python -m tests.provider_auth.tokens.caller_process CONFIG_JSON

CONFIG_JSON: {"dsn", "keys", "bootstrap", "topic", "emulator", "connection_id", "callers"}. The
process sets up its pool, session and producer, prints `ready`, waits for a line on stdin, then runs
the callers at once and prints one JSON line: the tokens they got (or the errors they met).
"""

import asyncio
import sys
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from gateway.dev.emulator.tokens import revoke_path, token_path
from provider_auth.oauth.apps import OAuthApp
from provider_auth.oauth.client import TokenClient
from provider_auth.oauth.specs import OAUTH_PROVIDERS
from provider_auth.tokens import CredentialStore, TokenError, TokenManager
from provider_auth.vault import KeyRing
from tests.provider_auth.tokens.token_support import CLIENT_ID, CLIENT_SECRET, connection_events


async def main(config: dict[str, Any]) -> None:
    """Set up, wait for the go line, call, report."""
    base = config["emulator"]
    apps = {
        p: OAuthApp(
            provider=p,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            token_url=base + token_path(p),
            api_base_url=f"{base}/{p.value}",
            revoke_url=base + revoke_path(p),
        )
        for p in OAUTH_PROVIDERS
    }
    pool = await asyncpg.create_pool(config["dsn"], min_size=4, max_size=10)
    producer = AIOKafkaProducer(bootstrap_servers=config["bootstrap"], enable_idempotence=False, acks="all")
    await producer.start()
    http = aiohttp.ClientSession()
    try:
        manager = TokenManager(
            CredentialStore(pool, KeyRing.parse(config["keys"])),
            TokenClient(http, timeout=10.0),
            apps,
            connection_events(producer, config["topic"]),
        )
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def call() -> str:
            try:
                return (await manager.get_access_token(config["connection_id"])).token
            except TokenError as exc:
                return f"error: {type(exc).__name__}: {exc}"

        tokens = await asyncio.gather(*(call() for _ in range(config["callers"])))
        print(orjson.dumps({"tokens": tokens}).decode(), flush=True)
        await manager.close()
    finally:
        await http.close()
        await producer.stop()
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main(orjson.loads(sys.argv[1])))
