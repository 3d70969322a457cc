"""`ledgerhook send-sample <provider>`: sign a realistic sample with the configured secret and post it."""

import os
from dataclasses import dataclass

import aiohttp

from gateway.dev import samples
from gateway.dev.stack import DEV_SECRETS
from gateway.ingress.endpoint import DELIVERY_ID_HEADER


@dataclass(frozen=True)
class SampleResult:
    """What the gateway answered."""

    status: int
    delivery_id: str | None
    url: str


def first_secret(env_name: str) -> str:
    """The first secret of `LEDGERHOOK_<env_name>`, or the dev stack's default for it."""
    configured = os.environ.get(f"LEDGERHOOK_{env_name}", "")
    values = [part.strip() for part in configured.split(",") if part.strip()]
    return values[0] if values else DEV_SECRETS[env_name]


def build_sample(
    provider: str, account: str | None, legacy: bool = False
) -> tuple[str, samples.SignedSample]:
    """(path, signed sample) for a provider with a shared endpoint."""
    if provider == "quickbooks":
        realm = account or "9341453908000000"
        body = samples.quickbooks_legacy(realm) if legacy else samples.quickbooks_cloudevents(realm)
        return "/webhooks/quickbooks", samples.signed_quickbooks(
            body, first_secret("QUICKBOOKS_VERIFIER_TOKENS")
        )
    if provider == "xero":
        tenant = account or "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"
        body = samples.xero_events(tenant)
        return "/webhooks/xero", samples.signed_xero(body, first_secret("XERO_WEBHOOK_KEYS"))
    raise ValueError(f"no sample for provider {provider!r}; try quickbooks or xero")


async def send_sample(
    provider: str, base_url: str, account: str | None = None, legacy: bool = False
) -> SampleResult:
    """Post one signed sample to a running gateway and report its answer."""
    path, sample = build_sample(provider, account, legacy)
    url = base_url.rstrip("/") + path
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(url, data=sample.body, headers=sample.headers) as response,
    ):
        return SampleResult(response.status, response.headers.get(DELIVERY_ID_HEADER), url)
