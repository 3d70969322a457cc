"""Webhook signature schemes: each checks the exact raw bytes of a delivery against active secrets.

Every scheme takes several secrets at once, so a secret can be rotated without dropping deliveries,
and compares in constant time. Header lookups use lower-case names: pass a case-insensitive mapping
(Starlette's `Headers`) or a dict with lower-case keys. Which scheme guards which provider, and the
providers' own rules: docs/providers.md.
"""

from provider_auth.webhooks.base import SignatureScheme, Verdict
from provider_auth.webhooks.body_hmac import BodyHmac
from provider_auth.webhooks.freshbooks import FreshBooksForm
from provider_auth.webhooks.jwt_bearer import JwtBearer
from provider_auth.webhooks.standard import StandardWebhooks
from provider_auth.webhooks.zoho import ZohoWebhookSignature

__all__ = [
    "BodyHmac",
    "FreshBooksForm",
    "JwtBearer",
    "SignatureScheme",
    "StandardWebhooks",
    "Verdict",
    "ZohoWebhookSignature",
]
