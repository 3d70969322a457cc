"""Screenshots of the console's pages for docs/console/ (docs/console.md, "Screenshots").

Not part of the suite (its name is not `test_*.py`); a developer reruns it after changing a page:

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/gateway/console/take_screenshots.py

It runs the gateway and a fan-out worker on a database of its own, registers connections of several
providers and statuses through the admin API, posts QuickBooks deliveries (published, and one for a
realm nobody connected, quarantined), writes three hours of per-minute activity through the activity
recorder, pauses a connection from the console, and photographs each page at 1280 pixels wide.
"""

import asyncio
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from playwright.sync_api import Page, expect, sync_playwright
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.dev.embedded import EmbeddedBroker
from gateway.runtime.activity import ActivityRecorder
from provider_auth.accounts.store import ConnectionStatus, ConnectionStore
from tests.gateway.console.browser_support import (
    LAUNCH_ARGS,
    WorkerThread,
    admin_api,
    off_thread,
    post_quickbooks,
    quickbooks_body,
    sign_in,
    topic_records,
    wait_for,
)
from tests.gateway.console.console_support import ADMIN, OPERATOR, console_settings
from tests.paths import REPO_ROOT
from tests.support import RunningGateway, fresh_database, gateway_in_thread, make_settings

OUT = REPO_ROOT / "docs" / "console"
WIDTH = 1280
ACME_REALM = "9130354521863546"
CONNECTIONS = [
    # tenant, provider, provider account, display name
    ("acme", "quickbooks", ACME_REALM, "Acme Trading Ltd"),
    ("acme", "xero", "b7d2e2a4-5c1f-4a8e-9d3b-2f6c1e0a9b71", "Acme Trading (UK)"),
    ("globex", "xero", "3f1c9a70-1d2e-4b5c-8a9f-0e7d6c5b4a39", "Globex Corporation"),
    ("initech", "netsuite", "TSTDRV2214957", "Initech"),
    ("umbrella", "zoho-books", "60012345678", "Umbrella Health"),
    ("hooli", "freshbooks", "k4W9qp", "Hooli"),
    ("stark", "sage-intacct", "stark-industries", "Stark Industries"),
]


@pytest.fixture(scope="module")
def database_url(postgres_url: str) -> Iterator[str]:
    """A database of the screenshots' own, so the pages count only what is made here."""
    entered: asyncio.Queue[str] = asyncio.Queue()
    done = asyncio.Event()

    async def hold() -> None:
        async with fresh_database(postgres_url, "screens") as url:
            entered.put_nowait(url)
            await done.wait()

    loop = asyncio.new_event_loop()
    task = loop.create_task(hold())
    url = loop.run_until_complete(entered.get())
    yield url
    done.set()
    loop.run_until_complete(task)
    loop.close()


@pytest.fixture(scope="module")
def stack(database_url: str, broker: EmbeddedBroker) -> Iterator[RunningGateway]:
    settings = make_settings(
        database_url,
        broker.bootstrap,
        **console_settings(
            worker_group_id=f"screens-{uuid.uuid4().hex[:8]}",
            worker_session_timeout_ms=1000,
            public_base_url="https://ledgerhook.example.com",
        ),
    )
    with gateway_in_thread(settings) as running, WorkerThread(settings):
        yield running


def register(stack: RunningGateway) -> dict[str, str]:
    """The connections, through the admin API (audited); by tenant and provider."""
    ids = {}
    for tenant, provider, account, name in CONNECTIONS:
        made = admin_api(
            stack,
            ADMIN[1],
            "POST",
            "/connections",
            {"tenant_id": tenant, "provider": provider, "provider_account_id": account, "display_name": name},
        )
        ids[f"{tenant}/{provider}"] = made["id"]
    admin_api(stack, ADMIN[1], "DELETE", f"/connections/{ids['hooli/freshbooks']}")

    async def needs_reauth() -> None:
        pool = await asyncpg.create_pool(
            stack.settings.database_url.get_secret_value(), min_size=1, max_size=1
        )
        try:
            store = ConnectionStore(pool, None)
            await store.update(ids["umbrella/zoho-books"], status=ConnectionStatus.NEEDS_REAUTH)
        finally:
            await pool.close()

    off_thread(needs_reauth())
    return ids


def deliver(stack: RunningGateway, acme: str) -> None:
    """Deliveries for Acme's realm (published) and one for a realm nobody connected (quarantined)."""
    for number in range(1, 5):
        post_quickbooks(stack, quickbooks_body(ACME_REALM, str(1040 + number)))
    unknown = post_quickbooks(stack, quickbooks_body("4620816365212474", "77"))

    def settled() -> bool:
        events = topic_records(stack.settings, stack.settings.topic_changes)
        page = admin_api(stack, OPERATOR[1], "GET", "/quarantine")
        return len([e for e in events if e.key == acme.encode()]) >= 4 and any(
            item["delivery_id"] == unknown for item in page["items"]
        )

    wait_for(settled, "the deliveries' events and the quarantined one")


def history(stack: RunningGateway) -> None:
    """Three hours of per-minute activity, written through the recorder as a worker would."""

    async def write() -> None:
        registry = CollectorRegistry()
        stored = Counter("ledgerhook_webhook_requests", "", ["outcome"], registry=registry)
        published = Counter("ledgerhook_fanout_events_published", "", registry=registry)
        quarantined = Counter("ledgerhook_fanout_quarantined", "", ["reason"], registry=registry)
        refreshes = Counter("ledgerhook_token_refreshes", "", ["outcome"], registry=registry)
        lag = Gauge("ledgerhook_poll_watermark_lag_seconds", "", registry=registry)
        pool = await asyncpg.create_pool(
            stack.settings.database_url.get_secret_value(), min_size=1, max_size=1
        )
        try:
            recorder = ActivityRecorder(pool, registry)
            now = datetime.now(UTC)
            for ago in range(180, 0, -1):
                wave = 1 + math.sin(ago / 19) * 0.45 + math.sin(ago / 5) * 0.12
                stored.labels("stored").inc(round(24 * wave))
                published.inc(round(37 * wave))
                if ago % 41 == 0:
                    quarantined.labels("unknown_account").inc(1 + ago % 3)
                if ago in (96, 97, 131):
                    refreshes.labels("invalid_grant").inc()
                lag.set(45 + 40 * abs(math.sin(ago / 23)))
                await recorder.flush(now - timedelta(minutes=ago))
        finally:
            await pool.close()

    off_thread(write())


def shoot(page: Page, path: str, name: str, heading: Any, full_page: bool = True) -> None:
    """The page at `path`, once `heading` shows; the whole page, or the first screen of a long one."""
    page.goto(path)
    expect(heading(page)).to_be_visible()
    page.screenshot(path=OUT / name, full_page=full_page)


def test_take_screenshots(chromium: str, stack: RunningGateway) -> None:
    ids = register(stack)
    deliver(stack, ids["acme/quickbooks"])
    history(stack)
    OUT.mkdir(parents=True, exist_ok=True)
    base = stack.base_url + "/console"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        # The operator pauses a connection from the console (an audit entry `via: console`).
        operator = browser.new_context(viewport={"width": WIDTH, "height": 800})
        page = operator.new_page()
        sign_in(page, stack, OPERATOR[1])
        page.goto(f"{base}/connections/{ids['initech/netsuite']}")
        page.get_by_role("button", name="Pause").click()
        expect(page.get_by_role("status")).to_contain_text("Paused.")
        operator.close()
        # The admin sees every page with every action.
        admin = browser.new_context(viewport={"width": WIDTH, "height": 800})
        page = admin.new_page()
        sign_in(page, stack, ADMIN[1])
        shoot(page, f"{base}/", "overview.png", lambda p: p.get_by_role("heading", name="Overview"))
        shoot(
            page,
            f"{base}/connections",
            "connections.png",
            lambda p: p.get_by_role("heading", name="Connections"),
        )
        shoot(
            page,
            f"{base}/connections/{ids['acme/quickbooks']}",
            "connection.png",
            lambda p: p.get_by_role("heading", name="Acme Trading Ltd"),
        )
        shoot(page, f"{base}/quarantine", "quarantine.png", lambda p: p.locator("main tbody tr").first)
        # The trail is long: its first screen (the newest entries) keeps the image small.
        page.set_viewport_size({"width": WIDTH, "height": 1000})
        shoot(
            page, f"{base}/audit", "audit.png", lambda p: p.get_by_role("heading", name="Audit trail"), False
        )
        admin.close()
        browser.close()
    for name in ("overview", "connections", "connection", "quarantine", "audit"):
        assert (OUT / f"{name}.png").stat().st_size > 10_000, name
