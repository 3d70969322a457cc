"""What each provider's OAuth server does, as data: one `OAuthSpec` per provider slug.

The token client and the token manager are generic; everything provider-specific about tokens sits
here, so a fact found wrong is a one-line change. Facts come from docs/providers.md (one section per
provider) and the providers' own docs, cited per entry; where no primary source confirmed a fact the
entry says "unverified" and picks the value that fails safe.

URLs are templates: `{account}` is the NetSuite account id as it appears in its domain (lower case,
`_` -> `-`), `{accounts_server}` / `{api_domain}` the Zoho data centre's servers. A URL without
placeholders (an emulator, a sandbox) is used as is.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from provider_auth.providers import Provider

__all__ = [
    "OAUTH_PROVIDERS",
    "SPECS",
    "ZOHO_DATA_CENTRES",
    "ClientAuth",
    "OAuthSpec",
    "RevokeStyle",
    "ZohoDataCentre",
    "netsuite_host_id",
    "oauth_spec",
]

MINUTE = 60.0
HOUR = 3600.0
DAY = 86_400.0

ClientAuth = Literal["basic", "form"]
# How a grant is given back when a connection is deleted: RFC 7009-style token revocation, Xero's
# per-tenant `DELETE /connections/{id}`, or nothing (the provider has no endpoint we use).
RevokeStyle = Literal["token_json", "token_form", "xero_connection", "none"]


@dataclass(frozen=True, slots=True)
class OAuthSpec:
    """How one provider's OAuth server behaves, and where it lives by default (production)."""

    provider: Provider
    # The token endpoint (RFC 6749 section 3.2).
    oauth_endpoint: str
    api_base_url: str
    # Where the client proves who it is on the token endpoint: an HTTP Basic header, or
    # client_id/client_secret in the form body.
    client_auth: ClientAuth
    # Whether a refresh may hand out a new refresh token that supersedes the one used.
    rotates: bool
    # How long a superseded refresh token may be used again after a lost response (seconds).
    lost_response_grace: float
    # Access token lifetime, used only when a response omits `expires_in`.
    default_access_lifetime: float
    # The refresh token dies after this long unused (rolling); None: no inactivity expiry.
    refresh_idle_lifetime: float | None
    # `error` codes that mean the refresh token is dead (RFC 6749 section 5.2 says invalid_grant).
    dead_grant_errors: frozenset[str] = frozenset({"invalid_grant"})
    revoke: RevokeStyle = "none"
    revoke_endpoint: str | None = None
    # NetSuite machine-to-machine: client credentials with a signed JWT assertion, no refresh token.
    supports_client_credentials: bool = False


# Zoho: "Multi DC support" (accounts/protocol/oauth/multi-dc): each data centre has its own accounts
# server, and a token must be refreshed at the server of the DC the user registered in. The API
# domains follow the same split (www.zohoapis.<tld>) (docs/providers.md, Zoho Books).
@dataclass(frozen=True, slots=True)
class ZohoDataCentre:
    """A Zoho data centre: where its tokens are refreshed and where its APIs answer."""

    accounts_server: str
    api_domain: str


ZOHO_DATA_CENTRES: Mapping[str, ZohoDataCentre] = MappingProxyType(
    {
        "us": ZohoDataCentre("https://accounts.zoho.com", "https://www.zohoapis.com"),
        "eu": ZohoDataCentre("https://accounts.zoho.eu", "https://www.zohoapis.eu"),
        "in": ZohoDataCentre("https://accounts.zoho.in", "https://www.zohoapis.in"),
        "au": ZohoDataCentre("https://accounts.zoho.com.au", "https://www.zohoapis.com.au"),
        "jp": ZohoDataCentre("https://accounts.zoho.jp", "https://www.zohoapis.jp"),
        "ca": ZohoDataCentre("https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),
        "cn": ZohoDataCentre("https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
        "sa": ZohoDataCentre("https://accounts.zoho.sa", "https://www.zohoapis.sa"),
        "uk": ZohoDataCentre("https://accounts.zoho.uk", "https://www.zohoapis.uk"),
    }
)


SPECS: Mapping[Provider, OAuthSpec] = MappingProxyType(
    {
        # Intuit OAuth 2.0 docs: Basic client auth; access token 1 h; refresh token 100 days rolling
        # (5-year hard cap, announced 2025), and "the value can change on any refresh: always store the
        # latest". No grace for a superseded refresh token is documented, so none is assumed. Revoke:
        # POST {"token": ...} as JSON with Basic auth to developer.api.intuit.com.
        # (docs/providers.md, QuickBooks Online)
        Provider.QUICKBOOKS: OAuthSpec(
            provider=Provider.QUICKBOOKS,
            oauth_endpoint="https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
            api_base_url="https://quickbooks.api.intuit.com",
            client_auth="basic",
            rotates=True,
            lost_response_grace=0.0,
            default_access_lifetime=HOUR,
            refresh_idle_lifetime=100 * DAY,
            revoke="token_json",
            revoke_endpoint="https://developer.api.intuit.com/v2/oauth2/tokens/revoke",
        ),
        # Xero developer docs ("Refreshing access tokens"): Basic client auth; access token 30 min;
        # the refresh token rotates on every use and expires after 60 days unused; "if you don't
        # receive the response, you can retry with the previous refresh token for 30 minutes".
        # One token set covers every tenant the user connected; a tenant is given back with
        # DELETE https://api.xero.com/connections/{connectionId}. (docs/providers.md, Xero)
        Provider.XERO: OAuthSpec(
            provider=Provider.XERO,
            oauth_endpoint="https://identity.xero.com/connect/token",
            api_base_url="https://api.xero.com",
            client_auth="basic",
            rotates=True,
            lost_response_grace=30 * MINUTE,
            default_access_lifetime=30 * MINUTE,
            refresh_idle_lifetime=60 * DAY,
            revoke="xero_connection",
        ),
        # Zoho accounts docs: client_id/client_secret as parameters, at the accounts server of the
        # user's data centre; access token 1 h (the response names `api_domain`); the refresh token
        # never expires and never rotates. A revoked refresh token answers {"error":"invalid_code"}
        # (Zoho "Token Validity"), reported with HTTP 200 by SDK issues: it is a dead grant too.
        # (docs/providers.md, Zoho Books)
        Provider.ZOHO_BOOKS: OAuthSpec(
            provider=Provider.ZOHO_BOOKS,
            oauth_endpoint="{accounts_server}/oauth/v2/token",
            api_base_url="{api_domain}/books/v3",
            client_auth="form",
            rotates=False,
            lost_response_grace=0.0,
            default_access_lifetime=HOUR,
            refresh_idle_lifetime=None,
            dead_grant_errors=frozenset({"invalid_grant", "invalid_code"}),
        ),
        # FreshBooks API docs ("Authentication"): client_id/client_secret in the body; access token
        # 12 h; the refresh token never expires but is single use (each refresh returns a new one).
        # (docs/providers.md, FreshBooks)
        Provider.FRESHBOOKS: OAuthSpec(
            provider=Provider.FRESHBOOKS,
            oauth_endpoint="https://api.freshbooks.com/auth/oauth/token",
            api_base_url="https://api.freshbooks.com",
            client_auth="form",
            rotates=True,
            lost_response_grace=0.0,
            default_access_lifetime=12 * HOUR,
            refresh_idle_lifetime=None,
        ),
        # NetSuite help ("Refresh Token POST Request", "OAuth 2.0 Client Credentials (M2M) Setup"):
        # the token endpoint lives on the account's own domain; Basic client auth for refresh, and
        # the refresh keeps the same refresh token (auth-code refresh tokens live 1-720 h, 168 h by
        # default, counted from consent: unverified whether use extends them). Access token 60 min.
        # Client credentials: a JWT assertion (PS256/ES256 family, kid = certificate id, iss =
        # client id, aud = token endpoint, exp < 60 min after iat) and no refresh token.
        # (docs/providers.md, NetSuite)
        Provider.NETSUITE: OAuthSpec(
            provider=Provider.NETSUITE,
            oauth_endpoint="https://{account}.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token",
            api_base_url="https://{account}.suitetalk.api.netsuite.com/services/rest",
            client_auth="basic",
            rotates=False,
            lost_response_grace=0.0,
            default_access_lifetime=HOUR,
            refresh_idle_lifetime=None,
            supports_client_credentials=True,
        ),
        # Sage Intacct developer portal ("OAuth 2.0 authorization"): client_id/client_secret in the
        # body; access tokens are JWTs. Lifetimes and rotation: unverified, so a new refresh token is
        # always taken when one is returned and none is assumed to survive a lost response.
        # (docs/providers.md, Sage Intacct)
        Provider.SAGE_INTACCT: OAuthSpec(
            provider=Provider.SAGE_INTACCT,
            oauth_endpoint="https://api.intacct.com/ia/api/v1/oauth2/token",
            api_base_url="https://api.intacct.com/ia/api/v1",
            client_auth="form",
            rotates=True,
            lost_response_grace=0.0,
            default_access_lifetime=HOUR,
            refresh_idle_lifetime=None,
        ),
    }
)

OAUTH_PROVIDERS: tuple[Provider, ...] = tuple(p for p in Provider if p in SPECS)
"""Every provider whose tokens Ledgerhook keeps, in the order of the project's provider list."""


def oauth_spec(provider: Provider) -> OAuthSpec:
    """The spec of a provider; KeyError for one without OAuth (custom sources)."""
    return SPECS[provider]


def netsuite_host_id(account_id: str) -> str:
    """The account id as NetSuite writes it in domain names: `1234567_SB1` -> `1234567-sb1`."""
    return account_id.strip().lower().replace("_", "-")
