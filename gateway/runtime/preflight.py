"""Start-up checks of `serve`, `worker` and `migrate`: PostgreSQL and the Kafka brokers answer, and
the brokers can do what the settings ask of them, before anything starts.

A dependency that does not answer yet is tried again until `LEDGERHOOK_STARTUP_TIMEOUT_SECONDS`
have passed, so a process started a moment before its database does not crash-loop. A refusal (a
wrong password, a failed SASL login or TLS handshake, a broker without the idempotent producer) fails
at once: waiting would not change it. Each failure is one line naming what was tried (host and port,
never a password) and the setting to look at; `LEDGERHOOK_LOG_LEVEL=DEBUG` logs the exception too.
"""

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    ClusterAuthorizationFailedError,
    IllegalSaslStateError,
    IncompatibleBrokerVersion,
    KafkaError,
    SaslAuthenticationFailed,
    UnknownError,
    UnsupportedSaslMechanismError,
    UnsupportedVersionError,
)

from gateway.runtime.kafka import connection_options
from gateway.settings import KafkaSettings, Settings, bootstrap_addresses, database_addresses

log = logging.getLogger("ledgerhook.preflight")

MIN_POSTGRES_VERSION = 14
# Every attempt gets at least this long, even when the start-up wait is spent or 0 (one attempt).
MIN_ATTEMPT_SECONDS = 5.0
MAX_RETRY_DELAY_SECONDS = 2.0

# Answers that mean "not yet": the server is starting, or full for a moment.
_POSTGRES_NOT_YET = (asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError)
_SASL_REFUSALS = (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
# How a broker without the idempotent producer answers its InitProducerId: Tansu, the dev broker,
# lists the API and answers UNKNOWN_SERVER_ERROR (-1); older brokers lack the API or the version.
_NO_IDEMPOTENCE = (UnknownError, UnsupportedVersionError, IncompatibleBrokerVersion)


class PreflightError(Exception):
    """A dependency is out of reach or refuses Ledgerhook: one line per problem, for the user."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


class _NotYet(Exception):
    """Out of reach for now (refused, unresolved, timed out, starting up): worth another try."""

    def __init__(self, reason: str, cause: BaseException | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


class _Refused(Exception):
    """Reached, and refused in a way another try will not change; the message is the user's line."""


async def preflight(
    settings: Settings, *, database: bool = True, broker: bool = True, produces: bool = True
) -> None:
    """Check PostgreSQL and/or the brokers, retrying within the start-up wait; PreflightError otherwise.

    For a process that `produces`, the broker check also asks for a producer id when the idempotent
    producer is on, writing nothing.
    """
    checks: list[Awaitable[None]] = []
    if database:
        checks.append(
            check_database(settings.database_url.get_secret_value(), settings.startup_timeout_seconds)
        )
    if broker:
        idempotent = produces and settings.kafka_idempotent_producer
        checks.append(check_broker(settings, settings.startup_timeout_seconds, idempotent=idempotent))
    with _quiet_kafka_client(settings.log_level == "DEBUG"):
        results = await asyncio.gather(*checks, return_exceptions=True)
    problems: list[str] = []
    for result in results:
        if isinstance(result, PreflightError):
            problems.extend(result.problems)
        elif isinstance(result, BaseException):
            raise result
    if problems:
        raise PreflightError(problems)


async def check_database(dsn: str, wait_seconds: float) -> None:
    """PostgreSQL takes a connection at the DSN and is 14 or newer; PreflightError otherwise."""
    where = ",".join(database_addresses(dsn))

    async def attempt(seconds: float) -> None:
        try:
            connection = await asyncpg.connect(dsn, timeout=seconds)
        except _POSTGRES_NOT_YET as exc:
            raise _NotYet(str(exc), exc) from exc
        except asyncpg.InvalidAuthorizationSpecificationError as exc:
            raise _Refused(
                f"PostgreSQL at {where} refused the login ({exc}); check LEDGERHOOK_DATABASE_URL"
            ) from exc
        except asyncpg.PostgresError as exc:
            raise _Refused(
                f"PostgreSQL at {where} refused the connection ({exc}); check LEDGERHOOK_DATABASE_URL"
            ) from exc
        except ssl.SSLError as exc:
            raise _Refused(
                f"TLS with PostgreSQL at {where} failed ({_tls_reason(exc)}); check the sslmode and"
                " certificates of LEDGERHOOK_DATABASE_URL"
            ) from exc
        except (OSError, TimeoutError, asyncpg.ConnectionDoesNotExistError) as exc:
            raise _NotYet(_reason(exc), exc) from exc
        except Exception as exc:  # asyncpg's client-side refusals (a bad sslmode, ...) among them
            raise _Refused(
                f"cannot connect to PostgreSQL at {where} ({_reason(exc)}); check LEDGERHOOK_DATABASE_URL"
            ) from exc
        try:
            version = connection.get_server_version()
        finally:
            await connection.close()
        if version.major < MIN_POSTGRES_VERSION:
            raise _Refused(
                f"PostgreSQL at {where} is version {version.major}; Ledgerhook needs"
                f" {MIN_POSTGRES_VERSION} or newer"
            )

    await _retrying(
        attempt,
        wait_seconds,
        what="PostgreSQL",
        where=where,
        unreachable=lambda reason: (
            f"cannot reach PostgreSQL at {where} ({reason}); check LEDGERHOOK_DATABASE_URL"
        ),
    )


async def check_broker(settings: KafkaSettings, wait_seconds: float, *, idempotent: bool) -> None:
    """A bootstrap broker takes a connection (TLS and SASL login included) and, if `idempotent`,
    hands out a producer id; PreflightError otherwise."""
    addresses = bootstrap_addresses(settings.kafka_bootstrap_servers)
    where = ",".join(addresses)
    options = connection_options(settings)

    async def attempt(seconds: float) -> None:
        await _connect_to_a_broker(options, addresses, seconds)
        if idempotent:
            await _start_idempotent_producer(options, where, seconds)

    await _retrying(
        attempt,
        wait_seconds,
        what="Kafka",
        where=where,
        unreachable=lambda reason: (
            f"cannot reach Kafka at {where} ({reason}); check {_kafka_settings_for(reason)}"
        ),
    )


def _kafka_settings_for(reason: str) -> str:
    # Nothing listening, or no such host: the address is wrong. Anything else (closed in the
    # handshake, timed out) may as well be TLS spoken to a plain listener, or the reverse.
    if reason.startswith(("connection refused", "host name not resolved")):
        return "LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS"
    return "LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS and LEDGERHOOK_KAFKA_SECURITY_PROTOCOL"


async def _connect_to_a_broker(options: dict[str, Any], addresses: tuple[str, ...], seconds: float) -> None:
    """Connect to the first bootstrap broker that answers, as a client does, and let it go again."""
    connection_settings = {k: v for k, v in options.items() if k != "bootstrap_servers"}
    first: _NotYet | None = None
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            connection = await asyncio.wait_for(
                create_conn(
                    host.strip("[]"), int(port), request_timeout_ms=int(seconds * 1000), **connection_settings
                ),
                seconds,
            )
        except _SASL_REFUSALS as exc:
            raise _Refused(
                f"Kafka at {address} refused the SASL login ({_reason(exc)}); check"
                " LEDGERHOOK_KAFKA_SASL_MECHANISM, LEDGERHOOK_KAFKA_SASL_USERNAME and"
                " LEDGERHOOK_KAFKA_SASL_PASSWORD"
            ) from exc
        except ssl.SSLError as exc:
            raise _Refused(
                f"TLS with Kafka at {address} failed ({_tls_reason(exc)}); check"
                " LEDGERHOOK_KAFKA_SECURITY_PROTOCOL and LEDGERHOOK_KAFKA_SSL_CAFILE"
            ) from exc
        except (OSError, TimeoutError, KafkaError) as exc:
            first = first or _NotYet(_reason(exc), exc)
            continue
        except Exception as exc:  # a handshake the client could not follow (a broken SASL exchange)
            raise _Refused(
                f"the handshake with Kafka at {address} failed ({_reason(exc)}); check"
                " LEDGERHOOK_KAFKA_SECURITY_PROTOCOL and the SASL settings"
            ) from exc
        connection.close()
        return
    assert first is not None  # there is at least one address: the settings checked it
    raise first


async def _start_idempotent_producer(options: dict[str, Any], where: str, seconds: float) -> None:
    """Start an idempotent producer, which asks a broker for a producer id, and stop it; no record
    is written."""
    producer = AIOKafkaProducer(
        **options, acks="all", enable_idempotence=True, request_timeout_ms=int(seconds * 1000)
    )
    try:
        await asyncio.wait_for(producer.start(), seconds)
    except _NO_IDEMPOTENCE as exc:
        raise _Refused(
            f"the Kafka broker at {where} does not support the idempotent producer;"
            " set LEDGERHOOK_KAFKA_IDEMPOTENT_PRODUCER=false"
        ) from exc
    except ClusterAuthorizationFailedError as exc:
        raise _Refused(
            f"the Kafka broker at {where} does not allow Ledgerhook the idempotent producer; grant it"
            " IdempotentWrite on the cluster, or set LEDGERHOOK_KAFKA_IDEMPOTENT_PRODUCER=false"
        ) from exc
    except TimeoutError as exc:
        # Bootstrap answered, yet no broker handed out a producer id: the brokers it advertises
        # are out of reach (their advertised listeners), or the cluster is still starting.
        raise _NotYet(
            "no broker it lists handed out a producer id; check its advertised listeners", exc
        ) from exc
    except (OSError, KafkaError) as exc:
        raise _NotYet(_reason(exc), exc) from exc
    finally:
        await producer.stop()


async def _retrying(
    attempt: Callable[[float], Awaitable[None]],
    wait_seconds: float,
    *,
    what: str,
    where: str,
    unreachable: Callable[[str], str],
) -> None:
    """Run `attempt(seconds)` until it succeeds, it is refused, or the wait is over."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    delay = 0.25
    waiting = False
    while True:
        seconds = max(deadline - loop.time(), MIN_ATTEMPT_SECONDS)
        try:
            # The clients bound their own calls by `seconds`; this is the backstop.
            await asyncio.wait_for(attempt(seconds), seconds + 1)
            return
        except _Refused as exc:
            log.debug("start-up check refused", exc_info=exc.__cause__ or exc)
            raise PreflightError([str(exc)]) from None
        except (_NotYet, TimeoutError) as exc:
            failure = exc if isinstance(exc, _NotYet) else _NotYet("timed out", exc)
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.debug("start-up check gave up", exc_info=failure.cause or failure)
            tried = f"tried for {wait_seconds:g} s" if wait_seconds else "tried once"
            raise PreflightError([unreachable(f"{failure.reason}, {tried}")]) from None
        if not waiting:
            waiting = True
            log.info(
                "waiting for %s", what, extra={"at": where, "reason": failure.reason, "seconds": wait_seconds}
            )
        await asyncio.sleep(min(delay, remaining))  # the last try comes at the deadline
        delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)


def one_line(exc: BaseException) -> str:
    """`Name: message` of an exception on one line, for a user's message or a log line."""
    name, text = type(exc).__name__, " ".join(str(exc).split())
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"  # Kafka's errors name themselves


def _reason(exc: BaseException) -> str:
    """A few words on why a connection failed, from the exception (never carrying a secret)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "host name not resolved"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return one_line(exc)


def _tls_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    return str(exc.reason or exc)


@contextmanager
def _quiet_kafka_client(debug: bool) -> Iterator[None]:
    """The Kafka client logs every failed attempt at ERROR; the checks say it once, in their own words."""
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    if not debug:
        client_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        client_log.setLevel(level)
