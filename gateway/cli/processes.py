"""The long-running commands and their chore: `dev`, `serve`, `worker` and `migrate`."""

import argparse
import asyncio
from pathlib import Path

from gateway.dev.stack import DevOptions, run_dev_stack
from gateway.runtime.kafka import ensure_topics
from gateway.runtime.migrate import migrate
from gateway.runtime.server import serve
from gateway.runtime.worker import run_worker_process
from gateway.settings import load_settings


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
    return serve(load_settings(**overrides))


def run_worker(args: argparse.Namespace) -> int:
    """`ledgerhook worker`: the worker process."""
    return run_worker_process(load_settings())


def run_migrate(args: argparse.Namespace) -> int:
    """`ledgerhook migrate`: apply database migrations, then create missing topics."""
    settings = load_settings()
    applied = asyncio.run(migrate(settings.database_url.get_secret_value()))
    print(f"migrations applied: {', '.join(applied) or 'none pending'}")
    if not args.skip_topics:
        created = asyncio.run(ensure_topics(settings))
        print(f"topics created: {', '.join(created) or 'none missing'}")
    return 0
