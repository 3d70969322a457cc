"""The console's browser tests need Debian's Chromium: without it they fail under CI and are
skipped loudly elsewhere, with how to install it in pytest's summary."""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "install Debian's Chromium for the console's browser tests: sudo apt-get install chromium"
_missing: list[str] = []


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser's path; fails under CI, skips (and says so at the end) elsewhere."""
    if CHROMIUM.exists() or shutil.which("chromium"):
        return str(CHROMIUM) if CHROMIUM.exists() else str(shutil.which("chromium"))
    if os.environ.get("CI"):
        pytest.fail(f"no Chromium at {CHROMIUM}: {INSTALL}")
    _missing.append(INSTALL)
    pytest.skip(f"BROWSER TESTS NOT RUN: {INSTALL}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say loudly that the browser tests did not run."""
    if _missing:
        terminalreporter.section("console browser tests NOT RUN", sep="!", red=True, bold=True)
        terminalreporter.write_line(f"No Chromium found: {INSTALL}", red=True, bold=True)
