"""`ledgerhook dev --emulator`: OAuth tokens and change polling against the provider emulator, in-process.

The emulator (`gateway.dev.emulator`) gets a dev app registered with every provider it plays, and
the providers' token and API URLs point at it. Its access tokens live 3 minutes and the refresher
runs every few seconds, so a refresh ahead of expiry shows within two minutes. Seeding and revoking
grants: docs/tokens.md. The poller runs on short intervals too, so a record changed with
`ledgerhook emulator change` shows on the changes topic within seconds (docs/emulator.md,
"From the command line").
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gateway.dev.embedded import DevStackError
from gateway.dev.emulator import Emulator
from provider_auth.oauth.specs import OAUTH_PROVIDERS

__all__ = [
    "DEV_CLIENT_ID",
    "DEV_CLIENT_SECRET",
    "DEV_POLL_INTERVAL_SECONDS",
    "DEV_POLL_SYNC_SECONDS",
    "DEV_SWEEP_INTERVAL_SECONDS",
    "EMULATOR_ACCESS_TTL",
    "emulator_defaults",
    "running_emulator",
]

DEV_CLIENT_ID = "ledgerhook-dev"
DEV_CLIENT_SECRET = "ledgerhook-dev-secret"  # noqa: S105 - the emulator's well-known dev app
EMULATOR_ACCESS_TTL = 180.0
# Polling on a demo's scale (defaults: 30, 300, 3600 s): a new connection is picked up within the
# sync, then polled or swept every 10 s. Not faster: a poll asks one list per entity, so every 5 s
# would take Zoho Books (10 lists) past its 100 requests a minute and FreshBooks (6) past its default
# budget of 60, and Xero's sweep (9 lists) past its 60 (docs/providers.md, Zoho Books and Xero).
DEV_POLL_SYNC_SECONDS = 2.0
DEV_POLL_INTERVAL_SECONDS = 10
DEV_SWEEP_INTERVAL_SECONDS = 10


def emulator_defaults(host: str, port: int) -> dict[str, Any]:
    """Settings that point every provider at the emulator, with short dev timings (tokens, polling)."""
    from provider_auth.providers import Provider

    base = f"http://{host}:{port}"
    values: dict[str, Any] = {
        "token_refresh_skew_seconds": 30,
        "token_refresh_window_seconds": 90,
        "token_refresh_jitter_seconds": 15,
        "token_refresh_interval_seconds": 5,
        "token_request_timeout_seconds": 5,
        "poll_sync_seconds": DEV_POLL_SYNC_SECONDS,
        "poll_interval_seconds": DEV_POLL_INTERVAL_SECONDS,
        "sweep_interval_seconds": DEV_SWEEP_INTERVAL_SECONDS,
    }
    for provider in OAUTH_PROVIDERS:
        prefix = provider.env_name.lower()
        values[f"{prefix}_client_id"] = DEV_CLIENT_ID
        values[f"{prefix}_client_secret"] = DEV_CLIENT_SECRET
        values[f"{prefix}_token_url"] = f"{base}/{provider.value}/oauth/token"
        values[f"{prefix}_api_base_url"] = f"{base}/{provider.value}"
    values["quickbooks_revoke_url"] = f"{base}/{Provider.QUICKBOOKS.value}/oauth/revoke"
    return values


@asynccontextmanager
async def running_emulator(host: str, port: int) -> AsyncIterator[Emulator]:
    """The provider emulator serving on (host, port) in this loop, with the dev app registered."""
    emulator = Emulator(host=host, port=port)
    for provider in OAUTH_PROVIDERS:
        emulator.register_client(provider, DEV_CLIENT_ID, DEV_CLIENT_SECRET)
        emulator.set_access_ttl(provider, EMULATOR_ACCESS_TTL)
    try:
        await emulator.start()
    except OSError as exc:
        raise DevStackError(f"the provider emulator cannot listen on {host}:{port}: {exc}") from None
    try:
        yield emulator
    finally:
        await emulator.stop()
