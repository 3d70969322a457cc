"""Workload of the fan-out benchmark (bench/fanout.py): accounts, connections, deliveries, expected events.

- A few hundred provider accounts (QuickBooks realms and Xero organisations), each registered as a
  connection of its own tenant; a share of them also connected by an accounting practice (a second
  tenant), so their changes fan out to two connections.
- Deliveries from `gateway.dev.samples` (QuickBooks CloudEvents batches, Xero batches, a few Xero batches
  mixing two organisations, as Xero's shared endpoint can), spread over the accounts with a mild skew:
  a few busy companies and a long tail, as on a real app.
- The event ids the worker must publish, computed with the same parsers and the documented id formula,
  so the benchmark knows the exact count (and the exact ids) to wait for; with webhook reconciliation
  on, the changes it must drop are taken out with `fanout.reconcile`'s rule (`expected_events`).
"""

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

from fanout.change_events import Recipient, body_digest, event_id
from fanout.parsers import PARSERS
from fanout.partition_key import summarize
from fanout.reconcile import LatestMarks, RecordVersion
from fanout.vocabulary import normalize
from gateway.dev import samples
from gateway.ingress.delivery import RawDelivery, new_delivery_id, utcnow
from provider_auth.accounts.store import Connection, ConnectionStore
from provider_auth.providers import Provider

CONTENT_TYPES = {Provider.QUICKBOOKS: "application/cloudevents+json", Provider.XERO: "application/json"}
WEBHOOK_PATHS = {Provider.QUICKBOOKS: "/webhooks/quickbooks", Provider.XERO: "/webhooks/xero"}


@dataclass(frozen=True)
class Account:
    """One provider account and the tenants connected to it (the first one owns it)."""

    provider: Provider
    account_id: str
    tenants: tuple[str, ...]


@dataclass(frozen=True)
class Delivery:
    """One webhook body as the provider sends it, with what the benchmark needs to know of it."""

    provider: Provider
    body: bytes
    accounts: tuple[str, ...]  # the provider accounts its changes name (two for a mixed Xero batch)
    changes: int


@dataclass
class Expected:
    """What the worker must publish for a set of deliveries."""

    event_ids: set[str] = field(default_factory=set)
    changes: int = 0
    repeats: int = 0  # (change, connection) pairs whose id was already taken: dedupe drops them
    # (change, connection) pairs reconciliation drops under an id not published: the worker's
    # `ledgerhook_fanout_events_superseded_total`. Those under a published id count as repeats.
    superseded: int = 0


def make_accounts(rng: random.Random, quickbooks: int, xero: int, shared_share: float) -> list[Account]:
    """`quickbooks` realms and `xero` organisations; `shared_share` of them also connected by a practice."""
    practices = [f"practice-{n:03d}" for n in range(max(1, (quickbooks + xero) // 25))]
    accounts = []
    for index in range(quickbooks + xero):
        if index < quickbooks:
            provider, account_id = Provider.QUICKBOOKS, str(rng.randint(10**15, 10**16 - 1))
        else:
            provider, account_id = Provider.XERO, str(uuid.UUID(int=rng.getrandbits(128), version=4))
        tenants: tuple[str, ...] = (f"tenant-{index:05d}",)
        if rng.random() < shared_share:
            tenants += (rng.choice(practices),)
        accounts.append(Account(provider, account_id, tenants))
    rng.shuffle(accounts)
    return accounts


async def register(
    store: ConnectionStore, accounts: list[Account]
) -> dict[tuple[Provider, str], list[Connection]]:
    """One connection per (tenant, account), created as the admin API does; returned by account."""
    connections: dict[tuple[Provider, str], list[Connection]] = {}
    for account in accounts:
        for tenant in account.tenants:
            connection = await store.create(
                tenant, account.provider, account.account_id, display_name=f"{tenant} books"
            )
            connections.setdefault((account.provider, account.account_id), []).append(connection)
    return connections


def activity_weights(count: int, skew: float = 0.7) -> list[float]:
    """Zipf-like weights: the busiest account is a few percent of the traffic, most are quiet."""
    return [1.0 / (rank + 1) ** skew for rank in range(count)]


def make_delivery(
    rng: random.Random,
    accounts: list[Account],
    weights: list[float],
    quickbooks_changes: tuple[int, int],
    xero_changes: tuple[int, int],
    mixed_share: float = 0.0,
) -> Delivery:
    """One delivery for an account picked by activity; a Xero one may mix in a second organisation."""
    account = rng.choices(accounts, weights)[0]
    if account.provider is Provider.QUICKBOOKS:
        count = rng.randint(*quickbooks_changes)
        body = samples.quickbooks_cloudevents(account.account_id, count, rng)
        return Delivery(account.provider, body, (account.account_id,), count)
    count = rng.randint(*xero_changes)
    body = samples.xero_events(account.account_id, count, rng)
    if rng.random() >= mixed_share:
        return Delivery(account.provider, body, (account.account_id,), count)
    other = rng.choice([a for a in accounts if a.provider is Provider.XERO and a is not account])
    extra = rng.randint(*xero_changes)
    document = orjson.loads(body)
    document["events"] += orjson.loads(samples.xero_events(other.account_id, extra, rng))["events"]
    document["lastEventSequence"] = document["firstEventSequence"] + count + extra - 1
    return Delivery(
        account.provider, orjson.dumps(document), (account.account_id, other.account_id), count + extra
    )


def make_deliveries(
    rng: random.Random,
    accounts: list[Account],
    min_changes: int,
    quickbooks_changes: tuple[int, int] = (1, 10),
    xero_changes: tuple[int, int] = (1, 5),
    mixed_share: float = 0.05,
) -> list[Delivery]:
    """Deliveries until they carry at least `min_changes` changes."""
    weights = activity_weights(len(accounts))
    deliveries: list[Delivery] = []
    total = 0
    while total < min_changes:
        delivery = make_delivery(rng, accounts, weights, quickbooks_changes, xero_changes, mixed_share)
        deliveries.append(delivery)
        total += delivery.changes
    return deliveries


def raw_delivery(delivery: Delivery) -> RawDelivery:
    """The raw record the gateway would append for this delivery (same headers, same key)."""
    summary = summarize(delivery.provider, delivery.body)
    return RawDelivery(
        delivery_id=new_delivery_id(),
        provider=delivery.provider.value,
        body=delivery.body,
        received_at=utcnow(),
        content_type=CONTENT_TYPES[delivery.provider],
        provider_event_id=summary.event_id,
        account_key=summary.account_id,
    )


def expected_events(
    deliveries: list[Delivery],
    connections: dict[tuple[Provider, str], list[Connection]],
    reconcile: bool = True,
) -> Expected:
    """Every event id the worker must publish: one per change and connection of the change's account,
    less, with `reconcile`, the changes reconciliation drops.

    The rule is `fanout.reconcile`'s, applied in the order the worker sees the changes: the order of
    `deliveries` for each raw partition, and so for each record, as long as all of a record's
    deliveries share a partition key (its account's). A record also named by a delivery keyed
    otherwise (one mixing two Xero organisations is keyed by its delivery id) could reach the worker
    first by another partition: that raises ValueError rather than guess.
    """
    expected = Expected()
    latest = LatestMarks()
    partition_keys: dict[tuple[str, str, str], str] = {}
    for index, delivery in enumerate(deliveries):
        digest = body_digest(delivery.body)
        # A delivery naming no single account is keyed by its own delivery id.
        partition_key = summarize(delivery.provider, delivery.body).account_id or f"delivery {index}"
        for change in PARSERS[delivery.provider](delivery.body):
            normalized = normalize(delivery.provider, change)
            expected.changes += 1
            for connection in connections[(delivery.provider, normalized.provider_account_id)]:
                recipient = Recipient(
                    connection_id=connection.id,
                    tenant_id=connection.tenant_id,
                    provider=delivery.provider.value,
                    provider_account_id=connection.provider_account_id,
                )
                ident = event_id(recipient, normalized, digest)
                mark = RecordVersion.of(connection.id, normalized).mark() if reconcile else None
                if mark is not None:
                    record = (connection.id, normalized.entity, normalized.entity_id)
                    if partition_keys.setdefault(record, partition_key) != partition_key:
                        raise ValueError(
                            f"{normalized.entity} {normalized.entity_id!r} of {connection.id} comes in "
                            "deliveries of several raw partitions: the order the worker sees it in is unknown"
                        )
                    if not latest.passes(record, mark):
                        if ident in expected.event_ids:
                            expected.repeats += 1
                        else:
                            expected.superseded += 1
                        continue
                if ident in expected.event_ids:
                    expected.repeats += 1
                expected.event_ids.add(ident)
    return expected


def with_fresh_records(delivery: Delivery, next_id: Iterator[int]) -> Delivery:
    """The delivery with each QuickBooks change naming a record of its own (`next_id` gives the ids),
    so reconciliation drops none of them whatever was published before or arrives meanwhile.

    Xero changes already do: their resource ids are random UUIDs.
    """
    if delivery.provider is not Provider.QUICKBOOKS:
        return delivery
    events = orjson.loads(delivery.body)
    for event in events:
        event["intuitentityid"] = str(next(next_id))
    return Delivery(delivery.provider, orjson.dumps(events), delivery.accounts, delivery.changes)
