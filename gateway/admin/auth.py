"""Bearer-token authentication of the admin API.

`Authorization: Bearer <token>` must equal one of `LEDGERHOOK_ADMIN_TOKENS` (several may be active at
once, so a token can be rotated). The presented token is compared with every configured token in
constant time (`hmac.compare_digest`, no early exit), so timing tells nothing about either. With no
token configured the admin API is disabled: every request gets 401 with a problem saying so. Tokens
are never logged. Failures answer 401 with `WWW-Authenticate: Bearer` (RFC 6750, section 3).
"""

import hmac
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admin.problems import Problem

REALM = "ledgerhook-admin"


class AdminTokens:
    """The configured admin tokens, checked in constant time."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple(token.encode() for token in tokens if token)

    @property
    def enabled(self) -> bool:
        """False when no token is configured: the admin API refuses everything."""
        return bool(self._tokens)

    def accepts(self, presented: str) -> bool:
        """True when `presented` equals any configured token."""
        try:
            candidate = presented.encode()
        except UnicodeEncodeError:
            return False
        found = False
        for token in self._tokens:
            found |= hmac.compare_digest(candidate, token)
        return found

    def problem(self, authorization: str | None) -> Problem | None:
        """None when the `Authorization` header value is accepted, else the 401 to answer."""
        if not self.enabled:
            return _unauthorized(
                "the admin API is disabled: no LEDGERHOOK_ADMIN_TOKENS are configured", error=None
            )
        if not authorization:
            return _unauthorized("send Authorization: Bearer <admin token>", error=None)
        scheme, _, token = authorization.strip().partition(" ")
        # The auth scheme name is case-insensitive (RFC 9110, section 11.1).
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized("the Authorization header must be: Bearer <admin token>", "invalid_request")
        if not self.accepts(token.strip()):
            return _unauthorized("the admin token is not valid", "invalid_token")
        return None


def _unauthorized(detail: str, error: str | None) -> Problem:
    challenge = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
    return Problem(401, detail, headers={"www-authenticate": challenge})


class RequireAdminToken:
    """ASGI middleware: only requests with an accepted admin token reach the wrapped app."""

    def __init__(self, app: ASGIApp, tokens: AdminTokens) -> None:
        self._app = app
        self._tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 401 or pass the request on."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        problem = self._tokens.problem(Headers(scope=scope).get("authorization"))
        if problem is not None:
            await problem.response()(scope, receive, send)
            return
        await self._app(scope, receive, send)
