"""The console mounted in the real gateway over loopback: off unless enabled, sessions, CSRF, the
security headers on every answer, roles on every POST route, escaping of hostile strings, and a
quarantined raw body shown escaped and capped, to operators and up only."""

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from yarl import URL

from fanout.quarantine import Reason, quarantine_record
from fanout.quarantine_pending import BODY_LIMIT
from fanout.raw import H_DELIVERY_ID, H_PROVIDER
from gateway.admin.roles import Principal, Role
from gateway.console import POST_ROUTES
from gateway.console.security import CONTENT_SECURITY_POLICY
from gateway.console.sessions import SESSION_COOKIE, SessionKeys
from gateway.runtime.kafka import make_producer
from provider_auth import audit
from provider_auth.accounts.store import ConnectionStore
from provider_auth.providers import Provider
from tests.gateway.console.console_support import (
    ADMIN,
    AUDITOR,
    OPERATOR,
    SESSION_KEY,
    client,
    console_settings,
)
from tests.support import RunningGateway, running_gateway

HOSTILE = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>"


@pytest.fixture
async def gateway(settings_factory: Any) -> AsyncIterator[RunningGateway]:
    async with running_gateway(settings_factory(**console_settings())) as running:
        yield running


async def connection_of(gateway: RunningGateway, tenant: str = "acme", name: str | None = None) -> str:
    """A new QuickBooks connection of `tenant`, straight in the store."""
    pool = await asyncpg.create_pool(gateway.settings.database_url.get_secret_value(), min_size=1, max_size=1)
    try:
        created = await ConnectionStore(pool, None).create(
            tenant, Provider.QUICKBOOKS, f"realm-{time.time_ns()}", display_name=name
        )
    finally:
        await pool.close()
    return created.id


def assert_secure_headers(headers: Any) -> None:
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cache-control"] == "no-store"


async def test_the_console_is_off_unless_enabled(settings_factory: Any) -> None:
    async with running_gateway(settings_factory()) as gateway, client(gateway.base_url) as visitor:
        for path in ("/console", "/console/", "/console/sign-in", "/console/static/console.css"):
            status, _, _ = await visitor.get(path)
            assert status == 404, path


async def test_every_answer_carries_the_security_headers(gateway: RunningGateway) -> None:
    async with client(gateway.base_url) as visitor:
        for path, expected in (
            ("/console/sign-in", 200),
            ("/console/", 303),
            ("/console/no-such-page", 404),
            ("/console/static/console.css", 200),
        ):
            status, body, headers = await visitor.get(path)
            assert status == expected, (path, body)
            assert_secure_headers(headers)
        status, body, headers = await visitor.post("/console/sign-in", {})
        assert status == 403 and "Traceback" not in body
        assert_secure_headers(headers)
        status, _, headers = await visitor.get("/console")
        assert status == 307 and headers["location"] == "/console/"


async def test_signing_in_sets_a_strict_session_cookie_without_the_token(gateway: RunningGateway) -> None:
    async with client(gateway.base_url) as visitor:
        status, _, headers = await visitor.sign_in(OPERATOR[1])
        assert status == 303 and headers["location"] == "/console/"
        cookie = next(v for v in headers.getall("set-cookie") if v.startswith(SESSION_COOKIE + "="))
        attributes = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in attributes and "samesite=strict" in attributes and "path=/console" in attributes
        assert "secure" not in attributes  # plain http on loopback
        assert OPERATOR[1] not in cookie
        status, page, _ = await visitor.get("/console/")
        assert status == 200 and "olga" in page and "operator" in page


async def test_a_wrong_token_shows_the_form_again_and_is_logged_without_it(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ledgerhook.console")
    async with client(gateway.base_url) as visitor:
        status, page, headers = await visitor.sign_in("wrong-token-value")
        assert status == 401
        assert "That token was not accepted" in page
        assert SESSION_COOKIE + "=" not in " ".join(headers.getall("set-cookie", []))
        status, _, headers = await visitor.get("/console/")
        assert status == 303 and headers["location"].startswith("/console/sign-in")
    assert any("sign-in refused" in record.getMessage() for record in caplog.records)
    assert "wrong-token-value" not in caplog.text


async def test_forged_expired_and_revoked_sessions_go_back_to_sign_in(settings_factory: Any) -> None:
    settings = settings_factory(**console_settings())
    keys = SessionKeys(SESSION_KEY.encode())
    async with running_gateway(settings) as gateway, client(gateway.base_url, ADMIN[1]) as visitor:
        jar = visitor.http.cookie_jar.filter_cookies(URL(gateway.base_url + "/console/"))
        cookie = jar[SESSION_COOKIE].value
        session = keys.read(cookie)
        assert session is not None and session.principal.name == "alice"
        # Forged: signed with another key.
        async with client(gateway.base_url) as stranger:
            _, forged = SessionKeys(b"z" * 32).issue(Principal("alice", Role.ADMIN), b"d", 600)
            stranger.http.cookie_jar.update_cookies({SESSION_COOKIE: forged})
            status, _, headers = await stranger.get("/console/")
            assert status == 303 and headers["location"] == "/console/sign-in?why=invalid"
            _, page, _ = await stranger.get(headers["location"])
            assert "could not be read" in page
            # Expired: signed with the right key, past its lifetime.
            digest = gateway.app.state.admin  # the app is up; the digest is the token's sha256
            import hashlib

            _, old = keys.issue(
                Principal("alice", Role.ADMIN), hashlib.sha256(ADMIN[1].encode()).digest(), -1
            )
            del digest
            stranger.http.cookie_jar.update_cookies({SESSION_COOKIE: old})
            status, _, headers = await stranger.get("/console/")
            assert headers["location"] == "/console/sign-in?why=expired"
    # Another replica with the same key and tokens honours the session ...
    async with (
        running_gateway(settings_factory(**console_settings())) as other,
        client(other.base_url) as same,
    ):
        if True:
            same.http.cookie_jar.update_cookies({SESSION_COOKIE: cookie})
            status, page, _ = await same.get("/console/")
            assert status == 200 and "alice" in page
    # ... and one where alice's token changed ends it.
    changed = console_settings(admin_tokens="admin:alice:a-new-token-for-alice")
    async with running_gateway(settings_factory(**changed)) as rotated, client(rotated.base_url) as same:
        same.http.cookie_jar.update_cookies({SESSION_COOKIE: cookie})
        status, _, headers = await same.get("/console/")
        assert status == 303 and headers["location"] == "/console/sign-in?why=revoked"


async def test_forms_without_their_csrf_token_or_from_another_origin_are_refused(
    gateway: RunningGateway,
) -> None:
    connection_id = await connection_of(gateway)
    pause = f"/console/connections/{connection_id}/pause"
    async with client(gateway.base_url, OPERATOR[1]) as visitor:
        token = await visitor.csrf()
        status, page, _ = await visitor.post(pause, {})
        assert status == 403 and "security token" in page
        status, _, _ = await visitor.post(pause, {"csrf_token": token + "x"})
        assert status == 403
        status, _, _ = await visitor.post(pause, {"csrf_token": token}, {"origin": "http://evil.example"})
        assert status == 403
        # The sign-in form too: without its nonce cookie's token.
        async with client(gateway.base_url) as stranger:
            status, _, _ = await stranger.post("/console/sign-in", {"token": ADMIN[1]})
            assert status == 403
            status, _, _ = await stranger.post("/console/sign-in", {"token": ADMIN[1], "csrf_token": token})
            assert status == 403
        # A form of more fields than any console page sends is refused whole, with a page, not a 500.
        crowded = {f"field{n}": "x" for n in range(300)} | {"csrf_token": token}
        status, page, _ = await visitor.post(pause, crowded)
        assert status == 413 and "too many fields" in page
        # Nothing was paused; then the real form works.
        status, _, headers = await visitor.post(pause, {"csrf_token": token}, {"origin": gateway.base_url})
        assert status == 303, headers
        _, page, _ = await visitor.get(f"/console/connections/{connection_id}")
        assert "status-paused" in page


@pytest.mark.parametrize(("token", "role"), [(AUDITOR[1], Role.AUDITOR), (OPERATOR[1], Role.OPERATOR)])
async def test_every_post_route_refuses_a_role_that_falls_short(
    gateway: RunningGateway, token: str, role: Role
) -> None:
    connection_id = await connection_of(gateway)
    async with client(gateway.base_url, token) as visitor:
        csrf = await visitor.csrf()
        refused = 0
        for path, needed in POST_ROUTES.items():
            if role.allows(needed):
                continue
            url = "/console" + path.replace("{connection_id}", connection_id)
            form = {
                "csrf_token": csrf,
                "since": "2024-01-01",
                "tenant_id": "acme",
                "confirm_tenant_id": "acme",
            }
            status, page, _ = await visitor.post(url, form)
            assert status == 403, (url, page)
            assert "needs the" in page
            refused += 1
        assert refused == (len(POST_ROUTES) if role is Role.AUDITOR else 2)
        _, page, _ = await visitor.get(f"/console/connections/{connection_id}")
        assert ("<button" in page.split("</header>")[1]) is (role is not Role.AUDITOR)
        assert "Disconnect" not in page
    assert await audit_actions(gateway, connection_id) == []


async def audit_actions(gateway: RunningGateway, connection_id: str) -> list[tuple[str, str, str]]:
    pool = await asyncpg.create_pool(gateway.settings.database_url.get_secret_value(), min_size=1, max_size=1)
    try:
        rows = await audit.page(pool, audit.AuditFilters(connection_id=connection_id))
    finally:
        await pool.close()
    return [(row.action, row.actor, row.via) for row in rows]


async def test_an_operator_pauses_and_resumes_through_the_audited_methods(gateway: RunningGateway) -> None:
    connection_id = await connection_of(gateway)
    async with client(gateway.base_url, OPERATOR[1]) as visitor:
        csrf = await visitor.csrf()
        for action in ("pause", "resume"):
            status, _, headers = await visitor.post(
                f"/console/connections/{connection_id}/{action}", {"csrf_token": csrf}
            )
            assert status == 303 and headers["location"].endswith(f"?done={action}d")
        _, page, _ = await visitor.get(headers["location"])
        assert "Resumed." in page and "status-active" in page
        _, trail, _ = await visitor.get("/console/audit?actor=olga")
        assert "connection.pause" in trail and "connection.resume" in trail
    assert await audit_actions(gateway, connection_id) == [
        ("connection.resume", "olga", "console"),
        ("connection.pause", "olga", "console"),
    ]


async def test_hostile_strings_are_shown_escaped(gateway: RunningGateway) -> None:
    connection_id = await connection_of(gateway, tenant=HOSTILE, name=HOSTILE)
    async with client(gateway.base_url, ADMIN[1]) as visitor:
        # The list filtered by the hostile tenant (the session's database holds other tests' connections).
        for path in (
            f"/console/connections/{connection_id}",
            "/console/connections?tenant_id=" + quote(HOSTILE),
        ):
            status, page, _ = await visitor.get(path)
            assert status == 200
            assert "<script>alert" not in page and "<img src=x" not in page
            assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&#34;&gt;&lt;img src=x" in page
        status, page, _ = await visitor.get("/console/connections?tenant_id=" + "%3Cscript%3E")
        assert status == 200 and "<script>" not in page
        _, page, _ = await visitor.get("/console/sign-in?why=%3Cscript%3E")
        assert status == 200 and "<script>" not in page
    assert not re.search(r"<script", page)


class Markup(HTMLParser):
    """What a page is made of: its tags, every attribute value, and the text of `pre.raw`."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self.raw: list[str] = []
        self._in_raw = False
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(value or "" for _, value in attrs)
        self._in_raw = tag == "pre" and ("class", "raw") in attrs

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_raw = False

    def handle_data(self, data: str) -> None:
        if self._in_raw:
            self.raw.append(data)


async def quarantined(settings: Any, body: bytes) -> str:
    """Put a delivery with `body` and a hostile detail in quarantine; its record id."""
    record = quarantine_record(
        quarantine_topic=settings.topic_quarantine,
        source_topic=settings.topic_raw,
        partition=0,
        offset=0,
        key=b"realm",
        value=body,
        headers=[(H_DELIVERY_ID, str(uuid.uuid4()).encode()), (H_PROVIDER, b"quickbooks")],
        reason=Reason.UNPARSEABLE,
        detail=HOSTILE,
    )
    producer = make_producer(settings)
    await producer.start()
    try:
        sent = await producer.send(
            settings.topic_quarantine, record.value, key=record.key, headers=record.headers, partition=0
        )
        written = await sent
    finally:
        await producer.stop()
    return f"{written.partition}-{written.offset}"


OVER_THE_CAP = b"<b>" + b"A" * (BODY_LIMIT + 100) + b"TAIL-NEVER-SHOWN"


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b"<script>alert(1)</script>", "<script>alert(1)</script>"),
        (b'"><img src=x onerror=alert(1)>', '"><img src=x onerror=alert(1)>'),
        (b"\xff\xfe<script>alert(1)</script>\x00", "\\xff\\xfe<script>alert(1)</script>\x00"),
        (OVER_THE_CAP, OVER_THE_CAP[:BODY_LIMIT].decode()),
    ],
    ids=["script", "attribute-breakout", "not-utf-8", "over-the-cap"],
)
async def test_a_hostile_raw_body_is_shown_escaped_capped_and_never_in_an_attribute(
    gateway: RunningGateway, body: bytes, shown: str
) -> None:
    record_id = await quarantined(gateway.settings, body)
    async with client(gateway.base_url, OPERATOR[1]) as visitor:
        status, page, headers = await visitor.get(f"/console/quarantine/{record_id}")
        assert status == 200, page
        assert_secure_headers(headers)
        markup = Markup(page)
        # Escaped: the body is text inside the one <pre>, never markup of the page ...
        assert "".join(markup.raw) == shown
        assert "script" not in markup.tags and "img" not in markup.tags
        # ... and never in an attribute (nor the detail, shown escaped as text).
        assert not [value for value in markup.attributes if "alert" in value or "<" in value]
        assert HOSTILE not in page
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&#34;&gt;&lt;img src=x" in page
        # Capped: the first BODY_LIMIT bytes, and the page says so.
        assert "TAIL-NEVER-SHOWN" not in page
        assert ("first part shown" in page) is (body is OVER_THE_CAP)
        assert ("not all UTF-8" in page) is body.startswith(b"\xff")
        # The list shows the detail escaped, never the body.
        _, listing, _ = await visitor.get("/console/quarantine")
        assert f'href="/console/quarantine/{record_id}"' in listing
        listed = Markup(listing)
        assert "script" not in listed.tags and "img" not in listed.tags and "pre" not in listed.tags
        assert not [value for value in listed.attributes if "alert" in value or "<" in value]
        assert listing.count("alert(1)") == 1  # the escaped detail's; no body


async def test_raw_bodies_are_for_operators_and_up(gateway: RunningGateway) -> None:
    record_id = await quarantined(gateway.settings, b'{"secret-ish": "body"}')
    async with client(gateway.base_url, AUDITOR[1]) as auditor:
        status, page, _ = await auditor.get(f"/console/quarantine/{record_id}")
        assert status == 403 and "needs the operator role" in page
        assert "secret-ish" not in page
        # Its list names the delivery without a link to the body, and offers no action.
        status, listing, _ = await auditor.get("/console/quarantine")
        assert status == 200 and "unparseable" in listing
        assert f"/console/quarantine/{record_id}" not in listing
        assert "<button" not in listing.split("</header>")[1]
    async with client(gateway.base_url, ADMIN[1]) as admin:
        status, page, _ = await admin.get(f"/console/quarantine/{record_id}")
        assert status == 200 and "secret-ish" in page
