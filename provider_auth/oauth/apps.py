"""Ledgerhook's registered app at each provider: client credentials and the URLs to use.

`gateway` builds one `OAuthApp` per configured provider from the `LEDGERHOOK_<PROVIDER>_*` settings;
provider_auth never reads the environment itself.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from provider_auth.oauth.specs import ZOHO_DATA_CENTRES, netsuite_host_id
from provider_auth.providers import Provider

__all__ = ["GrantParams", "OAuthApp", "resolve_url"]

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True, slots=True)
class OAuthApp:
    """One provider app: who Ledgerhook is at the provider, and where its endpoints are.

    Secrets (`client_secret`, `jwt_private_key`) never appear in `repr`.
    """

    provider: Provider
    client_id: str
    client_secret: str = field(repr=False)
    token_url: str
    api_base_url: str
    revoke_url: str | None = None
    # NetSuite client credentials (M2M): certificate id, PEM private key, algorithm and scopes.
    jwt_key_id: str | None = None
    jwt_private_key: str | None = field(default=None, repr=False)
    jwt_algorithm: str = "PS256"
    jwt_scope: str = "rest_webservices"


@dataclass(frozen=True, slots=True)
class GrantParams:
    """Non-secret facts of a grant that pick its endpoints: NetSuite account, Zoho data centre."""

    account: str | None = None
    location: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The set fields, for storage as JSON."""
        return {k: v for k, v in (("account", self.account), ("location", self.location)) if v}

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> "GrantParams":
        """The params stored by `as_dict`."""
        account, location = values.get("account"), values.get("location")
        return cls(
            account=account if isinstance(account, str) else None,
            location=location if isinstance(location, str) else None,
        )

    def placeholders(self) -> dict[str, str]:
        """Values for the URL templates of `provider_auth.oauth.specs`."""
        values: dict[str, str] = {}
        if self.account:
            values["account"] = netsuite_host_id(self.account)
        centre = ZOHO_DATA_CENTRES.get((self.location or "us").lower())
        if centre is not None:
            values["accounts_server"] = centre.accounts_server
            values["api_domain"] = centre.api_domain
        return values


def resolve_url(template: str, params: GrantParams, overrides: Mapping[str, str] | None = None) -> str:
    """A URL template with its `{placeholders}` filled; ValueError when one has no value.

    `overrides` win over the params (e.g. Zoho's `api_domain` as returned by its token endpoint).
    """
    values = params.placeholders() | dict(overrides or {})

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"the URL template needs {{{name}}}, which this grant does not define")
        return values[name]

    return _PLACEHOLDER.sub(fill, template)
