"""`ledgerhook emulator connect|change`, each a real process, against a real provider emulator and the
admin API of a running gateway configured for it as `ledgerhook dev --emulator` configures itself."""

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from gateway.cli.admin_client import AdminClient, AdminError
from gateway.dev.embedded import free_port
from gateway.dev.emulator import Emulator
from gateway.dev.emulator.books import Book, Record
from gateway.dev.emulator_setup import EMULATOR_ACCESS_TTL, emulator_defaults, running_emulator
from provider_auth.vault import KeyRing
from tests.support import ADMIN_TOKEN, RunningGateway, running_gateway

LEDGERHOOK = [sys.executable, "-m", "gateway.cli", "emulator"]
PROVIDERS = ("quickbooks", "xero", "netsuite", "sage-intacct", "zoho-books", "freshbooks")
REALM = "9341453908000000"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """The emulator as `dev --emulator` runs it: the dev app registered, 3-minute access tokens."""
    async with running_emulator("127.0.0.1", 0) as running:
        yield running


@pytest.fixture
async def gw(settings_factory: Any, emulator: Emulator) -> AsyncIterator[RunningGateway]:
    settings = settings_factory(
        **emulator_defaults("127.0.0.1", emulator.port), encryption_keys=f"k1:{KeyRing.generate_key()}"
    )
    async with running_gateway(settings) as running:
        yield running


async def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERHOOK_")} | env
    # In a thread: the emulator and the gateway under test answer from this test's event loop.
    return await asyncio.to_thread(
        subprocess.run, [*LEDGERHOOK, *args], env=clean, capture_output=True, text=True, timeout=60
    )


def env_for(gw: RunningGateway | None, emulator: Emulator) -> dict[str, str]:
    """Where the commands find the emulator and the admin API, and the admin token."""
    env = {"LEDGERHOOK_EMULATOR_URL": emulator.base_url, "LEDGERHOOK_ADMIN_TOKEN": ADMIN_TOKEN}
    if gw is not None:
        env["LEDGERHOOK_ADMIN_URL"] = gw.base_url
    return env


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *texts: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for text in texts:
        assert text in result.stderr, result.stderr


def shown_id(output: str) -> str:
    """The connection id `connect` prints on its `id` line."""
    return next(line.split()[1] for line in output.splitlines() if line.split()[:1] == ["id"])


def stored(book: Book, entity: str, record_id: str) -> Record:
    """A record of the emulator's book as it is now."""
    record = book.get(entity, record_id)
    assert record is not None, f"no {entity} {record_id}"
    return record


async def tenant_connections(gw: RunningGateway, tenant: str) -> list[dict[str, Any]]:
    async with AdminClient(gw.base_url, ADMIN_TOKEN) as admin:
        return [c async for page in admin.pages(tenant_id=tenant) for c in page]


# ----- connect ----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_connect_registers_an_active_connection_holding_the_emulators_tokens(
    gw: RunningGateway, emulator: Emulator, provider: str
) -> None:
    tenant, account = f"t-{uuid.uuid4().hex[:8]}", f"acct-{uuid.uuid4().hex[:8]}"
    before = time.time()
    result = await cli("connect", provider, "--tenant", tenant, "--account", account, **env_for(gw, emulator))
    assert result.returncode == 0, result.stderr
    connection_id = shown_id(result.stdout)
    assert "first poll" in result.stdout and result.stderr == ""

    async with AdminClient(gw.base_url, ADMIN_TOKEN) as admin:
        connection = await admin.get(connection_id)
        state = await admin.credentials(connection_id)
    assert (connection["tenant_id"], connection["provider"], connection["provider_account_id"]) == (
        tenant,
        provider,
        account,
    )
    assert connection["status"] == "active"
    # NetSuite's poll reads SuiteQL times in the account's zone: the emulator book's, by default.
    expected_metadata = {"time_zone": "America/Los_Angeles"} if provider == "netsuite" else {}
    assert connection["metadata"] == expected_metadata
    if connection["webhook_url"]:
        assert connection["webhook_url"] in result.stdout
    # The tokens of one new grant of the emulator, with the lifetime the emulator gave them.
    assert state["status"] == "active" and state["grant_type"] == "refresh_token"
    expires = datetime.fromisoformat(state["access_token_expires_at"]).timestamp()
    assert before + EMULATOR_ACCESS_TTL - 5 < expires < time.time() + EMULATOR_ACCESS_TTL + 5
    assert emulator.events(provider, "grant_issued") == 1


async def test_a_second_connect_says_the_connection_exists_and_what_to_do(
    gw: RunningGateway, emulator: Emulator
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    env = env_for(gw, emulator)
    first = await cli("connect", "quickbooks", "--tenant", tenant, "--account", REALM, **env)
    assert first.returncode == 0, first.stderr
    again = await cli("connect", "quickbooks", "--tenant", tenant, "--account", REALM, **env)
    one_line_error(
        again,
        1,
        "already has a quickbooks connection",
        shown_id(first.stdout),
        f"ledgerhook emulator change quickbooks invoice --account {REALM}",
    )
    assert len(await tenant_connections(gw, tenant)) == 1
    assert emulator.events("quickbooks", "grant_issued") == 1  # no grant asked for in vain


async def test_connect_hands_the_tokens_to_a_connection_registered_without_them(
    gw: RunningGateway, emulator: Emulator
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    async with AdminClient(gw.base_url, ADMIN_TOKEN) as admin:
        registered = await admin.create(tenant, "xero", "tenant-1")  # as `connections add` does
        with pytest.raises(AdminError) as missing:
            await admin.credentials(registered["id"])
        assert missing.value.status == 404

    result = await cli(
        "connect", "xero", "--tenant", tenant, "--account", "tenant-1", **env_for(gw, emulator)
    )
    assert result.returncode == 0, result.stderr
    assert shown_id(result.stdout) == registered["id"] and "existing connection" in result.stdout
    async with AdminClient(gw.base_url, ADMIN_TOKEN) as admin:
        assert (await admin.credentials(registered["id"]))["status"] == "active"
    assert len(await tenant_connections(gw, tenant)) == 1


async def test_connect_says_what_an_existing_connection_lacks_or_leaves_it_alone(
    gw: RunningGateway, emulator: Emulator
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    env = env_for(gw, emulator)
    async with AdminClient(gw.base_url, ADMIN_TOKEN) as admin:
        netsuite = await admin.create(tenant, "netsuite", "TSTDRV1")  # without the emulator's zone
        paused = await admin.create(tenant, "zoho-books", "org-1")
    async with (
        aiohttp.ClientSession(headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as http,
        http.patch(
            f"{gw.base_url}/admin/v1/connections/{paused['id']}", json={"status": "paused"}
        ) as patched,
    ):
        assert patched.status == 200

    handed = await cli("connect", "netsuite", "--tenant", tenant, "--account", "TSTDRV1", **env)
    assert handed.returncode == 0, handed.stderr
    zone_line = next(line for line in handed.stdout.splitlines() if "time zone" in line)
    assert "none (UTC), but the emulator's books keep America/Los_Angeles" in zone_line
    assert netsuite["id"] in zone_line

    left = await cli("connect", "zoho-books", "--tenant", tenant, "--account", "org-1", **env)
    one_line_error(left, 1, f"(id {paused['id']}, paused)", "resume it (PATCH")
    assert emulator.events("zoho-books", "grant_issued") == 0


async def test_connect_errors_are_one_line_and_change_nothing(gw: RunningGateway, emulator: Emulator) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    env = env_for(gw, emulator)
    nowhere = f"http://127.0.0.1:{free_port()}"

    no_emulator = await cli(
        "connect", "quickbooks", "--tenant", tenant, "--account", REALM, "--emulator-url", nowhere, **env
    )
    one_line_error(no_emulator, 1, f"cannot reach the provider emulator at {nowhere}", "dev --emulator")
    no_gateway = await cli(
        "connect", "quickbooks", "--tenant", tenant, "--account", REALM, "--url", nowhere, **env
    )
    one_line_error(no_gateway, 1, f"cannot reach the gateway at {nowhere} (connection refused)", "--url")
    unknown = await cli("connect", "quickblocks", "--tenant", tenant, "--account", REALM, **env)
    one_line_error(unknown, 2, "no provider 'quickblocks'", "quickbooks, xero")
    custom = await cli("connect", "custom", "--tenant", tenant, "--account", REALM, **env)
    one_line_error(custom, 2, "the emulator does not play custom")

    assert await tenant_connections(gw, tenant) == []
    assert emulator.events("quickbooks", "grant_issued") == 0


# ----- change -----------------------------------------------------------------------------------


async def test_change_creates_updates_and_deletes_records_in_the_emulators_book(emulator: Emulator) -> None:
    env = env_for(None, emulator)
    book = emulator.book("quickbooks", REALM)
    created = await cli(
        "change",
        "quickbooks",
        "invoice",
        "--account",
        REALM,
        "--set",
        "TotalAmt=120",
        "--set",
        "Note=hi",
        "--count",
        "2",
        **env,
    )
    assert created.returncode == 0, created.stderr
    first, second = book.records("Invoice")
    assert created.stdout.splitlines() == [
        f"created Invoice {first.id} (active)",
        f"created Invoice {second.id} (active)",
    ]
    assert first.fields == second.fields == {"TotalAmt": 120, "Note": "hi"}  # JSON when it is JSON

    # Without --id, the record of that entity changed last.
    updated = await cli(
        "change",
        "quickbooks",
        "Invoice",
        "--account",
        REALM,
        "--operation",
        "update",
        "--set",
        "TotalAmt=99",
        **env,
    )
    assert updated.stdout == f"updated Invoice {second.id} (active)\n", updated.stderr
    assert stored(book, "Invoice", second.id).fields["TotalAmt"] == 99
    assert stored(book, "Invoice", first.id).version == 0

    deleted = await cli("change", "quickbooks", "invoice", "--account", REALM, "--operation", "delete", **env)
    assert deleted.stdout == f"deleted Invoice {second.id} (deleted)\n", deleted.stderr
    assert stored(book, "Invoice", second.id).state == "deleted"
    # A deleted record is no longer the latest live one.
    voided = await cli("change", "quickbooks", "invoice", "--account", REALM, "--operation", "void", **env)
    assert voided.stdout == f"voided Invoice {first.id} (voided)\n", voided.stderr

    # Unified names, and an id of one's choosing.
    memo = await cli("change", "quickbooks", "credit_note", "--account", REALM, "--id", "77", **env)
    assert memo.stdout == "created CreditMemo 77 (active)\n" and book.get("CreditMemo", "77") is not None


async def test_change_voids_and_deletes_by_id(emulator: Emulator) -> None:
    env = env_for(None, emulator)
    book = emulator.book("xero", "tenant-1")
    older, newer = book.create("Invoice"), book.create("Invoice")
    voided = await cli(
        "change", "xero", "invoice", "--account", "tenant-1", "--operation", "void", "--id", older.id, **env
    )
    assert voided.stdout == f"voided Invoice {older.id} (voided)\n", voided.stderr
    assert stored(book, "Invoice", older.id).state == "voided"
    assert stored(book, "Invoice", newer.id).state == "active"

    gone = await cli(
        "change", "zoho-books", "bill", "--account", "org-1", "--operation", "delete", "--count", "2", **env
    )
    one_line_error(
        gone, 1, "has no live bill", "create one first: `ledgerhook emulator change zoho-books bill"
    )


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("quickbooks", "invoice", "--operation", "update"), 1, "has no live Invoice in the emulator"),
        (("quickbooks", "widget"), 2, "quickbooks has no entity 'widget' in the emulator; it keeps Account"),
        (
            ("quickbooks", "invoice", "--operation", "nuke"),
            2,
            "--operation takes create, update, delete, void",
        ),
        (("quickblocks", "invoice"), 2, "no provider 'quickblocks'; the emulator plays quickbooks"),
        (
            ("quickbooks", "invoice", "--operation", "update", "--id", "999"),
            2,
            "no Invoice 999 in quickbooks",
        ),
        (("xero", "contact", "--operation", "void", "--id", "c1"), 2, "Xero cannot void a Contact"),
        (("quickbooks", "invoice", "--set", "TotalAmt"), 2, "--set takes FIELD=VALUE"),
        (
            ("quickbooks", "invoice", "--operation", "delete", "--set", "a=1"),
            2,
            "--set goes with create or update",
        ),
        (("quickbooks", "invoice", "--count", "0"), 2, "--count must be from 1 to"),
        (("quickbooks", "invoice", "--id", "5", "--count", "2"), 2, "--id names one record"),
    ],
)
async def test_change_errors_are_one_line_with_the_right_exit_code(
    emulator: Emulator, args: tuple[str, ...], code: int, text: str
) -> None:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    result = await cli("change", *args, "--account", account, **env_for(None, emulator))
    one_line_error(result, code, text)
    assert emulator.book(args[0] if args[0] != "quickblocks" else "quickbooks", account).records() == []


async def test_change_says_what_to_do_when_the_emulator_is_not_there() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    # From the environment, as `--emulator-url` would give it.
    result = await cli("change", "quickbooks", "invoice", "--account", REALM, LEDGERHOOK_EMULATOR_URL=nowhere)
    one_line_error(result, 1, f"cannot reach the provider emulator at {nowhere}", "ledgerhook dev --emulator")
