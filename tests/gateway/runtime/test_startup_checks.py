"""`serve`, `worker` and `migrate` check their settings and what they depend on before they start:
a bad setting is exit 2, an unreachable or refusing PostgreSQL or broker exit 3, each in one line
and without a traceback. Real commands, run as operators run them."""

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.dev.embedded import EmbeddedPostgres, free_port
from gateway.settings import Settings, database_addresses
from provider_auth.vault import KeyRing
from tests.support import read_topic

LEDGERHOOK = [sys.executable, "-m", "gateway.cli"]
PROCESSES = ("serve", "worker", "migrate")
DB_PASSWORD = "db-secret-41"  # a value that must never be printed


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERHOOK_")}
    return env | values


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The test stack's configuration, as the environment of a command; `extra` wins."""
    values = {
        "LEDGERHOOK_DATABASE_URL": settings.database_url.get_secret_value(),
        "LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "LEDGERHOOK_KAFKA_IDEMPOTENT_PRODUCER": "false",
        "LEDGERHOOK_TOPIC_RAW": settings.topic_raw,
        "LEDGERHOOK_TOPIC_CHANGES": settings.topic_changes,
        "LEDGERHOOK_TOPIC_ACCOUNT_EVENTS": settings.topic_account_events,
        "LEDGERHOOK_TOPIC_QUARANTINE": settings.topic_quarantine,
        "LEDGERHOOK_TOPIC_PARTITIONS": "1",
        "LEDGERHOOK_HOST": "127.0.0.1",
        "LEDGERHOOK_PORT": str(free_port()),
        "LEDGERHOOK_WORKER_PORT": str(free_port()),
        "LEDGERHOOK_STARTUP_TIMEOUT_SECONDS": "1",
        "LEDGERHOOK_SHUTDOWN_DRAIN_SECONDS": "0",
    }
    return clean_env(**(values | extra))


class Run:
    """One finished command: exit code, output, and how long it took."""

    def __init__(self, args: list[str], env: dict[str, str], timeout: float = 90) -> None:
        started = time.monotonic()
        result = subprocess.run(
            [*LEDGERHOOK, *args], env=env, capture_output=True, text=True, timeout=timeout
        )
        self.seconds = time.monotonic() - started
        self.code = result.returncode
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.output = result.stdout + result.stderr

    @property
    def last_line(self) -> str:
        """The last line on stderr: what the command said when it gave up."""
        return self.stderr.rstrip("\n").rsplit("\n", 1)[-1]


async def run(*args: str, env: dict[str, str], timeout: float = 90) -> Run:
    return await asyncio.to_thread(Run, list(args), env, timeout)


async def run_each(commands: tuple[str, ...], env: dict[str, str]) -> dict[str, Run]:
    """Run the commands side by side with the same environment."""
    runs = await asyncio.gather(*(run(*command.split(), env=env) for command in commands))
    return dict(zip(commands, runs, strict=True))


def assert_no_traceback(result: Run) -> None:
    assert "Traceback" not in result.output, result.output[-3000:]


# Settings: exit 2 before anything is tried.


async def test_a_malformed_key_ring_stops_every_process_and_keys_rotate_with_exit_2() -> None:
    key = KeyRing.generate_key()  # an entry without its `kid:`
    env = clean_env(
        LEDGERHOOK_DATABASE_URL="postgresql://ledgerhook@127.0.0.1:1/ledgerhook",
        LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        LEDGERHOOK_ENCRYPTION_KEYS=key,
    )
    runs = await run_each((*PROCESSES, "keys rotate"), env)
    for command, result in runs.items():
        name = command.split()[0]
        assert result.code == 2, (command, result.output)
        assert result.stderr == (
            f"ledgerhook {name}: invalid configuration:\n"
            "  LEDGERHOOK_ENCRYPTION_KEYS: key 1: expected 'kid:base64key'"
            " (`ledgerhook keys generate` makes one)\n"
        ), command
        assert key not in result.output and key[:16] not in result.output
        assert_no_traceback(result)


async def test_a_mysql_url_stops_every_process_with_exit_2() -> None:
    env = clean_env(
        LEDGERHOOK_DATABASE_URL=f"mysql://ledgerhook:{DB_PASSWORD}@db.internal:3306/ledgerhook",
        LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
    )
    for command, result in (await run_each(PROCESSES, env)).items():
        assert result.code == 2, (command, result.output)
        assert result.stderr == (
            f"ledgerhook {command}: invalid configuration:\n"
            "  LEDGERHOOK_DATABASE_URL: must be a PostgreSQL DSN, postgresql://user:password@host:5432/database\n"
        )
        assert DB_PASSWORD not in result.output
        assert_no_traceback(result)


# Dependencies: exit 3 after the start-up wait, or at once when refused.


async def test_an_unreachable_database_is_named_after_the_start_up_wait(settings: Settings) -> None:
    port = free_port()  # nothing listens there
    env = env_for(
        settings, LEDGERHOOK_DATABASE_URL=f"postgresql://ledgerhook:{DB_PASSWORD}@127.0.0.1:{port}/ledgerhook"
    )
    for command, result in (await run_each(PROCESSES, env)).items():
        assert result.code == 3, (command, result.output)
        assert result.last_line == (
            f"ledgerhook {command}: cannot reach PostgreSQL at 127.0.0.1:{port} (connection refused,"
            " tried for 1 s); check LEDGERHOOK_DATABASE_URL"
        )
        assert result.seconds < 20  # a 1 s wait, plus the interpreter's start
        assert DB_PASSWORD not in result.output
        assert_no_traceback(result)


async def test_an_unreachable_broker_is_named_and_migrate_can_skip_it(settings: Settings) -> None:
    port = free_port()
    env = env_for(settings, LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}")
    runs = await run_each((*PROCESSES, "migrate --skip-topics"), env)
    for command in PROCESSES:
        result = runs[command]
        assert result.code == 3, (command, result.output)
        assert result.last_line == (
            f"ledgerhook {command}: cannot reach Kafka at 127.0.0.1:{port} (connection refused,"
            " tried for 1 s); check LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS"
        )
        assert_no_traceback(result)
    skipped = runs["migrate --skip-topics"]
    assert skipped.code == 0, skipped.output
    assert skipped.stdout.startswith("migrations applied: ")
    assert "topics created" not in skipped.stdout


@asynccontextmanager
async def postgres_with_a_password(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """A PostgreSQL of the test's own whose role `ledgerhook_pw` must log in with a password (the
    embedded server trusts every local login otherwise): (socket directory, its address)."""
    server = EmbeddedPostgres(tmp_path / "data", cleanup="delete")
    url = await asyncio.to_thread(server.start)
    try:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute("CREATE ROLE ledgerhook_pw LOGIN PASSWORD 'the-right-one'")
            hba = Path(await connection.fetchval("SHOW hba_file"))
            hba.write_text("local all ledgerhook_pw scram-sha-256\n" + hba.read_text())
            await connection.fetchval("SELECT pg_reload_conf()")
        finally:
            await connection.close()
        (address,) = database_addresses(url)
        yield address.removesuffix("/.s.PGSQL.5432"), address
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_wrong_database_password_fails_at_once(settings: Settings, tmp_path: Path) -> None:
    async with postgres_with_a_password(tmp_path) as (socket_dir, address):
        # The right password logs in: what the commands below get wrong is the password alone.
        connection = await asyncpg.connect(
            f"postgresql://ledgerhook_pw:the-right-one@/postgres?host={socket_dir}"
        )
        await connection.close()
        env = env_for(
            settings,
            LEDGERHOOK_DATABASE_URL=f"postgresql://ledgerhook_pw:{DB_PASSWORD}@/postgres?host={socket_dir}",
            LEDGERHOOK_STARTUP_TIMEOUT_SECONDS="120",  # never waited for: a refusal is final
        )
        for command, result in (await run_each(PROCESSES, env)).items():
            assert result.code == 3, (command, result.output)
            assert result.last_line == (
                f"ledgerhook {command}: PostgreSQL at {address} refused the login (password authentication"
                ' failed for user "ledgerhook_pw"); check LEDGERHOOK_DATABASE_URL'
            )
            assert result.seconds < 30
            assert DB_PASSWORD not in result.output
            assert_no_traceback(result)


async def test_the_idempotent_producer_against_a_broker_without_it_names_the_setting(
    settings: Settings,
) -> None:
    env = env_for(
        settings, LEDGERHOOK_KAFKA_IDEMPOTENT_PRODUCER="true", LEDGERHOOK_STARTUP_TIMEOUT_SECONDS="120"
    )
    runs = await run_each(PROCESSES, env)
    for command in ("serve", "worker"):
        result = runs[command]
        assert result.code == 3, (command, result.output)
        assert result.last_line == (
            f"ledgerhook {command}: the Kafka broker at {settings.kafka_bootstrap_servers} does not support"
            " the idempotent producer; set LEDGERHOOK_KAFKA_IDEMPOTENT_PRODUCER=false"
        )
        assert result.seconds < 30  # refused, not waited for
        assert_no_traceback(result)
    # `migrate` produces nothing, so it does not need the idempotent producer; the check wrote nothing.
    assert runs["migrate"].code == 0, runs["migrate"].output
    assert await read_topic(settings.kafka_bootstrap_servers, settings.topic_raw) == []


async def test_a_broker_certificate_that_does_not_verify_fails_at_once(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    async with tls_listener("127.0.0.1", port, tmp_path):
        env = env_for(
            settings,
            LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
            LEDGERHOOK_KAFKA_SECURITY_PROTOCOL="SSL",  # and the system's CAs, which never signed it
            LEDGERHOOK_STARTUP_TIMEOUT_SECONDS="120",
        )
        result = await run("serve", env=env)
    assert result.code == 3, result.output
    assert result.last_line == (
        f"ledgerhook serve: TLS with Kafka at 127.0.0.1:{port} failed (certificate verify failed:"
        " self-signed certificate); check LEDGERHOOK_KAFKA_SECURITY_PROTOCOL and LEDGERHOOK_KAFKA_SSL_CAFILE"
    )
    assert result.seconds < 30
    assert_no_traceback(result)


@asynccontextmanager
async def tls_listener(host: str, port: int, folder: Path) -> AsyncIterator[None]:
    """A TLS listener with a self-signed certificate, where a broker would be: the handshake is all
    a client gets to."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, host, port, ssl=context)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def test_a_database_that_comes_up_during_the_wait_is_used(
    postgres_url: str, settings: Settings
) -> None:
    port = free_port()
    (socket,) = database_addresses(postgres_url)
    env = env_for(
        settings,
        LEDGERHOOK_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/postgres",
        LEDGERHOOK_STARTUP_TIMEOUT_SECONDS="60",
    )
    migrate = asyncio.create_task(run("migrate", "--skip-topics", env=env))
    await asyncio.sleep(3)  # the database is not there yet when migrate starts
    assert not migrate.done()
    async with tcp_to_unix_socket("127.0.0.1", port, socket):
        result = await migrate
    assert result.code == 0, result.output
    assert result.stdout.startswith("migrations applied: ")
    assert '"message":"waiting for PostgreSQL"' in result.stderr
    assert_no_traceback(result)


@asynccontextmanager
async def tcp_to_unix_socket(host: str, port: int, path: str) -> AsyncIterator[None]:
    """Forward TCP connections on (host, port) to the PostgreSQL listening on a unix socket."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def forward(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_unix_connection(path)
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    server = await asyncio.start_server(forward, host, port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def test_ctrl_c_during_the_wait_exits_quietly(settings: Settings) -> None:
    env = env_for(
        settings,
        LEDGERHOOK_DATABASE_URL=f"postgresql://ledgerhook@127.0.0.1:{free_port()}/ledgerhook",
        LEDGERHOOK_STARTUP_TIMEOUT_SECONDS="120",
    )
    process = subprocess.Popen(
        [*LEDGERHOOK, "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stderr is not None
        waiting = await asyncio.to_thread(process.stderr.readline)  # the first line: it is waiting
        assert b"waiting for PostgreSQL" in waiting
        os.killpg(process.pid, signal.SIGINT)  # as a terminal sends Ctrl-C: to the whole group
        stdout, stderr = await asyncio.to_thread(process.communicate, timeout=30)
        assert process.returncode == 130
        assert b"Traceback" not in stdout + stderr and stderr == b""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_debug_logging_adds_the_traceback_of_a_failed_check(settings: Settings) -> None:
    port = free_port()
    env = env_for(
        settings,
        LEDGERHOOK_DATABASE_URL=f"postgresql://ledgerhook@127.0.0.1:{port}/ledgerhook",
        LEDGERHOOK_LOG_LEVEL="DEBUG",
    )
    result = await run("migrate", env=env)
    assert result.code == 3
    assert result.last_line.startswith(f"ledgerhook migrate: cannot reach PostgreSQL at 127.0.0.1:{port} (")
    assert "Traceback" in result.stderr and "ConnectionRefusedError" in result.stderr


# A good configuration goes through.


async def test_migrate_then_worker_start_with_a_good_configuration(settings: Settings) -> None:
    env = env_for(settings)
    migrated = await run("migrate", env=env)
    assert migrated.code == 0, migrated.output
    assert migrated.stdout.endswith(
        "topics created: "
        + ", ".join(
            (
                settings.topic_raw,
                settings.topic_changes,
                settings.topic_account_events,
                settings.topic_quarantine,
            )
        )
        + "\n"
    )
    worker = subprocess.Popen(
        [*LEDGERHOOK, "worker"],
        env=env | {"LEDGERHOOK_LOG_LEVEL": "WARNING"},  # a quiet worker never fills the pipe
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await until_ready(f"http://127.0.0.1:{env['LEDGERHOOK_WORKER_PORT']}/readyz", worker)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


async def until_ready(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    pytest.fail("the worker never became ready")
