"""The poll benchmark's provider emulator, in a process of its own.

The emulator (`gateway.dev.emulator.Emulator`) serving QuickBooks and Xero for bench/poll.py: the
benchmark's app registered with both, access tokens that outlive the run (no refresh mixes into the
figures), and every data-API request delayed by a time drawn uniformly from `--latency LOW HIGH`.
In its own process (on uvloop, as Ledgerhook's processes run) so that its CPU is not the
benchmark's nor the worker's: the worker and the bare loop are measured as clients of the same,
separate server, and the benchmark reports its CPU so a saturated emulator shows.

It prints `READY` once it serves, then takes one JSON command a line on stdin and answers `OK`:
`{"limits": {"xero": {"per_minute": null, ...}}}` sets data-API limits (`Emulator.set_api_limits`;
null lifts one). SIGTERM, SIGINT or the end of stdin stop it.

Run by bench/poll.py as `python -m bench.poll_emulator --port N --client ID:SECRET --latency 0.05 0.2`.
"""

import argparse
import asyncio
import signal
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from gateway.dev.emulator import Emulator  # noqa: E402
from gateway.runtime.loops import run_event_loop  # noqa: E402

PROVIDERS = ("quickbooks", "xero")


def apply(emulator: Emulator, command: dict[str, Any]) -> None:
    """One control command from the benchmark."""
    for provider, limits in command.get("limits", {}).items():
        emulator.set_api_limits(provider, **limits)


async def serve(args: argparse.Namespace) -> None:
    """Start the emulator, configure it, serve until stopped."""
    client_id, _, secret = args.client.partition(":")
    emulator = Emulator(host="127.0.0.1", port=args.port)
    for provider in PROVIDERS:
        emulator.register_client(provider, client_id, secret)
        emulator.set_access_ttl(provider, args.access_ttl)
        emulator.set_latency(provider, args.latency[0], up_to=args.latency[1])
    await emulator.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def on_command(line: str) -> None:
        apply(emulator, orjson.loads(line))
        print("OK", flush=True)

    def read_commands() -> None:
        # A daemon thread: a blocking read must not keep the process alive once it is told to stop.
        for line in sys.stdin:
            loop.call_soon_threadsafe(on_command, line)
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read_commands, daemon=True).start()
    print("READY", flush=True)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description="The poll benchmark's provider emulator.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client", required=True, metavar="CLIENT_ID:SECRET")
    parser.add_argument("--latency", type=float, nargs=2, default=(0.05, 0.2), metavar=("LOW", "HIGH"))
    parser.add_argument("--access-ttl", type=float, default=86_400.0)
    run_event_loop(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
