"""What `TokenManager` raises instead of a token. None of them ever carries a token value."""

__all__ = ["NoCredentials", "ProviderNotConfigured", "ReauthRequired", "TokenError", "TokenUnavailable"]


class TokenError(Exception):
    """No usable access token for the connection right now."""


class NoCredentials(TokenError):
    """The connection has no stored credentials (never handed over, or disconnected)."""


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
