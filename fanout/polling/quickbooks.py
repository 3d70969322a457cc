"""QuickBooks Online change data capture (CDC), read as polled pages.

One CDC call asks for every polled entity at once. CDC has no paging and no end bound, and answers at
most 1,000 objects: a full answer is taken as cut short and followed by one call per entity, from the
last change it gave for that entity, until an answer comes back smaller. What CDC returns, its order,
and what it cannot return: docs/providers.md, QuickBooks Online.
"""

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from fanout.changes import ParseError, ProviderChange
from fanout.parsers.json_body import as_list, as_object, load_json, optional_timestamp, text, timestamp
from fanout.polling.pages import PageRequest, PolledPage, PollTarget
from fanout.timestamps import format_timestamp, parse_timestamp

# Every entity the vocabulary maps to a unified entity, less the two CDC refuses (TaxCode, TaxRate).
ENTITIES: tuple[str, ...] = (
    "Account",
    "Attachable",
    "Bill",
    "BillPayment",
    "Class",
    "CreditMemo",
    "Customer",
    "Department",
    "Invoice",
    "Item",
    "JournalEntry",
    "Payment",
    "Purchase",
    "PurchaseOrder",
    "Vendor",
    "VendorCredit",
)
# CDC serves every entity but these (docs/providers.md, QuickBooks Online).
NOT_IN_CDC = frozenset({"JournalCode", "TaxAgency", "TaxCode", "TaxRate", "TimeActivity"})

# The next watermark is Intuit's own clock (the answer's `time`), so there is no skew between our
# clock and theirs to cover. The overlap covers a write stamped just before `time` but committed after
# the answer, and `changedSince` being rounded down to the second; records read twice are dropped
# by reconciliation (same id, same version).
OVERLAP = timedelta(minutes=2)
# CDC takes no page size: this is the most objects one answer holds, and an answer this full is taken
# as cut short.
PAGE_SIZE = 1000
# CDC answers at most this far back; the engine reports anything older as a history gap.
MAX_LOOKBACK = timedelta(days=30)

# Operations in the spelling of QuickBooks webhooks, which the vocabulary reads.
_CREATE = "Create"
_UPDATE = "Update"
_DELETE = "Delete"


def first_requests(target: PollTarget, since: datetime, entities: Sequence[str]) -> list[PageRequest]:
    """The first call of a poll of `entities` changed at or after `since`: one CDC call for all."""
    wanted = list(dict.fromkeys(entities))
    if not wanted:
        return []
    return [_cdc(target, since, wanted)]


def parse_page(target: PollTarget, request: PageRequest, body: bytes) -> PolledPage:
    """One CDC answer to `request`: every object of a requested entity, one change each.

    `more` says the answer was full (cut short). ParseError for anything else than a CDC answer,
    a Fault (with its code), an object without an id or a readable `MetaData.LastUpdatedTime`, and
    a full answer for a single entity that could not move past the instant it started from.
    """
    document = as_object(load_json(body), where="body")
    _reject_fault(document, where="body")
    entities, since = _asked(request)
    by_key = {entity.lower(): entity for entity in entities}
    changes: list[ProviderChange] = []
    objects = 0
    for r, response in enumerate(as_list(document.get("CDCResponse"), where="CDCResponse")):
        where = f"CDCResponse[{r}]"
        response = as_object(response, where=where)
        _reject_fault(response, where=where)
        for q, group in enumerate(as_list(response.get("QueryResponse"), where=f"{where}.QueryResponse")):
            group = as_object(group, where=f"{where}.QueryResponse[{q}]")
            for key, records in group.items():
                if not isinstance(records, list):
                    continue  # startPosition, maxResults, totalCount
                objects += len(records)  # the 1,000 cap counts every object in the answer
                entity = by_key.get(key.lower())
                if entity is None:
                    continue  # not asked for
                for i, record in enumerate(records):
                    record_where = f"{where}.{entity}[{i}]"
                    changes.append(
                        _change(target, entity, as_object(record, where=record_where), record_where)
                    )
    more = objects >= PAGE_SIZE
    if more and len(entities) == 1 and _resume_point(changes, since) <= _whole_seconds(since):
        # Resuming from the same instant would return the same answer forever.
        raise ParseError(
            f"{entities[0]}: {PAGE_SIZE} or more changes at {format_timestamp(since)}; "
            "CDC cannot read past them"
        )
    return PolledPage(
        changes=changes, more=more, server_time=optional_timestamp(document.get("time"), "time")
    )


def next_requests(target: PollTarget, request: PageRequest, page: PolledPage) -> list[PageRequest]:
    """After a full answer, one call per asked entity from the last change it gave; else []."""
    if not page.more:
        return []
    entities, since = _asked(request)
    by_entity: dict[str, list[ProviderChange]] = {entity: [] for entity in entities}
    for change in page.changes:
        by_entity.setdefault(change.entity, []).append(change)
    return [_cdc(target, _resume_point(by_entity[entity], since), [entity]) for entity in entities]


def no_older_than(request: PageRequest, floor: datetime) -> tuple[PageRequest, datetime | None]:
    """`request` starting no earlier than `floor`, and the start it had when that was earlier
    (CDC refuses a `changedSince` older than 30 days: a request planned at that edge and sent later
    would be refused; docs/providers.md, QuickBooks Online)."""
    _, since = _asked(request)
    if since >= _whole_seconds(floor):
        return request, None
    params = tuple(
        (name, _changed_since(floor) if name == "changedSince" else value) for name, value in request.params
    )
    return replace(request, params=params), since


def _cdc(target: PollTarget, since: datetime, entities: Sequence[str]) -> PageRequest:
    for entity in entities:
        if not (entity.isascii() and entity.isalnum()):
            raise ValueError(f"not a QuickBooks entity name: {entity[:40]!r}")
        if entity in NOT_IN_CDC:
            raise ValueError(f"CDC does not serve {entity}")
    return PageRequest(
        method="GET",
        path=f"/v3/company/{quote(target.account, safe='')}/cdc",
        params=(("entities", ",".join(entities)), ("changedSince", _changed_since(since))),
        # CDC answers XML unless asked for JSON.
        headers=(("Accept", "application/json"),),
    )


def _changed_since(since: datetime) -> str:
    """ISO 8601 in UTC with an explicit offset, rounded down to the second: 2015-12-23T17:00:00+00:00."""
    if since.tzinfo is None:
        raise ValueError("since must be an aware datetime")
    return _whole_seconds(since).isoformat()


def _whole_seconds(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


def _asked(request: PageRequest) -> tuple[list[str], datetime]:
    """The entities and the `changedSince` of a request this module built."""
    params = dict(request.params)
    try:
        return params["entities"].split(","), parse_timestamp(params["changedSince"])
    except (KeyError, ValueError):
        raise ValueError("not a CDC request of this module") from None


def _resume_point(changes: Iterable[ProviderChange], since: datetime) -> datetime:
    """Where a call for one entity resumes after a full answer, so that nothing it cut is skipped.

    Within an entity, CDC lists the live objects by last update, then the deleted ones by last update
    (docs/providers.md, QuickBooks Online). Once a deleted object came back, every live one did: resume
    from the last deletion. Otherwise resume from the last update received.
    """
    deleted: list[datetime] = []
    updated: list[datetime] = []
    for change in changes:
        if change.occurred_at is not None:
            (deleted if change.operation == _DELETE else updated).append(change.occurred_at)
    latest = max(deleted or updated, default=since)
    return _whole_seconds(max(latest, since))


def _change(target: PollTarget, entity: str, record: dict[str, Any], where: str) -> ProviderChange:
    meta = as_object(record.get("MetaData"), where=f"{where}.MetaData")
    updated = timestamp(meta.get("LastUpdatedTime"), f"{where}.MetaData.LastUpdatedTime")
    return ProviderChange(
        provider_account_id=target.account,
        entity=entity,
        entity_id=text(record, "Id", where=where),
        operation=_operation(record, meta, updated),
        occurred_at=updated,
    )


def _operation(record: dict[str, Any], meta: dict[str, Any], updated: datetime) -> str:
    status = record.get("status")
    if isinstance(status, str) and status.strip().lower() == "deleted":
        return _DELETE
    created = meta.get("CreateTime")
    if isinstance(created, str):
        try:
            if parse_timestamp(created) == updated:
                return _CREATE
        except (ValueError, OverflowError):
            pass  # only tells created from updated; the version is LastUpdatedTime
    return _UPDATE


def _reject_fault(document: dict[str, Any], *, where: str) -> None:
    """QuickBooks may answer 200 with a Fault instead of data: a ParseError naming its type and code."""
    fault = document.get("Fault")
    if fault is None:
        return
    kind = code = "unknown"
    if isinstance(fault, dict):
        kind = _printable(fault.get("type"))
        errors = fault.get("Error")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            code = _printable(errors[0].get("code"))
    raise ParseError(f"{where}: QuickBooks Fault {kind}, code {code}")


def _printable(value: object) -> str:
    """A fault's type or code, safe to log: short, letters, digits and a few marks only."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        kept = "".join(char for char in value[:40] if char.isascii() and (char.isalnum() or char in "._-"))
        if kept:
            return kept
    return "unknown"
