"""`ledgerhook dev`: embedded PostgreSQL and broker, migrations, topics, and the gateway, in one command.

Ctrl-C or SIGTERM stops the gateway, then the broker, then PostgreSQL; nothing is left running.
"""

import asyncio
import os
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.dev.banner import banner, emulator_banner_lines
from gateway.dev.embedded import DevStackError, EmbeddedBroker, EmbeddedPostgres, port_in_use
from gateway.dev.emulator_setup import emulator_defaults, running_emulator
from gateway.dev.jwt_key import dev_sage_intacct_settings
from gateway.dev.secrets import DEV_SECRETS
from gateway.runtime.infra import open_infrastructure
from gateway.runtime.kafka import ensure_topics
from gateway.runtime.lifecycle import Lifecycle
from gateway.runtime.logs import configure_logging
from gateway.runtime.migrate import migrate
from gateway.runtime.server import GatewayServer, uvicorn_config
from gateway.runtime.worker import running_worker_tasks
from gateway.settings import Settings, environment_values, load_settings
from provider_auth.vault import KeyRing

# Where `dev` keeps the key ring it made for secrets at rest (when LEDGERHOOK_ENCRYPTION_KEYS is unset).
ENCRYPTION_KEYS_FILE = "encryption-keys"


@dataclass(frozen=True)
class DevOptions:
    """The flags of `ledgerhook dev`."""

    host: str = "127.0.0.1"
    port: int = 8000
    kafka_port: int = 9092
    data_dir: Path = Path(".ledgerhook")
    # Run the provider emulator (gateway/dev/emulator) and point every provider's OAuth URLs at it.
    emulator: bool = False
    emulator_port: int = 8900
    # What `dev` logs on the terminal: quiet by default, so the banner stays in view.
    log_level: str = "WARNING"


def dev_settings(options: DevOptions, database_url: str, bootstrap: str) -> Settings:
    """Settings for the dev stack: embedded services, dev secrets, environment overrides on top."""
    configured = environment_values()
    defaults: dict[str, Any] = dict(DEV_SECRETS)
    defaults |= {
        "kafka_idempotent_producer": False,
        "topic_partitions": 3,
        "shutdown_drain_seconds": 0,
    }
    # Webhook URLs of connections point at this stack; secrets survive restarts under its own key ring.
    defaults["public_base_url"] = f"http://{options.host}:{options.port}"
    # Sage Intacct deliveries carry a JWT: `send-sample sage-intacct` signs with this dev key.
    defaults |= dev_sage_intacct_settings(options.data_dir)
    if "encryption_keys" not in configured:
        defaults["encryption_keys"] = dev_encryption_keys(options.data_dir)
    if options.emulator:
        defaults |= emulator_defaults("127.0.0.1", options.emulator_port)
    chosen = {name: value for name, value in defaults.items() if name not in configured}
    # The embedded services and the flags are what `dev` is for: they always apply.
    chosen |= {
        "database_url": database_url,
        "kafka_bootstrap_servers": bootstrap,
        "host": options.host,
        "port": options.port,
        "log_level": options.log_level,
    }
    return load_settings(**chosen)


def dev_encryption_keys(data_dir: Path) -> str:
    """The dev stack's key ring, `dev:<base64 key>`: read from the data dir, made (mode 0600) if absent."""
    path = data_dir / ENCRYPTION_KEYS_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        ring = f"dev:{KeyRing.generate_key()}\n"
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another dev process made it first: use theirs
        else:
            with os.fdopen(descriptor, "w") as file:
                file.write(ring)
    return path.read_text().strip()


async def _serve(settings: Settings, options: DevOptions) -> None:
    await migrate(settings.database_url.get_secret_value())
    await ensure_topics(settings)
    lifecycle = Lifecycle()
    async with AsyncExitStack() as stack:
        infra = await stack.enter_async_context(open_infrastructure(settings))
        # OAuth tokens against the provider emulator, with --emulator.
        emulator_url = None
        if options.emulator:
            emulator = await stack.enter_async_context(running_emulator("127.0.0.1", options.emulator_port))
            emulator_url = emulator.base_url
        app = create_app(settings, lifecycle, infra)
        # The worker's tasks (fan-out, dedupe pruning, token refresher) in this process, on the same
        # infrastructure; their metrics live in a registry of their own (the worker port serves them
        # in `ledgerhook worker`).
        await stack.enter_async_context(running_worker_tasks(settings, infra, CollectorRegistry()))
        server = GatewayServer(
            uvicorn_config(settings, app, options.host, options.port), lifecycle, drain_seconds=0
        )
        tokens = emulator_banner_lines(emulator_url, f"http://{options.host}:{options.port}", settings)
        print(
            banner(settings, options) + "\n".join(tokens),
            file=sys.stderr,
            flush=True,
        )
        await server.serve()


def run_dev_stack(options: DevOptions) -> int:
    """Run the whole stack in the foreground until Ctrl-C or SIGTERM; 0 on a clean stop."""
    if port_in_use(options.host, options.port):
        print(
            f"ledgerhook dev: port {options.port} on {options.host} is already in use; "
            "choose another with --port.",
            file=sys.stderr,
        )
        return 2
    if port_in_use("127.0.0.1", options.kafka_port):
        print(
            f"ledgerhook dev: Kafka port {options.kafka_port} is already in use; "
            "choose another with --kafka-port.",
            file=sys.stderr,
        )
        return 2
    if options.emulator and port_in_use("127.0.0.1", options.emulator_port):
        print(
            f"ledgerhook dev: emulator port {options.emulator_port} is already in use; "
            "choose another with --emulator-port.",
            file=sys.stderr,
        )
        return 2
    configure_logging(options.log_level)
    options.data_dir.mkdir(parents=True, exist_ok=True)
    postgres = EmbeddedPostgres(options.data_dir.resolve() / "postgres")
    broker = EmbeddedBroker(options.kafka_port, log_path=options.data_dir / "broker.log")
    try:
        database_url = postgres.start()
        broker.start()
        settings = dev_settings(options, database_url, broker.bootstrap)
        asyncio.run(_serve(settings, options))
        return 0
    except DevStackError as exc:
        print(f"ledgerhook dev: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()
        postgres.stop()
