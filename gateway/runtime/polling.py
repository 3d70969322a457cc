"""Wiring of the change poller: rate budgets, the page fetcher and the poller, from settings, on the
process's pool, producer and HTTP session, with tokens from the process's token manager.

The poller runs in the worker process; see fanout/polling/poller.py and docs/architecture.md,
"Polling state".
"""

from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry

from fanout.polling.budget import ProviderLimits, RateBudgets
from fanout.polling.fetcher import PageFetcher
from fanout.polling.poller import Poller, PollerConfig, PollerMetrics, SchedulerMetrics
from gateway.runtime.infra import Infrastructure
from gateway.settings import Settings
from provider_auth.providers import Provider
from provider_auth.tokens import TokenManager
from provider_auth.tokens.manager import AccessToken

__all__ = ["ManagerTokens", "build_poller", "poller_config", "rate_limits"]


def rate_limits(settings: Settings) -> dict[Provider, ProviderLimits]:
    """Each polled provider's limits from `LEDGERHOOK_<PROVIDER>_REQUESTS_PER_MINUTE` and
    `_CONCURRENCY` (and Xero's day and app limits)."""
    limits: dict[Provider, ProviderLimits] = {}
    for provider in Provider:
        if provider is Provider.CUSTOM:
            continue
        prefix = provider.env_name.lower()
        limits[provider] = ProviderLimits(
            requests_per_minute=getattr(settings, f"{prefix}_requests_per_minute"),
            concurrency=getattr(settings, f"{prefix}_concurrency"),
            requests_per_day=settings.xero_requests_per_day if provider is Provider.XERO else None,
            app_requests_per_minute=settings.xero_app_requests_per_minute
            if provider is Provider.XERO
            else None,
        )
    return limits


def poller_config(settings: Settings) -> PollerConfig:
    """The poller's topics and timing from settings."""
    return PollerConfig(
        changes_topic=settings.topic_changes,
        quarantine_topic=settings.topic_quarantine,
        account_events_topic=settings.topic_account_events,
        poll_interval_seconds=settings.poll_interval_seconds,
        sweep_interval_seconds=settings.sweep_interval_seconds,
        concurrency=settings.poll_concurrency,
        lease_seconds=settings.poll_lease_seconds,
        sync_seconds=settings.poll_sync_seconds,
        remember_reconciled=not settings.reconcile_webhooks,
    )


class ManagerTokens:
    """The fetcher's `PollTokens` over the token manager: a connection's access token and the API
    base URL it is good at (the grant's own, else the provider's setting)."""

    def __init__(self, manager: TokenManager, settings: Settings) -> None:
        self._manager = manager
        self._base_urls: dict[Provider, str] = {
            provider: str(getattr(settings, f"{provider.env_name.lower()}_api_base_url"))
            for provider in Provider
            if provider is not Provider.CUSTOM
        }

    async def access(self, connection_id: str) -> tuple[str, str]:
        """The connection's current access token."""
        return self._pair(await self._manager.get_access_token(connection_id))

    async def refreshed(self, connection_id: str) -> tuple[str, str]:
        """A token refreshed after the provider refused the current one."""
        return self._pair(await after_refusal(self._manager, connection_id))

    def _pair(self, token: AccessToken) -> tuple[str, str]:
        return token.token, token.api_base_url or self._base_urls[token.provider]


async def after_refusal(manager: TokenManager, connection_id: str) -> AccessToken:
    """The token to retry with after the provider refused the connection's current one: refreshed
    once across every process (`TokenManager.refused`)."""
    current = await manager.get_access_token(connection_id)
    return await manager.refused(connection_id, current.token)


def build_poller(
    settings: Settings,
    infra: Infrastructure,
    tokens: TokenManager,
    registry: CollectorRegistry,
    tracer: Tracer | None = None,
) -> Poller:
    """The worker's change poller; each poll a span of `tracer` (None: tracing is off)."""
    metrics = PollerMetrics(registry)
    budgets = RateBudgets(infra.pool, limits=rate_limits(settings))
    fetcher = PageFetcher(
        infra.http,
        budgets,
        ManagerTokens(tokens, settings),
        observe=metrics.observe_request,
        # A poll needing more requests than one window allows waits for the next window (its lease
        # is renewed meanwhile) rather than failing and starting over from its first page.
        permit_wait=budgets.minute + 30.0,
    )
    return Poller(
        poller_config(settings),
        infra.pool,
        infra.producer,
        fetcher,
        metrics,
        tracer=tracer,
        scheduler_metrics=SchedulerMetrics(registry),
    )
