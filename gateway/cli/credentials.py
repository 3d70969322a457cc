"""`ledgerhook credentials ...` and `ledgerhook keys ...`.

`credentials put ID` hands OAuth tokens over through the admin API, exactly as
`PUT /admin/v1/connections/{id}/credentials` does; the JSON body is read from a file or standard
input, never from the command line (where it would sit in shell history and process lists).
`credentials show ID` prints the credential state (never a token).
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from gateway.cli.admin_client import AdminClient, AdminError, default_token, default_url

__all__ = ["add_parsers", "run_credentials", "run_keys"]


def _read_body(args: argparse.Namespace) -> dict[str, Any]:
    source = sys.stdin.read() if args.file in (None, "-") else Path(args.file).read_text()
    try:
        body = orjson.loads(source)
    except orjson.JSONDecodeError:
        raise ValueError("the credentials must be a JSON object") from None
    if not isinstance(body, dict):
        raise ValueError("the credentials must be a JSON object")
    return body


async def _credentials(args: argparse.Namespace, body: dict[str, Any] | None) -> Any:
    async with AdminClient(args.url or default_url(), default_token()) as client:
        path = f"/connections/{args.id}/credentials"
        if body is None:
            return await client._call("GET", path)
        return await client._call("PUT", path, body)


def run_credentials(args: argparse.Namespace) -> int:
    """`ledgerhook credentials put|show`."""
    import asyncio

    try:
        body = _read_body(args) if args.action == "put" else None
        state = asyncio.run(_credentials(args, body))
    except AdminError as exc:
        print(f"ledgerhook credentials {args.action}: {exc.describe()}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"ledgerhook credentials {args.action}: {exc}", file=sys.stderr)
        return 2
    print(orjson.dumps(state, option=orjson.OPT_INDENT_2).decode())
    return 0


def run_keys(args: argparse.Namespace) -> int:
    """`ledgerhook keys generate|rotate`."""
    from gateway.cli.keys import generate_entry, run_rotate
    from gateway.settings import load_settings

    if args.action == "generate":
        try:
            print(generate_entry(args.id))
        except ValueError as exc:
            print(f"ledgerhook keys generate: {exc}", file=sys.stderr)
            return 2
        return 0
    settings = load_settings()
    if settings.encryption_keys is None:
        print("ledgerhook keys rotate: LEDGERHOOK_ENCRYPTION_KEYS is not set", file=sys.stderr)
        return 2
    report = run_rotate(
        settings.database_url.get_secret_value(), settings.encryption_keys.get_secret_value(), args.batch_size
    )
    print(
        f"re-encrypted under key {report.key_id!r}: {report.grants_reencrypted} OAuth grants, "
        f"{report.connections_reencrypted} connections' webhook secrets"
    )
    if report.done:
        print("nothing is left under another key: older keys can be removed from LEDGERHOOK_ENCRYPTION_KEYS")
        return 0
    print(
        f"still under other keys: {report.grants_left} grants, {report.connections_left} connections "
        "(rows busy during the pass); run it again",
        file=sys.stderr,
    )
    return 1


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the `credentials` and `keys` commands to the `ledgerhook` parser."""
    credentials = commands.add_parser("credentials", help="hand over or inspect a connection's OAuth tokens")
    actions = credentials.add_subparsers(dest="action", required=True, metavar="ACTION")
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("id", help="connection id")
    target.add_argument(
        "--url", default=None, help="gateway URL (default: LEDGERHOOK_ADMIN_URL or http://127.0.0.1:8000)"
    )
    put = actions.add_parser(
        "put",
        parents=[target],
        help="store tokens: a JSON object {access_token, refresh_token, expires_in|expires_at, ...}",
    )
    put.add_argument("--file", default=None, help="read the JSON from this file (default: standard input)")
    actions.add_parser("show", parents=[target], help="the credential state (never a token)")
    credentials.set_defaults(func=run_credentials)

    keys = commands.add_parser(
        "keys", help="encryption key ring: generate a key, re-encrypt under the newest"
    )
    key_actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = key_actions.add_parser("generate", help="print a new key ring entry `kid:base64key`")
    generate.add_argument("--id", default="k1", help="the key id (letters, digits, - and _)")
    rotate = key_actions.add_parser(
        "rotate", help="re-encrypt every stored secret under the first key of LEDGERHOOK_ENCRYPTION_KEYS"
    )
    rotate.add_argument("--batch-size", type=int, default=500)
    keys.set_defaults(func=run_keys)
