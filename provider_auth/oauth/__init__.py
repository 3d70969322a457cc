"""OAuth with the accounting providers: per-provider specs, app configuration, the token client."""

from provider_auth.oauth.apps import GrantParams, OAuthApp, resolve_url
from provider_auth.oauth.client import TokenClient, TokenRequestError, TokenSet
from provider_auth.oauth.specs import OAUTH_PROVIDERS, SPECS, ZOHO_DATA_CENTRES, OAuthSpec, oauth_spec

__all__ = [
    "OAUTH_PROVIDERS",
    "SPECS",
    "ZOHO_DATA_CENTRES",
    "GrantParams",
    "OAuthApp",
    "OAuthSpec",
    "TokenClient",
    "TokenRequestError",
    "TokenSet",
    "oauth_spec",
    "resolve_url",
]
