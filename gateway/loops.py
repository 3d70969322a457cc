"""The event loop of Ledgerhook's long-running processes, chosen as uvicorn chooses the gateway's."""

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on uvloop when it is installed (uvicorn[standard] brings it on Linux
    and macOS), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
