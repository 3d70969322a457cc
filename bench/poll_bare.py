"""The poll benchmark's baseline: fetch the poller's pages from the emulator and do nothing with them.

bench/poll.py writes a plan: for each provider account, the API base, an access token and the first
requests of its poll, built by the provider's own polling module from the account's watermarks, so
they are the requests the worker sends. This loop sends them as the worker's fetcher does (the same
aiohttp session settings and request arguments, the same event loop), `--concurrency` accounts at
a time and one request at a time per account, as the poller polls. A Xero page that is not the last
(its `pagination.pageCount`, found with a regular expression rather than by parsing the page) is
followed by the next one. Nothing else: no rate budget, no token store, no parsing, no events.

Protocol with bench/poll.py: it prints `READY` once the plan is loaded, starts on a line on stdin,
prints `DONE <json>` with its counts and timing, and exits at the end of stdin (so the benchmark can
read its CPU first).
"""

import argparse
import asyncio
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from gateway.runtime.loops import run_event_loop  # noqa: E402

PAGE_COUNT = re.compile(rb'"pageCount"\s*:\s*(\d+)')


@dataclass
class Tally:
    """What the loop fetched, and when the first and the last page arrived (monotonic seconds)."""

    pages: int = 0
    bytes: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    first_at: float = 0.0
    last_at: float = 0.0


def following(request: dict[str, Any], body: bytes) -> dict[str, Any] | None:
    """The next page of a paged Xero request, when its answer says there is one."""
    params = [list(pair) for pair in request["params"]]
    page = next((pair for pair in params if pair[0] == "page"), None)
    found = PAGE_COUNT.search(body) if page is not None else None
    if page is None or found is None or int(page[1]) >= int(found.group(1)):
        return None
    page[1] = str(int(page[1]) + 1)
    return request | {"params": params}


async def fetch_account(session: aiohttp.ClientSession, account: dict[str, Any], tally: Tally) -> None:
    """One account's pages, one after the other."""
    queue = list(account["requests"])
    while queue:
        request = queue.pop(0)
        headers = dict(request["headers"])
        headers["Authorization"] = f"Bearer {account['token']}"
        async with session.request(
            request["method"],
            account["base"].rstrip("/") + "/" + request["path"].lstrip("/"),
            params=[tuple(pair) for pair in request["params"]],
            headers=headers,
            allow_redirects=False,
        ) as response:
            body = await response.read()
        now = time.monotonic()
        tally.first_at = tally.first_at or now
        tally.last_at = now
        tally.pages += 1
        tally.bytes += len(body)
        tally.statuses[response.status] += 1
        nxt = following(request, body) if response.status == 200 else None
        if nxt is not None:
            queue.insert(0, nxt)


async def run(plan: dict[str, Any], concurrency: int) -> Tally:
    """Every account's pages, `concurrency` accounts at a time."""
    tally = Tally()
    accounts = list(plan["accounts"])
    # The worker's session (gateway.runtime.infra.open_infrastructure).
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def lane() -> None:
            while accounts:
                await fetch_account(session, accounts.pop(), tally)

        await asyncio.gather(*(lane() for _ in range(concurrency)))
    return tally


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description="Fetch the poller's pages and do nothing with them.")
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args()
    plan = orjson.loads(args.plan.read_bytes())
    tally = run_event_loop(run(plan, args.concurrency))
    result = {
        "pages": tally.pages,
        "bytes": tally.bytes,
        "statuses": {str(status): n for status, n in tally.statuses.items()},
        "seconds": tally.last_at - tally.first_at,
    }
    print("DONE " + orjson.dumps(result).decode(), flush=True)
    sys.stdin.read()  # until the benchmark has read this process's CPU and closes the pipe


if __name__ == "__main__":
    main()
