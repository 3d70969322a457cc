"""Which signature scheme verifies each provider's webhooks, and where its secrets are kept.

The one table of these rules, keyed by provider: the gateway builds its endpoints' schemes from it
and the admin API checks a connection's secrets against it before storing them. What each provider
sends is in docs/providers.md; what a connection takes, per provider, in docs/admin-api.md.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from provider_auth.providers import Provider
from provider_auth.webhooks.base import SignatureScheme
from provider_auth.webhooks.body_hmac import BodyHmac
from provider_auth.webhooks.freshbooks import FreshBooksForm
from provider_auth.webhooks.standard import SECRET_PREFIX, StandardWebhooks, decode_secret
from provider_auth.webhooks.zoho import ZohoWebhookSignature

# The headers the app-wide endpoints' signatures come in (docs/providers.md, QuickBooks Online and Xero).
QUICKBOOKS_SIGNATURE_HEADER = "intuit-signature"
XERO_SIGNATURE_HEADER = "x-xero-signature"

# Builds a scheme from the active secrets; ValueError when they cannot verify anything.
SchemeFactory = Callable[[Sequence[str]], SignatureScheme]


class SecretHolder(StrEnum):
    """Where the secrets that verify a provider's webhooks are kept."""

    APP = "app"  # Ledgerhook's app at the provider: one endpoint serves every account
    CONNECTION = "connection"  # each connection's own, registered with it
    NONE = "none"  # no shared secret: deliveries carry a JWT, checked with the provider's public keys


@dataclass(frozen=True, slots=True)
class WebhookSigning:
    """How one provider's webhooks are signed."""

    holder: SecretHolder
    scheme: SchemeFactory | None = None  # None when no secret is involved
    check_secret: Callable[[str], None] | None = None  # ValueError for a secret of the wrong form


def _check_standard_secret(secret: str) -> None:
    # `whsec_` + base64 of the key (standardwebhooks.com). Reading tolerates a missing prefix;
    # storing does not.
    try:
        valid = secret.startswith(SECRET_PREFIX) and bool(decode_secret(secret))
    except ValueError:
        valid = False
    if not valid:
        raise ValueError("a Standard Webhooks secret must be whsec_ followed by base64")


def _quickbooks(secrets: Sequence[str]) -> SignatureScheme:
    return BodyHmac.create(QUICKBOOKS_SIGNATURE_HEADER, secrets)


def _xero(secrets: Sequence[str]) -> SignatureScheme:
    return BodyHmac.create(XERO_SIGNATURE_HEADER, secrets)


_STANDARD = WebhookSigning(SecretHolder.CONNECTION, StandardWebhooks.create, _check_standard_secret)

SIGNING: dict[Provider, WebhookSigning] = {
    Provider.QUICKBOOKS: WebhookSigning(SecretHolder.APP, _quickbooks),
    Provider.XERO: WebhookSigning(SecretHolder.APP, _xero),
    Provider.ZOHO_BOOKS: WebhookSigning(SecretHolder.CONNECTION, ZohoWebhookSignature.create),
    Provider.FRESHBOOKS: WebhookSigning(SecretHolder.CONNECTION, FreshBooksForm.create),
    # NetSuite has no webhooks of its own: a SuiteScript posts, signed as Standard Webhooks
    # (docs/providers.md, NetSuite).
    Provider.NETSUITE: _STANDARD,
    Provider.CUSTOM: _STANDARD,
    Provider.SAGE_INTACCT: WebhookSigning(SecretHolder.NONE),
}


def signing(provider: Provider) -> WebhookSigning:
    """How `provider` signs its webhooks."""
    return SIGNING[provider]


def scheme_for(provider: Provider, secrets: Sequence[str]) -> SignatureScheme:
    """The scheme that verifies `provider`'s webhooks with `secrets`.

    ValueError when the secrets cannot verify anything, or when the provider uses no secrets.
    """
    factory = SIGNING[provider].scheme
    if factory is None:
        raise ValueError(f"{provider.value} webhooks are not verified with secrets")
    return factory(secrets)


def check_secret(provider: Provider, secret: str) -> None:
    """ValueError, never naming the secret, when `secret` is not of the form `provider` uses."""
    check = SIGNING[provider].check_secret
    if check is not None:
        check(secret)
