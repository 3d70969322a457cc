"""The two values every provider's polling module trades in: the request for a page, and the page.

Both are plain data, so building a request and reading its answer stay pure functions that tests
drive with documented payloads; one small fetcher sends any `PageRequest` to the provider.
"""

from dataclasses import dataclass, field, replace
from datetime import datetime

from fanout.changes import ProviderChange


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One call to a change API, relative to the provider's `LEDGERHOOK_<PROVIDER>_API_BASE_URL`."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


@dataclass(slots=True)
class PolledPage:
    """One answer of a change API, parsed.

    Each change is one record as it is now: `occurred_at` is the record's last-updated time (the
    version reconciliation compares), `operation` is in the provider's own spelling that
    `fanout.vocabulary.normalize` reads, and `event_id` is None (a poll has no provider event id).
    """

    changes: list[ProviderChange] = field(default_factory=list)
    # The provider says another page follows this one (a page number, an offset or a flag).
    more: bool = False
    # The provider's clock when it answered, where the answer says (QuickBooks CDC `time`): the next
    # watermark is taken from it rather than from ours.
    server_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class PollTarget:
    """Whose changes a poll reads: one provider account, and what reading its answers needs."""

    # The provider account id (QuickBooks realm, Xero tenant, Zoho Books organization, ...).
    account: str
    # NetSuite answers SuiteQL in the account's own time zone (IANA name); others answer in UTC
    # or with an explicit offset.
    time_zone: str = "UTC"


def next_page(request: PageRequest, name: str = "page") -> PageRequest:
    """`request` asking for the page after its own (`name`, counted from 1, absent meaning 1)."""
    following = str(int(dict(request.params).get(name, "1")) + 1)
    params = tuple((key, following if key == name else value) for key, value in request.params)
    return replace(request, params=params)
