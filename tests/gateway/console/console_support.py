"""Helpers of the console tests: role tokens, the console's settings, and a signed-in HTTP client
that fills in the CSRF token like a browser's form would."""

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

ADMIN = ("alice", "admin-token-alice")
OPERATOR = ("olga", "operator-token-olga")
AUDITOR = ("audrey", "auditor-token-audrey")
ADMIN_TOKENS = (
    f"admin:{ADMIN[0]}:{ADMIN[1]},operator:{OPERATOR[0]}:{OPERATOR[1]},auditor:{AUDITOR[0]}:{AUDITOR[1]}"
)
SESSION_KEY = "console-session-key-for-the-tests-0123456789"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_settings(**overrides: Any) -> dict[str, Any]:
    """The overrides that turn the console on with the three roles' tokens."""
    values: dict[str, Any] = {
        "console_enabled": True,
        "admin_tokens": ADMIN_TOKENS,
        "console_session_key": SESSION_KEY,
    }
    return values | overrides


def csrf_of(page: str) -> str:
    """The CSRF token of the first form of a page."""
    found = CSRF.search(page)
    assert found is not None, page
    return found.group(1)


class Client:
    """One browser-like visitor: a cookie jar and the console's base URL."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base = base_url

    async def get(self, path: str) -> tuple[int, str, Any]:
        async with self.http.get(self.base + path, allow_redirects=False) as response:
            return response.status, await response.text(), response.headers

    async def post(
        self, path: str, form: dict[str, str], headers: dict[str, str] | None = None
    ) -> tuple[int, str, Any]:
        async with self.http.post(
            self.base + path, data=form, headers=headers or {}, allow_redirects=False
        ) as response:
            return response.status, await response.text(), response.headers

    async def sign_in(self, token: str) -> tuple[int, str, Any]:
        """Open the sign-in form and send `token` with its CSRF token."""
        _, page, _ = await self.get("/console/sign-in")
        return await self.post("/console/sign-in", {"csrf_token": csrf_of(page), "token": token})

    async def csrf(self) -> str:
        """The CSRF token of the signed-in session (from the overview's sign-out form)."""
        status, page, _ = await self.get("/console/")
        assert status == 200, page
        return csrf_of(page)


@asynccontextmanager
async def client(base_url: str, token: str | None = None) -> AsyncIterator[Client]:
    """A visitor, signed in with `token` when given."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        visitor = Client(http, base_url)
        if token is not None:
            status, body, headers = await visitor.sign_in(token)
            assert status == 303 and headers["location"] == "/console/", body
        yield visitor
