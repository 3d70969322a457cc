"""Session cookies and CSRF tokens: signed, never holding the token, refused when touched."""

import base64
import time

import orjson

from gateway.admin.roles import Principal, Role
from gateway.console.sessions import SessionKeys

ALICE = Principal("alice", Role.ADMIN)
DIGEST = b"\x01" * 32


def test_a_cookie_reads_back_as_its_session() -> None:
    keys = SessionKeys(b"k" * 32)
    session, cookie = keys.issue(ALICE, DIGEST, 60)
    assert keys.read(cookie) == session
    assert session.principal == ALICE
    assert time.time() + 55 < session.expires_at <= time.time() + 60
    assert session.token_mac == keys.token_mac(DIGEST)


def test_another_key_or_a_touched_payload_is_refused() -> None:
    keys = SessionKeys(b"k" * 32)
    _, cookie = keys.issue(Principal("olga", Role.AUDITOR), DIGEST, 60)
    assert SessionKeys(b"x" * 32).read(cookie) is None
    payload, mac = cookie.split(".")
    fields = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields["r"] = "admin"  # promote itself
    forged = base64.urlsafe_b64encode(orjson.dumps(fields)).rstrip(b"=").decode()
    assert keys.read(f"{forged}.{mac}") is None
    assert keys.read("garbage") is None
    assert keys.read("é.é") is None


def test_sessions_of_a_random_key_differ_per_process() -> None:
    _, cookie = SessionKeys().issue(ALICE, DIGEST, 60)
    assert SessionKeys().read(cookie) is None


def test_csrf_tokens_are_tied_to_the_session() -> None:
    keys = SessionKeys(b"k" * 32)
    first, _ = keys.issue(ALICE, DIGEST, 60)
    second, _ = keys.issue(ALICE, DIGEST, 60)
    assert first.session_id != second.session_id
    token = keys.csrf_token(first.session_id)
    assert keys.csrf_valid(first.session_id, token)
    assert not keys.csrf_valid(second.session_id, token)
    assert not keys.csrf_valid(first.session_id, "")


def test_a_sign_in_nonce_is_signed() -> None:
    keys = SessionKeys(b"k" * 32)
    nonce, cookie = keys.sign_in_nonce()
    assert keys.read_sign_in_nonce(cookie) == nonce
    assert keys.read_sign_in_nonce(cookie.replace(nonce, "other")) is None
    assert SessionKeys(b"x" * 32).read_sign_in_nonce(cookie) is None
