"""The `ledgerhook` command line."""

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.settings import KafkaSettings, SettingsError, load_settings


def _dev(args: argparse.Namespace) -> int:
    from gateway.dev.stack import DevOptions, run_dev

    return run_dev(
        DevOptions(
            host=args.host,
            port=args.port,
            kafka_port=args.kafka_port,
            data_dir=Path(args.data_dir),
            emulator=args.emulator,
            emulator_port=args.emulator_port,
        )
    )


def _serve(args: argparse.Namespace) -> int:
    from gateway.runtime.server import serve

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers)) if v}
    return serve(load_settings(**overrides))


def _migrate(args: argparse.Namespace) -> int:
    from gateway.runtime.kafka import ensure_topics
    from gateway.runtime.migrate import migrate

    settings = load_settings()
    applied = asyncio.run(migrate(settings.database_url.get_secret_value()))
    print(f"migrations applied: {', '.join(applied) or 'none pending'}")
    if not args.skip_topics:
        created = asyncio.run(ensure_topics(settings))
        print(f"topics created: {', '.join(created) or 'none missing'}")
    return 0


def _send_sample(args: argparse.Namespace) -> int:
    from gateway.cli.send import send_sample

    try:
        result = asyncio.run(send_sample(args.provider, args.url, args.account, args.legacy))
    except ValueError as exc:
        print(f"ledgerhook send-sample: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ledgerhook send-sample: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    print(
        f"POST {result.url} -> {result.status}"
        + (f" (delivery {result.delivery_id})" if result.delivery_id else "")
    )
    return 0 if result.status == 200 else 1


def _tail(args: argparse.Namespace) -> int:
    from gateway.cli.tail import run_tail

    settings = KafkaSettings(**({"kafka_bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
    return run_tail(settings, args.topic, follow=not args.no_follow, from_end=args.from_end, limit=args.max)


def _worker(args: argparse.Namespace) -> int:
    from gateway.runtime.worker import run_fanout_worker

    return run_fanout_worker(load_settings())


def _redrive(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from fanout.quarantine import Reason
    from gateway.admin.quarantine import redrive_once

    settings = load_settings()
    try:
        result = asyncio.run(
            redrive_once(settings, Reason(args.reason) if args.reason else None, args.delivery_id)
        )
    except (KafkaError, TimeoutError) as exc:
        print(f"ledgerhook redrive: the broker did not answer ({type(exc).__name__})", file=sys.stderr)
        return 1
    print(f"redriven: {result.redriven}, skipped: {result.skipped}")
    return 0


def _connections(args: argparse.Namespace) -> int:
    from gateway.cli.admin_client import AdminError, run_connections

    try:
        output = asyncio.run(run_connections(args))
    except AdminError as exc:
        print(f"ledgerhook connections {args.action}: {exc.describe()}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"ledgerhook connections {args.action}: {exc}", file=sys.stderr)
        return 2
    if output:
        print(output)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="ledgerhook", description="Webhook gateway for accounting integrations."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="run everything locally on embedded PostgreSQL and Kafka")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--kafka-port", type=int, default=9092)
    dev.add_argument("--data-dir", default=".ledgerhook")
    dev.add_argument(
        "--emulator",
        action="store_true",
        help="run the provider emulator and point every provider's OAuth URLs at it",
    )
    dev.add_argument("--emulator-port", type=int, default=8900)
    dev.set_defaults(func=_dev)

    serve = commands.add_parser("serve", help="run the production gateway (configured from LEDGERHOOK_*)")
    serve.add_argument("--host", default=None, help="default: LEDGERHOOK_HOST or 0.0.0.0")
    serve.add_argument("--port", type=int, default=None, help="default: LEDGERHOOK_PORT or 8000")
    serve.add_argument("--workers", type=int, default=None, help="default: LEDGERHOOK_WORKERS or 1")
    serve.set_defaults(func=_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations and create missing topics")
    migrate.add_argument("--skip-topics", action="store_true", help="leave Kafka topics alone")
    migrate.set_defaults(func=_migrate)

    sample = commands.add_parser("send-sample", help="sign a realistic sample delivery and post it")
    sample.add_argument("provider", choices=["quickbooks", "xero"])
    sample.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway's base URL")
    sample.add_argument("--account", default=None, help="realm id / tenant id to put in the sample")
    sample.add_argument("--legacy", action="store_true", help="QuickBooks legacy eventNotifications format")
    sample.set_defaults(func=_send_sample)

    tail = commands.add_parser("tail", help="print a topic's records (CloudEvents pretty-printed)")
    tail.add_argument("topic")
    tail.add_argument(
        "--bootstrap", default=None, help="default: LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092"
    )
    tail.add_argument("--from-end", action="store_true", help="only records produced from now on")
    tail.add_argument("--no-follow", action="store_true", help="exit once caught up")
    tail.add_argument("--max", type=int, default=None, help="exit after this many records")
    tail.set_defaults(func=_tail)

    worker = commands.add_parser(
        "worker", help="run the fan-out worker (health and metrics on LEDGERHOOK_WORKER_PORT)"
    )
    worker.set_defaults(func=_worker)

    redrive = commands.add_parser("redrive", help="feed quarantined deliveries back to the fan-out worker")
    redrive.add_argument(
        "--reason",
        choices=["unparseable", "unknown_account", "disconnected", "unknown_connection", "unknown_provider"],
        help="only records quarantined for this reason",
    )
    redrive.add_argument("--delivery-id", default=None, help="only the records of this delivery")
    redrive.set_defaults(func=_redrive)

    connections = commands.add_parser("connections", help="manage connections through the admin API")
    actions = connections.add_subparsers(dest="action", required=True, metavar="ACTION")
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument(
        "--url", default=None, help="gateway URL (default: LEDGERHOOK_ADMIN_URL or http://127.0.0.1:8000)"
    )
    add = actions.add_parser(
        "add", parents=[target], help="register a connection; prints it as JSON, webhook_url included"
    )
    add.add_argument("--tenant", required=True, help="tenant id")
    add.add_argument("--provider", required=True, help="provider slug, e.g. zoho-books")
    add.add_argument("--account", required=True, help="the provider's account id")
    add.add_argument("--name", default=None, help="display name")
    add.add_argument("--secret", default=None, help="webhook secret; `-` reads it from standard input")
    add.add_argument("--metadata", default=None, help="a JSON object")
    listing = actions.add_parser("list", parents=[target], help="list connections as a table")
    listing.add_argument("--tenant", default=None)
    listing.add_argument("--provider", default=None)
    listing.add_argument("--status", default=None)
    show = actions.add_parser("show", parents=[target], help="print one connection as JSON")
    show.add_argument("id")
    remove = actions.add_parser("rm", parents=[target], help="disconnect a connection, erasing its secrets")
    remove.add_argument("id")
    connections.set_defaults(func=_connections)

    from gateway.cli.credentials import add_parsers as add_token_parsers

    add_token_parsers(commands)  # `credentials put|show`, `keys generate|rotate`
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ledgerhook` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SettingsError as exc:
        print(f"ledgerhook {args.command}: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
