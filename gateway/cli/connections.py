"""`ledgerhook connections add|list|show|rm`: manage connections through the admin API."""

import argparse
import asyncio
import sys
from typing import Any

from gateway.cli.admin_client import AdminError, admin_client, json_object, pretty
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
            rows: list[dict[str, Any]] = []
            async for page in client.pages(tenant_id=args.tenant, provider=args.provider, status=args.status):
                rows.extend(page)
            return table(rows), None
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


def table(rows: list[dict[str, Any]]) -> str:
    """Connections as an aligned text table."""
    cells = [[title for title, _ in TABLE_COLUMNS]]
    for row in rows:
        cells.append([_cell(row.get(key)) for _, key in TABLE_COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(TABLE_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


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
