"""Who is asking: the console's session check, its CSRF check, and the role a page or action needs.

Every page but sign-in needs a session; every POST needs a same-origin request (when `Origin` is
sent) and the form's CSRF token; actions need a role (docs/console.md, "Roles").
"""

import logging
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response

from gateway.admin.auth import AdminTokens
from gateway.admin.roles import Actor, Role
from gateway.console.render import ConsoleError
from gateway.console.security import same_origin
from gateway.console.sessions import SESSION_COOKIE, Session, SessionKeys
from gateway.ingress.body import read_limited

__all__ = ["CSRF_FIELD", "Gate", "SignInRequired", "Visitor"]

log = logging.getLogger("ledgerhook.console")

CSRF_FIELD = "csrf_token"
MAX_FORM_FIELDS = 200
MAX_FORM_BYTES = 65_536
Form = dict[str, str]


class SignInRequired(Exception):
    """No valid session: the visitor is sent to sign in, with why (a key of sign_in.MESSAGES)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True, slots=True)
class Visitor:
    """A signed-in visitor of one request."""

    session: Session
    csrf_token: str
    actor: Actor

    @property
    def role(self) -> Role:
        """The visitor's role."""
        return self.session.principal.role

    def may(self, needed: str) -> bool:
        """True when the visitor's role allows what `needed` (a role's name) may do."""
        return self.role.allows(Role(needed))


class Gate:
    """Checks sessions, CSRF tokens and roles."""

    def __init__(self, keys: SessionKeys, tokens: AdminTokens) -> None:
        self.keys = keys
        self._tokens = tokens

    def session(self, request: Request) -> Session:
        """The request's current session, or SignInRequired saying why there is none."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            raise SignInRequired("required")
        session = self.keys.read(cookie)
        if session is None:
            log.warning(
                "console session refused: forged or unreadable cookie", extra={"client": _client(request)}
            )
            raise SignInRequired("invalid")
        if session.expires_at <= time.time():
            raise SignInRequired("expired")
        # The token it signed in with must still be configured, unchanged, with the same role.
        current = self._tokens.principal(session.principal.name)
        digest = self._tokens.digest(session.principal.name)
        if current != session.principal or digest is None or self.keys.token_mac(digest) != session.token_mac:
            raise SignInRequired("revoked")
        return session

    def visitor(self, request: Request, needed: Role = Role.AUDITOR) -> Visitor:
        """The signed-in visitor, when the role allows `needed`; 403 otherwise."""
        session = self.session(request)
        visitor = Visitor(
            session,
            self.keys.csrf_token(session.session_id),
            Actor(session.principal, request.client.host if request.client else None, "console"),
        )
        if not visitor.role.allows(needed):
            raise ConsoleError(
                403,
                "Your role may not do this",
                f"This needs the {needed.value} role; you are signed in as {visitor.role.value}."
                " Ask an administrator, or sign in with another token.",
            )
        return visitor

    async def form(self, request: Request, needed: Role) -> tuple[Visitor, Form]:
        """The visitor and the form of a POST that passed the origin, session, CSRF and role checks."""
        check_origin(request)
        session = self.session(request)
        form = await read_form(request)
        presented = form.get(CSRF_FIELD)
        if not isinstance(presented, str) or not self.keys.csrf_valid(session.session_id, presented):
            raise csrf_refused(request)
        return self.visitor(request, needed), form


async def read_form(request: Request) -> Form:
    """The fields of a URL-encoded form (the first value of each); empty for any other body. 413
    over MAX_FORM_BYTES."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    try:
        body = await read_limited(request, MAX_FORM_BYTES)
    except ClientDisconnect:
        return {}
    if body is None:
        raise ConsoleError(413, "That form is too large", "Send less text in the form.")
    try:
        fields = parse_qsl(
            body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except ValueError:  # more than MAX_FORM_FIELDS fields
        raise ConsoleError(
            413, "That form has too many fields", "Send the form from a console page."
        ) from None
    form: Form = {}
    for name, value in fields:
        form.setdefault(name, value)
    return form


def check_origin(request: Request) -> None:
    """403 when the request comes from another origin."""
    if not same_origin(request):
        log.warning("console form refused: cross-origin post", extra={"client": _client(request)})
        raise ConsoleError(
            403,
            "This form came from another site",
            "The console only accepts forms sent from its own pages. Open the console and try again.",
        )


def csrf_refused(request: Request) -> ConsoleError:
    """The 403 for a form without its valid CSRF token."""
    log.warning("console form refused: missing or wrong CSRF token", extra={"client": _client(request)})
    return ConsoleError(
        403,
        "This form has expired",
        "The form was not sent from a current console page (its security token is missing or stale)."
        " Reload the page and send it again.",
    )


def to_sign_in(why: str) -> Response:
    """The redirect to the sign-in page, saying why."""
    return RedirectResponse(f"/console/sign-in?why={why}", status_code=303)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None
