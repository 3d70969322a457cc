"""`ledgerhook worker` as a real process for the tests: started with a test's settings through the
environment, read through its health port, stopped by a signal; none outlives its test."""

import asyncio
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from gateway.dev.embedded import free_port
from gateway.settings import Settings
from tests.fanout.pipeline.pipeline_support import settings_env

STARTED: list[subprocess.Popen[str]] = []


class WorkerProcess:
    """One `python -m gateway.cli worker` with the test's settings, plus `env` (`LEDGERHOOK_` names
    without the prefix). Its log goes to a file, so a chatty worker never blocks on a full pipe."""

    def __init__(self, settings: Settings, **env: str) -> None:
        self.port = free_port()
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (open as long as the process)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "worker"],
            env=settings_env(settings, WORKER_PORT=str(self.port), HOST="127.0.0.1", **env),
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            text=True,
        )
        STARTED.append(self.process)

    def get(self, path: str) -> tuple[int, str]:
        """GET a path of the worker's health port: (status, body)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples with these labels, from the worker's own /metrics (0 before
        it answers)."""
        try:
            _, text = self.get("/metrics")
        except OSError:
            return 0.0
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def logs(self) -> str:
        """What the worker wrote to stderr so far."""
        self._log.seek(0)
        return self._log.read()

    async def stop(self, sig: signal.Signals) -> int:
        """Send `sig` and wait for the exit code."""
        self.process.send_signal(sig)
        return await asyncio.to_thread(self.process.wait, 30)


def stop_every_worker() -> None:
    """Kill what a test left running (a failing test must not leave workers behind)."""
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


async def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Wait until a blocking condition (an HTTP scrape, say) holds, checking it off the event loop."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(condition):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
