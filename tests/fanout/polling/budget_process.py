"""A separate process using the rate budgets, so the tests can prove limits hold across processes.

    python -m tests.fanout.polling.budget_process CONFIG_JSON

CONFIG_JSON: {"dsn", "mode", ...}. The process opens its pool, prints `ready`, waits for a line on
stdin, then acts by mode and prints one JSON line:
- `hammer` {"scopes": [[key, limit, lifetime, held], ...], "tasks", "seconds", "work": [lo, hi]}:
  `tasks` loops take permits for `seconds`, each holding it for a random time in `work`; prints the
  grant times (PostgreSQL's clock) and each request's [start, end] (this machine's clock).
- `hold` {"scopes", "lifetime"}: takes one permit, prints its grant time, then sleeps until killed.
- `park` {"provider", "account", "headers"}: parks the scope a 429 with `headers` names.
"""

import asyncio
import random
import sys
import time
from typing import Any

import asyncpg
import orjson

from fanout.polling.budget import Permit, RateBudgets, Scope
from provider_auth.providers import Provider


def scopes_of(config: dict[str, Any]) -> list[Scope]:
    """The scopes a config lists as [key, limit, lifetime, held]."""
    return [Scope(key, limit, lifetime, held) for key, limit, lifetime, held in config["scopes"]]


async def hammer(budgets: RateBudgets, config: dict[str, Any]) -> dict[str, Any]:
    """Take permits as fast as the budget allows, from several tasks, for a while."""
    scopes = scopes_of(config)
    stop_at = time.monotonic() + config["seconds"]
    grants: list[float] = []
    requests: list[tuple[float, float]] = []

    async def loop() -> None:
        while True:
            left = stop_at - time.monotonic()
            if left <= 0:
                return
            try:
                async with budgets.holding(scopes, "poll", max_wait=left) as permit:
                    start = time.time()
                    grants.append(permit.granted_at.timestamp())
                    await asyncio.sleep(random.uniform(*config["work"]))
                    requests.append((start, time.time()))
            except TimeoutError:
                return

    await asyncio.gather(*(loop() for _ in range(config["tasks"])))
    return {"grants": grants, "requests": requests}


async def main(config: dict[str, Any]) -> None:
    """Set up, wait for the go line, act, report."""
    pool = await asyncpg.create_pool(config["dsn"], min_size=1, max_size=8)
    try:
        budgets = RateBudgets(pool, recheck=0.05, permit_lifetime=config.get("lifetime", 300.0))
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        mode = config["mode"]
        if mode == "hammer":
            print(orjson.dumps(await hammer(budgets, config)).decode(), flush=True)
        elif mode == "hold":
            permit: Permit = await budgets.acquire(scopes_of(config), "poll", max_wait=5.0)
            print(orjson.dumps({"granted_at": permit.granted_at.timestamp()}).decode(), flush=True)
            await asyncio.sleep(3600)
        elif mode == "park":
            throttle = await budgets.park_after_429(
                Provider(config["provider"]), config["account"], config["headers"], 0
            )
            print(orjson.dumps({"scope": throttle.scope, "seconds": throttle.seconds}).decode(), flush=True)
    finally:
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main(orjson.loads(sys.argv[1])))
