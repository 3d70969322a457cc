"""Which polling module reads which provider's change API, and what every such module offers.

Each module is pure (requests built from a watermark, pages parsed from bytes); the engine in
`fanout.polling.poller` drives any of them the same way. See docs/architecture.md, "Polling state".
"""

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from fanout.polling import freshbooks, netsuite, quickbooks, sage_intacct, xero, zoho_books
from fanout.polling.pages import PageRequest, PolledPage, PollTarget
from provider_auth.providers import Provider

__all__ = [
    "ADAPTERS",
    "CLAMPS",
    "MAX_LOOKBACK",
    "PLAN_SPARE",
    "SEND_SPARE",
    "WEBHOOK_PROVIDERS",
    "PollingModule",
    "oldest_served",
]


class PollingModule(Protocol):
    """What a provider's polling module exports."""

    # The provider's entity names polled by default; watermarks are kept per entity.
    ENTITIES: tuple[str, ...]
    # How far before its watermark an entity's next poll starts (clock skew, inclusive cursors).
    OVERLAP: timedelta
    PAGE_SIZE: int

    def first_requests(
        self, target: PollTarget, since: datetime, entities: Sequence[str]
    ) -> list[PageRequest]:
        """The first calls of a poll of `entities` changed at or after `since`."""
        ...

    def parse_page(self, target: PollTarget, request: PageRequest, body: bytes) -> PolledPage:
        """One answer to `request`; ParseError when it is not one."""
        ...

    def next_requests(self, target: PollTarget, request: PageRequest, page: PolledPage) -> list[PageRequest]:
        """The calls that follow `page` ([] when it was the last)."""
        ...


ADAPTERS: Mapping[Provider, PollingModule] = {
    Provider.QUICKBOOKS: quickbooks,
    Provider.XERO: xero,
    Provider.NETSUITE: netsuite,
    Provider.SAGE_INTACCT: sage_intacct,
    Provider.ZOHO_BOOKS: zoho_books,
    Provider.FRESHBOOKS: freshbooks,
}

# The oldest change a provider's change API still answers for, where it has such a bound.
MAX_LOOKBACK: Mapping[Provider, timedelta] = {Provider.QUICKBOOKS: quickbooks.MAX_LOOKBACK}


# Moves a request planned earlier up to the oldest point the provider serves now; returns the
# request and the start it had, when it had to move (providers with a MAX_LOOKBACK only).
Clamp = Callable[[PageRequest, datetime], tuple[PageRequest, datetime | None]]
CLAMPS: Mapping[Provider, Clamp] = {Provider.QUICKBOOKS: quickbooks.no_older_than}


# Where requests are planned: this long after the oldest change the provider serves, more than a
# request can wait for its permit (`PageFetcher.permit_wait`, 30 s) and then travel.
PLAN_SPARE = timedelta(minutes=5)
# A planned request is moved up only once its start is this close to that edge: it still has its
# permit wait and its travel ahead. Closer to PLAN_SPARE, a request planned a moment earlier (the
# floor moves with the clock) would be moved up by a second or two and announce a gap that long.
SEND_SPARE = timedelta(minutes=1)


def oldest_served(provider: Provider, now: datetime, spare: timedelta = PLAN_SPARE) -> datetime | None:
    """The oldest change time the provider's change API still answers for at `now`, with `spare`
    to spare, or None when it has no such bound."""
    lookback = MAX_LOOKBACK.get(provider)
    return None if lookback is None else now - lookback + spare


# Providers whose webhooks reach every connection: their accounts are swept (a slower poll that
# catches missed webhooks) rather than polled (docs/providers.md, QuickBooks Online; Xero).
WEBHOOK_PROVIDERS = frozenset({Provider.QUICKBOOKS, Provider.XERO})
