"""Console sessions: a signed cookie naming the principal, and the CSRF tokens tied to it.

The cookie holds the principal's name and role, its expiry, a random session id and a MAC of the
sha256 digest of the principal's admin token, all signed with HMAC-SHA256; never the token. A token
removed from or changed in LEDGERHOOK_ADMIN_TOKENS no longer matches that MAC, so its sessions end.
The sign-in form, which has no session yet, is tied to a signed nonce cookie of its own
(docs/console.md, "Sessions").
"""

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson

from gateway.admin.roles import Principal, Role

__all__ = ["SESSION_COOKIE", "SIGN_IN_COOKIE", "Session", "SessionKeys"]

SESSION_COOKIE = "ledgerhook_console"
SIGN_IN_COOKIE = "ledgerhook_console_sign_in"
SIGN_IN_SECONDS = 3600  # how long a sign-in form stays valid


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in principal, as its cookie names it."""

    principal: Principal
    expires_at: int  # unix seconds
    session_id: str
    token_mac: str  # MAC of the digest of the principal's token when it signed in


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionKeys:
    """Signs and reads session cookies and CSRF tokens with one HMAC key."""

    def __init__(self, key: bytes | None = None) -> None:
        """`key`: the configured session key; None: a random one for this process."""
        self._key = key if key is not None else secrets.token_bytes(32)

    def _mac(self, purpose: str, message: bytes) -> str:
        return _b64(hmac.new(self._key, purpose.encode() + b"\0" + message, hashlib.sha256).digest())

    def token_mac(self, token_digest: bytes) -> str:
        """The MAC a session carries of its principal's token digest."""
        return self._mac("token", token_digest)

    def issue(self, principal: Principal, token_digest: bytes, lifetime_seconds: int) -> tuple[Session, str]:
        """A new session and its cookie value."""
        session = Session(
            principal,
            int(time.time()) + lifetime_seconds,
            secrets.token_urlsafe(18),
            self.token_mac(token_digest),
        )
        payload = orjson.dumps(
            {
                "n": principal.name,
                "r": principal.role.value,
                "e": session.expires_at,
                "s": session.session_id,
                "t": session.token_mac,
            }
        )
        return session, f"{_b64(payload)}.{self._mac('session', payload)}"

    def read(self, cookie: str) -> Session | None:
        """The session a cookie value carries when its signature holds (expiry not checked), else None."""
        encoded, _, mac = cookie.partition(".")
        try:
            payload = _unb64(encoded)
        except ValueError:
            return None
        if not hmac.compare_digest(mac.encode(), self._mac("session", payload).encode()):
            return None
        try:
            fields = orjson.loads(payload)
            principal = Principal(str(fields["n"]), Role(fields["r"]))
            return Session(principal, int(fields["e"]), str(fields["s"]), str(fields["t"]))
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            return None

    def csrf_token(self, session_id: str) -> str:
        """The CSRF token of the forms of one session (or one sign-in nonce)."""
        return self._mac("csrf", session_id.encode())

    def csrf_valid(self, session_id: str, presented: str) -> bool:
        """True when `presented` is the session's CSRF token."""
        return hmac.compare_digest(presented.encode(), self.csrf_token(session_id).encode())

    def sign_in_nonce(self) -> tuple[str, str]:
        """A fresh sign-in nonce and its cookie value (signed, with an expiry)."""
        nonce = secrets.token_urlsafe(18)
        body = f"{nonce}.{int(time.time()) + SIGN_IN_SECONDS}"
        return nonce, f"{body}.{self._mac('sign-in', body.encode())}"

    def read_sign_in_nonce(self, cookie: str) -> str | None:
        """The nonce of a sign-in cookie that is genuine and not expired, else None."""
        body, _, mac = cookie.rpartition(".")
        if not body or not hmac.compare_digest(mac.encode(), self._mac("sign-in", body.encode()).encode()):
            return None
        nonce, _, expiry = body.partition(".")
        if not expiry.isdigit() or int(expiry) < time.time():
            return None
        return nonce
