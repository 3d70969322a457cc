"""Reconciliation: each version of a record is published once, whichever path saw it first.

A webhook, a poll and a backfill can all report the same version of a record (its provider's
last-updated time). `publishable` decides, in the caller's publishing transaction, which changes of
a batch are new: a change passes only if its version is later than the latest one already published
for that record and connection, and moves it. `prune` keeps the table to a retention window. The
rules, the table's size and why a prune is safe: docs/architecture.md, "Reconciliation".
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from fanout.changes import NormalizedChange
from fanout.vocabulary import DELETED, EMAILED, MERGED, VOIDED

# Reported by webhooks only, and no state of the record: never reconciled, and they never move the
# version (an email must not hide the update a poll reads at the same version).
ALWAYS_PASS = frozenset({EMAILED, MERGED})

# At one version a later state outranks an earlier one, so a deletion (or a void) reported after an
# update of the same instant is still published; any other operation is a live state, rank 0.
_RANKS = {VOIDED: 1, DELETED: 2}

# One row per record of the batch, in key order so two transactions never lock rows in opposite
# orders. The WHERE compares (version, rank) pairs; rows it refuses are still locked until the
# transaction ends, so a concurrent claim on the record waits and then compares with what committed.
# `replaced_*` hand back the state the move replaced, read under the row lock.
_CLAIM = (
    "INSERT INTO record_versions AS stored"
    " (connection_id, entity, entity_id, version, operation_rank, seen_at)"
    " SELECT claim.connection_id, claim.entity, claim.entity_id, claim.version, claim.operation_rank, now()"
    " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::int2[])"
    " AS claim (connection_id, entity, entity_id, version, operation_rank)"
    " ON CONFLICT (connection_id, entity, entity_id) DO UPDATE"
    " SET replaced_version = stored.version, replaced_rank = stored.operation_rank,"
    " version = excluded.version, operation_rank = excluded.operation_rank, seen_at = excluded.seen_at"
    " WHERE (excluded.version, excluded.operation_rank) > (stored.version, stored.operation_rank)"
    " RETURNING connection_id::text, entity, entity_id, replaced_version, replaced_rank"
)
# SKIP LOCKED: several workers may prune at once, and a row being claimed is left for next time.
_PRUNE = (
    "DELETE FROM record_versions WHERE (connection_id, entity, entity_id) IN ("
    " SELECT connection_id, entity, entity_id FROM record_versions WHERE seen_at < now() - $1::interval"
    " ORDER BY seen_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
)

# (connection id, entity, entity id) and (version, operation rank).
_Key = tuple[str, str, str]
_Mark = tuple[datetime, int]


@dataclass(frozen=True, slots=True)
class RecordVersion:
    """One change's claim to publish a version of a record to a connection."""

    connection_id: str
    # The unified entity (`fanout.vocabulary`), so a webhook and a poll name the record alike.
    entity: str
    entity_id: str
    operation: str
    # The record's last-updated time (timezone-aware); None: the change says no version.
    version: datetime | None

    @classmethod
    def of(cls, connection_id: str, change: NormalizedChange) -> "RecordVersion":
        """The claim of one normalized change for one connection."""
        return cls(connection_id, change.entity, change.entity_id, change.operation, change.occurred_at)


def operation_rank(operation: str) -> int:
    """How a state ranks against another of the same version: live 0, voided 1, deleted 2."""
    return _RANKS.get(operation, 0)


async def publishable(connection: asyncpg.Connection, claims: Sequence[RecordVersion | None]) -> list[bool]:
    """For each claim, in batch order, whether to publish it; moves the stored versions of those that pass.

    A claim passes if its (version, rank) is later than the latest published for its record and
    connection, counting the claims before it in the batch, so the result is the same as claiming
    one at a time. None, a claim without a version and `ALWAYS_PASS` operations pass untouched.
    Runs one statement in the caller's transaction, which must commit only once the passed events
    are acknowledged by the broker: a rollback leaves every version where it was.
    """
    keyed: list[tuple[_Key, _Mark] | None] = [_keyed(claim) for claim in claims]
    highest: dict[_Key, _Mark] = {}
    for entry in keyed:
        if entry is not None:
            key, mark = entry
            if key not in highest or mark > highest[key]:
                highest[key] = mark
    if not highest:
        return [True] * len(claims)
    keys = sorted(highest)
    rows = await connection.fetch(
        _CLAIM,
        [key[0] for key in keys],
        [key[1] for key in keys],
        [key[2] for key in keys],
        [highest[key][0] for key in keys],
        [highest[key][1] for key in keys],
    )
    # A record whose row came back moved; what it held before is the mark to beat. One that did not
    # come back already holds the batch's highest claim or later: every claim on it is dropped.
    latest: dict[_Key, _Mark | None] = {
        (row[0], row[1], row[2]): None if row[3] is None else (row[3], row[4]) for row in rows
    }
    verdicts: list[bool] = []
    for entry in keyed:
        if entry is None:
            verdicts.append(True)
            continue
        key, mark = entry
        if key not in latest:
            verdicts.append(False)
            continue
        before = latest[key]
        passes = before is None or mark > before
        if passes:
            latest[key] = mark
        verdicts.append(passes)
    return verdicts


def _keyed(claim: RecordVersion | None) -> tuple[_Key, _Mark] | None:
    if claim is None or claim.version is None or claim.operation in ALWAYS_PASS:
        return None
    key = (_canonical(claim.connection_id), claim.entity, claim.entity_id)
    return key, (claim.version, operation_rank(claim.operation))


def _canonical(ident: str) -> str:
    # The text PostgreSQL gives back for the uuid, so returned rows match their claims.
    if len(ident) == 36 and ident == ident.lower():
        return ident
    return str(uuid.UUID(ident))


async def prune(pool: asyncpg.Pool, older_than: timedelta, batch_size: int = 5000) -> int:
    """Forget versions published longer than `older_than` ago, `batch_size` rows per statement;
    returns how many went."""
    removed = 0
    while True:
        status = await pool.execute(_PRUNE, older_than, batch_size)
        count = int(status.split()[-1])
        removed += count
        if count < batch_size:
            return removed
