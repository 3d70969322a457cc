"""The event loop of Ledgerhook's long-running processes, chosen as uvicorn chooses the gateway's."""

import asyncio
import gc
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


def freeze_startup_heap() -> None:
    """Keep what exists at start-up (modules, classes, the app) out of the cyclic collector's walks.

    A full collection walks every tracked object: in the gateway, with the libraries' start-up
    objects included, each one paused the event loop for 25-35 ms, about every ten seconds under
    load, and every request in flight waited. Frozen, they are never walked (nor freed: they live as
    long as the process anyway). Call it once, in a process's main, before serving.
    """
    gc.collect()
    gc.freeze()
