"""A small client of the admin API, behind the commands that act on a running gateway (`connections`,
`credentials`, `redrive`, `backfill`, `sync`, `audit`, `tenants`, and `send-sample`'s connection
lookup).

The URL comes from `--url`, else `LEDGERHOOK_ADMIN_URL`, else http://127.0.0.1:8000; the token from
`LEDGERHOOK_ADMIN_TOKEN`, else the token part of the first `LEDGERHOOK_ADMIN_TOKENS` entry, else the
dev stack's default. Requests say `User-Agent: ledgerhook-cli/<version>`, so the audit trail records
their changes as `via: cli`. Errors carry the server's problem detail (a 403's names the role
needed), never the token.
"""

import os
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from gateway.dev.secrets import DEV_SECRETS
from gateway.settings import ClientSettings

CLI_USER_AGENT = "ledgerhook-cli"  # gateway.admin.roles.CLI_USER_AGENT: the prefix the gateway looks for
AUDIT_PAGE_SIZE = 200  # the most `GET /admin/v1/audit` answers at once
CONNECTIONS_PAGE_SIZE = 200  # the most `GET /admin/v1/connections` answers at once


def user_agent() -> str:
    """`ledgerhook-cli/<version>` (the installed package's version)."""
    try:
        installed = version("ledgerhook")
    except PackageNotFoundError:
        installed = "0"
    return f"{CLI_USER_AGENT}/{installed}"


class AdminError(Exception):
    """The admin API refused a request (a problem document), or could not be reached (status 0)."""

    def __init__(self, status: int, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or []

    def describe(self) -> str:
        """One line for the status and detail, one more per invalid member."""
        lines = [f"{self.status} {self}" if self.status else str(self)]
        for error in self.errors:
            where = error.get("pointer") or error.get("parameter") or ""
            lines.append(f"  {where.removeprefix('#/')}: {error.get('detail', '')}")
        return "\n".join(lines)


@dataclass
class AdminClient:
    """Calls `/admin/v1` on one gateway with one token; use as an async context manager."""

    base_url: str
    token: str = field(repr=False)
    timeout_seconds: float = 10.0
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    async def __aenter__(self) -> "AdminClient":
        self._session = aiohttp.ClientSession(
            headers={"authorization": f"Bearer {self.token}", "user-agent": user_agent()},
            timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def create(
        self,
        tenant_id: str,
        provider: str,
        provider_account_id: str,
        *,
        display_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        webhook_secret: str | None = None,
        polling: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Register a connection; the created connection."""
        body: dict[str, Any] = {
            "tenant_id": tenant_id,
            "provider": provider,
            "provider_account_id": provider_account_id,
        }
        optional = {
            "display_name": display_name,
            "metadata": metadata,
            "webhook_secret": webhook_secret,
            "polling": polling,
        }
        body |= {key: value for key, value in optional.items() if value is not None}
        return await self._call("POST", "/connections", body)  # type: ignore[no-any-return]

    async def pages(
        self,
        *,
        tenant_id: str | None = None,
        provider: str | None = None,
        status: str | None = None,
        page_size: int = CONNECTIONS_PAGE_SIZE,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every page of connections matching the filters, following the cursor, each as it comes
        (the first one even when empty); at most `page_size` per request."""
        query = {"tenant_id": tenant_id, "provider": provider, "status": status, "limit": str(page_size)}
        params = {key: value for key, value in query.items() if value is not None}
        while True:
            page = await self._call("GET", "/connections", params=params)
            yield page["data"]
            if not page["next_cursor"]:
                return
            params["cursor"] = page["next_cursor"]

    async def get(self, connection_id: str) -> dict[str, Any]:
        """One connection."""
        return await self._call("GET", f"/connections/{connection_id}")  # type: ignore[no-any-return]

    async def delete(self, connection_id: str) -> None:
        """Disconnect a connection."""
        await self._call("DELETE", f"/connections/{connection_id}")

    async def credentials(self, connection_id: str) -> dict[str, Any]:
        """A connection's credential state."""
        return await self._call("GET", f"/connections/{connection_id}/credentials")  # type: ignore[no-any-return]

    async def put_credentials(self, connection_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Hand over a connection's OAuth tokens; its credential state after."""
        path = f"/connections/{connection_id}/credentials"
        return await self._call("PUT", path, body)  # type: ignore[no-any-return]

    async def sync(self, connection_id: str) -> dict[str, Any]:
        """Where polling stands for a connection (its latest backfill included)."""
        return await self._call("GET", f"/connections/{connection_id}/sync")  # type: ignore[no-any-return]

    async def backfill(
        self, connection_id: str, since: str, entities: list[str] | None = None
    ) -> dict[str, Any]:
        """Queue a backfill of a connection; the queued job."""
        body: dict[str, Any] = {"since": since}
        if entities is not None:
            body["entities"] = entities
        path = f"/connections/{connection_id}/backfill"
        return await self._call("POST", path, body)  # type: ignore[no-any-return]

    async def redrive(self, reason: str | None = None, delivery_id: str | None = None) -> dict[str, Any]:
        """Feed quarantined deliveries back to the fan-out worker; `{"redriven": n, "skipped": m}`."""
        body = {key: value for key, value in (("reason", reason), ("delivery_id", delivery_id)) if value}
        return await self._call("POST", "/quarantine/redrive", body)  # type: ignore[no-any-return]

    async def audit_pages(
        self, filters: Mapping[str, str], *, limit: int | None, page_size: int = AUDIT_PAGE_SIZE
    ) -> AsyncIterator[dict[str, Any]]:
        """Pages of the audit trail, newest first, as the API answers them (`items`, `next`), until
        `limit` entries in all (None: every one) or the last page; at most `page_size` per request."""
        params = dict(filters)
        left = limit
        while left is None or left > 0:
            params["limit"] = str(page_size if left is None else min(page_size, left))
            page = await self._call("GET", "/audit", params=params)
            yield page
            if left is not None:
                left -= len(page["items"])
            if not page["next"]:
                return
            params["cursor"] = page["next"]

    async def erase_tenant(self, tenant_id: str) -> dict[str, Any]:
        """Erase every connection of a tenant; the counts (`connections`, `grants`, `accounts`)."""
        # Percent-encoded whole: a tenant id may hold `/`, `?`, `#` or `%` (docs/operations.md).
        path = f"/tenants/{quote(tenant_id, safe='')}"
        return await self._call("DELETE", path)  # type: ignore[no-any-return]

    async def _call(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        assert self._session is not None, "use AdminClient as an async context manager"
        url = self.base_url.rstrip("/") + "/admin/v1" + path
        data = orjson.dumps(body) if body is not None else None
        headers = {"content-type": "application/json"} if data is not None else None
        try:
            async with self._session.request(
                method, url, data=data, params=params, headers=headers
            ) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AdminError(
                0,
                f"cannot reach the gateway at {self.base_url} ({unreachable_reason(exc)}); is it running?"
                " (--url, LEDGERHOOK_ADMIN_URL)",
            ) from None
        if status == 204:
            return None
        try:
            document = orjson.loads(payload) if payload else None
        except orjson.JSONDecodeError:
            document = None
        if status >= 400:
            if isinstance(document, dict) and "detail" in document:
                raise AdminError(status, str(document["detail"]), document.get("errors"))
            raise AdminError(status, f"unexpected answer from {url}")
        return document


def unreachable_reason(exc: BaseException) -> str:
    """Why a request got no answer, in a few words (`connection refused`, `timed out`, ...)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        if isinstance(error, socket.gaierror):
            return "unknown host"
        return os.strerror(error.errno).lower() if error.errno else str(error)
    return str(exc) or type(exc).__name__


def admin_client(url: str | None, timeout_seconds: float = 10.0) -> AdminClient:
    """A client of the gateway at `url` (`--url`), else the configured one, with the configured token."""
    settings = ClientSettings()
    token = settings.fallback_admin_token() or DEV_SECRETS["admin_tokens"]
    return AdminClient(url or settings.admin_url, token, timeout_seconds)


def json_object(text: str, what: str) -> dict[str, Any]:
    """`text` parsed as a JSON object; ValueError saying `what` must be one otherwise."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return value


def pretty(document: Any) -> str:
    """A JSON document indented for reading."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
