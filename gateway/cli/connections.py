"""`ledgerhook connections add|list|show|rm`: manage connections through the admin API.

`list` prints each page as it comes, as one aligned table, never holding every connection.
"""

import argparse
import asyncio
import sys
from typing import Any, TextIO

from gateway.cli.admin_client import (
    CONNECTIONS_PAGE_SIZE,
    AdminClient,
    AdminError,
    admin_client,
    json_object,
    pretty,
)
from provider_auth.accounts.store import ConnectionStatus
from provider_auth.providers import Provider, parse_provider
from provider_auth.webhooks.registry import SecretHolder, signing

TABLE_COLUMNS = (
    ("ID", "id"),
    ("TENANT", "tenant_id"),
    ("PROVIDER", "provider"),
    ("ACCOUNT", "provider_account_id"),
    ("STATUS", "status"),
    ("SECRET", "has_webhook_secret"),
    ("POLLING", "polling"),
    ("NAME", "display_name"),
)
# The widest value a column with a closed set of values can hold, whatever the first page has.
CLOSED_WIDTHS = {
    "provider": max(len(provider.value) for provider in Provider),
    "status": max(len(status.value) for status in ConnectionStatus),
}


def run_connections(args: argparse.Namespace) -> int:
    """Run one action; 1 when the admin API refused it, 2 for unusable arguments."""
    try:
        output, note = asyncio.run(connections_action(args))
    except AdminError as exc:
        print(f"ledgerhook connections {args.action}: {exc.describe()}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"ledgerhook connections {args.action}: {exc}", file=sys.stderr)
        return 2
    if output:
        print(output)
    if note:
        print(f"ledgerhook connections {args.action}: note: {note}", file=sys.stderr)
    return 0


async def connections_action(args: argparse.Namespace) -> tuple[str, str | None]:
    """What one action prints, and a note for standard error; AdminError or ValueError when it
    cannot be done."""
    async with admin_client(args.url) as client:
        if args.action == "add":
            metadata = json_object(args.metadata, "--metadata") if args.metadata is not None else None
            created = await client.create(
                args.tenant,
                args.provider,
                args.account,
                display_name=args.name,
                metadata=metadata,
                webhook_secret=_secret(args.secret),
                polling=_polling(args.polling, args.poll_interval),
            )
            return pretty(created), webhook_note(created)
        if args.action == "list":
            await list_connections(client, args, sys.stdout)
            return "", None
        if args.action == "show":
            return pretty(await client.get(args.id)), None
        if args.action == "rm":
            await client.delete(args.id)
            return f"disconnected {args.id}", None
    raise ValueError(f"unknown action {args.action!r}")


def webhook_note(connection: dict[str, Any]) -> str | None:
    """Why a new connection's webhook_url does not take deliveries yet, and how to fix it; None when
    it does (or when the provider posts to a shared endpoint)."""
    provider = parse_provider(str(connection.get("provider")))
    if provider is None or connection.get("has_webhook_secret"):
        return None
    holder = signing(provider).holder
    if provider is Provider.FRESHBOOKS:
        return (
            "no verifier yet: its webhook_url accepts only FreshBooks' callback.verify handshake, which"
            ' stores one as its secret (docs/admin-api.md, "The FreshBooks verify handshake")'
        )
    if holder is SecretHolder.NONE:
        return (
            f"{provider.value} deliveries carry a JWT: its webhook_url answers 404 unless the gateway has"
            " LEDGERHOOK_SAGE_INTACCT_JWT_KEYS (ledgerhook dev sets a dev key)"
        )
    if holder is SecretHolder.CONNECTION:
        return (
            "no webhook secret, so its webhook_url answers 404 until one is set:"
            f" PATCH /admin/v1/connections/{connection.get('id')} with"
            ' {"webhook_secret": "..."} (docs/admin-api.md), or create connections with --secret'
        )
    return None


async def list_connections(client: AdminClient, args: argparse.Namespace, out: TextIO) -> None:
    """Print the connections matching the filters to `out`, page after page as they come."""
    page_size: int = getattr(args, "page_size", CONNECTIONS_PAGE_SIZE)  # `--page-size`
    if not 1 <= page_size <= CONNECTIONS_PAGE_SIZE:
        raise ValueError(f"--page-size must be from 1 to {CONNECTIONS_PAGE_SIZE}")
    table = ConnectionTable(out)
    async for page in client.pages(
        tenant_id=args.tenant, provider=args.provider, status=args.status, page_size=page_size
    ):
        table.print(page)


class ConnectionTable:
    """Prints pages of connections as one aligned text table: the header once, the column widths of
    the first page (a provider's and a status's fit every value), so the pages line up. A longer
    value on a later page is printed whole, shifting the rest of its line: ids are for copying."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._widths: list[int] | None = None

    def print(self, rows: list[dict[str, Any]]) -> None:
        """One page's rows (after the header, on the first page), written and flushed at once."""
        lines = [[_cell(row.get(key)) for _, key in TABLE_COLUMNS] for row in rows]
        if self._widths is None:
            lines.insert(0, [title for title, _ in TABLE_COLUMNS])
            self._widths = [
                max(CLOSED_WIDTHS.get(key, 0), *(len(line[i]) for line in lines))
                for i, (_, key) in enumerate(TABLE_COLUMNS)
            ]
        widths = self._widths
        self._out.write(
            "".join(
                "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() + "\n"
                for line in lines
            )
        )
        # Flushed page by page; a reader gone (`| head`) ends it in main(), quietly.
        self._out.flush()


def _cell(value: Any) -> str:
    if isinstance(value, dict) and "mode" in value:  # the polling setting: `sweep`, `poll 60s`
        interval = value.get("interval_seconds")
        return f"{value['mode']} {interval}s" if interval is not None else str(value["mode"])
    return "yes" if value is True else "" if value in (None, False) else str(value)


def _polling(mode: str | None, interval_seconds: int | None) -> dict[str, Any] | None:
    """The `polling` member for `--polling` and `--poll-interval`; None when neither was given."""
    if mode is None and interval_seconds is None:
        return None
    polling: dict[str, Any] = {"interval_seconds": interval_seconds}
    if mode is not None:
        polling["mode"] = mode
    return polling


def _secret(value: str | None) -> str | None:
    # `--secret -` reads it from standard input, out of the shell history and the process list.
    if value == "-":
        return sys.stdin.readline().strip() or None
    return value
