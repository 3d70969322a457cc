"""`ledgerhook dev` as a real process in a terminal's place: signals go to its process group, as a
terminal sends Ctrl-C; what it prints, its exit code, `/readyz`, `/metrics`, and that it leaves
nothing running."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.dev import samples
from gateway.dev.embedded import free_port, port_in_use
from gateway.dev.secrets import DEV_SECRETS

LEDGERHOOK = [sys.executable, "-m", "gateway.cli"]
BANNER = "Ledgerhook dev stack is up"
QUICKBOOKS_REALM = "9341453908000000"


class Dev:
    """One `ledgerhook dev` in a session of its own (the terminal's foreground process group), with
    free ports and its output in files (a pipe read only at the end could fill up and stall it)."""

    def __init__(self, folder: Path, *flags: str, data_dir: Path | None = None) -> None:
        self.port, self.kafka_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir or folder / "state"
        self._stdout, self._stderr = folder / f"dev-{self.port}.out", folder / f"dev-{self.port}.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERHOOK_")}
        with self._stdout.open("w") as stdout, self._stderr.open("w") as stderr:
            self.process = subprocess.Popen(
                [
                    *LEDGERHOOK,
                    "dev",
                    *("--port", str(self.port), "--kafka-port", str(self.kafka_port)),
                    *("--data-dir", str(self.data_dir), *flags),
                ],
                env=env,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )

    def ctrl_c(self) -> None:
        """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, (
                f"dev exited ({self.process.returncode}) before {what}:\n{self.stderr}"
            )
            assert time.monotonic() < deadline, f"{what} did not happen in {timeout:.0f}s:\n{self.stderr}"
            time.sleep(0.01)

    def readyz(self) -> tuple[int, dict[str, Any]] | None:
        """`/readyz`'s status and body; None while nothing answers."""
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=2) as response:  # noqa: S310 - loopback
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), json.loads(error.read())
        except OSError:
            return None

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.base + path, timeout=5) as response:  # noqa: S310 - loopback
            return str(response.read().decode())

    def exit_code(self, timeout: float = 60) -> int:
        return self.process.wait(timeout)

    @property
    def stdout(self) -> str:
        return self._stdout.read_text()

    @property
    def stderr(self) -> str:
        return self._stderr.read_text()

    def assert_left_nothing(self) -> None:
        """No PostgreSQL of its data folder and no broker of its port run; the port is free."""
        assert processes_with(str(self.data_dir)) == []
        assert processes_with(f"tcp://127.0.0.1:{self.kafka_port}") == []
        assert not port_in_use("127.0.0.1", self.kafka_port)
        assert not port_in_use("127.0.0.1", self.port)

    def assert_no_traceback(self) -> None:
        assert "Traceback" not in self.stdout + self.stderr

    def kill(self) -> None:
        """Kill it whatever state it is in, and what it started (a failed test leaves nothing)."""
        if self.process.poll() is None:
            self.ctrl_c()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for process in processes_with(str(self.data_dir)):
            process.kill()


def processes_with(text: str) -> list[psutil.Process]:
    """Running processes (not zombies) whose command line holds `text`."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] != psutil.STATUS_ZOMBIE and text in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def json_log_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("{")]


def log_messages(text: str) -> list[str]:
    return [json.loads(line)["message"] for line in json_log_lines(text)]


# --- one stack, started once, shared by the tests that do not stop it ----------------------------


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Dev, list[tuple[int, dict[str, Any]]]]]:
    """A dev stack logging at INFO, and each change of its `/readyz` answer, polled from the start
    until the first 200."""
    dev = Dev(tmp_path_factory.mktemp("dev"), "--log-level", "info")
    seen: list[tuple[int, dict[str, Any]]] = []

    def ready() -> bool:
        answer = dev.readyz()
        if answer is not None and (not seen or seen[-1] != answer):
            seen.append(answer)
        return answer is not None and answer[0] == 200

    try:
        dev.wait_until(ready, "/readyz answering 200")
        yield dev, seen
    finally:
        dev.kill()


def test_readyz_answers_200_only_once_the_fanout_worker_has_its_partitions(
    running: tuple[Dev, list[tuple[int, dict[str, Any]]]],
) -> None:
    dev, seen = running
    # Before: 503, naming what is not ready yet (the consumer group's first join takes a moment).
    assert seen[0][0] == 503
    assert seen[0][1]["checks"]["fanout"] == "starting"
    for status, body in seen:
        assert (status == 200) == all(state == "ok" for state in body["checks"].values()), body
    assert seen[-1] == (
        200,
        {
            "status": "ready",
            "checks": {"broker": "ok", "database": "ok", "fanout": "ok", "change-poller": "ok"},
        },
    )
    # The banner comes once ready, after the start-up log lines (the fan-out worker's assignment
    # included), so it stays in view.
    dev.wait_until(lambda: BANNER in dev.stderr, "the banner")
    before_banner = dev.stderr.split(BANNER)[0]
    for started in ("fan-out worker started", "change poller started", "Application startup complete."):
        assert started in log_messages(before_banner)
    assert any(m.startswith("Setting newly assigned partitions") for m in log_messages(before_banner))


def test_metrics_carry_the_gateway_and_the_worker(
    running: tuple[Dev, list[tuple[int, dict[str, Any]]]],
) -> None:
    dev, _ = running
    sample = samples.signed_quickbooks(
        samples.quickbooks_cloudevents(QUICKBOOKS_REALM), DEV_SECRETS["quickbooks_verifier_tokens"]
    )
    request = urllib.request.Request(  # noqa: S310 - loopback
        dev.base + "/webhooks/quickbooks", data=sample.body, headers=sample.headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        assert response.status == 200

    def value(text: str, name: str, **labels: str) -> float:
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and labels.items() <= s.labels.items()
        )

    # The fan-out worker running in `dev` consumed it: its counter is on the gateway's /metrics.
    dev.wait_until(
        lambda: (
            value(dev.get("/metrics"), "ledgerhook_fanout_records_consumed_total", provider="quickbooks") == 1
        ),
        "the fan-out worker's metric",
        timeout=30,
    )
    text = dev.get("/metrics")
    assert value(text, "ledgerhook_webhook_requests_total", provider="quickbooks", outcome="stored") == 1
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(families) == len(set(families))  # each metric once: one token manager, one registry
    for name in (
        "ledgerhook_fanout_batch_seconds",
        "ledgerhook_token_refresh_seconds",
        "ledgerhook_poll_watermark_lag_seconds",
    ):
        assert name in families


def test_a_second_dev_on_the_same_data_folder_is_refused(
    running: tuple[Dev, list[tuple[int, dict[str, Any]]]], tmp_path: Path
) -> None:
    first, _ = running
    second = Dev(tmp_path, data_dir=first.data_dir)
    assert second.exit_code(30) == 2
    assert second.stderr.strip() == (
        f"ledgerhook dev: the data folder {first.data_dir} is in use by another ledgerhook dev "
        f"(pid {first.process.pid}); stop that one, or choose another folder with --data-dir."
    )
    # It started nothing of its own.
    assert processes_with(f"tcp://127.0.0.1:{second.kafka_port}") == []
    assert not port_in_use("127.0.0.1", second.kafka_port) and not port_in_use("127.0.0.1", second.port)
    # The first one is untouched: still ready, its database still serving the admin API.
    assert first.readyz() == (
        200,
        {
            "status": "ready",
            "checks": {"broker": "ok", "database": "ok", "fanout": "ok", "change-poller": "ok"},
        },
    )
    request = urllib.request.Request(  # noqa: S310 - loopback
        first.base + "/admin/v1/connections",
        headers={"authorization": f"Bearer {DEV_SECRETS['admin_tokens']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        assert response.status == 200


def test_ctrl_c_stops_the_gateway_and_worker_then_the_broker_then_postgres(
    running: tuple[Dev, list[tuple[int, dict[str, Any]]]],
) -> None:
    # Last of the shared stack's tests: it stops it.
    dev, _ = running
    dev.ctrl_c()
    assert dev.exit_code(60) == 0
    dev.assert_no_traceback()
    # No errors on the way out, nor a word from the Kafka clients (the broker outlived them).
    lines = [json.loads(line) for line in json_log_lines(dev.stderr)]
    assert [line for line in lines if line["level"] == "error"] == []
    assert [
        line for line in lines if line["level"] == "warning" and line["logger"].startswith("aiokafka")
    ] == []
    messages = log_messages(dev.stderr)
    order = ["Finished server process", "fan-out worker stopped", "broker stopped", "PostgreSQL stopped"]
    found = [next(i for i, m in enumerate(messages) if m.startswith(wanted)) for wanted in order]
    assert found == sorted(found), messages[-15:]
    dev.assert_left_nothing()


# --- start-up, stop and crash, each with a stack of its own ---------------------------------------


def holds_its_data_folder(dev: Dev) -> bool:
    """The lock file names the process: it handles its signals from before that."""
    lock = dev.data_dir / "dev.lock"
    return lock.exists() and lock.read_text().strip() == str(dev.process.pid)


def starting_postgres(dev: Dev) -> bool:
    """initdb runs (a new folder), or the server is starting."""
    return (dev.data_dir / "postgres.initdb").exists() or (
        dev.data_dir / "postgres" / "postmaster.pid"
    ).exists()


def broker_listening(dev: Dev) -> bool:
    return port_in_use("127.0.0.1", dev.kafka_port)


def serving_not_ready(dev: Dev) -> bool:
    """The gateway answers; the fan-out worker is still joining its group."""
    answer = dev.readyz()
    assert answer is None or answer[0] == 503, answer
    return answer is not None


@pytest.mark.parametrize(
    ("point", "sig"),
    [
        (holds_its_data_folder, signal.SIGINT),
        (starting_postgres, signal.SIGINT),
        (broker_listening, signal.SIGTERM),  # as a service manager stops it: like the first Ctrl-C
        (serving_not_ready, signal.SIGINT),
    ],
    ids=["right-away", "postgres-starting", "broker-started-sigterm", "waiting-for-ready"],
)
def test_a_signal_during_start_up_stops_everything(
    tmp_path: Path, point: Callable[[Dev], bool], sig: int
) -> None:
    dev = Dev(tmp_path)
    try:
        dev.wait_until(lambda: point(dev), point.__name__)
        os.killpg(dev.process.pid, sig)
        assert dev.exit_code(60) == 0
        dev.assert_no_traceback()
        # Quiet by default: nothing at all (it never got to its banner).
        assert dev.stderr == "" and dev.stdout == ""
        dev.assert_left_nothing()
    finally:
        dev.kill()


def test_ctrl_c_right_after_ready_and_a_crashed_dev_blocks_nothing(tmp_path: Path) -> None:
    # A dev killed outright (SIGKILL: no clean-up at all) leaves its lock file and its PostgreSQL.
    crashed = Dev(tmp_path)
    try:
        crashed.wait_until(lambda: serving_not_ready(crashed), "the gateway answering")
        crashed.process.kill()
        crashed.process.wait()
        assert (crashed.data_dir / "dev.lock").exists()
        assert processes_with(str(crashed.data_dir / "postgres"))  # PostgreSQL outlived it
        # Its broker went with it (it dies with its parent).
        deadline = time.monotonic() + 10
        while port_in_use("127.0.0.1", crashed.kafka_port):
            assert time.monotonic() < deadline, "the crashed dev's broker still listens"
            time.sleep(0.05)

        # The next one starts on the same folder, takes over that PostgreSQL, and is stopped the very
        # moment it is ready (its fan-out worker just joined its group).
        dev = Dev(tmp_path, data_dir=crashed.data_dir)
        try:
            dev.wait_until(lambda: (dev.readyz() or (0, {}))[0] == 200, "/readyz answering 200")
            dev.ctrl_c()
            assert dev.exit_code(60) == 0
            dev.assert_no_traceback()
            # The default log level shows nothing but the banner (when it came out before the stop).
            assert json_log_lines(dev.stderr) == []
            assert dev.stderr.strip() == "" or dev.stderr.lstrip().startswith(BANNER)
            dev.assert_left_nothing()
        finally:
            dev.kill()
    finally:
        crashed.kill()


def test_a_second_ctrl_c_forces_the_stop(tmp_path: Path) -> None:
    dev = Dev(tmp_path)
    try:
        dev.wait_until(lambda: serving_not_ready(dev), "the gateway answering")
        dev.ctrl_c()
        time.sleep(0.1)
        dev.ctrl_c()
        forced = time.monotonic()
        # 130, as shells report an interrupted command; at once, the broker and PostgreSQL killed.
        assert dev.exit_code(30) == 130
        assert time.monotonic() - forced < 5
        dev.assert_no_traceback()
        assert dev.stderr == ""
        dev.assert_left_nothing()
    finally:
        dev.kill()
