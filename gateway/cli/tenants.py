"""`ledgerhook tenants erase TENANT_ID`: erase a tenant through `DELETE /admin/v1/tenants/{tenant_id}`,
after the tenant id is typed again (or `--yes`). What is erased and what stays: docs/operations.md,
"Erasing a tenant".
"""

import argparse
import asyncio
import sys
from collections import Counter
from typing import Any

from gateway.cli.admin_client import AdminError, admin_client

__all__ = ["run_tenants"]

# Erasing gives every connection's grant back at its provider first: give it longer than other calls.
ERASE_TIMEOUT_SECONDS = 120.0
PREFIX = "ledgerhook tenants erase"


def run_tenants(args: argparse.Namespace) -> int:
    """Run one action (`erase`)."""
    if args.action == "erase":
        return run_erase(args)
    raise AssertionError(f"no handler for tenants {args.action!r}")


def run_erase(args: argparse.Namespace) -> int:
    """Erase the tenant once confirmed; 0 erased, 1 refused, unknown or not confirmed, 2 when it
    cannot be confirmed (no terminal, no --yes), 130 on Ctrl-C."""
    tenant_id: str = args.tenant_id
    if not tenant_id.strip():
        print(f"{PREFIX}: TENANT_ID must not be blank", file=sys.stderr)
        return 2
    if not args.yes and not sys.stdin.isatty():
        print(
            f"{PREFIX}: nothing erased: standard input is not a terminal, so the tenant id cannot be"
            " typed to confirm; add --yes to erase without asking",
            file=sys.stderr,
        )
        return 2
    try:
        if not args.yes:
            connections = asyncio.run(_connections(args.url, tenant_id))
            if not connections:
                print(f"{PREFIX}: {_no_connections(tenant_id)}", file=sys.stderr)
                return 1
            if not confirm(tenant_id, connections):
                print(f"{PREFIX}: nothing erased: what was typed is not the tenant id", file=sys.stderr)
                return 1
        result = asyncio.run(_erase(args.url, tenant_id))
    except AdminError as exc:
        detail = _no_connections(tenant_id) if exc.status == 404 else exc.describe()
        print(f"{PREFIX}: {detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)  # off the prompt's line, so the shell's starts on its own
        return 130
    print(
        f"erased tenant {tenant_id!r}: {_count(result['connections'], 'connection')},"
        f" {_count(result['grants'], 'OAuth grant')} with their tokens,"
        f" polling state of {_count(result['accounts'], 'provider account')}"
    )
    return 0


def confirm(tenant_id: str, connections: list[dict[str, Any]]) -> bool:
    """Say what erasing removes and read the tenant id typed again; whether it matches."""
    statuses = Counter(str(c["status"]) for c in connections)
    providers = sorted({str(c["provider"]) for c in connections})
    said = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    print(
        f"Tenant {tenant_id!r} has {_count(len(connections), 'connection')} ({said}):"
        f" {', '.join(providers)}.\n"
        "Erasing gives their OAuth grants back to the providers, then erases the connections, their"
        " tokens, webhook secrets and sync state. It cannot be undone; events already published stay"
        ' on the topics (docs/operations.md, "Erasing a tenant").',
        file=sys.stderr,
    )
    print("Type the tenant id to erase it: ", end="", file=sys.stderr, flush=True)
    typed = sys.stdin.readline()
    if not typed:  # end of input (Ctrl-D)
        print(file=sys.stderr)
    return typed.removesuffix("\n").removesuffix("\r") == tenant_id


async def _connections(url: str | None, tenant_id: str) -> list[dict[str, Any]]:
    """Every connection of the tenant, whatever its status."""
    found: list[dict[str, Any]] = []
    async with admin_client(url) as client:
        async for page in client.pages(tenant_id=tenant_id):
            found.extend(page)
    return found


async def _erase(url: str | None, tenant_id: str) -> dict[str, Any]:
    async with admin_client(url, ERASE_TIMEOUT_SECONDS) as client:
        return await client.erase_tenant(tenant_id)


def _no_connections(tenant_id: str) -> str:
    return f"tenant {tenant_id!r} has no connections (erased already, or a different id): nothing erased"


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"
