"""The emulator's aiohttp application and the `Emulator` that serves it on loopback.

    async with Emulator() as emu:                       # 127.0.0.1, a free port, this loop
        emu.register_client("xero", "app", "secret")
        access, refresh = emu.issue_grant("xero")
        ... POST emu.token_url("xero") ...
        assert emu.refreshes("xero") == 1

Modules add their routes through `setup(app)`; data-API modules join `ROUTE_MODULES` later.
"""

import asyncio
import socket
from types import ModuleType, TracebackType

from aiohttp import web

from provider_auth.providers import Provider

from . import (
    admin,
    connections,
    freshbooks_api,
    netsuite_api,
    quickbooks_api,
    sage_intacct_api,
    tokens,
    xero_api,
    zoho_books_api,
)
from .core import STATE_KEY, STOPPING_KEY
from .state import Clock, EmulatorState

ROUTE_MODULES: tuple[ModuleType, ...] = (
    admin,
    tokens,
    connections,
    quickbooks_api,
    xero_api,
    zoho_books_api,
    freshbooks_api,
    sage_intacct_api,
    netsuite_api,
)


def build_app(state: EmulatorState) -> web.Application:
    """An aiohttp application playing every provider, backed by `state`."""
    app = web.Application()
    app[STATE_KEY] = state
    app[STOPPING_KEY] = asyncio.Event()
    for module in ROUTE_MODULES:
        module.setup(app)
    return app


class Emulator(EmulatorState):
    """The provider emulator: its state and controls (see `EmulatorState`) plus an HTTP server.

    `start()` serves on `host` at `port` (0: a free port) inside the running event loop;
    `stop()` ends it, cutting short any held (lost) responses and injected latency.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.host = host
        self.port = port
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> "Emulator":
        """Start serving; returns self."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        app = build_app(self)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            await runner.cleanup()
            raise
        await web.SockSite(runner, sock).start()
        self.port = int(sock.getsockname()[1])
        self._app, self._runner = app, runner
        return self

    async def stop(self) -> None:
        """Stop serving (idempotent). State stays readable for assertions."""
        if self._runner is None or self._app is None:
            return
        self._app[STOPPING_KEY].set()
        runner, self._runner, self._app = self._runner, None, None
        await runner.cleanup()

    async def __aenter__(self) -> "Emulator":
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """`http://host:port` of the running emulator."""
        if self._runner is None:
            raise RuntimeError("the emulator is not running")
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        """An absolute URL for a path on the emulator."""
        return self.base_url + path

    def token_url(self, provider: str | Provider) -> str:
        """The provider's token endpoint."""
        return self.url(tokens.token_path(provider))

    def revoke_url(self, provider: str | Provider) -> str:
        """The provider's revocation endpoint (Xero also has `connections_url`)."""
        return self.url(tokens.revoke_path(provider))

    def connections_url(self, connection_id: str | None = None) -> str:
        """Xero's connections list, or one connection (for DELETE)."""
        path = connections.CONNECTIONS_PATH + (f"/{connection_id}" if connection_id else "")
        return self.url(path)
