"""Wiring of provider_auth's token manager: apps and timing from settings, account events to Kafka.

One `TokenManager` per process, on the process's pool, producer and HTTP session; the gateway uses
it for the credentials endpoint and disconnects, the worker for the proactive refresher. See
docs/tokens.md.
"""

from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry

from fanout.account_events import AccountEventPublisher
from gateway.runtime.infra import Infrastructure
from gateway.settings import Settings
from provider_auth.accounts.status import StatusTransitions
from provider_auth.oauth.apps import OAuthApp
from provider_auth.oauth.client import TokenClient
from provider_auth.oauth.specs import OAUTH_PROVIDERS
from provider_auth.providers import Provider
from provider_auth.tokens import CredentialStore, TokenManager, TokenMetrics, TokenPolicy
from provider_auth.tokens.refresher import Refresher
from provider_auth.vault import KeyRing

__all__ = ["build_refresher", "build_token_manager", "oauth_apps", "token_policy"]


def oauth_apps(settings: Settings) -> dict[Provider, OAuthApp]:
    """Ledgerhook's app at every provider whose `LEDGERHOOK_<PROVIDER>_CLIENT_ID` is set."""
    apps: dict[Provider, OAuthApp] = {}
    for provider in OAUTH_PROVIDERS:
        prefix = provider.env_name.lower()
        client_id = getattr(settings, f"{prefix}_client_id")
        if not client_id:
            continue
        secret = getattr(settings, f"{prefix}_client_secret")
        jwt_key = settings.netsuite_jwt_private_key if provider is Provider.NETSUITE else None
        apps[provider] = OAuthApp(
            provider=provider,
            client_id=client_id,
            client_secret=secret.get_secret_value() if secret else "",
            token_url=getattr(settings, f"{prefix}_token_url"),
            api_base_url=getattr(settings, f"{prefix}_api_base_url"),
            revoke_url=(settings.quickbooks_revoke_url or None) if provider is Provider.QUICKBOOKS else None,
            jwt_key_id=settings.netsuite_jwt_key_id if provider is Provider.NETSUITE else None,
            jwt_private_key=jwt_key.get_secret_value() if jwt_key else None,
            jwt_algorithm=settings.netsuite_jwt_algorithm,
            jwt_scope=settings.netsuite_jwt_scope,
        )
    return apps


def token_policy(settings: Settings) -> TokenPolicy:
    """The token manager's timing rules from settings."""
    return TokenPolicy(
        skew=settings.token_refresh_skew_seconds,
        window=settings.token_refresh_window_seconds,
        jitter=settings.token_refresh_jitter_seconds,
        max_transient_failures=settings.token_max_transient_failures,
        cache_seconds=settings.token_cache_seconds,
        lock_timeout=2 * settings.token_request_timeout_seconds + 5,
    )


def build_token_manager(
    settings: Settings,
    infra: Infrastructure,
    registry: CollectorRegistry | None = None,
    tracer: Tracer | None = None,
) -> TokenManager | None:
    """The process's token manager, or None without `LEDGERHOOK_ENCRYPTION_KEYS` (tokens are only
    ever stored encrypted); its refreshes are spans of `tracer` (the process's `TOKENS` tracer, None
    when tracing is off)."""
    if settings.encryption_keys is None:
        return None
    keyring = KeyRing.parse(settings.encryption_keys.get_secret_value())
    return TokenManager(
        CredentialStore(infra.pool, keyring),
        TokenClient(infra.http, timeout=settings.token_request_timeout_seconds),
        oauth_apps(settings),
        StatusTransitions(AccountEventPublisher(infra.producer, settings.topic_account_events)),
        policy=token_policy(settings),
        metrics=TokenMetrics(registry),
        tracer=tracer,
    )


def build_refresher(settings: Settings, manager: TokenManager) -> Refresher:
    """The proactive refresher of the worker process."""
    return Refresher(
        manager,
        interval=settings.token_refresh_interval_seconds,
        batch_size=settings.token_refresh_batch_size,
        concurrency=settings.token_refresh_concurrency,
        lease=max(120.0, 4 * settings.token_request_timeout_seconds),
    )
