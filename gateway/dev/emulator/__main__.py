"""Run the provider emulator on its own: `python -m gateway.dev.emulator --port 8900`.

Seed it from the command line (`--client xero=app-id:app-secret`, `--grant xero=app-id:refresh-token`)
or later over HTTP (see admin.py). It prints its URLs, then serves until SIGINT or SIGTERM.
"""

import argparse
import asyncio
import signal
import sys

from .admin import ADMIN_PREFIX
from .app import Emulator
from .profiles import emulated_providers


def _pair(value: str) -> tuple[str, str, str]:
    provider, sep, rest = value.partition("=")
    first, sep2, second = rest.partition(":")
    if not (sep and sep2 and provider and first and second):
        raise argparse.ArgumentTypeError(f"expected PROVIDER=A:B, got {value!r}")
    return provider, first, second


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m gateway.dev.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    parser.add_argument(
        "--client",
        type=_pair,
        action="append",
        default=[],
        metavar="PROVIDER=CLIENT_ID:SECRET",
        help="register an app with a provider (repeatable)",
    )
    parser.add_argument(
        "--grant",
        type=_pair,
        action="append",
        default=[],
        metavar="PROVIDER=CLIENT_ID:REFRESH_TOKEN",
        help="seed a grant with a known refresh token (repeatable)",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Start, seed, print the URLs, and serve until told to stop."""
    emulator = Emulator(host=args.host, port=args.port)
    for provider, client_id, secret in args.client:
        emulator.register_client(provider, client_id, secret)
    for provider, client_id, refresh_token in args.grant:
        emulator.issue_grant(provider, client_id, refresh_token=refresh_token)
    await emulator.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"provider emulator listening on {emulator.base_url}")
    for provider in emulated_providers():
        print(f"  {provider.value:<13} token {emulator.token_url(provider)}")
        print(f"  {'':<13} revoke {emulator.revoke_url(provider)}")
    print(f"  {'xero':<13} connections {emulator.connections_url()}")
    print(f"  {'quickbooks':<13} cdc {emulator.url('/quickbooks/v3/company/{realm}/cdc')}")
    print(f"  {'xero':<13} lists {emulator.url('/xero/api.xro/2.0/{Invoices,Contacts,...}')}")
    controls = (
        "/health | /counters | /clients | /grants | /revoke | /config | /books/{provider}/{account}[/changes]"
    )
    print(f"  admin         {emulator.url(ADMIN_PREFIX)}{controls}")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        sys.exit(f"provider emulator: cannot listen on {args.host}:{args.port}: {exc}")


if __name__ == "__main__":
    main()
