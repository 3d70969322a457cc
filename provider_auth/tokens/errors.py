"""What `TokenManager` raises instead of a token, and which error a grant's state calls for.

None of them ever carries a token value.
"""

from provider_auth.accounts.events import AuthFailureReason
from provider_auth.tokens.grants import GrantRecord, GrantStatus
from provider_auth.tokens.policy import retry_in

__all__ = [
    "ConnectionPaused",
    "NoCredentials",
    "ProviderNotConfigured",
    "ReauthRequired",
    "TokenError",
    "TokenUnavailable",
    "reauth_required",
    "unusable",
]


class TokenError(Exception):
    """No usable access token for the connection right now."""


class NoCredentials(TokenError):
    """The connection has no stored credentials (never handed over, or disconnected)."""


class ConnectionPaused(TokenError):
    """The connection is paused: its tokens are not handed out (or refreshed) until it is resumed."""


class ReauthRequired(TokenError):
    """The provider refused the grant for good; the customer must reconnect.

    `reason` is the authentication_error reason (`invalid_grant`, `invalid_client`,
    `unauthorized_client`, `refresh_unavailable`).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class TokenUnavailable(TokenError):
    """The access token has expired and the provider could not be reached; try again later.

    `retry_after` is the number of seconds until the next refresh attempt is allowed, when known.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderNotConfigured(TokenError):
    """No client id and secret are configured for the provider (`LEDGERHOOK_<PROVIDER>_CLIENT_ID`)."""


def reauth_required(record: GrantRecord) -> ReauthRequired:
    """The error for a grant in `needs_reauth`, with the reason its last error recorded."""
    reason = (record.last_error or "invalid_grant").split(":", 1)[0]
    if reason not in {r.value for r in AuthFailureReason}:
        reason = AuthFailureReason.INVALID_GRANT.value
    return ReauthRequired(f"the grant needs reauthorization ({reason})", reason)


def unusable(record: GrantRecord, now: float) -> TokenError | None:
    """The error a caller gets at once, without calling the provider, for a grant that cannot serve
    it now; None when the grant may serve (or be refreshed for) a caller."""
    if record.status is GrantStatus.NEEDS_REAUTH:
        return reauth_required(record)
    if record.status is GrantStatus.UNAVAILABLE:
        return TokenUnavailable("the provider is unavailable", retry_in(record.next_attempt_at, now))
    return None
