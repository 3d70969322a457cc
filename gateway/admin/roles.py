"""Who may do what through the admin API and the console: roles, the principal a token names, and
the actor an audit entry records.

An entry of `LEDGERHOOK_ADMIN_TOKENS` is `<role>:<name>:<token>` or a bare token; a bare token is an
`admin` named by its position (`token-1`, `token-2`, ...), so configurations from before roles keep
working. The name, never the token, is what the audit trail records (docs/admin-api.md, "Roles").
"""

import re
from dataclasses import dataclass
from enum import StrEnum

from starlette.requests import Request

__all__ = [
    "CLI_USER_AGENT",
    "PRINCIPAL_SCOPE_KEY",
    "Actor",
    "Principal",
    "Role",
    "TokenEntryError",
    "actor_of",
    "parse_token_entry",
]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class Role(StrEnum):
    """What a token may do; each role may do everything the ones before it may."""

    AUDITOR = "auditor"  # reads everything, changes nothing
    OPERATOR = "operator"  # also redrives, backfills, pauses and resumes
    ADMIN = "admin"  # also creates, deletes, and hands over credentials or secrets

    @property
    def rank(self) -> int:
        """Higher ranks include the lower ones."""
        return _RANKS[self]

    def allows(self, needed: "Role") -> bool:
        """True when this role may do what `needed` may."""
        return self.rank >= needed.rank


_RANKS = {Role.AUDITOR: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of an admin token: its configured name and role."""

    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change, as the audit trail records it: the principal, the client's address, and
    the way in (`api`, `cli` or `console`)."""

    principal: Principal
    client: str | None
    via: str


class TokenEntryError(ValueError):
    """An entry of LEDGERHOOK_ADMIN_TOKENS cannot be read; the message never repeats the token."""


def parse_token_entry(position: int, entry: str) -> tuple[Principal, str]:
    """The principal and token of the `position`th (from 1) entry of LEDGERHOOK_ADMIN_TOKENS."""
    entry = entry.strip()
    parts = entry.split(":", 2)
    if len(parts) == 3 and parts[0].isalpha():
        role_text, name, token = parts
        try:
            role = Role(role_text.lower())
        except ValueError:
            # Not echoed: it may be the start of a bare token that happens to hold two colons.
            raise TokenEntryError(
                f"entry {position}: the word before the first ':' is not a role; write"
                " <admin|operator|auditor>:<name>:<token>"
            ) from None
        if NAME.fullmatch(name) is None:
            raise TokenEntryError(
                f"entry {position}: the name must be 1-64 letters, digits, '.', '_', '@' or '-'"
            )
        if not token:
            raise TokenEntryError(f"entry {position}: the token after {role.value}:{name}: is empty")
        return Principal(name, role), token
    if not entry:
        raise TokenEntryError(f"entry {position} is empty")
    return Principal(f"token-{position}", Role.ADMIN), entry


# Where the admin API's token check leaves the principal, in the ASGI scope of the request.
PRINCIPAL_SCOPE_KEY = "ledgerhook.principal"
CLI_USER_AGENT = "ledgerhook-cli"  # the command line's User-Agent prefix: its changes are `via: cli`


def actor_of(request: Request) -> Actor:
    """The actor of an admin API request that passed the token check."""
    principal: Principal = request.scope[PRINCIPAL_SCOPE_KEY]
    via = "cli" if request.headers.get("user-agent", "").startswith(CLI_USER_AGENT) else "api"
    return Actor(principal, request.client.host if request.client else None, via)
