"""Which signature scheme guards a webhook URL, and what the URL says about the sender."""

from dataclasses import dataclass
from typing import Protocol

from gateway.settings import Settings, secret_values
from provider_auth.providers import Provider
from provider_auth.webhooks import BodyHmac, SignatureScheme


@dataclass(frozen=True, slots=True)
class Source:
    """A webhook sender Ledgerhook knows: its provider, its scheme and, per connection, who it is."""

    provider: Provider
    scheme: SignatureScheme
    connection_id: str | None = None
    provider_account_id: str | None = None


class SourceResolver(Protocol):
    """Finds the source behind `/webhooks/{provider}[/{connection_id}]`, or None (404)."""

    async def resolve(self, provider: Provider, connection_id: str | None) -> Source | None:
        """The source for a URL, or None when nothing is registered there."""
        ...


class SharedSources:
    """The app-wide endpoints (QuickBooks, Xero), enabled by configuring their secrets."""

    def __init__(self, settings: Settings) -> None:
        self._sources: dict[Provider, Source] = {}
        if settings.quickbooks_verifier_tokens:
            scheme = BodyHmac.create("intuit-signature", secret_values(settings.quickbooks_verifier_tokens))
            self._sources[Provider.QUICKBOOKS] = Source(Provider.QUICKBOOKS, scheme)
        if settings.xero_webhook_keys:
            scheme = BodyHmac.create("x-xero-signature", secret_values(settings.xero_webhook_keys))
            self._sources[Provider.XERO] = Source(Provider.XERO, scheme)

    async def resolve(self, provider: Provider, connection_id: str | None) -> Source | None:
        """The shared source for `provider`; per-connection URLs are not served here."""
        if connection_id is not None:
            return None
        return self._sources.get(provider)
