"""`ledgerhook connections list` prints each page as it comes: a real process against a real gateway
holding thousands of connections, its output read while it is being written."""

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from provider_auth.accounts.store import ConnectionStore
from provider_auth.providers import Provider
from tests.support import ADMIN_TOKEN, RunningGateway, fresh_database, running_gateway

LEDGERHOOK = [sys.executable, "-m", "gateway.cli"]
ROWS = 5000  # 25 pages of 200: several times what a pipe holds
LONG_TENANT = "tenant-whose-name-is-longer-than-any-on-the-first-page"
LONG_ROW = 4321  # where it is, pages after the first


@pytest.fixture
async def gw(settings_factory: Any, postgres_url: str) -> AsyncIterator[RunningGateway]:
    """A gateway on a database of its own, so its thousands of connections are nobody else's."""
    async with (
        fresh_database(postgres_url, "cli_list") as url,
        running_gateway(settings_factory(database_url=url)) as running,
    ):
        yield running


def connection_rows() -> list[tuple[Any, ...]]:
    """ROWS connections created a day ago, in id order; the first page active, short names and the
    shortest providers, the rest of every kind."""
    providers = list(Provider)
    statuses = ["active", "paused", "needs_reauth", "disconnected"]
    start = int((datetime.now(UTC) - timedelta(days=1)).timestamp() * 1000)
    rows = []
    for n in range(ROWS):
        value = ((start + n) << 80) | (0x7 << 76) | (0b10 << 62) | n
        first_page = n < 200
        rows.append(
            (
                uuid.UUID(int=value),
                LONG_TENANT if n == LONG_ROW else f"t-{n % 37}",
                Provider.XERO.value if first_page else providers[n % len(providers)].value,
                f"acct-{n}",
                "active" if first_page else statuses[n % len(statuses)],
            )
        )
    return rows


async def test_list_prints_pages_as_they_come_and_every_connection_once(gw: RunningGateway) -> None:
    database_url = gw.settings.database_url.get_secret_value()
    rows = connection_rows()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.copy_records_to_table(
                "connections",
                records=rows,
                columns=["id", "tenant_id", "provider", "provider_account_id", "status"],
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERHOOK_")}
        env |= {"LEDGERHOOK_ADMIN_URL": gw.base_url, "LEDGERHOOK_ADMIN_TOKEN": ADMIN_TOKEN}
        # A small reader buffer: what the process wrote stays in the pipe, which fills after a few
        # pages and holds the process there until this test reads on.
        process = await asyncio.create_subprocess_exec(
            *LEDGERHOOK,
            "connections",
            "list",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=4096,
        )
        assert process.stdout is not None and process.stderr is not None
        try:
            header = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
            first = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
            assert process.returncode is None
            # Created now, after the first rows came out: it sorts after every other, so it is
            # listed only if the last page is fetched after the first one was printed. A command
            # that fetched every page before printing would not have it.
            late = await ConnectionStore(pool, None).create("t-late", Provider.XERO, "acct-late")
            rest = (await asyncio.wait_for(process.stdout.read(), 120)).decode()
            errors = (await process.stderr.read()).decode()
            assert await process.wait() == 0, errors
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    finally:
        await pool.close()

    assert errors == ""
    assert header.split() == ["ID", "TENANT", "PROVIDER", "ACCOUNT", "STATUS", "SECRET", "POLLING", "NAME"]
    lines = [first.rstrip("\n"), *rest.splitlines()]
    assert [line.split()[0] for line in lines] == [*(str(row[0]) for row in rows), late.id]
    assert "ID" not in rest.split()  # the header once

    # Column widths from the first page hold on every page: the provider and the status of every
    # kind start where their titles do (their widths fit every value), the longer tenant is whole.
    at = {title: header.index(title) for title in ("PROVIDER", "STATUS", "POLLING")}
    for line, row in zip(lines, rows, strict=False):
        if row[1] == LONG_TENANT:
            assert line.split()[1] == LONG_TENANT
            continue
        assert line[at["PROVIDER"] :].split()[0] == row[2], line
        assert line[at["STATUS"] :].split()[0] == row[4], line
        assert line[at["POLLING"] :].split()[0] == "auto", line
