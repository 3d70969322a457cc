"""Reconciliation: each version of a record is published once, whichever path saw it first.

A webhook, a poll and a backfill can all report the same version of a record (its provider's
last-updated time). `publishable` decides, in the caller's publishing transaction, which changes of
a batch are new: a change passes only if its version is later than the latest one already published
for that record and connection, and moves it; `repeats` tells, of the refused ones, those that
repeat the latest published state from those older. `LatestMarks` is the same rule in memory. `prune`
keeps the table to a retention window. The rules, the table's size and why a prune is safe:
docs/architecture.md, "Reconciliation".
"""

import uuid
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeAlias

import asyncpg

from fanout.changes import NormalizedChange
from fanout.vocabulary import DELETED, EMAILED, MERGED, VOIDED

# Reported by webhooks only, and no state of the record: never reconciled, and they never move the
# version (an email must not hide the update a poll reads at the same version).
ALWAYS_PASS = frozenset({EMAILED, MERGED})

# At one version a later state outranks an earlier one, so a deletion (or a void) reported after an
# update of the same instant is still published; any other operation is a live state, rank 0.
_RANKS = {VOIDED: 1, DELETED: 2}

# What a claim is judged by: (version, operation rank), compared as a pair.
Mark: TypeAlias = tuple[datetime, int]

# The batch's candidates (each later than every claim before it on its record), one row each; a
# record's connection and entity come as an index into the batch's distinct (connection, entity)
# pairs. The insert takes each record's last candidate, its highest, in key order so two
# transactions never lock rows in opposite orders: byte order (COLLATE "C", no locale comparisons),
# the order earlier workers sorted keys in. The ON CONFLICT WHERE compares (version, rank) pairs;
# rows it refuses are still locked until the transaction ends, so a concurrent claim on the record
# waits and then compares with what committed. `replaced_*` hold the state the move replaced, read
# under the row lock: a candidate passes if its record moved and it is later than that state. The
# answer is one array, the ordinals of the candidates that pass.
_CLAIM = (
    "WITH claim AS ("
    " SELECT ($1::uuid[])[pair] AS connection_id, ($2::text[])[pair] AS entity, entity_id, version,"
    " operation_rank, n"
    " FROM unnest($3::int4[], $4::text[], $5::timestamptz[], $6::int2[]) WITH ORDINALITY"
    " AS claim (pair, entity_id, version, operation_rank, n)),"
    " moved AS ("
    "INSERT INTO record_versions AS stored"
    " (connection_id, entity, entity_id, version, operation_rank, seen_at)"
    ' SELECT DISTINCT ON (connection_id, entity COLLATE "C", entity_id COLLATE "C")'
    " connection_id, entity, entity_id, version, operation_rank, now()"
    ' FROM claim ORDER BY connection_id, entity COLLATE "C", entity_id COLLATE "C", n DESC'
    " ON CONFLICT (connection_id, entity, entity_id) DO UPDATE"
    " SET replaced_version = stored.version, replaced_rank = stored.operation_rank,"
    " version = excluded.version, operation_rank = excluded.operation_rank, seen_at = excluded.seen_at"
    " WHERE (excluded.version, excluded.operation_rank) > (stored.version, stored.operation_rank)"
    " RETURNING connection_id, entity, entity_id, replaced_version, replaced_rank)"
    " SELECT array_agg(claim.n::int4) FROM claim JOIN moved USING (connection_id, entity, entity_id)"
    " WHERE moved.replaced_version IS NULL"
    " OR (claim.version, claim.operation_rank) > (moved.replaced_version, moved.replaced_rank)"
)
# Which of the refused claims repeat their record's latest published state (the same version and
# rank): ordinals of those that do. Run after the claim, in its transaction, so it reads what the
# claim waited for and what it moved.
_REPEATS = (
    "SELECT n::int4 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::int2[])"
    " WITH ORDINALITY AS refused (connection_id, entity, entity_id, version, operation_rank, n)"
    " JOIN record_versions AS stored USING (connection_id, entity, entity_id)"
    " WHERE (stored.version, stored.operation_rank) = (refused.version, refused.operation_rank)"
)
# SKIP LOCKED: several workers may prune at once, and a row being claimed is left for next time.
_PRUNE = (
    "DELETE FROM record_versions WHERE (connection_id, entity, entity_id) IN ("
    " SELECT connection_id, entity, entity_id FROM record_versions WHERE seen_at < now() - $1::interval"
    " ORDER BY seen_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
)


# Not frozen, for speed: the worker builds one per webhook event (see `fanout.changes.ProviderChange`).
@dataclass(slots=True)
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

    def mark(self) -> Mark | None:
        """(version, operation rank), what the claim is judged by; None: it always passes and moves
        nothing (no version, or an `ALWAYS_PASS` operation)."""
        if self.version is None or self.operation in ALWAYS_PASS:
            return None
        return self.version, _RANKS.get(self.operation, 0)


def operation_rank(operation: str) -> int:
    """How a state ranks against another of the same version: live 0, voided 1, deleted 2."""
    return _RANKS.get(operation, 0)


class LatestMarks:
    """The rule in memory: per record, the latest mark passed so far, and whether the next passes."""

    def __init__(self) -> None:
        self._latest: dict[Hashable, Mark] = {}

    def passes(self, record: Hashable, mark: Mark) -> bool:
        """Whether `mark` is later than the latest passed for `record` (or it has none); if so it
        becomes the latest."""
        latest = self._latest.get(record)
        if latest is not None and not mark > latest:
            return False
        self._latest[record] = mark
        return True


async def publishable(connection: asyncpg.Connection, claims: Sequence[RecordVersion | None]) -> list[bool]:
    """For each claim, in batch order, whether to publish it; moves the stored versions of those that pass.

    A claim passes if its (version, rank) is later than the latest published for its record and
    connection, counting the claims before it in the batch, so the result is the same as claiming
    one at a time. None, a claim without a version and `ALWAYS_PASS` operations pass untouched.
    Runs one statement in the caller's transaction, which must commit only once the passed events
    are acknowledged by the broker: a rollback leaves every version where it was.
    """
    verdicts = [True] * len(claims)
    batch = _Candidates()
    for index, claim in enumerate(claims):
        if claim is not None and not batch.add(index, claim):
            verdicts[index] = False
    if not batch.at:
        return verdicts
    passing = await connection.fetchval(
        _CLAIM,
        [connection_id for connection_id, _ in batch.pairs],
        [entity for _, entity in batch.pairs],
        batch.pair_column,
        batch.entity_ids,
        batch.versions,
        batch.ranks,
    )
    for index in batch.at:
        verdicts[index] = False
    for ordinal in passing or ():
        verdicts[batch.at[ordinal - 1]] = True
    return verdicts


async def repeats(connection: asyncpg.Connection, refused: Sequence[RecordVersion]) -> list[bool]:
    """For each refused claim, whether it repeats the latest state published of its record (its
    version and rank) rather than an older one; call after `publishable`, in its transaction."""
    if not refused:
        return []
    marks = [mark for claim in refused if (mark := claim.mark()) is not None]
    if len(marks) != len(refused):
        raise ValueError("only claims with a version are refused")
    found = await connection.fetch(
        _REPEATS,
        [claim.connection_id for claim in refused],
        [claim.entity for claim in refused],
        [claim.entity_id for claim in refused],
        [version for version, _ in marks],
        [rank for _, rank in marks],
    )
    verdicts = [False] * len(refused)
    for row in found:
        verdicts[row[0] - 1] = True
    return verdicts


class _Candidates:
    """A batch's claims for the statement to judge, gathered as its parameters: those later than
    every claim before them on their record in the batch (the others are refused in memory)."""

    def __init__(self) -> None:
        self.at: list[int] = []  # each candidate's place in the batch
        self.pairs: dict[tuple[str, str], int] = {}  # (canonical connection id, entity) -> 1-based index
        self._pair_of: dict[tuple[str, str], int] = {}  # the same, by the connection id as spelled
        self._in_batch = LatestMarks()
        self.pair_column: list[int] = []
        self.entity_ids: list[str] = []
        self.versions: list[datetime] = []
        self.ranks: list[int] = []

    def add(self, index: int, claim: RecordVersion) -> bool:
        """Take the claim at `index` of the batch; False if it is refused already."""
        mark = claim.mark()
        if mark is None:
            return True  # passes untouched
        spelled = (claim.connection_id, claim.entity)
        pair = self._pair_of.get(spelled)
        if pair is None:
            canonical = (_canonical(claim.connection_id), claim.entity)
            pair = self._pair_of[spelled] = self.pairs.setdefault(canonical, len(self.pairs) + 1)
        if not self._in_batch.passes((pair, claim.entity_id), mark):
            return False
        self.at.append(index)
        self.pair_column.append(pair)
        self.entity_ids.append(claim.entity_id)
        self.versions.append(mark[0])
        self.ranks.append(mark[1])
        return True


def _canonical(ident: str) -> str:
    # One spelling per uuid, so two spellings of a connection in one batch are one record's claims.
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
