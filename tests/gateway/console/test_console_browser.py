"""The console in a real browser (Playwright driving Debian's Chromium) against the real gateway
with a fan-out worker beside it: sign in, find a connection, pause and resume it; redrive a
quarantined delivery and see its event on the changes topic; discard one and see it never redriven;
an auditor sees no buttons and gets 403 when it posts anyway; a forged form without the CSRF token is
refused; a session expires. One browser and one stack for the module."""

import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import orjson
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from fanout.raw import H_DELIVERY_ID, H_REDRIVE_COUNT
from gateway.dev.embedded import EmbeddedBroker
from provider_auth.accounts.store import ConnectionStore
from provider_auth.providers import Provider
from tests.gateway.console.browser_support import (
    LAUNCH_ARGS,
    WorkerThread,
    admin_api,
    header_of,
    off_thread,
    post_quickbooks,
    quickbooks_body,
    sign_in,
    topic_records,
    wait_for,
)
from tests.gateway.console.console_support import ADMIN, AUDITOR, OPERATOR, console_settings
from tests.support import RunningGateway, gateway_in_thread, make_settings

SHORT_SESSION_SECONDS = 10  # the setting's least


@pytest.fixture(scope="module")
def stack(postgres_url: str, broker: EmbeddedBroker) -> Iterator[RunningGateway]:
    settings = make_settings(
        postgres_url,
        broker.bootstrap,
        **console_settings(
            worker_group_id=f"console-{uuid.uuid4().hex[:8]}",
            worker_session_timeout_ms=1000,  # the dev broker holds a join for half the session timeout
        ),
    )
    with gateway_in_thread(settings) as running, WorkerThread(settings):
        yield running


@pytest.fixture(scope="module")
def short_sessions(postgres_url: str, broker: EmbeddedBroker) -> Iterator[RunningGateway]:
    """A second gateway whose console sessions last a few seconds (no worker: only signing in)."""
    settings = make_settings(
        postgres_url, broker.bootstrap, **console_settings(console_session_seconds=SHORT_SESSION_SECONDS)
    )
    with gateway_in_thread(settings) as running:
        yield running


@pytest.fixture(scope="module")
def browser(chromium: str, stack: RunningGateway, short_sessions: RunningGateway) -> Iterator[Browser]:
    # After the gateways: Playwright's sync API runs a loop of its own in this thread.
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def connection(stack: RunningGateway, tenant: str) -> str:
    async def create() -> str:
        pool = await asyncpg.create_pool(
            stack.settings.database_url.get_secret_value(), min_size=1, max_size=1
        )
        try:
            made = await ConnectionStore(pool, None).create(
                tenant, Provider.XERO, f"xero-{time.time_ns()}", display_name=f"{tenant} books"
            )
        finally:
            await pool.close()
        return made.id

    return off_thread(create())


def quarantined(stack: RunningGateway, delivery_id: str) -> dict[str, Any]:
    """Wait until the worker quarantined the delivery; its pending record (the admin API's view)."""

    def pending() -> dict[str, Any] | None:
        page = admin_api(stack, OPERATOR[1], "GET", "/quarantine?reason=unknown_account&limit=200")
        return next((item for item in page["items"] if item["delivery_id"] == delivery_id), None)

    return wait_for(pending, f"delivery {delivery_id} in quarantine")


def redriven_copies(stack: RunningGateway, delivery_id: str) -> list[str]:
    """The redrive counts of the raw records a redrive fed back for the delivery."""
    counts = []
    for record in topic_records(stack.settings, stack.settings.topic_raw):
        count = header_of(record, H_REDRIVE_COUNT)
        if header_of(record, H_DELIVERY_ID) == delivery_id and count is not None:
            counts.append(count)
    return counts


def new_realm() -> str:
    return str(uuid.uuid4().int)[:12]


def test_an_operator_finds_a_connection_and_pauses_and_resumes_it(page: Page, stack: RunningGateway) -> None:
    tenant = f"tenant-{time.time_ns()}"
    connection(stack, tenant)
    sign_in(page, stack, OPERATOR[1])
    page.get_by_role("link", name="Connections").click()
    page.get_by_label("Tenant").fill(tenant)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=tenant).click()
    expect(page.get_by_role("heading", name=f"{tenant} books")).to_contain_text("active")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_contain_text("Paused.")
    expect(page.get_by_role("heading", name=f"{tenant} books")).to_contain_text("paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_contain_text("Resumed.")
    expect(page.locator("table").last).to_contain_text("connection.resume")
    # An operator may not disconnect: the admin's links are not shown.
    expect(page.get_by_role("link", name="Disconnect…")).to_have_count(0)


def test_an_operator_redrives_a_quarantined_delivery_and_its_event_appears(
    page: Page, stack: RunningGateway
) -> None:
    # A QuickBooks delivery for a realm nobody connected: the worker quarantines it.
    realm = new_realm()
    body = quickbooks_body(realm, "4021")
    delivery_id = post_quickbooks(stack, body)
    quarantined(stack, delivery_id)
    sign_in(page, stack, OPERATOR[1])
    page.get_by_role("link", name="Quarantine", exact=True).click()
    row = page.locator("main tbody tr").filter(has_text=realm)
    expect(row).to_contain_text("unknown_account")
    expect(row).to_contain_text(f"no connection for quickbooks account '{realm}'")
    row.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Quarantined delivery")).to_be_visible()
    expect(page.locator("pre.raw")).to_have_text(body.decode())
    # The admin registers the connection it was for; the operator redrives it from the console.
    tenant = f"tenant-{time.time_ns()}"
    created = admin_api(
        stack,
        ADMIN[1],
        "POST",
        "/connections",
        {"tenant_id": tenant, "provider": "quickbooks", "provider_account_id": realm},
    )
    page.get_by_role("button", name="Redrive", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Redriven.")
    expect(page.locator("main tbody tr").filter(has_text=realm)).to_have_count(0)

    def published() -> Any:
        records = topic_records(stack.settings, stack.settings.topic_changes)
        return next((r for r in records if r.key == created["id"].encode()), None)

    event = wait_for(published, "the redriven delivery's change event")
    assert header_of(event, "ce_type") == "accounting.invoice.created"
    assert header_of(event, "ce_tenantid") == tenant
    assert orjson.loads(event.value)["delivery_id"] == delivery_id
    assert redriven_copies(stack, delivery_id) == ["1"]
    # The trail says who redrove it, from where.
    page.get_by_role("link", name="Audit", exact=True).click()
    newest = page.locator("main tbody tr").first
    expect(newest).to_contain_text("quarantine.redrive")
    expect(newest).to_contain_text("olga")
    expect(newest).to_contain_text(f"delivery_id: {delivery_id}")


def test_a_discarded_delivery_leaves_the_page_and_is_never_redriven(
    page: Page, stack: RunningGateway
) -> None:
    realm = new_realm()
    delivery_id = post_quickbooks(stack, quickbooks_body(realm, "77"))
    record = quarantined(stack, delivery_id)
    sign_in(page, stack, OPERATOR[1])
    page.goto(f"{stack.base_url}/console/quarantine?reason=unknown_account")
    page.locator("main tbody tr").filter(has_text=realm).get_by_role("button", name="Discard").click()
    expect(page.get_by_role("status")).to_contain_text("Discarded.")
    expect(page.locator("main tbody tr").filter(has_text=realm)).to_have_count(0)
    page.goto(f"{stack.base_url}/console/quarantine/{record['id']}")
    expect(page.get_by_role("heading", name="No such quarantined delivery")).to_be_visible()
    # Its connection is registered and every pending unknown_account delivery redriven: not this one.
    created = admin_api(
        stack,
        ADMIN[1],
        "POST",
        "/connections",
        {"tenant_id": f"tenant-{time.time_ns()}", "provider": "quickbooks", "provider_account_id": realm},
    )
    page.goto(f"{stack.base_url}/console/quarantine?reason=unknown_account")
    page.get_by_role("button", name="Redrive all unknown_account").click()
    expect(page.get_by_role("status")).to_contain_text("Redriven.")
    assert redriven_copies(stack, delivery_id) == []
    # A new delivery for the realm is published; the discarded one never is.
    fresh = post_quickbooks(stack, quickbooks_body(realm, "78"))

    def published() -> list[Any]:
        records = topic_records(stack.settings, stack.settings.topic_changes)
        return [r for r in records if r.key == created["id"].encode()]

    [event] = wait_for(published, "the new delivery's change event")
    assert orjson.loads(event.value)["delivery_id"] == fresh
    # Record ids are positions in the topic, which other tests' stacks share: the newest entry is ours.
    trail = admin_api(stack, AUDITOR[1], "GET", f"/audit?target=quarantine:{record['id']}&limit=1")
    [newest] = trail["items"]
    assert (newest["actor"], newest["action"], newest["via"]) == ("olga", "quarantine.discard", "console")


def test_an_auditor_sees_no_buttons_and_is_refused_when_posting_anyway(
    page: Page, stack: RunningGateway
) -> None:
    tenant = f"tenant-{time.time_ns()}"
    connection_id = connection(stack, tenant)
    sign_in(page, stack, AUDITOR[1])
    page.goto(f"{stack.base_url}/console/connections/{connection_id}")
    expect(page.get_by_role("heading", name=f"{tenant} books")).to_be_visible()
    expect(page.locator("main button")).to_have_count(0)
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    # The auditor's own session and CSRF token, posting a form the page does not offer.
    answer = page.request.post(
        f"{stack.base_url}/console/connections/{connection_id}/pause",
        form={"csrf_token": token},
        headers={"origin": stack.base_url},
        max_redirects=0,
    )
    assert answer.status == 403
    assert "needs the operator role" in answer.text()


def test_a_forged_form_without_the_csrf_token_is_refused(page: Page, stack: RunningGateway) -> None:
    connection_id = connection(stack, f"tenant-{time.time_ns()}")
    sign_in(page, stack, ADMIN[1])
    page.goto(f"{stack.base_url}/console/connections/{connection_id}")
    form = page.locator(f"form[action='/console/connections/{connection_id}/pause']")
    form.locator("input[name=csrf_token]").evaluate("input => input.remove()")
    form.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("heading", name="This form has expired")).to_be_visible()
    page.goto(f"{stack.base_url}/console/connections/{connection_id}")
    expect(page.locator("main h1")).to_contain_text("active")


def test_a_session_expires(page: Page, short_sessions: RunningGateway) -> None:
    signing_in = time.monotonic()
    sign_in(page, short_sessions, ADMIN[1])
    audit = short_sessions.base_url + "/console/audit"

    def asks_to_sign_in() -> bool:
        page.goto(audit)
        return page.get_by_role("heading", name="Sign in").is_visible()

    wait_for(asks_to_sign_in, "the session to expire", timeout=SHORT_SESSION_SECONDS + 10, interval=0.5)
    # Not before its lifetime (the cookie's Max-Age; the server, counting whole seconds, refuses it
    # past its expiry too: test_console_http), and then the console asks for the token again.
    assert time.monotonic() - signing_in >= SHORT_SESSION_SECONDS - 1
    expect(page.get_by_role("link", name="Audit")).to_have_count(0)
    page.get_by_label("Admin token").fill(ADMIN[1])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
