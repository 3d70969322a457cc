"""Bearer-token authentication of the admin API, and the role check every route makes.

`Authorization: Bearer <token>` must equal the token of one `LEDGERHOOK_ADMIN_TOKENS` entry (several
may be active at once, so a token can be rotated); the entry names the principal and its role
(gateway.admin.roles). The presented token is compared with every configured token in constant time
(`hmac.compare_digest`, no early exit), so timing tells nothing about either. With no token
configured the admin API is disabled: every request gets 401 with a problem saying so. Tokens are
never logged. Failures answer 401 with `WWW-Authenticate: Bearer` (RFC 6750, section 3); a role
that falls short, 403 (docs/admin-api.md, "Roles").
"""

import hashlib
import hmac
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admin.problems import Problem
from gateway.admin.roles import PRINCIPAL_SCOPE_KEY, Principal, Role, TokenEntryError, parse_token_entry

__all__ = ["REALM", "AdminTokens", "RequireAdminToken", "forbidden", "require", "require_role"]

REALM = "ledgerhook-admin"


class AdminTokens:
    """The configured admin tokens with the principals they name, checked in constant time."""

    def __init__(self, entries: Iterable[str]) -> None:
        """`entries`: the `LEDGERHOOK_ADMIN_TOKENS` entries in order (`<role>:<name>:<token>` or a
        bare token); TokenEntryError for one that cannot be read or a name given twice."""
        self._entries: list[tuple[Principal, bytes]] = []
        names: set[str] = set()
        for position, entry in enumerate(entries, start=1):
            principal, token = parse_token_entry(position, entry)
            if principal.name in names:
                raise TokenEntryError(f"entry {position}: the name {principal.name!r} is already taken")
            names.add(principal.name)
            self._entries.append((principal, token.encode()))

    @property
    def enabled(self) -> bool:
        """False when no token is configured: the admin API refuses everything."""
        return bool(self._entries)

    def authenticate(self, presented: str) -> Principal | None:
        """The principal whose token equals `presented`, or None. Every configured token is
        compared, whatever matched before (the first match wins)."""
        try:
            candidate = presented.encode()
        except UnicodeEncodeError:
            return None
        found: Principal | None = None
        for principal, token in self._entries:
            if hmac.compare_digest(candidate, token) and found is None:
                found = principal
        return found

    def principal(self, name: str) -> Principal | None:
        """The configured principal named `name`, or None (removed since, or never configured)."""
        return next((principal for principal, _ in self._entries if principal.name == name), None)

    def digest(self, name: str) -> bytes | None:
        """SHA-256 of the token of the principal named `name`, or None: what a console session is
        bound to, so that changing or removing the token ends it."""
        token = next((token for principal, token in self._entries if principal.name == name), None)
        return None if token is None else hashlib.sha256(token).digest()

    def check(self, authorization: str | None) -> Principal | Problem:
        """The principal of the `Authorization` header value, or the 401 to answer."""
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
        principal = self.authenticate(token.strip())
        if principal is None:
            return _unauthorized("the admin token is not valid", "invalid_token")
        return principal


def _unauthorized(detail: str, error: str | None) -> Problem:
    challenge = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
    return Problem(401, detail, headers={"www-authenticate": challenge})


def forbidden(principal: Principal, needed: Role) -> Problem:
    """The 403 for a principal whose role falls short of `needed`."""
    return Problem(
        403,
        f"this needs the {needed.value} role; the token `{principal.name}` has {principal.role.value}",
    )


def require_role(principal: Principal, needed: Role) -> None:
    """Raise the 403 unless `principal`'s role includes `needed`."""
    if not principal.role.allows(needed):
        raise forbidden(principal, needed)


def require(request: Request, needed: Role) -> Principal:
    """The principal of an admin request that passed the token check; the 403 when its role falls
    short of `needed` (for decisions a handler makes after reading the request)."""
    principal: Principal = request.scope[PRINCIPAL_SCOPE_KEY]
    require_role(principal, needed)
    return principal


class RequireAdminToken:
    """ASGI middleware: only requests with an accepted admin token reach the wrapped app, with the
    token's principal at `scope[PRINCIPAL_SCOPE_KEY]`."""

    def __init__(self, app: ASGIApp, tokens: AdminTokens) -> None:
        self._app = app
        self._tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 401 or pass the request on."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        checked = self._tokens.check(Headers(scope=scope).get("authorization"))
        if isinstance(checked, Problem):
            await checked.response()(scope, receive, send)
            return
        scope[PRINCIPAL_SCOPE_KEY] = checked
        await self._app(scope, receive, send)
