"""The one list of provider slugs every module keys its provider knowledge by.

What Ledgerhook relies on about each provider: docs/providers.md.
"""

from enum import StrEnum


class Provider(StrEnum):
    """A provider Ledgerhook speaks to. The value is the slug used in URLs, headers and topics."""

    QUICKBOOKS = "quickbooks"
    XERO = "xero"
    ZOHO_BOOKS = "zoho-books"
    FRESHBOOKS = "freshbooks"
    SAGE_INTACCT = "sage-intacct"
    NETSUITE = "netsuite"
    CUSTOM = "custom"

    @property
    def env_name(self) -> str:
        """The provider in upper snake case, as used in `LEDGERHOOK_<PROVIDER>_...` settings."""
        return self.value.upper().replace("-", "_")

    @property
    def shared_endpoint(self) -> bool:
        """True when one webhook URL serves every account of the provider (one app, many companies)."""
        return self in SHARED_ENDPOINT_PROVIDERS


# QuickBooks and Xero post every company's events to the one URL registered for the app;
# the others post to a URL per connection.
SHARED_ENDPOINT_PROVIDERS = frozenset({Provider.QUICKBOOKS, Provider.XERO})


def parse_provider(slug: str) -> Provider | None:
    """The provider for a URL slug, or None when the slug names no provider."""
    try:
        return Provider(slug)
    except ValueError:
        return None
