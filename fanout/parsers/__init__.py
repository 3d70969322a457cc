"""Pure provider payload parsers: bytes in, typed changes out, `ParseError` for anything else.

One module per provider; `PARSERS` maps each provider slug with a push format to its parser.
"""

from collections.abc import Callable

from fanout.changes import ParseError, ProviderChange
from fanout.parsers import quickbooks, xero
from provider_auth.providers import Provider

Parser = Callable[[bytes], list[ProviderChange]]

PARSERS: dict[Provider, Parser] = {
    Provider.QUICKBOOKS: quickbooks.parse,
    Provider.XERO: xero.parse,
}

__all__ = ["PARSERS", "ParseError", "Parser", "ProviderChange"]
