"""Pure provider payload parsers: bytes in, typed changes out, `ParseError` for anything else.

One module per provider; `PARSERS` maps every provider slug to its parser (NetSuite and custom
sources share `standard_events`, the body Ledgerhook defines for senders without a format).
"""

from collections.abc import Callable

from fanout.changes import ParseError, ProviderChange
from fanout.parsers import freshbooks, quickbooks, sage_intacct, standard_events, xero, zoho_books
from provider_auth.providers import Provider

Parser = Callable[[bytes], list[ProviderChange]]

PARSERS: dict[Provider, Parser] = {
    Provider.QUICKBOOKS: quickbooks.parse,
    Provider.XERO: xero.parse,
    Provider.ZOHO_BOOKS: zoho_books.parse,
    Provider.FRESHBOOKS: freshbooks.parse,
    Provider.SAGE_INTACCT: sage_intacct.parse,
    # NetSuite (SuiteScript) and custom sources post Ledgerhook's own standard event body.
    Provider.NETSUITE: standard_events.parse,
    Provider.CUSTOM: standard_events.parse,
}

__all__ = ["PARSERS", "ParseError", "Parser", "ProviderChange"]
