"""A grant as the token layer sees it: one customer consent at a provider and its token set.

A grant may serve several connections (one Xero token set covers every tenant the user connected).
Rows live in `oauth_grants`; `provider_auth.tokens.store` reads and writes them.
"""

from dataclasses import dataclass, field
from enum import StrEnum

from provider_auth.accounts.store import ConnectionStatus
from provider_auth.oauth.apps import GrantParams
from provider_auth.providers import Provider

__all__ = ["ConnectionGrant", "GrantRecord", "GrantStatus", "GrantType", "NewTokens"]


class GrantStatus(StrEnum):
    """Whether a grant's tokens can be used."""

    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"
    UNAVAILABLE = "unavailable"


class GrantType(StrEnum):
    """How a grant gets new access tokens."""

    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a grant type name, not a secret
    CLIENT_CREDENTIALS = "client_credentials"


@dataclass(frozen=True, slots=True)
class GrantRecord:
    """One `oauth_grants` row; tokens still sealed (see `CredentialStore.open_*`)."""

    id: str
    provider: Provider
    grant_type: GrantType
    status: GrantStatus
    sealed_access: bytes | None = field(repr=False)
    access_expires_at: float | None
    sealed_refresh: bytes | None = field(repr=False)
    refresh_expires_at: float | None
    scope: str | None
    params: GrantParams
    extra: dict[str, str]
    token_version: int
    refreshed_at: float | None
    refresh_due_at: float | None
    lost_at: float | None
    failure_count: int
    next_attempt_at: float | None
    last_error: str | None
    # Fingerprint of the current refresh token (None without one).
    current_fingerprint: bytes | None = field(default=None, repr=False)

    @property
    def access_token_expiry(self) -> float | None:
        """When the stored access token expires; None when the grant holds none."""
        return self.access_expires_at if self.sealed_access is not None else None


@dataclass(frozen=True, slots=True)
class ConnectionGrant:
    """The grant a connection uses, with what the connection adds to it."""

    record: GrantRecord
    provider_account_id: str
    connection_status: ConnectionStatus


@dataclass(frozen=True, slots=True)
class NewTokens:
    """Tokens to store. `refresh_token` None keeps the stored one (non-rotating providers)."""

    access_token: str | None = field(repr=False)
    access_expires_at: float | None
    refresh_token: str | None = field(repr=False)
    refresh_expires_at: float | None
    scope: str | None
    extra: dict[str, str] = field(default_factory=dict)
