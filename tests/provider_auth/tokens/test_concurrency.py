"""One refresh however many processes ask, and races told apart from revocations."""

import asyncio
import base64
import sys

import asyncpg
import orjson

from provider_auth.providers import Provider
from provider_auth.tokens import ConnectionRef, Credentials, GrantStatus
from tests.paths import REPO_ROOT
from tests.provider_auth.tokens.token_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    TokenStack,
    key_entries,
    wait_until,
)

PROCESSES, CALLERS = 4, 50
BASIC = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()


async def test_four_processes_of_fifty_callers_make_exactly_one_refresh(stack: TokenStack) -> None:
    connection_id, old_access, _ = await stack.connect(Provider.XERO, expires_in=60)  # inside the skew
    # A slow token endpoint keeps the refresh in flight while every process piles in.
    stack.emu.set_latency(Provider.XERO, 0.3)
    config = orjson.dumps(
        {
            "dsn": stack.settings.database_url.get_secret_value(),
            "keys": key_entries(stack.settings),
            "bootstrap": stack.settings.kafka_bootstrap_servers,
            "topic": stack.settings.topic_account_events,
            "emulator": stack.emu.base_url,
            "connection_id": connection_id,
            "callers": CALLERS,
        }
    ).decode()
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.provider_auth.tokens.caller_process",
            config,
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            async with asyncio.timeout(60):
                assert (await process.stdout.readline()).strip() == b"ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        outputs = []
        for process in processes:
            async with asyncio.timeout(60):
                out, _ = await process.communicate()
            assert process.returncode == 0
            outputs.append(orjson.loads(out.splitlines()[-1]))
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    tokens = [token for output in outputs for token in output["tokens"]]
    assert len(tokens) == PROCESSES * CALLERS
    assert stack.emu.calls(Provider.XERO) == 1 and stack.emu.refreshes(Provider.XERO) == 1
    (new_token,) = set(tokens)
    assert new_token != old_access and stack.emu.validate_access_token(Provider.XERO, new_token)
    assert (await stack.manager.get_access_token(connection_id)).token == new_token


async def test_a_stale_copy_meeting_invalid_grant_after_another_rotation_is_a_race(stack: TokenStack) -> None:
    """The product's own backend refreshes the token behind our back and hands the rotated set over
    while our refresh, holding the grant's lock, is on its way with the old refresh token."""
    account = "realm-race"
    access, refresh = stack.emu.issue_grant(Provider.QUICKBOOKS, CLIENT_ID, accounts=[account])
    connection_id, _, _ = await stack.connect(
        Provider.QUICKBOOKS, account=account, grant=(access, refresh), expires_in=60
    )
    # The other process rotates first (straight at the provider).
    async with stack.http.post(
        stack.emu.token_url(Provider.QUICKBOOKS),
        data={"grant_type": "refresh_token", "refresh_token": refresh},
        headers={"Authorization": BASIC},
    ) as response:
        rotated = await response.json()
    assert rotated["refresh_token"] != refresh
    # Our refresh, with the now stale token, holds the lock while the provider takes its time.
    stack.emu.set_latency(Provider.QUICKBOOKS, 3.0)  # ample time for the hand-over to queue up
    ours = asyncio.create_task(stack.another_manager(timeout=10.0).get_access_token(connection_id))
    await wait_until(lambda: stack.emu.calls(Provider.QUICKBOOKS) == 2)
    # The other process hands its rotated set over; it waits on the grant's lock.
    other = stack.another_manager()
    handover = asyncio.create_task(
        other.put_credentials(
            ConnectionRef(connection_id, Provider.QUICKBOOKS, account),
            Credentials(
                rotated["access_token"], rotated["refresh_token"], expires_at=stack.manager.clock() + 3600
            ),
        )
    )
    await wait_until_lock_waiter(stack.pool)
    token = await ours
    await handover
    assert stack.emu.events(Provider.QUICKBOOKS, "invalid_grant") == 1  # ours met it...
    assert token.token == rotated["access_token"]  # ...and took the other process's token
    assert await stack.account_events(connection_id) == []
    assert await stack.status(connection_id) == "active"
    state = await stack.manager.credentials_state(connection_id)
    assert state is not None and state.status is GrantStatus.ACTIVE
    stack.emu.set_latency(Provider.QUICKBOOKS, 0)
    assert await stack.another_manager(skew=10_000).get_access_token(connection_id)  # the chain lives on
    assert stack.emu.events(Provider.QUICKBOOKS, "invalid_grant") == 1


async def wait_until_lock_waiter(pool: asyncpg.Pool, timeout: float = 10.0) -> None:
    """Until a session of this test's database waits for a lock held by another."""
    async with asyncio.timeout(timeout):
        while not await pool.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.datname = current_database()"
        ):
            await asyncio.sleep(0.01)


async def test_tokens_survive_a_refresh_whose_database_session_died(stack: TokenStack) -> None:
    """The lock's session is killed while the provider rotates: the new tokens are still stored."""
    connection_id, old_access, _ = await stack.connect(Provider.QUICKBOOKS, expires_in=60)
    stack.emu.set_latency(Provider.QUICKBOOKS, 0.5)
    ours = asyncio.create_task(stack.manager.get_access_token(connection_id))
    await wait_until(lambda: stack.emu.calls(Provider.QUICKBOOKS) == 1)
    killed = await stack.pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE state = 'idle in transaction' AND pid <> pg_backend_pid() AND datname = current_database()"
    )
    assert killed >= 1
    token = await ours
    assert token.token != old_access and stack.emu.validate_access_token(Provider.QUICKBOOKS, token.token)
    stack.emu.set_latency(Provider.QUICKBOOKS, 0)
    # The rotated refresh token reached the database: the next refresh works.
    again = await stack.another_manager(skew=10_000).get_access_token(connection_id)
    assert again.token != token.token
    assert stack.emu.events(Provider.QUICKBOOKS, "invalid_grant") == 0
