"""`ledgerhook credentials put|show` and `ledgerhook keys generate|rotate`: secrets of connections.

`credentials put ID` hands OAuth tokens over through the admin API, exactly as
`PUT /admin/v1/connections/{id}/credentials` does (docs/tokens.md); the JSON body is read from a file
or standard input, never from the command line (where it would sit in shell history and process
lists). `credentials show ID` prints the credential state (never a token). `keys` runs the key ring
chores of `gateway.cli.keys`.
"""

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from gateway.cli.admin_client import AdminError, admin_client, json_object, pretty

__all__ = ["run_credentials"]


def run_credentials(args: argparse.Namespace) -> int:
    """`ledgerhook credentials put|show`."""
    try:
        body = _read_body(args) if args.action == "put" else None
        state = asyncio.run(_credentials(args, body))
    except AdminError as exc:
        print(f"ledgerhook credentials {args.action}: {exc.describe()}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"ledgerhook credentials {args.action}: {exc}", file=sys.stderr)
        return 2
    print(pretty(state))
    return 0


def _read_body(args: argparse.Namespace) -> dict[str, Any]:
    source = sys.stdin.read() if args.file in (None, "-") else Path(args.file).read_text()
    return json_object(source, "the credentials")


async def _credentials(args: argparse.Namespace, body: dict[str, Any] | None) -> dict[str, Any]:
    async with admin_client(args.url) as client:
        if body is None:
            return await client.credentials(args.id)
        return await client.put_credentials(args.id, body)
