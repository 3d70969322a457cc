"""The long-running commands and their chore: `dev`, `serve`, `worker` and `migrate`.

`serve`, `worker` and `migrate` check their settings (exit 2) and then what they depend on (exit 3,
gateway/runtime/preflight.py) before they start, each problem said in one line.
"""

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import asyncpg
from aiokafka.errors import KafkaError

from gateway.dev.stack import DevOptions, run_dev_stack
from gateway.runtime.infra import DATABASE_ERRORS
from gateway.runtime.kafka import ensure_topics
from gateway.runtime.logs import configure_logging
from gateway.runtime.migrate import migrate
from gateway.runtime.preflight import PreflightError, one_line, preflight
from gateway.runtime.server import STARTUP_FAILURE, serve
from gateway.runtime.worker import run_worker_process
from gateway.settings import Settings, database_addresses, load_settings

log = logging.getLogger("ledgerhook.cli")

INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C


def run_dev(args: argparse.Namespace) -> int:
    """`ledgerhook dev`: the whole stack on embedded services, in the foreground."""
    return run_dev_stack(
        DevOptions(
            host=args.host,
            port=args.port,
            kafka_port=args.kafka_port,
            data_dir=Path(args.data_dir),
            emulator=args.emulator,
            emulator_port=args.emulator_port,
            log_level=args.log_level.upper(),
        )
    )


def run_serve(args: argparse.Namespace) -> int:
    """`ledgerhook serve`: the gateway, the flags over the environment."""
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers)) if v}
    settings = load_settings(**overrides)
    failed = checked_start("serve", settings, database=True, broker=True)
    return failed if failed is not None else serve(settings)


def run_worker(args: argparse.Namespace) -> int:
    """`ledgerhook worker`: the worker process."""
    settings = load_settings()
    failed = checked_start("worker", settings, database=True, broker=True)
    return failed if failed is not None else run_worker_process(settings)


def run_migrate(args: argparse.Namespace) -> int:
    """`ledgerhook migrate`: apply database migrations, then create missing topics."""
    settings = load_settings()
    # It creates topics, but produces nothing: the idempotent producer is not its concern.
    failed = checked_start("migrate", settings, database=True, broker=not args.skip_topics, produces=False)
    if failed is not None:
        return failed
    dsn = settings.database_url.get_secret_value()
    try:
        applied = asyncio.run(migrate(dsn))
    except (*DATABASE_ERRORS, asyncpg.InterfaceError) as exc:
        where = ",".join(database_addresses(dsn))
        return _failed("migrate", f"migrating PostgreSQL at {where} failed ({one_line(exc)})", exc)
    print(f"migrations applied: {', '.join(applied) or 'none pending'}")
    if not args.skip_topics:
        try:
            created = asyncio.run(ensure_topics(settings))
        except (KafkaError, OSError, TimeoutError) as exc:
            return _failed(
                "migrate",
                f"creating topics at {settings.kafka_bootstrap_servers} failed ({one_line(exc)}); check"
                " LEDGERHOOK_TOPIC_PARTITIONS, LEDGERHOOK_TOPIC_REPLICATION_FACTOR and the topic names",
                exc,
            )
        print(f"topics created: {', '.join(created) or 'none missing'}")
    return 0


def checked_start(
    command: str, settings: Settings, *, database: bool, broker: bool, produces: bool = True
) -> int | None:
    """Run the start-up checks; None when the process may start, else its exit code (the problems
    printed, one line each)."""
    configure_logging(settings.log_level)
    try:
        asyncio.run(preflight(settings, database=database, broker=broker, produces=produces))
    except PreflightError as exc:
        for problem in exc.problems:
            print(f"ledgerhook {command}: {problem}", file=sys.stderr)
        return STARTUP_FAILURE
    except KeyboardInterrupt:
        return INTERRUPTED  # Ctrl-C while waiting for a dependency: nothing started, nothing to say
    return None


def _failed(command: str, problem: str, exc: BaseException) -> int:
    log.debug("%s failed", command, exc_info=exc)  # the traceback, at LEDGERHOOK_LOG_LEVEL=DEBUG only
    print(f"ledgerhook {command}: {problem}", file=sys.stderr)
    return STARTUP_FAILURE
