"""How each provider's token endpoint behaves, as the emulator plays it: one profile per provider.

The facts, with their sources, are in docs/providers.md (each provider's "OAuth tokens"); the
unverified ones can be changed at run time through `ProviderConfig` (state.py).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from provider_auth.providers import Provider

ClientAuth = Literal["basic", "form"]

DAY = 86_400.0


@dataclass(frozen=True)
class ProviderProfile:
    """How one provider's token endpoint behaves by default."""

    provider: Provider
    # Where the client proves who it is on the token endpoint: an HTTP Basic header or
    # client_id/client_secret parameters (form body, JSON body or query string).
    client_auth: ClientAuth
    # Whether a refresh hands out a new refresh token (the old one is then superseded).
    rotates: bool
    # How long a superseded refresh token keeps working, in seconds.
    grace_seconds: float
    access_ttl: float
    # Rolling lifetime of a refresh token from its last use; None: it never expires.
    refresh_ttl: float | None
    # Absolute lifetime of a grant from its creation; None: no cap.
    refresh_hard_cap: float | None
    token_type: str
    # Whether a non-rotating refresh still echoes the (unchanged) refresh token in the response.
    echoes_refresh_token: bool
    # NetSuite sends expires_in as a JSON string; clients must accept both.
    expires_in_as_string: bool = False
    # Answer to a dead (revoked, superseded, expired, unknown) refresh token.
    dead_grant_status: int = 400
    dead_grant_error: str = "invalid_grant"
    # NetSuite machine-to-machine: client credentials with a signed JWT assertion.
    client_credentials_jwt: bool = False
    revoke_requires_client_auth: bool = True
    # Status for revoking a token the server does not know (RFC 7009 says 200).
    revoke_unknown_status: int = 200
    revoke_ok_body: Mapping[str, object] | None = None
    # At most this many live grants per (client, user); the oldest is dropped silently.
    max_grants_per_user: int | None = None
    extra_fields: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))


PROFILES: Mapping[Provider, ProviderProfile] = MappingProxyType(
    {
        # (docs/providers.md, QuickBooks Online) Basic client auth; access token 1 h; refresh token
        # 100 days rolling with a 5-year hard cap, its value may change on any refresh (always store
        # the latest); responses carry x_refresh_token_expires_in and token_type "bearer". Revoke
        # takes {"token": ...} with Basic auth. Grace for a superseded token: unverified, default
        # none.
        Provider.QUICKBOOKS: ProviderProfile(
            provider=Provider.QUICKBOOKS,
            client_auth="basic",
            rotates=True,
            grace_seconds=0.0,
            access_ttl=3600.0,
            refresh_ttl=100 * DAY,
            refresh_hard_cap=5 * 365 * DAY,
            token_type="bearer",
            echoes_refresh_token=True,
        ),
        # (docs/providers.md, Xero) Basic client auth on identity.xero.com/connect/token; access
        # token 30 min; the refresh token rotates on every use, expires after 60 days unused, and
        # the previous one may be retried for 30 minutes when the response was lost.
        Provider.XERO: ProviderProfile(
            provider=Provider.XERO,
            client_auth="basic",
            rotates=True,
            grace_seconds=1800.0,
            access_ttl=1800.0,
            refresh_ttl=60 * DAY,
            refresh_hard_cap=None,
            token_type="Bearer",
            echoes_refresh_token=True,
            extra_fields=MappingProxyType({"scope": "offline_access accounting.transactions"}),
        ),
        # (docs/providers.md, Zoho Books) client_id/client_secret as parameters; access token 1 h
        # with api_domain; the refresh token never expires and never rotates (no refresh_token in
        # the response); at most 20 per user, the oldest silently dropped. A revoked refresh token
        # answers {"error":"invalid_code"} (Zoho "Token Validity" page), and Zoho SDK issue reports
        # show it with HTTP 200. Revoke: POST .../oauth/v2/token/revoke?token=..., 400 for an
        # invalid token, {"status":"success"} otherwise.
        Provider.ZOHO_BOOKS: ProviderProfile(
            provider=Provider.ZOHO_BOOKS,
            client_auth="form",
            rotates=False,
            grace_seconds=0.0,
            access_ttl=3600.0,
            refresh_ttl=None,
            refresh_hard_cap=None,
            token_type="Bearer",
            echoes_refresh_token=False,
            dead_grant_status=200,
            dead_grant_error="invalid_code",
            revoke_requires_client_auth=False,
            revoke_unknown_status=400,
            revoke_ok_body=MappingProxyType({"status": "success"}),
            max_grants_per_user=20,
            extra_fields=MappingProxyType({"api_domain": "https://www.zohoapis.com"}),
        ),
        # (docs/providers.md, FreshBooks) client_id/client_secret in the (form or JSON) body; access
        # token 12 h; the refresh token never expires but is single use (a new one on every
        # refresh).
        Provider.FRESHBOOKS: ProviderProfile(
            provider=Provider.FRESHBOOKS,
            client_auth="form",
            rotates=True,
            grace_seconds=0.0,
            access_ttl=43_200.0,
            refresh_ttl=None,
            refresh_hard_cap=None,
            token_type="Bearer",
            echoes_refresh_token=True,
            revoke_ok_body=MappingProxyType({}),
            extra_fields=MappingProxyType({"scope": "user:profile:read user:invoices:read"}),
        ),
        # (docs/providers.md, NetSuite) Basic client auth for refresh; the refresh response carries
        # no new refresh token; access token 60 min. Client credentials: a JWT assertion
        # (PS256..PS512 / ES256..ES512, kid = certificate id, iss = client id, aud = token endpoint,
        # exp < 60 min after iat) and no refresh token. expires_in arrives as a string.
        Provider.NETSUITE: ProviderProfile(
            provider=Provider.NETSUITE,
            client_auth="basic",
            rotates=False,
            grace_seconds=0.0,
            access_ttl=3600.0,
            refresh_ttl=168 * 3600.0,
            refresh_hard_cap=None,
            token_type="bearer",
            echoes_refresh_token=False,
            expires_in_as_string=True,
            client_credentials_jwt=True,
        ),
        # (docs/providers.md, Sage Intacct) client_id/client_secret in the body, JWT access tokens.
        # Lifetimes and rotation: unverified; modelled like a rotating server.
        Provider.SAGE_INTACCT: ProviderProfile(
            provider=Provider.SAGE_INTACCT,
            client_auth="form",
            rotates=True,
            grace_seconds=0.0,
            access_ttl=3600.0,
            refresh_ttl=None,
            refresh_hard_cap=None,
            token_type="Bearer",
            echoes_refresh_token=True,
        ),
    }
)


def profile(provider: str | Provider) -> ProviderProfile:
    """The profile of a provider slug; KeyError when the emulator does not play that provider."""
    try:
        return PROFILES[Provider(provider)]
    except ValueError:
        raise KeyError(provider) from None


def emulated_providers() -> tuple[Provider, ...]:
    """Every provider the emulator plays, in the order of the project's provider list."""
    return tuple(p for p in Provider if p in PROFILES)
