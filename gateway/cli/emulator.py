"""`ledgerhook emulator connect|change`: polling shown on the provider emulator, without internet.

`connect` asks the emulator for a grant on one account, registers the connection through the admin
API and hands the tokens over (as `connections add` and `credentials put` do); `change` creates,
updates, deletes or voids records in the emulator's book of that account, which the poller then
reads. The emulator is `ledgerhook dev --emulator`'s, or `python -m gateway.dev.emulator`. See
docs/emulator.md, "From the command line".
"""

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from fanout.polling.adapters import WEBHOOK_PROVIDERS
from fanout.polling.publishing import TIME_ZONE_KEY
from gateway.cli.admin_client import AdminClient, AdminError, admin_client
from gateway.dev.emulator.books import BOOK_ENTITIES, NETSUITE_ZONE, OPERATIONS, resolve_entity
from gateway.dev.emulator_setup import (
    DEV_POLL_INTERVAL_SECONDS,
    DEV_POLL_SYNC_SECONDS,
    DEV_SWEEP_INTERVAL_SECONDS,
)
from provider_auth.providers import Provider

__all__ = ["DEFAULT_EMULATOR_URL", "EMULATOR_URL_VARIABLE", "run_emulator"]

EMULATOR_URL_VARIABLE = "LEDGERHOOK_EMULATOR_URL"
# Where `ledgerhook dev --emulator` serves the emulator unless told `--emulator-port`.
DEFAULT_EMULATOR_URL = "http://127.0.0.1:8900"
# A bound on `--count`, so one command cannot make a request body of unbounded size.
MAX_COUNT = 10_000
DONE = {"create": "created", "update": "updated", "delete": "deleted", "void": "voided"}


class UsageError(Exception):
    """The command as given cannot work (exit 2)."""


class Failed(Exception):
    """The command could not be carried out (exit 1)."""


def run_emulator(args: argparse.Namespace) -> int:
    """`ledgerhook emulator connect|change`: 2 for a command that cannot work as given, 1 when it
    could not be carried out; one line on standard error either way."""
    action = connect if args.action == "connect" else change
    try:
        lines = asyncio.run(action(args))
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        print(f"ledgerhook emulator {args.action}: {exc}", file=sys.stderr)
        return 2
    except Failed as exc:
        print(f"ledgerhook emulator {args.action}: {exc}", file=sys.stderr)
        return 1
    except AdminError as exc:
        print(f"ledgerhook emulator {args.action}: {exc.describe()}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


# ----- the emulator's control endpoints ---------------------------------------------------------


class EmulatorError(Exception):
    """The emulator refused a control call (`status` 400: the change cannot be made as asked)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class EmulatorClient:
    """Calls the emulator's `/_emulator/` controls; use as an async context manager."""

    base_url: str
    timeout_seconds: float = 30.0
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    async def __aenter__(self) -> "EmulatorClient":
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def issue_grant(self, provider: Provider, account: str) -> dict[str, Any]:
        """A grant of the dev app covering `account`: access and refresh token, `expires_in`."""
        body = {"provider": provider.value, "accounts": [account]}
        return await self._call("POST", "/grants", body)  # type: ignore[no-any-return]

    async def records(self, provider: Provider, account: str) -> list[dict[str, Any]]:
        """Every record of the account's book, oldest change first."""
        answer = await self._call("GET", f"/books/{provider.value}/{account}")
        return answer["records"]  # type: ignore[no-any-return]

    async def change(self, provider: Provider, account: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Apply changes to the account's book; what changed, in order."""
        answer = await self._call("POST", f"/books/{provider.value}/{account}/changes", body)
        return answer["changes"]  # type: ignore[no-any-return]

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        assert self._session is not None, "use EmulatorClient as an async context manager"
        url = f"{self.base_url.rstrip('/')}/_emulator{path}"
        try:
            async with self._session.request(
                method, url, data=None if body is None else orjson.dumps(body)
            ) as response:
                status, payload = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Failed(
                f"cannot reach the provider emulator at {self.base_url} ({exc or type(exc).__name__});"
                " is `ledgerhook dev --emulator` running? (--emulator-url or "
                f"{EMULATOR_URL_VARIABLE} point elsewhere)"
            ) from None
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            document = None
        if status >= 400 or not isinstance(document, dict):
            detail = str(document.get("detail") or "") if isinstance(document, dict) else ""
            if len(detail) > 1 and detail[0] == detail[-1] == "'":
                detail = detail[1:-1]  # a KeyError's message comes quoted
            raise EmulatorError(status, detail or f"unexpected answer {status} from {url}")
        return document


def emulator_url(value: str | None) -> str:
    """`--emulator-url`, else `LEDGERHOOK_EMULATOR_URL`, else where `dev --emulator` serves it."""
    return value or os.environ.get(EMULATOR_URL_VARIABLE, "").strip() or DEFAULT_EMULATOR_URL


# ----- connect ----------------------------------------------------------------------------------


async def connect(args: argparse.Namespace) -> list[str]:
    """Connect `--tenant` to the emulator's `--account`; the lines that describe the connection."""
    provider = _provider(args.provider)
    account, tenant = args.account, args.tenant
    # NetSuite answers SuiteQL in the account's time zone; the emulator's books keep theirs in this one.
    metadata = {TIME_ZONE_KEY: NETSUITE_ZONE} if provider is Provider.NETSUITE else None
    async with admin_client(args.url) as admin, EmulatorClient(emulator_url(args.emulator_url)) as emulator:
        existing = await _existing(admin, tenant, provider, account)
        if existing is not None and not await _takes_tokens(admin, existing):
            raise Failed(_exists(existing))
        grant = await _grant(emulator, provider, account)
        if existing is None:
            try:
                connection = await admin.create(tenant, provider.value, account, metadata=metadata)
            except AdminError as exc:
                found = await _existing(admin, tenant, provider, account) if exc.status == 409 else None
                if found is None:
                    raise
                raise Failed(_exists(found)) from None
        else:
            connection = existing
        credentials = {
            "access_token": grant["access_token"],
            "refresh_token": grant["refresh_token"],
            "expires_in": grant["expires_in"],
        }
        try:
            state = await admin.put_credentials(connection["id"], credentials)
        except AdminError as exc:
            raise Failed(
                f"connection {connection['id']} is registered but its tokens were refused: {exc.describe()}"
                " (is the gateway `ledgerhook dev --emulator`, or configured for the emulator's dev app?)"
            ) from None
    return _described(connection, state, handed_over=existing is not None)


async def _grant(emulator: EmulatorClient, provider: Provider, account: str) -> dict[str, Any]:
    try:
        return await emulator.issue_grant(provider, account)
    except EmulatorError as exc:
        raise Failed(f"the provider emulator gave no grant: {exc}") from None


async def _existing(
    admin: AdminClient, tenant: str, provider: Provider, account: str
) -> dict[str, Any] | None:
    """The tenant's connection to that account, whatever its status, or None."""
    async for page in admin.pages(tenant_id=tenant, provider=provider.value):
        for connection in page:
            if connection["provider_account_id"] == account:
                return connection
    return None


async def _takes_tokens(admin: AdminClient, connection: dict[str, Any]) -> bool:
    """Whether `connect` may hand the emulator's tokens to an existing connection: one registered
    without tokens (`connections add`), or one whose grant broke (`needs_reauth`)."""
    if connection["status"] == "needs_reauth":
        return True
    if connection["status"] != "active":
        return False
    try:
        await admin.credentials(connection["id"])
    except AdminError as exc:
        if exc.status == 404:
            return True
        raise
    return False


def _exists(connection: dict[str, Any]) -> str:
    """The one line saying the connection exists, and what to do."""
    provider, account, status = (
        connection["provider"],
        connection["provider_account_id"],
        connection["status"],
    )
    said = (
        f"tenant {connection['tenant_id']!r} already has a {provider} connection to account {account}"
        f" (id {connection['id']}, {status})"
    )
    if status == "active":
        todo = (
            f"it holds tokens and is polled: change a record with `ledgerhook emulator change {provider}"
            f" invoice --account {account}`, or connect another --tenant"
        )
    elif status == "paused":
        patch = f"PATCH /admin/v1/connections/{connection['id']} with status active"
        todo = f"resume it ({patch}), or connect another --tenant"
    else:
        todo = "connect another --tenant"
    return f"{said}; {todo}"


def _described(connection: dict[str, Any], state: dict[str, Any], *, handed_over: bool) -> list[str]:
    """What `connect` prints: the connection, its tokens and when its first poll comes."""
    provider = Provider(connection["provider"])
    account = connection["provider_account_id"]
    how = "the emulator's tokens handed to the existing connection" if handed_over else "connected"
    lines = [
        f"{how}: tenant {connection['tenant_id']} to {provider.value} account {account}",
        f"  id           {connection['id']}",
        "  webhook_url  "
        + (connection["webhook_url"] or f"none ({provider.value} posts to /webhooks/{provider.value})"),
        f"  tokens       {state['status']}, access token until {state['access_token_expires_at']}"
        " (the worker refreshes it ahead)",
    ]
    if provider is Provider.XERO:
        lines.append(f"  tenant       {account} (the emulator grant's Xero tenant: its xero-tenant-id)")
    if provider is Provider.NETSUITE:
        lines.append(f"  time zone    {_time_zone(connection)}")
    lines.append(f"  first poll   {_first_poll(connection)}")
    return lines


def _time_zone(connection: dict[str, Any]) -> str:
    """The NetSuite connection's time zone, and whether the poll reads the emulator's times right."""
    zone = connection["metadata"].get(TIME_ZONE_KEY)
    if zone == NETSUITE_ZONE:
        return f"{zone} (metadata {TIME_ZONE_KEY}: the emulator book's, which SuiteQL times are in)"
    # A connection registered earlier (`connections add`) without the emulator's zone.
    return (
        f"{zone or 'none (UTC)'}, but the emulator's books keep {NETSUITE_ZONE}: set metadata"
        f' {{"{TIME_ZONE_KEY}": "{NETSUITE_ZONE}"}} (PATCH /admin/v1/connections/{connection["id"]})'
        " or the poll misreads SuiteQL times"
    )


def _first_poll(connection: dict[str, Any]) -> str:
    """When the connection's account is first polled, and then how often, under `dev --emulator`
    (its polling setting, docs/admin-api.md "Polling", where the gateway shows one)."""
    polling = connection.get("polling") or {}
    mode = polling.get("mode") or "auto"
    if mode == "off":
        return f"none: its polling mode is off (PATCH /admin/v1/connections/{connection['id']} polling.mode)"
    if mode == "auto":
        webhooks = Provider(connection["provider"]) in WEBHOOK_PROVIDERS or connection["has_webhook_secret"]
        mode = "sweep" if webhooks else "poll"
    default = DEV_SWEEP_INTERVAL_SECONDS if mode == "sweep" else DEV_POLL_INTERVAL_SECONDS
    every = f"{'swept' if mode == 'sweep' else 'polled'} every {polling.get('interval_seconds') or default} s"
    return (
        f"within {DEV_POLL_SYNC_SECONDS:g} s under `ledgerhook dev --emulator`, then {every};"
        ' changes from now on reach the changes topic with data.origin "poll"'
    )


# ----- change -----------------------------------------------------------------------------------


async def change(args: argparse.Namespace) -> list[str]:
    """Change records of the emulator's book; one line per record changed."""
    provider = _provider(args.provider)
    entity = _entity(provider, args.entity)
    operation = args.operation
    if operation not in OPERATIONS:
        raise UsageError(f"no operation {operation!r}; --operation takes {', '.join(OPERATIONS)}")
    fields = _fields(args.set)
    if fields and operation in ("delete", "void"):
        raise UsageError(f"--set goes with create or update, not {operation}")
    count = args.count
    if not 1 <= count <= MAX_COUNT:
        raise UsageError(f"--count must be from 1 to {MAX_COUNT}")
    if args.id is not None and count > 1:
        raise UsageError("--id names one record: leave --count out")
    account = args.account
    async with EmulatorClient(emulator_url(args.emulator_url)) as emulator:
        if operation == "create":
            one: dict[str, Any] = {"entity": entity, "operation": "create", "fields": fields}
            if args.id is not None:
                one["id"] = args.id
            changes = [one] * count
        else:
            ids = [args.id] if args.id is not None else await _latest(emulator, args, entity)
            changes = [{"entity": entity, "operation": operation, "id": i, "fields": fields} for i in ids]
        try:
            changed = await emulator.change(provider, account, {"changes": changes})
        except EmulatorError as exc:
            if exc.status == 400:
                raise UsageError(f"the emulator refused it: {exc}") from None
            raise Failed(f"the emulator failed: {exc}") from None
    return [f"{DONE[operation]} {record['entity']} {record['id']} ({record['state']})" for record in changed]


async def _latest(emulator: EmulatorClient, args: argparse.Namespace, entity: str) -> list[str]:
    """The ids of the `--count` live records of `entity` changed last (oldest of them first)."""
    provider, account, count = Provider(args.provider), args.account, args.count
    try:
        records = await emulator.records(provider, account)
    except EmulatorError as exc:
        raise Failed(f"the emulator failed: {exc}") from None
    live = [r["id"] for r in records if r["entity"] == entity and r["state"] == "active"]
    if len(live) < count:
        has = f"only {len(live)}" if live else "no"
        create = f"ledgerhook emulator change {provider.value} {args.entity} --account {account}"
        raise Failed(
            f"{provider.value} account {account} has {has} live {entity} in the emulator;"
            f" create one first: `{create}`"
        )
    return live[len(live) - count :]


# ----- arguments --------------------------------------------------------------------------------


def _provider(name: str) -> Provider:
    emulated = ", ".join(p.value for p in BOOK_ENTITIES)
    try:
        provider = Provider(name)
    except ValueError:
        raise UsageError(f"no provider {name!r}; the emulator plays {emulated}") from None
    if provider not in BOOK_ENTITIES:
        raise UsageError(f"the emulator does not play {name}; it plays {emulated}")
    return provider


def _entity(provider: Provider, name: str) -> str:
    try:
        return resolve_entity(provider, name)
    except (KeyError, ValueError):
        known = ", ".join(BOOK_ENTITIES[provider])
        raise UsageError(
            f"{provider.value} has no entity {name[:40]!r} in the emulator; it keeps {known}"
        ) from None


def _fields(pairs: list[str]) -> dict[str, Any]:
    """`--set FIELD=VALUE` pairs: VALUE read as JSON when it is JSON (`99`, `true`, `{...}`), else as text."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--set takes FIELD=VALUE, not {pair[:60]!r}")
        try:
            fields[name] = orjson.loads(text)
        except orjson.JSONDecodeError:
            fields[name] = text
    return fields
