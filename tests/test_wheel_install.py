"""The package as the image installs it: a wheel, in a fresh virtual environment, run outside the checkout.

The wheel is built the way the Dockerfile's build stage builds it (its COPY instructions replayed
from the build context, then `pip wheel --no-deps`) and installed once, with the image's extras only,
not editable, into a fresh virtual environment both tests share; nothing can come from the source tree.
To stay fast and offline, that environment sees this environment's copies of the wheel's runtime
dependencies (and nothing else) through a `.pth` file: pip resolves the wheel's declared dependencies
against them (`--no-index`), so a module of ours importing an undeclared package fails here. Once
installed, the environment is made read-only (`chmod -R a-w`), as the image's root filesystem is.
"""

import asyncio
import base64
import email.parser
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway.dev import samples
from gateway.dev.embedded import EmbeddedBroker, free_port, port_in_use
from gateway.dev.emulator_setup import DEV_CLIENT_ID, DEV_CLIENT_SECRET
from provider_auth.vault import KeyRing
from tests.fanout.pipeline.pipeline_support import expected_id, read_records, validate_data, version_of
from tests.support import QUICKBOOKS_TOKENS, fresh_database
from tests.test_image_recipe import (
    IMAGE_EXTRAS,
    VENV,
    image_command,
    image_entrypoint,
    image_environment,
    replay_build_context,
)

# Entries of this environment's site-packages the fresh one must not see: our own packages (the
# editable install of the checkout), and the installers it has its own copies of.
NOT_DEPENDENCIES = ("ledgerhook", "__editable__", "gateway", "fanout", "provider_auth", "pip", "setuptools")
# The image's user and group (Dockerfile USER, the chart's runAsUser and runAsGroup).
IMAGE_UID = 10001
# The PATH of the official Python images, which the Dockerfile's ENV PATH extends.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ADMIN_TOKEN = "image-admin-token"
MIGRATIONS = Path("gateway", "runtime", "migrations")


@dataclass(frozen=True)
class Installed:
    """The wheel installed in its fresh virtual environment."""

    root: Path
    venv: Path
    bin_dir: Path
    purelib: Path
    # This environment's other packages (the `dev` extra's among them), for `ledgerhook dev` alone.
    dev_dependencies: Path


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


def build_wheel(root: Path) -> Path:
    """The Dockerfile's build stage up to its wheel: the build context laid out as its COPY
    instructions lay it out, then `python -m pip wheel --no-deps --wheel-dir <dist> .` in it."""
    workdir = replay_build_context(root / "context")
    dist = root / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", dist, ".", cwd=workdir)
    (wheel,) = dist.glob("ledgerhook-*.whl")
    return wheel


def runtime_distributions(wheel: Path) -> list[importlib.metadata.Distribution]:
    """The distributions the wheel needs at run time, as installed here: its requirements with the
    image's extras (IMAGE_EXTRAS), and theirs (with the extras asked for), transitively."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [entry for entry in archive.namelist() if entry.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    pending = [
        (Requirement(line), frozenset(IMAGE_EXTRAS)) for line in metadata.get_all("Requires-Dist") or []
    ]
    found: dict[str, importlib.metadata.Distribution] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement, asked = pending.pop()
        if requirement.marker and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in ("", *asked)
        ):
            continue
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        distribution = importlib.metadata.distribution(requirement.name)
        found[key[0]] = distribution
        pending.extend((Requirement(line), key[1]) for line in distribution.requires or [])
    return list(found.values())


def link_entries(directory: Path, entries: set[Path]) -> Path:
    """`directory` holding a symlink to each of `entries`."""
    directory.mkdir()
    for entry in entries:
        (directory / entry.name).symlink_to(entry)
    return directory


def top_level_entries(distribution: importlib.metadata.Distribution) -> set[Path]:
    """The packages, modules and metadata a distribution installed into site-packages."""
    tops = {file.parts[0] for file in distribution.files or []}
    return {
        Path(str(distribution.locate_file(top)))
        for top in tops
        if top not in ("..", "__pycache__") and not top.endswith(".pth")
    }


def set_writable(tree: Path, writable: bool) -> None:
    """`chmod -R a-w tree` (or `u+w` back), leaving symlinks alone."""
    for directory, _, files in os.walk(tree):
        for path in (Path(directory), *(Path(directory) / name for name in files)):
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            path.chmod(mode | 0o200 if writable else mode & ~0o222)


def snapshot(tree: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under `tree` with its mode, size and modification time."""
    entries = {}
    for directory, names, files in os.walk(tree):
        for name in (*names, *files):
            path = Path(directory) / name
            status = path.lstat()
            entries[str(path.relative_to(tree))] = (status.st_mode, status.st_size, status.st_mtime_ns)
    return entries


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """The wheel, built and installed once for this module; the environment read-only meanwhile."""
    root = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(root)
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=root)
    python = venv / "bin" / "python"
    purelib = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root
        ).stdout.strip()
    )
    runtime = {entry for d in runtime_distributions(wheel) for entry in top_level_entries(d)}
    (purelib / "ledgerhook-runtime-dependencies.pth").write_text(
        f"{link_entries(root / 'dependencies', runtime)}\n"
    )
    # As the Dockerfile installs it (plus --no-index: the dependencies are already there).
    extras = ",".join(IMAGE_EXTRAS)
    run(
        venv / "bin" / "pip",
        "install",
        "--no-cache-dir",
        "--no-index",
        "--quiet",
        f"{wheel}[{extras}]",
        cwd=root,
    )
    everything = {
        entry
        for entry in Path(sysconfig.get_paths()["purelib"]).iterdir()
        if entry.suffix != ".pth" and not entry.name.startswith(NOT_DEPENDENCIES)
    }
    dev_dependencies = link_entries(root / "dev-dependencies", everything)
    set_writable(venv, False)
    try:
        yield Installed(root, venv, venv / "bin", purelib, dev_dependencies)
    finally:
        set_writable(venv, True)  # so that the temporary directory can be removed


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    """GET `url`: (status, body); any HTTP status is an answer, a connection failure raises OSError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback http only
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST `body` to `url`: (status, body)."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback http only
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Wait until `url` answers 200 while `process` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args} exited early:\n{log.read_text()[-4000:]}"
        try:
            if get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} never answered 200:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    """Send `sig` and wait for the exit code (killing the process if it does not exit)."""
    process.send_signal(sig)
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def image_user(venv: Path) -> list[str]:
    """The prefix that runs a command as the image's user, uid and gid 10001 with no other group.

    Not root: nothing, the tests' own user is unprivileged already. Root: `setpriv` to uid 10001,
    keeping one capability, CAP_DAC_READ_SEARCH: the test's PostgreSQL listens on a unix socket in a
    folder only its server's user may enter (the image reaches its database over TCP), and this
    Python may be installed where uid 10001 cannot read it. With it the processes read any file and
    still write only where uid 10001 may. Should `setpriv` be missing or refused, root it stays, and
    the snapshot of the environment still shows that nothing was written into it.
    """
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return []
    prefix = [
        setpriv,
        f"--reuid={IMAGE_UID}",
        f"--regid={IMAGE_UID}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
        "--",
    ]
    check = "import os, sys, platform, gateway.app; print(os.getuid(), sys.prefix, platform.python_version())"
    probe = subprocess.run(
        [*prefix, str(venv / "bin" / "python"), "-c", check], capture_output=True, text=True, timeout=60
    )
    expected = [str(IMAGE_UID), str(venv), platform.python_version()]
    return prefix if probe.returncode == 0 and probe.stdout.split() == expected else []


def uid_of(process: subprocess.Popen[bytes]) -> int:
    """The real uid a running process has."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


async def test_migrate_serve_and_worker_run_as_the_image_runs_them(
    installed: Installed, postgres_url: str, broker: EmbeddedBroker
) -> None:
    """`ledgerhook migrate`, then `serve` and `worker`, from the installed wheel as the image starts
    them: the image's ENTRYPOINT and commands, its environment (HOME and TMPDIR on a writable
    directory standing for the chart's /tmp volume), its user where this machine allows (see
    `image_user`), a read-only working directory and environment. A connection registered through
    the admin API, a signed QuickBooks delivery in, its change event out on the changes topic."""
    prefix = image_user(installed.venv)
    expected_uid = IMAGE_UID if prefix else os.geteuid()
    tmp = installed.root / "image-tmp"
    tmp.mkdir()
    if prefix:
        os.chown(tmp, IMAGE_UID, IMAGE_UID)
    cwd = installed.root / "image-root"
    cwd.mkdir(mode=0o555)
    env = {key: value.replace(VENV, str(installed.venv)) for key, value in image_environment().items()}
    env |= {"HOME": str(tmp), "TMPDIR": str(tmp), "PATH": env["PATH"].rstrip(":") + ":" + BASE_PATH}
    suffix = uuid.uuid4().hex[:10]
    port, worker_port = free_port(), free_port()
    changes_topic = f"changes-{suffix}"
    ledgerhook = [*prefix, str(installed.bin_dir / image_entrypoint()[0])]
    before = snapshot(installed.venv)

    async with fresh_database(postgres_url, "image") as database_url:
        env |= {
            "LEDGERHOOK_DATABASE_URL": database_url,
            "LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "LEDGERHOOK_KAFKA_IDEMPOTENT_PRODUCER": "false",  # the test broker has none
            "LEDGERHOOK_TOPIC_RAW": f"raw-{suffix}",
            "LEDGERHOOK_TOPIC_CHANGES": changes_topic,
            "LEDGERHOOK_TOPIC_ACCOUNT_EVENTS": f"account-events-{suffix}",
            "LEDGERHOOK_TOPIC_QUARANTINE": f"quarantine-{suffix}",
            "LEDGERHOOK_TOPIC_PARTITIONS": "3",
            "LEDGERHOOK_WORKER_GROUP_ID": f"fanout-{suffix}",
            "LEDGERHOOK_QUICKBOOKS_VERIFIER_TOKENS": ",".join(QUICKBOOKS_TOKENS),
            "LEDGERHOOK_ADMIN_TOKENS": ADMIN_TOKEN,
            "LEDGERHOOK_ENCRYPTION_KEYS": f"k1:{KeyRing.generate_key()}",
            "LEDGERHOOK_HOST": "127.0.0.1",
            "LEDGERHOOK_PORT": str(port),
            "LEDGERHOOK_WORKER_PORT": str(worker_port),
            "LEDGERHOOK_SHUTDOWN_DRAIN_SECONDS": "0",
        }
        migrated = await asyncio.to_thread(
            subprocess.run,
            [*ledgerhook, "migrate"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        # Every migration the wheel carries, applied from the installed package.
        shipped = sorted(path.stem for path in (installed.purelib / MIGRATIONS).glob("*.sql"))
        assert shipped and f"migrations applied: {', '.join(shipped)}\n" in migrated.stdout
        assert changes_topic in migrated.stdout

        logs = {name: installed.root / f"{name}.log" for name in ("serve", "worker")}
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name, command in (("serve", image_command()), ("worker", ["worker"])):
                with logs[name].open("wb") as output:
                    processes[name] = subprocess.Popen(
                        [*ledgerhook, *command], cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT
                    )
            base = f"http://127.0.0.1:{port}"
            await asyncio.to_thread(wait_ready, f"{base}/readyz", processes["serve"], logs["serve"])
            await asyncio.to_thread(
                wait_ready, f"http://127.0.0.1:{worker_port}/readyz", processes["worker"], logs["worker"]
            )
            assert {uid_of(process) for process in processes.values()} == {expected_uid}

            realm = str(uuid.uuid4().int)[:13]
            status, answer = post(
                f"{base}/admin/v1/connections",
                orjson.dumps(
                    {
                        "tenant_id": f"tenant-{suffix}",
                        "provider": "quickbooks",
                        "provider_account_id": realm,
                        "polling": {"mode": "off"},
                    }
                ),
                {"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"},
            )
            assert status == 201, answer
            connection = json.loads(answer)

            changed_at = datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
            entity = {
                "name": "Invoice",
                "id": "1042",
                "operation": "Create",
                "lastUpdated": "2025-03-04T05:06:07.890Z",
            }
            body = orjson.dumps(
                {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": [entity]}}]}
            )
            delivery = samples.signed_quickbooks(body, QUICKBOOKS_TOKENS[0])
            status, answer = post(f"{base}/webhooks/quickbooks", delivery.body, delivery.headers)
            assert (status, answer) == (200, b"")

            deadline = time.monotonic() + 60
            while not (records := await read_records(broker.bootstrap, changes_topic)):
                assert time.monotonic() < deadline, logs["worker"].read_text()[-4000:]
                await asyncio.sleep(0.5)
            (record,) = records
            event = record.event()
            assert record.key == connection["id"].encode()
            assert event.get_type() == "accounting.invoice.created"
            assert event.get_id() == expected_id(
                connection["id"], "quickbooks", realm, "invoice", "1042", "created", version_of(changed_at)
            )
            data = event.get_data()
            assert isinstance(data, dict) and data["origin"] == "webhook"
            validate_data(event.get_type(), data)

            codes = {
                name: await asyncio.to_thread(stop, process, signal.SIGTERM)
                for name, process in processes.items()
            }
            assert codes == {"serve": 0, "worker": 0}, {
                name: log.read_text()[-3000:] for name, log in logs.items()
            }
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()

    for log in logs.values():
        assert "Traceback" not in log.read_text(), log.read_text()[-4000:]
    # Nothing was written into the installed environment, nor where the processes ran.
    assert snapshot(installed.venv) == before
    assert list(cwd.iterdir()) == []


def test_the_wheel_installs_and_runs_dev_with_the_emulator(installed: Installed) -> None:
    """`ledgerhook dev --emulator` from the installed wheel: it carries the provider emulator, the
    migrations and the console script. The `dev` extra's packages (embedded PostgreSQL and broker)
    reach this one process through PYTHONPATH."""
    bin_dir, purelib, root = installed.bin_dir, installed.purelib, installed.root
    elsewhere = root / "elsewhere"
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
    assert list((purelib / MIGRATIONS).glob("*.sql")), "the migrations are not in the wheel"

    usage = run(bin_dir / "ledgerhook", "--help", cwd=elsewhere).stdout
    assert "dev" in usage and "serve" in usage

    port, kafka_port, emulator_port = free_port(), free_port(), free_port()
    log = root / "dev.log"
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
                str(root / "state"),
            ],
            cwd=elsewhere,
            env=clean_env() | {"PYTHONPATH": str(installed.dev_dependencies)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz", dev, log)
            emulator = f"http://127.0.0.1:{emulator_port}"
            status, health = get(f"{emulator}/_emulator/health")
            assert status == 200 and "xero" in json.loads(health)["providers"]
            # The emulator's token endpoint refreshes a grant seeded for the dev app.
            status, answer = post(f"{emulator}/_emulator/grants", b'{"provider": "xero"}', {})
            assert status == 200, answer
            grant = json.loads(answer)
            basic = base64.b64encode(f"{DEV_CLIENT_ID}:{DEV_CLIENT_SECRET}".encode()).decode()
            form = urllib.parse.urlencode(
                {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
            )
            status, answer = post(
                f"{emulator}/xero/oauth/token",
                form.encode(),
                {"authorization": f"Basic {basic}", "content-type": "application/x-www-form-urlencoded"},
            )
            tokens = json.loads(answer)
            assert (
                status == 200 and tokens["access_token"] and tokens["refresh_token"] != grant["refresh_token"]
            )
        finally:
            # `ledgerhook dev` stops cleanly on Ctrl-C and exits 0 (`gateway.dev.stack.run_dev`).
            code = stop(dev, signal.SIGINT)
    output_text = log.read_text()
    assert code == 0, output_text[-4000:]
    assert "Traceback" not in output_text
    assert not port_in_use("127.0.0.1", port) and not port_in_use("127.0.0.1", emulator_port)
