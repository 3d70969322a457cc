"""`ledgerhook send-sample <provider>`: sign a realistic sample with the configured secret and post it.

The secret is the first of `LEDGERHOOK_QUICKBOOKS_VERIFIER_TOKENS` or `LEDGERHOOK_XERO_WEBHOOK_KEYS`,
else the dev stack's, so a sample sent to `ledgerhook dev` passes as it is.
"""

import argparse
import asyncio
import sys
from dataclasses import dataclass

import aiohttp
from pydantic import SecretStr

from gateway.dev import samples
from gateway.dev.secrets import DEV_SECRETS
from gateway.ingress.delivery import DELIVERY_ID_HEADER
from gateway.settings import ClientSettings


@dataclass(frozen=True)
class SampleResult:
    """What the gateway answered."""

    status: int
    delivery_id: str | None
    url: str


def run_send_sample(args: argparse.Namespace) -> int:
    """Post one sample and print the answer; 0 only for a 200."""
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


def build_sample(
    provider: str, account: str | None, legacy: bool = False
) -> tuple[str, samples.SignedSample]:
    """(path, signed sample) for a provider with a shared endpoint."""
    settings = ClientSettings()
    if provider == "quickbooks":
        realm = account or "9341453908000000"
        body = samples.quickbooks_legacy(realm) if legacy else samples.quickbooks_cloudevents(realm)
        secret = _first(settings.quickbooks_verifier_tokens, "quickbooks_verifier_tokens")
        return "/webhooks/quickbooks", samples.signed_quickbooks(body, secret)
    if provider == "xero":
        tenant = account or "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"
        body = samples.xero_events(tenant)
        secret = _first(settings.xero_webhook_keys, "xero_webhook_keys")
        return "/webhooks/xero", samples.signed_xero(body, secret)
    raise ValueError(f"no sample for provider {provider!r}; try quickbooks or xero")


def _first(configured: tuple[SecretStr, ...], name: str) -> str:
    return configured[0].get_secret_value() if configured else DEV_SECRETS[name]


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
