"""Signing in and out of the console: an admin token becomes a session cookie.

The sign-in form is protected like every other form: its CSRF token is tied to a signed nonce
cookie, since there is no session yet. A refused token is logged without the token, and the form
says only that it was refused (docs/console.md, "Signing in").
"""

import contextlib
import logging

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.admin.auth import AdminTokens
from gateway.admin.roles import Role
from gateway.console.gate import CSRF_FIELD, Gate, SignInRequired, check_origin, csrf_refused, read_form
from gateway.console.render import Templates
from gateway.console.sessions import SESSION_COOKIE, SIGN_IN_COOKIE, SIGN_IN_SECONDS

__all__ = ["MESSAGES", "SignIn"]

log = logging.getLogger("ledgerhook.console")

# Why the sign-in page is shown; only these fixed texts appear, never text from the request.
MESSAGES = {
    "required": "Sign in with an admin token to use the console.",
    "invalid": "Your session could not be read. Sign in again.",
    "expired": "Your session has expired. Sign in again.",
    "revoked": "Your session ended: its token was changed or removed. Sign in with a current token.",
    "signed-out": "You are signed out.",
}
REFUSED = "That token was not accepted. Check it and try again."
MAX_TOKEN_CHARS = 4096


class SignIn:
    """The sign-in page, and signing in and out."""

    def __init__(self, gate: Gate, tokens: AdminTokens, templates: Templates, session_seconds: int) -> None:
        self._gate = gate
        self._tokens = tokens
        self._templates = templates
        self._seconds = session_seconds

    def form(self, request: Request, message: str | None = None, status: int = 200) -> Response:
        """The sign-in form, with a fresh nonce cookie its CSRF token is tied to."""
        nonce, cookie = self._gate.keys.sign_in_nonce()
        if message is None:
            message = MESSAGES.get(request.query_params.get("why", ""))
        response = self._templates.page(
            "sign_in.html",
            status,
            visitor=None,
            message=message,
            refused=status != 200,
            csrf_token=self._gate.keys.csrf_token(nonce),
        )
        _set_cookie(response, request, SIGN_IN_COOKIE, cookie, SIGN_IN_SECONDS)
        return response

    async def page(self, request: Request) -> Response:
        """`GET /console/sign-in`; a visitor already signed in goes to the overview."""
        try:
            self._gate.session(request)
        except SignInRequired:
            return self.form(request)
        return RedirectResponse("/console/", status_code=303)

    async def sign_in(self, request: Request) -> Response:
        """`POST /console/sign-in`: the session cookie and the overview, or the form again."""
        check_origin(request)
        form = await read_form(request)
        nonce = self._gate.keys.read_sign_in_nonce(request.cookies.get(SIGN_IN_COOKIE, ""))
        presented = form.get(CSRF_FIELD)
        if (
            nonce is None
            or not isinstance(presented, str)
            or not self._gate.keys.csrf_valid(nonce, presented)
        ):
            raise csrf_refused(request)
        token = form.get("token")
        token = token.strip() if isinstance(token, str) else ""
        principal = self._tokens.authenticate(token) if 0 < len(token) <= MAX_TOKEN_CHARS else None
        digest = self._tokens.digest(principal.name) if principal is not None else None
        if principal is None or digest is None:
            client = request.client.host if request.client else None
            log.warning("console sign-in refused", extra={"client": client})
            return self.form(request, REFUSED, status=401)
        _, cookie = self._gate.keys.issue(principal, digest, self._seconds)
        log.info("console sign-in", extra={"principal": principal.name, "role": principal.role.value})
        response = RedirectResponse("/console/", status_code=303)
        _set_cookie(response, request, SESSION_COOKIE, cookie, self._seconds)
        response.delete_cookie(SIGN_IN_COOKIE, path="/console")
        return response

    async def sign_out(self, request: Request) -> Response:
        """`POST /console/sign-out`: the session cookie is cleared."""
        with contextlib.suppress(SignInRequired):  # signed out already: cleared all the same
            await self._gate.form(request, Role.AUDITOR)
        response = RedirectResponse("/console/sign-in?why=signed-out", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/console", httponly=True, samesite="strict")
        return response


def _set_cookie(response: Response, request: Request, name: str, value: str, seconds: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=seconds,
        path="/console",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
