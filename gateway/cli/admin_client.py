"""A small client of the admin API, behind `ledgerhook connections ...`.

The URL comes from `--url`, else `LEDGERHOOK_ADMIN_URL`, else http://127.0.0.1:8000; the token from
`LEDGERHOOK_ADMIN_TOKEN`, else the first of `LEDGERHOOK_ADMIN_TOKENS`, else the dev stack's default.
Errors carry the server's problem detail, never the token.
"""

import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from gateway.dev.stack import DEV_SECRETS

DEFAULT_URL = "http://127.0.0.1:8000"
TABLE_COLUMNS = (
    ("ID", "id"),
    ("TENANT", "tenant_id"),
    ("PROVIDER", "provider"),
    ("ACCOUNT", "provider_account_id"),
    ("STATUS", "status"),
    ("SECRET", "has_webhook_secret"),
    ("NAME", "display_name"),
)


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


def default_url() -> str:
    """`LEDGERHOOK_ADMIN_URL`, or the local gateway."""
    return os.environ.get("LEDGERHOOK_ADMIN_URL") or DEFAULT_URL


def default_token() -> str:
    """`LEDGERHOOK_ADMIN_TOKEN`, else the first of `LEDGERHOOK_ADMIN_TOKENS`, else the dev default."""
    if token := os.environ.get("LEDGERHOOK_ADMIN_TOKEN", "").strip():
        return token
    configured = [part.strip() for part in os.environ.get("LEDGERHOOK_ADMIN_TOKENS", "").split(",")]
    return next((part for part in configured if part), DEV_SECRETS["ADMIN_TOKENS"])


@dataclass
class AdminClient:
    """Calls `/admin/v1` on one gateway with one token; use as an async context manager."""

    base_url: str
    token: str = field(repr=False)
    timeout_seconds: float = 10.0
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    async def __aenter__(self) -> "AdminClient":
        self._session = aiohttp.ClientSession(
            headers={"authorization": f"Bearer {self.token}"},
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
    ) -> dict[str, Any]:
        """Register a connection; the created connection."""
        body: dict[str, Any] = {
            "tenant_id": tenant_id,
            "provider": provider,
            "provider_account_id": provider_account_id,
        }
        optional = {"display_name": display_name, "metadata": metadata, "webhook_secret": webhook_secret}
        body |= {key: value for key, value in optional.items() if value is not None}
        return await self._call("POST", "/connections", body)  # type: ignore[no-any-return]

    async def pages(
        self, *, tenant_id: str | None = None, provider: str | None = None, status: str | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every page of connections matching the filters, following the cursor."""
        query = {"tenant_id": tenant_id, "provider": provider, "status": status, "limit": "200"}
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
            raise AdminError(0, f"cannot reach {self.base_url}: {exc or type(exc).__name__}") from None
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


def table(rows: list[dict[str, Any]]) -> str:
    """Connections as an aligned text table."""
    cells = [[title for title, _ in TABLE_COLUMNS]]
    for row in rows:
        cells.append(
            [
                "yes" if row.get(key) is True else "" if row.get(key) in (None, False) else str(row[key])
                for _, key in TABLE_COLUMNS
            ]
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(TABLE_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


async def run_connections(args: Any) -> str:
    """`ledgerhook connections add|list|show|rm`: what to print, or AdminError / ValueError."""
    async with AdminClient(args.url or default_url(), default_token()) as client:
        if args.action == "add":
            metadata = _metadata(args.metadata)
            created = await client.create(
                args.tenant,
                args.provider,
                args.account,
                display_name=args.name,
                metadata=metadata,
                webhook_secret=_secret(args.secret),
            )
            return _pretty(created)
        if args.action == "list":
            rows: list[dict[str, Any]] = []
            async for page in client.pages(tenant_id=args.tenant, provider=args.provider, status=args.status):
                rows.extend(page)
            return table(rows)
        if args.action == "show":
            return _pretty(await client.get(args.id))
        if args.action == "rm":
            await client.delete(args.id)
            return f"disconnected {args.id}"
    raise ValueError(f"unknown action {args.action!r}")


def _secret(value: str | None) -> str | None:
    # `--secret -` reads it from standard input, out of the shell history and the process list.
    if value == "-":
        return sys.stdin.readline().strip() or None
    return value


def _metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError("--metadata must be a JSON object") from None
    if not isinstance(value, dict):
        raise ValueError("--metadata must be a JSON object")
    return value


def _pretty(document: Any) -> str:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
