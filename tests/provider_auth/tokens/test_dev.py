"""`ledgerhook dev --emulator` as a developer uses it: tokens handed over through the admin API are
refreshed ahead of expiry, and a revoked grant shows up in `ledgerhook tail ledgerhook.account-events`."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from gateway.dev.embedded import free_port

LEDGERHOOK = [sys.executable, "-m", "gateway.cli"]
ADMIN = {"authorization": "Bearer dev-admin-token", "content-type": "application/json"}


def request(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    data = orjson.dumps(body) if body is not None else None
    call = urllib.request.Request(url, data=data, headers=headers or {}, method=method)  # noqa: S310
    with urllib.request.urlopen(call, timeout=10) as response:  # noqa: S310 - loopback http only
        payload = response.read()
    return orjson.loads(payload) if payload else None


def ready(url: str) -> bool:
    return bool(request("GET", url + "/readyz"))


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, urllib.error.URLError):
            result = None
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def test_dev_emulator_refreshes_ahead_and_reports_a_revoked_grant(tmp_path: Path) -> None:
    port, kafka_port, emulator_port = free_port(), free_port(), free_port()
    base, emulator = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{emulator_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERHOOK_")}
    env["LEDGERHOOK_TOKEN_REFRESH_INTERVAL_SECONDS"] = "0.5"  # a quicker demo than the dev default of 5 s
    dev = subprocess.Popen(
        [
            *LEDGERHOOK,
            "dev",
            "--emulator",
            "--port",
            str(port),
            "--kafka-port",
            str(kafka_port),
            "--emulator-port",
            str(emulator_port),
            "--data-dir",
            str(tmp_path / "state"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: ready(base), 90, "the dev stack")
        connection = request(
            "POST",
            f"{base}/admin/v1/connections",
            {"tenant_id": "acme", "provider": "xero", "provider_account_id": "org-1"},
            ADMIN,
        )
        # Short-lived access tokens (the emulator's control surface), so the refresh comes quickly.
        request("POST", f"{emulator}/_emulator/config", {"provider": "xero", "access_ttl": 6})
        grant = request("POST", f"{emulator}/_emulator/grants", {"provider": "xero", "accounts": ["org-1"]})
        credentials = f"{base}/admin/v1/connections/{connection['id']}/credentials"
        stored = request(
            "PUT",
            credentials,
            {"access_token": grant["access_token"], "refresh_token": grant["refresh_token"], "expires_in": 6},
            ADMIN,
        )
        assert stored["status"] == "active" and stored["refreshed_at"] is None

        def refreshed() -> Any:
            state = request("GET", credentials, headers=ADMIN)
            return state if state["refreshed_at"] else None

        state = wait_for(refreshed, 20, "a proactive refresh")
        assert state["access_token_expires_at"] > stored["access_token_expires_at"]
        counters = request("GET", f"{emulator}/_emulator/counters")
        assert counters["xero"]["events"]["refresh"] >= 1

        request("POST", f"{emulator}/_emulator/revoke", {"provider": "xero", "token": grant["grant_id"]})
        wait_for(
            lambda: request("GET", credentials, headers=ADMIN)["status"] == "needs_reauth", 20, "needs_reauth"
        )
        tail = subprocess.run(
            [
                *LEDGERHOOK,
                "tail",
                "ledgerhook.account-events",
                "--bootstrap",
                f"127.0.0.1:{kafka_port}",
                "--no-follow",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert tail.returncode == 0, tail.stderr
        assert tail.stdout.count("integrated_account:authentication_error") == 1
        assert '"reason": "invalid_grant"' in tail.stdout and connection["id"] in tail.stdout
        assert grant["refresh_token"] not in tail.stdout
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(30)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()
    assert grant["refresh_token"] not in (dev.stderr.read() if dev.stderr else "")
