"""The package as a user installs it: a wheel, in a fresh virtual environment, run outside the checkout.

Proves the wheel carries what `ledgerhook dev --emulator` needs at run time (the provider emulator,
the migrations, the console script), since nothing can come from the source tree. To stay fast and
offline, the fresh environment sees this environment's third-party packages through a `.pth` file
instead of downloading them again; pip still resolves the wheel's declared dependencies against
them (`--no-index`), and every module of ours is imported from the installed wheel.
"""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from gateway.dev.embedded import free_port, port_in_use
from gateway.dev.emulator_setup import DEV_CLIENT_ID, DEV_CLIENT_SECRET
from tests.paths import REPO_ROOT

# What a clone has that a wheel build must not see (caches, environments, earlier builds).
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".ledgerhook",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
)
# Entries of this environment's site-packages the fresh one must not see: our own packages (the
# editable install of the checkout), and the installers it has its own copies of.
NOT_DEPENDENCIES = ("ledgerhook", "__editable__", "gateway", "fanout", "provider_auth", "pip", "setuptools")


def run(*command: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; fails the test with its output when it fails."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def clean_env() -> dict[str, str]:
    """The environment without anything that would point Python or Ledgerhook at the checkout."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("LEDGERHOOK_")}


def build_wheel(tmp_path: Path) -> Path:
    """`pip wheel` of a copy of the checkout (an in-tree build would write into the checkout)."""
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_SOURCE, symlinks=True)
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, source, cwd=tmp_path)
    (wheel,) = dist.glob("ledgerhook-*.whl")
    return wheel


def fresh_environment(tmp_path: Path) -> tuple[Path, Path]:
    """A new virtual environment seeing this one's third-party packages; (its bin dir, site-packages)."""
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
        ).stdout.strip()
    )
    dependencies = tmp_path / "dependencies"
    dependencies.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.suffix == ".pth" or entry.name.startswith(NOT_DEPENDENCIES):
            continue
        (dependencies / entry.name).symlink_to(entry)
    (purelib / "ledgerhook-test-dependencies.pth").write_text(f"{dependencies}\n")
    return venv / "bin", purelib


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    """GET `url`: (status, body); any HTTP status is an answer, a connection failure raises OSError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback http only
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST `body` to `url`: (status, decoded JSON answer)."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback http only
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Wait until `url` answers 200 while `process` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"ledgerhook dev exited early:\n{log.read_text()[-4000:]}"
        try:
            if get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} never answered 200:\n{log.read_text()[-4000:]}")


def test_the_wheel_installs_and_runs_dev_with_the_emulator(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    bin_dir, purelib = fresh_environment(tmp_path)
    # A wheel, not the checkout: pip resolves its dependencies from what is there, and installs it.
    run(bin_dir / "python", "-m", "pip", "install", "--no-index", "--quiet", wheel, cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    located = run(
        bin_dir / "python",
        "-c",
        "import gateway.dev.emulator, gateway.runtime.migrate, fanout, provider_auth;"
        "print(gateway.dev.emulator.__file__, gateway.runtime.migrate.__file__, fanout.__file__,"
        " provider_auth.__file__)",
        cwd=elsewhere,
    ).stdout.split()
    assert len(located) == 4 and all(Path(path).is_relative_to(purelib) for path in located), located
    migrations = purelib / "gateway" / "runtime" / "migrations"
    assert sorted(path.name for path in migrations.glob("*.sql")), "the migrations are not in the wheel"

    usage = run(bin_dir / "ledgerhook", "--help", cwd=elsewhere).stdout
    assert "dev" in usage and "serve" in usage

    port, kafka_port, emulator_port = free_port(), free_port(), free_port()
    log = tmp_path / "dev.log"
    with log.open("wb") as output:
        dev = subprocess.Popen(
            [
                str(bin_dir / "ledgerhook"),
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
            cwd=elsewhere,
            env=clean_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz", dev, log)
            emulator = f"http://127.0.0.1:{emulator_port}"
            status, health = get(f"{emulator}/_emulator/health")
            assert status == 200 and "xero" in json.loads(health)["providers"]
            # The emulator's token endpoint refreshes a grant seeded for the dev app.
            status, grant = post(f"{emulator}/_emulator/grants", b'{"provider": "xero"}', {})
            assert status == 200, grant
            basic = base64.b64encode(f"{DEV_CLIENT_ID}:{DEV_CLIENT_SECRET}".encode()).decode()
            form = urllib.parse.urlencode(
                {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
            )
            status, tokens = post(
                f"{emulator}/xero/oauth/token",
                form.encode(),
                {"authorization": f"Basic {basic}", "content-type": "application/x-www-form-urlencoded"},
            )
            assert (
                status == 200 and tokens["access_token"] and tokens["refresh_token"] != grant["refresh_token"]
            )
        finally:
            dev.send_signal(signal.SIGINT)
            try:
                code = dev.wait(60)
            except subprocess.TimeoutExpired:
                dev.kill()
                raise
    output_text = log.read_text()
    # `ledgerhook dev` stops cleanly on Ctrl-C and exits 0 (`gateway.dev.stack.run_dev`).
    assert code == 0, output_text[-4000:]
    assert "Traceback" not in output_text
    assert not port_in_use("127.0.0.1", port) and not port_in_use("127.0.0.1", emulator_port)
