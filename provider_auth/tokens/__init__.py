"""OAuth tokens of every connection: stored encrypted, refreshed once, reported when they break.

`TokenManager.get_access_token(connection_id)` is what callers of provider APIs use; the proactive
`provider_auth.tokens.refresher.Refresher` keeps tokens ahead of expiry. See docs/tokens.md.
"""

from provider_auth.accounts.events import (
    AuthFailure,
    AuthFailureReason,
    ConnectionEvents,
    ReactivationReason,
)
from provider_auth.tokens.errors import (
    NoCredentials,
    ProviderNotConfigured,
    ReauthRequired,
    TokenError,
    TokenUnavailable,
)
from provider_auth.tokens.manager import (
    AccessToken,
    ConnectionRef,
    Credentials,
    CredentialsState,
    DisconnectResult,
    TokenManager,
    TokenPolicy,
)
from provider_auth.tokens.metrics import TokenMetrics
from provider_auth.tokens.store import CredentialStore, GrantStatus, GrantType

__all__ = [
    "AccessToken",
    "AuthFailure",
    "AuthFailureReason",
    "ConnectionEvents",
    "ConnectionRef",
    "CredentialStore",
    "Credentials",
    "CredentialsState",
    "DisconnectResult",
    "GrantStatus",
    "GrantType",
    "NoCredentials",
    "ProviderNotConfigured",
    "ReactivationReason",
    "ReauthRequired",
    "TokenError",
    "TokenManager",
    "TokenMetrics",
    "TokenPolicy",
    "TokenUnavailable",
]
