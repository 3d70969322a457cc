"""Helpers of the console's browser tests and screenshots: Chromium's launch, the fan-out worker
beside the gateway (its tasks in a thread of their own, as `ledgerhook dev` runs them), coroutines
run off Playwright's thread, signed webhooks, admin API calls, and waiting on a condition."""

import asyncio
import base64
import hashlib
import hmac
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

import orjson
from aiokafka import ConsumerRecord
from playwright.sync_api import Page, expect
from prometheus_client import CollectorRegistry

from gateway.ingress.delivery import DELIVERY_ID_HEADER
from gateway.runtime.infra import open_infrastructure
from gateway.runtime.worker import running_worker_tasks
from gateway.settings import Settings
from tests.support import QUICKBOOKS_TOKENS, RunningGateway, read_topic

T = TypeVar("T")

LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_SECONDS = 30.0


def off_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end in a thread of its own: this one runs Playwright's loop."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def wait_for(
    condition: Callable[[], T | None], what: str, timeout: float = WAIT_SECONDS, interval: float = 0.1
) -> T:
    """Poll `condition` every `interval` until it returns something truthy; fail saying `what`
    after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"waited {timeout:.0f}s for {what}"
        threading.Event().wait(interval)


class WorkerThread:
    """The worker's tasks (fan-out, activity, ...) on their own infrastructure, in a thread with its
    own event loop, until the block ends; entered once its fan-out consumer has its partitions."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="console-test-worker", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __enter__ / __exit__
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with (
            open_infrastructure(self.settings) as infra,
            running_worker_tasks(self.settings, infra, self.registry) as running,
        ):
            while running.checks().get("fanout") != "ok":
                if running.done.done():
                    running.done.result()
                await asyncio.sleep(0.05)
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> "WorkerThread":
        self._thread.start()
        assert self._ready.wait(60), "the worker did not get its partitions in 60s"
        if self._failure is not None:
            raise self._failure
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._failure is not None and kind is None:
            raise self._failure


def quickbooks_body(realm: str, entity_id: str, updated: str = "2025-02-03T04:05:06.789Z") -> bytes:
    """A QuickBooks legacy notification: one invoice created in `realm`."""
    entity = {"name": "Invoice", "id": entity_id, "operation": "Create", "lastUpdated": updated}
    notification = {"realmId": realm, "dataChangeEvent": {"entities": [entity]}}
    return orjson.dumps({"eventNotifications": [notification]})


def _call(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes, Any]:
    """One loopback HTTP request: (status, body, headers), asserting a 2xx."""
    request = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback http only
        assert 200 <= response.status < 300
        return response.status, response.read(), response.headers


def post_quickbooks(gateway: RunningGateway, body: bytes) -> str:
    """POST a correctly signed QuickBooks delivery to the shared endpoint; its delivery id."""
    key = QUICKBOOKS_TOKENS[0].encode()
    signature = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
    headers = {"intuit-signature": signature, "content-type": "application/json"}
    status, _, answer = _call("POST", f"{gateway.base_url}/webhooks/quickbooks", body, headers)
    assert status == 200
    return str(answer[DELIVERY_ID_HEADER])


def admin_api(gateway: RunningGateway, token: str, method: str, path: str, body: Any = None) -> Any:
    """Call the admin API with a bearer token; the JSON answer (asserting a 2xx)."""
    _, text, _ = _call(
        method,
        f"{gateway.base_url}/admin/v1{path}",
        orjson.dumps(body) if body is not None else None,
        {"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    return orjson.loads(text) if text else None


def topic_records(settings: Settings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on `topic` now."""
    return off_thread(read_topic(settings.kafka_bootstrap_servers, topic))


def header_of(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    """A record header's value as text, or None."""
    return next((value.decode() for key, value in record.headers if key == name), None)


def sign_in(page: Page, gateway: RunningGateway, token: str) -> None:
    """Sign in through the form and land on the overview."""
    page.goto(gateway.base_url + "/console/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
