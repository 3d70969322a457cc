"""The `ledgerhook` command line: the parser of every command, and the dispatch to the command's module.

A command's module is imported only when that command runs, so that client commands (`connections`,
`send-sample`, `tail`) start without loading the server.
"""

import argparse
import os
import sys
from collections.abc import Sequence

from gateway.settings import SettingsError

# Every provider has a webhook scheme (provider_auth/webhooks/registry.py).
SAMPLE_PROVIDERS = ("quickbooks", "xero", "zoho-books", "freshbooks", "netsuite", "custom", "sage-intacct")
REDRIVE_REASONS = (
    "unparseable",
    "unknown_account",
    "paused",
    "disconnected",
    "unknown_connection",
    "unknown_provider",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="ledgerhook", description="Webhook gateway for accounting integrations."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser(
        "dev",
        help="run everything locally on embedded PostgreSQL and Kafka",
        description="Run the gateway, the fan-out worker, an embedded PostgreSQL and an embedded"
        " Kafka-compatible broker in the foreground, with dev secrets. Connections survive a restart"
        " (PostgreSQL keeps its data in --data-dir); topics are in memory and start empty. Ctrl-C stops"
        " everything; a second Ctrl-C forces.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    dev.add_argument("--host", default="127.0.0.1", help="interface the gateway listens on")
    dev.add_argument(
        "--port", type=int, default=8000, help="the gateway's port (webhooks, admin API, health)"
    )
    dev.add_argument("--kafka-port", type=int, default=9092, help="port of the embedded broker")
    dev.add_argument(
        "--data-dir",
        default=".ledgerhook",
        help="where PostgreSQL's data, the key ring and the logs are kept (one dev stack at a time)",
    )
    dev.add_argument(
        "--log-level",
        default="warning",
        type=str.lower,
        choices=["debug", "info", "warning", "error"],
        help="log lines shown on the terminal (JSON, on standard error)",
    )
    dev.add_argument(
        "--emulator",
        action="store_true",
        help="run the provider emulator and point every provider's OAuth URLs at it",
    )
    dev.add_argument("--emulator-port", type=int, default=8900, help="the provider emulator's port")

    serve = commands.add_parser("serve", help="run the production gateway (configured from LEDGERHOOK_*)")
    serve.add_argument("--host", default=None, help="default: LEDGERHOOK_HOST or 0.0.0.0")
    serve.add_argument("--port", type=int, default=None, help="default: LEDGERHOOK_PORT or 8000")
    serve.add_argument("--workers", type=int, default=None, help="default: LEDGERHOOK_WORKERS or 1")

    migrate = commands.add_parser("migrate", help="apply database migrations and create missing topics")
    migrate.add_argument("--skip-topics", action="store_true", help="leave Kafka topics alone")

    # The admin API's URL, for the commands that call it.
    admin_url = argparse.ArgumentParser(add_help=False)
    admin_url.add_argument(
        "--url", default=None, help="gateway URL (default: LEDGERHOOK_ADMIN_URL or http://127.0.0.1:8000)"
    )

    sample = commands.add_parser(
        "send-sample",
        help="sign a realistic sample delivery and post it",
        description="Sign a realistic sample delivery as the provider would and post it to a running"
        " gateway. QuickBooks and Xero post to their shared endpoint; the other providers to a"
        " connection's own URL: --connection, else the one active connection of the provider (of"
        " --account, if given), found through the admin API. Without --secret, samples are signed"
        " with the dev stack's secrets, so they pass against `ledgerhook dev` as they are.",
    )
    sample.add_argument(
        "provider", metavar="PROVIDER", choices=SAMPLE_PROVIDERS, help=", ".join(SAMPLE_PROVIDERS)
    )
    sample.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the gateway's base URL (default: %(default)s)"
    )
    sample.add_argument(
        "--account",
        default=None,
        help="the provider account: QuickBooks realm or Xero tenant to put in the sample (default: a"
        " fixed sample one); for the other providers, which connection to post to",
    )
    sample.add_argument(
        "--connection",
        default=None,
        metavar="ID",
        help="the connection to post to (its account is the sample's)",
    )
    sample.add_argument(
        "--secret",
        default=None,
        help="sign with this secret (default: quickbooks and xero, the first of"
        " LEDGERHOOK_QUICKBOOKS_VERIFIER_TOKENS / LEDGERHOOK_XERO_WEBHOOK_KEYS, else the dev stack's;"
        " the others, the dev stack's secret for the provider). A freshbooks connection without a"
        " verifier is handed this one first, through the callback.verify handshake",
    )
    sample.add_argument(
        "--data-dir",
        default=".ledgerhook",
        help="`ledgerhook dev`'s data folder, where sage-intacct samples find the dev JWT key"
        " (default: %(default)s)",
    )
    sample.add_argument("--legacy", action="store_true", help="QuickBooks legacy eventNotifications format")

    tail = commands.add_parser(
        "tail",
        help="print a topic's records (CloudEvents pretty-printed)",
        description="Print a topic's records, every partition, without a consumer group. Ctrl-C stops.",
    )
    tail.add_argument("topic", help="e.g. ledgerhook.changes, ledgerhook.quarantine, ledgerhook.webhooks.raw")
    tail.add_argument(
        "--bootstrap",
        default=None,
        help="Kafka bootstrap servers (default: LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092,"
        " `ledgerhook dev`'s broker)",
    )
    tail.add_argument("--from-end", action="store_true", help="only records produced from now on")
    tail.add_argument("--no-follow", action="store_true", help="exit once caught up")
    tail.add_argument("--max", type=int, default=None, help="exit after this many records")

    commands.add_parser(
        "worker", help="run the fan-out worker (health and metrics on LEDGERHOOK_WORKER_PORT)"
    )

    redrive = commands.add_parser(
        "redrive",
        parents=[admin_url],
        help="feed quarantined deliveries back to the fan-out worker (through the admin API)",
    )
    redrive.add_argument("--reason", choices=REDRIVE_REASONS, help="only records quarantined for this reason")
    redrive.add_argument("--delivery-id", default=None, help="only the records of this delivery")

    connections = commands.add_parser("connections", help="manage connections through the admin API")
    actions = connections.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add", parents=[admin_url], help="register a connection; prints it as JSON, webhook_url included"
    )
    add.add_argument("--tenant", required=True, help="tenant id")
    add.add_argument("--provider", required=True, help="provider slug, e.g. zoho-books")
    add.add_argument("--account", required=True, help="the provider's account id")
    add.add_argument("--name", default=None, help="display name")
    add.add_argument("--secret", default=None, help="webhook secret; `-` reads it from standard input")
    add.add_argument("--metadata", default=None, help="a JSON object")
    add.add_argument(
        "--polling",
        default=None,
        choices=["auto", "poll", "sweep", "off"],
        help="polling mode (default auto: sweep with webhooks, poll without)",
    )
    add.add_argument(
        "--poll-interval",
        type=int,
        default=None,
        metavar="SECONDS",
        help="polling interval (default: the mode's, from the worker's settings)",
    )
    listing = actions.add_parser("list", parents=[admin_url], help="list connections as a table")
    listing.add_argument("--tenant", default=None)
    listing.add_argument("--provider", default=None)
    listing.add_argument("--status", default=None)
    listing.add_argument(
        "--page-size", type=int, default=200, metavar="N", help="connections per request, 1-200 (default 200)"
    )
    show = actions.add_parser("show", parents=[admin_url], help="print one connection as JSON")
    show.add_argument("id")
    remove = actions.add_parser(
        "rm", parents=[admin_url], help="disconnect a connection, erasing its secrets"
    )
    remove.add_argument("id")

    backfill = commands.add_parser(
        "backfill",
        parents=[admin_url],
        help="replay a connection's changes since a date, following the job with a progress bar",
        description="Queue a backfill through the admin API and follow it until it finishes. Ctrl-C"
        " stops following; the job goes on in the worker.",
    )
    backfill.add_argument("id", help="connection id")
    backfill.add_argument(
        "--since", required=True, help="a date (2026-11-01, midnight UTC) or an instant with an offset"
    )
    backfill.add_argument(
        "--entities",
        action="append",
        default=None,
        help="entities to replay, comma-separated or repeated (provider or unified names); default: all",
    )
    backfill.add_argument("--no-follow", action="store_true", help="queue it and exit")
    sync = commands.add_parser(
        "sync", parents=[admin_url], help="where polling stands for a connection, as a table"
    )
    sync.add_argument("id", help="connection id")
    sync.add_argument("--json", action="store_true", help="print the admin API's JSON instead")

    audit = commands.add_parser(
        "audit",
        parents=[admin_url],
        help="the audit trail of admin changes and the token lifecycle, newest first, as a table",
        description="Print the audit trail through the admin API, newest first, page after page as they"
        " come. Filters combine; times are an RFC 3339 instant with an offset (2026-12-01T10:00:00Z),"
        " a date (2026-12-01, midnight UTC) or a span back from now (90m, 12h, 7d).",
    )
    audit.add_argument("--actor", default=None, help="only this actor's entries (a token's configured name)")
    audit.add_argument(
        "--action",
        default=None,
        help="only this action (connection.pause), or those starting with a prefix ending in `.` (token.)",
    )
    audit.add_argument("--target", default=None, help="only entries about this target (connection:<id>)")
    audit.add_argument(
        "--connection",
        default=None,
        metavar="ID",
        help="only entries about this connection, its token entries included",
    )
    audit.add_argument("--since", default=None, metavar="T", help="only entries at or after T")
    audit.add_argument("--until", default=None, metavar="T", help="only entries before T")
    audit.add_argument(
        "--limit",
        default="50",
        metavar="N",
        help="at most N entries in all (default 50; 0 or `all`: every one)",
    )
    audit.add_argument(
        "--page-size", type=int, default=200, metavar="N", help="entries per request, 1-200 (default 200)"
    )
    audit.add_argument(
        "--json", action="store_true", help="one JSON object per line, as the admin API has it"
    )

    tenants = commands.add_parser("tenants", help="erase a tenant through the admin API")
    tenant_actions = tenants.add_subparsers(dest="action", required=True, metavar="ACTION")
    erase = tenant_actions.add_parser(
        "erase",
        parents=[admin_url],
        help="erase every connection of a tenant, its tokens, secrets and sync state (admin role)",
        description="Erase a tenant through `DELETE /admin/v1/tenants/{tenant_id}`: every connection of"
        " it, whatever its status, with its OAuth grant given back at the provider, its secrets, tokens"
        " and sync state. Asks you to type the tenant id again unless --yes. What stays elsewhere:"
        ' docs/operations.md, "Erasing a tenant".',
    )
    erase.add_argument(
        "tenant_id", metavar="TENANT_ID", help="the tenant id its connections were created with"
    )
    erase.add_argument(
        "--yes", action="store_true", help="erase without asking (needed when not run from a terminal)"
    )

    credentials = commands.add_parser("credentials", help="hand over or inspect a connection's OAuth tokens")
    actions = credentials.add_subparsers(dest="action", required=True, metavar="ACTION")
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("id", help="connection id")
    put = actions.add_parser(
        "put",
        parents=[connection, admin_url],
        help="store tokens: a JSON object {access_token, refresh_token, expires_in|expires_at, ...}",
    )
    put.add_argument("--file", default=None, help="read the JSON from this file (default: standard input)")
    actions.add_parser("show", parents=[connection, admin_url], help="the credential state (never a token)")

    keys = commands.add_parser(
        "keys", help="encryption key ring: generate a key, re-encrypt under the newest"
    )
    key_actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = key_actions.add_parser("generate", help="print a new key ring entry `kid:base64key`")
    generate.add_argument("--id", default="k1", help="the key id (letters, digits, - and _)")
    rotate = key_actions.add_parser(
        "rotate", help="re-encrypt every stored secret under the first key of LEDGERHOOK_ENCRYPTION_KEYS"
    )
    rotate.add_argument("--batch-size", type=int, default=500)

    emulator = commands.add_parser(
        "emulator", help="connect the provider emulator's accounts and change their records (polling demo)"
    )
    emulator_actions = emulator.add_subparsers(dest="action", required=True, metavar="ACTION")
    emulator_url = argparse.ArgumentParser(add_help=False)
    emulator_url.add_argument(
        "--emulator-url",
        default=None,
        help="the provider emulator (default: LEDGERHOOK_EMULATOR_URL or http://127.0.0.1:8900)",
    )
    emulated = "quickbooks, xero, netsuite, sage-intacct, zoho-books or freshbooks"
    connect = emulator_actions.add_parser(
        "connect",
        parents=[emulator_url, admin_url],
        help="register a connection to an emulated account with the emulator's tokens; prints it",
    )
    connect.add_argument("provider", metavar="PROVIDER", help=emulated)
    connect.add_argument("--tenant", required=True, help="tenant id")
    connect.add_argument("--account", required=True, help="the emulated account (realm, tenant, ...)")
    change = emulator_actions.add_parser(
        "change",
        parents=[emulator_url],
        help="create, update, delete or void records of an emulated account; prints what changed",
    )
    change.add_argument("provider", metavar="PROVIDER", help=emulated)
    change.add_argument(
        "entity", metavar="ENTITY", help="invoice, credit_note, contact, ... or the provider's own name"
    )
    change.add_argument("--account", required=True, help="the emulated account (realm, tenant, ...)")
    change.add_argument(
        "--operation", default="create", metavar="OP", help="create (default), update, delete or void"
    )
    change.add_argument(
        "--id", default=None, help="the record (default: a new one, or the one of ENTITY changed last)"
    )
    change.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a field of the record, VALUE as JSON when it is JSON (repeatable)",
    )
    change.add_argument("--count", type=int, default=1, help="this many records (default 1)")
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; its exit code."""
    match args.command:
        case "dev":
            from gateway.cli.processes import run_dev

            return run_dev(args)
        case "serve":
            from gateway.cli.processes import run_serve

            return run_serve(args)
        case "migrate":
            from gateway.cli.processes import run_migrate

            return run_migrate(args)
        case "worker":
            from gateway.cli.processes import run_worker

            return run_worker(args)
        case "send-sample":
            from gateway.cli.send import run_send_sample

            return run_send_sample(args)
        case "tail":
            from gateway.cli.tail import run_tail

            return run_tail(args)
        case "redrive":
            from gateway.cli.redrive import run_redrive

            return run_redrive(args)
        case "connections":
            from gateway.cli.connections import run_connections

            return run_connections(args)
        case "credentials":
            from gateway.cli.credentials import run_credentials

            return run_credentials(args)
        case "backfill":
            from gateway.cli.sync import run_backfill

            return run_backfill(args)
        case "sync":
            from gateway.cli.sync import run_sync

            return run_sync(args)
        case "audit":
            from gateway.cli.audit import run_audit

            return run_audit(args)
        case "tenants":
            from gateway.cli.tenants import run_tenants

            return run_tenants(args)
        case "keys":
            from gateway.cli.keys import run_keys

            return run_keys(args)
        case "emulator":
            from gateway.cli.emulator import run_emulator

            return run_emulator(args)
    raise AssertionError(f"no handler for {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ledgerhook` console script."""
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except SettingsError as exc:
        print(f"ledgerhook {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130  # Ctrl-C: quietly, as a shell reports an interrupted command
    except BrokenPipeError:
        # The reader went away (`| head`): nothing left to say, and nothing more to flush to it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
