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
    ConnectionPaused,
    NoCredentials,
    ProviderNotConfigured,
    ReauthRequired,
    TokenError,
    TokenUnavailable,
)
from provider_auth.tokens.grants import GrantStatus, GrantType
from provider_auth.tokens.handover import ConnectionRef, Credentials, CredentialsState
from provider_auth.tokens.manager import AccessToken, RefreshOutcome, TokenManager
from provider_auth.tokens.metrics import TokenMetrics
from provider_auth.tokens.policy import TokenPolicy
from provider_auth.tokens.revoke import DisconnectResult
from provider_auth.tokens.store import CredentialStore

__all__ = [
    "AccessToken",
    "AuthFailure",
    "AuthFailureReason",
    "ConnectionEvents",
    "ConnectionPaused",
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
    "RefreshOutcome",
    "TokenError",
    "TokenManager",
    "TokenMetrics",
    "TokenPolicy",
    "TokenUnavailable",
]
