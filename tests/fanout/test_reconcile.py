"""Reconciliation by record version on real PostgreSQL: one event per version whichever path saw it
first, newer versions passing and older ones not, deletions and voids outranking an update of the
same instant, webhook-only operations and versionless changes passing, repeats inside a batch,
concurrent claims serialised, properties over random arrivals (one record; many records of several
connections against the rule in memory, `LatestMarks`), pruning, and the table's size."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.changes import NormalizedChange
from fanout.reconcile import ALWAYS_PASS, LatestMarks, RecordVersion, operation_rank, prune, publishable
from gateway.runtime.migrate import migrate

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A migrated database of the test's own: pruning and the size measure read the whole table."""
    name = f"reconcile_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))
    await migrate(url)
    created = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        yield created
    finally:
        await created.close()
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def claim(
    operation: str = "updated",
    version: datetime | None = T0,
    *,
    connection_id: str = "0193a6f2-7c1e-7d4b-8a5f-2b9c4d6e8f01",
    entity: str = "invoice",
    entity_id: str = "145",
) -> RecordVersion:
    return RecordVersion(connection_id, entity, entity_id, operation, version)


async def claim_batch(pool: asyncpg.Pool, claims: Sequence[RecordVersion | None]) -> list[bool]:
    """One publishing transaction, committed."""
    async with pool.acquire() as connection, connection.transaction():
        return await publishable(connection, claims)


async def stored(pool: asyncpg.Pool, record: RecordVersion) -> tuple[datetime, int] | None:
    row = await pool.fetchrow(
        "SELECT version, operation_rank FROM record_versions"
        " WHERE connection_id = $1 AND entity = $2 AND entity_id = $3",
        record.connection_id,
        record.entity,
        record.entity_id,
    )
    return None if row is None else (row[0], row[1])


async def test_webhook_then_poll_of_the_same_version_publishes_once(pool: asyncpg.Pool) -> None:
    # A webhook reports the creation; the next poll reads the record as it is, at that version.
    assert await claim_batch(pool, [claim("created")]) == [True]
    assert await claim_batch(pool, [claim("updated")]) == [False]
    assert await claim_batch(pool, [claim("created")]) == [False]  # a sweep reading it again
    assert await stored(pool, claim()) == (T0, 0)


async def test_poll_then_late_webhook_of_the_same_version_publishes_once(pool: asyncpg.Pool) -> None:
    assert await claim_batch(pool, [claim("updated", T0 + SECOND)]) == [True]
    assert await claim_batch(pool, [claim("updated", T0 + SECOND)]) == [False]
    # The same instant in another offset is the same version.
    offset = (T0 + SECOND).astimezone(datetime.fromisoformat("2026-01-01T00:00:00-07:00").tzinfo)
    assert await claim_batch(pool, [claim("updated", offset)]) == [False]


async def test_a_newer_version_passes_and_moves_the_version(pool: asyncpg.Pool) -> None:
    assert await claim_batch(pool, [claim("created", T0)]) == [True]
    assert await claim_batch(pool, [claim("updated", T0 + timedelta(microseconds=1))]) == [True]
    assert await stored(pool, claim()) == (T0 + timedelta(microseconds=1), 0)


async def test_an_older_version_is_dropped_from_either_path(pool: asyncpg.Pool) -> None:
    assert await claim_batch(pool, [claim("updated", T0 + 5 * SECOND)]) == [True]
    # An out-of-order webhook, a poll overlapping an older answer: neither is published.
    assert await claim_batch(pool, [claim("updated", T0)]) == [False]
    assert await claim_batch(pool, [claim("created", T0 - SECOND)]) == [False]
    assert await claim_batch(pool, [claim("deleted", T0)]) == [False]  # an older deletion too
    assert await stored(pool, claim()) == (T0 + 5 * SECOND, 0)


async def test_a_deletion_or_void_outranks_an_update_of_the_same_instant(pool: asyncpg.Pool) -> None:
    assert await claim_batch(pool, [claim("updated")]) == [True]
    assert await claim_batch(pool, [claim("voided")]) == [True]
    assert await claim_batch(pool, [claim("updated")]) == [False]
    assert await claim_batch(pool, [claim("deleted")]) == [True]
    # Once deleted at that version, nothing of that version passes again.
    assert await claim_batch(pool, [claim("deleted"), claim("voided"), claim("created")]) == [False] * 3
    assert await stored(pool, claim()) == (T0, 2)
    # QuickBooks CDC reads a void as an update: after the webhook's void, the poll is dropped.
    other = claim(entity_id="146")
    assert await claim_batch(pool, [claim("voided", entity_id="146")]) == [True]
    assert await claim_batch(pool, [other]) == [False]


async def test_webhook_only_operations_always_pass_and_move_nothing(pool: asyncpg.Pool) -> None:
    assert await claim_batch(pool, [claim("updated", T0 + SECOND)]) == [True]
    for operation in sorted(ALWAYS_PASS):
        assert await claim_batch(pool, [claim(operation, T0), claim(operation, T0)]) == [True, True]
    assert await stored(pool, claim()) == (T0 + SECOND, 0)
    # An email of a record nobody published yet leaves the version unset: the update still passes.
    assert await claim_batch(pool, [claim("emailed", T0, entity_id="7")]) == [True]
    assert await stored(pool, claim(entity_id="7")) is None
    assert await claim_batch(pool, [claim("updated", T0, entity_id="7")]) == [True]


async def test_changes_without_a_version_always_pass(pool: asyncpg.Pool) -> None:
    assert await claim_batch(pool, [claim("updated", T0 + SECOND)]) == [True]
    versionless = claim("updated", None)
    assert await claim_batch(pool, [versionless, None, versionless]) == [True, True, True]
    assert await claim_batch(pool, [None, claim("updated", T0)]) == [True, False]
    assert await claim_batch(pool, []) == []
    assert await stored(pool, claim()) == (T0 + SECOND, 0)


async def test_each_connection_gets_its_own_first_event(pool: asyncpg.Pool) -> None:
    first, later = str(uuid.uuid4()), str(uuid.uuid4()).upper()  # any spelling of a uuid
    assert await claim_batch(pool, [claim(connection_id=first)]) == [True]
    # A connection created afterwards, on the same provider account, still gets the record once.
    assert await claim_batch(pool, [claim(connection_id=first), claim(connection_id=later)]) == [False, True]
    assert await claim_batch(pool, [claim(connection_id=later.lower())]) == [False]
    # Another entity with the same id is another record.
    assert await claim_batch(pool, [claim(connection_id=first, entity="contact")]) == [True]


async def test_repeats_inside_one_batch_are_judged_in_order(pool: asyncpg.Pool) -> None:
    assert await claim_batch(pool, [claim("updated", T0 + 2 * SECOND)]) == [True]
    batch = [
        claim("updated", T0 + SECOND),  # older than the stored one
        claim("updated", T0 + 3 * SECOND),
        claim("created", T0 + 3 * SECOND),  # the same version twice: once
        claim("updated", T0 + 2 * SECOND),  # older than the one before it in the batch
        claim("deleted", T0 + 3 * SECOND),  # a deletion of that instant outranks it
        claim("updated", T0 + 4 * SECOND),
        claim("updated", T0 + 4 * SECOND),
    ]
    assert await claim_batch(pool, batch) == [False, True, False, False, True, True, False]
    assert await stored(pool, claim()) == (T0 + 4 * SECOND, 0)
    # A new record: its first claim passes, the same version again does not.
    fresh = claim(entity_id="new")
    assert await claim_batch(pool, [fresh, fresh, claim("updated", T0 - SECOND, entity_id="new")]) == [
        True,
        False,
        False,
    ]


async def test_a_rolled_back_transaction_moves_nothing(pool: asyncpg.Pool) -> None:
    assert await claim_batch(pool, [claim("updated", T0)]) == [True]
    with pytest.raises(RuntimeError):
        async with pool.acquire() as connection, connection.transaction():
            assert await publishable(connection, [claim("updated", T0 + SECOND)]) == [True]
            raise RuntimeError("the broker refused the batch")
    assert await stored(pool, claim()) == (T0, 0)
    assert await claim_batch(pool, [claim("updated", T0 + SECOND)]) == [True]  # so the retry publishes


async def _waiting_on_a_lock(pool: asyncpg.Pool, backend: int) -> None:
    for _ in range(200):
        waiting = await pool.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", backend)
        if waiting == "Lock":
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the second claim never waited on the first")


@pytest.mark.parametrize(
    ("first", "second", "commit_first", "second_passes", "final"),
    [
        (T0 + SECOND, T0 + 2 * SECOND, True, True, T0 + 2 * SECOND),  # newer waits, then passes
        (T0 + 2 * SECOND, T0 + SECOND, True, False, T0 + 2 * SECOND),  # older waits, then drops
        (T0 + SECOND, T0 + SECOND, True, False, T0 + SECOND),  # the same version: once
        (T0 + 2 * SECOND, T0 + SECOND, False, True, T0 + SECOND),  # the first rolled back
    ],
)
async def test_concurrent_claims_on_one_record_serialise(
    pool: asyncpg.Pool,
    first: datetime,
    second: datetime,
    commit_first: bool,
    second_passes: bool,
    final: datetime,
) -> None:
    """Two publishing transactions on two pool connections: the second waits for the first to end
    (its events acknowledged) and is judged against what the first committed."""
    assert await claim_batch(pool, [claim("updated", T0)]) == [True]
    async with pool.acquire() as one, pool.acquire() as two:
        transaction = one.transaction()
        await transaction.start()
        assert await publishable(one, [claim("updated", first)]) == [True]

        async def second_claim() -> list[bool]:
            async with two.transaction():
                return await publishable(two, [claim("updated", second), claim(entity_id="other")])

        task = asyncio.create_task(second_claim())
        await _waiting_on_a_lock(pool, two.get_server_pid())
        assert not task.done()
        await (transaction.commit() if commit_first else transaction.rollback())
        assert await task == [second_passes, True]
    assert await stored(pool, claim()) == (final, 0)


async def test_a_new_record_claimed_by_two_transactions_at_once_publishes_once(pool: asyncpg.Pool) -> None:
    # No row to lock yet: the second insert waits on the first's unique key, then compares.
    async with pool.acquire() as one, pool.acquire() as two:
        transaction = one.transaction()
        await transaction.start()
        assert await publishable(one, [claim("created")]) == [True]

        async def second_claim() -> list[bool]:
            async with two.transaction():
                return await publishable(two, [claim("updated"), claim("updated", T0 + SECOND)])

        task = asyncio.create_task(second_claim())
        await _waiting_on_a_lock(pool, two.get_server_pid())
        await transaction.commit()
        assert await task == [False, True]
    assert await stored(pool, claim()) == (T0 + SECOND, 0)


# Arrivals for one record: which path reported it (the rule ignores it), the operation, and the
# version as seconds after T0 from a small range, so equal versions are common.
WEBHOOK_OPERATIONS = ["created", "updated", "deleted", "voided", "emailed", "merged"]
POLL_OPERATIONS = ["created", "updated", "deleted", "voided"]
arrivals = st.lists(
    st.one_of(
        st.tuples(st.just("webhook"), st.sampled_from(WEBHOOK_OPERATIONS), st.integers(0, 5)),
        st.tuples(st.sampled_from(["poll", "backfill"]), st.sampled_from(POLL_OPERATIONS), st.integers(0, 5)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrivals=arrivals, cuts=st.lists(st.integers(1, 4), min_size=1, max_size=12))
async def test_published_versions_only_increase_and_every_newest_one_is_published(
    pool: asyncpg.Pool, arrivals: list[tuple[str, str, int]], cuts: list[int]
) -> None:
    """Whatever the order and the batching, a record's published (version, rank) strictly increase,
    and every arrival newer than all before it is published; webhook-only operations always are."""
    entity_id = uuid.uuid4().hex  # a record of this example's own
    claims = [
        claim(operation, T0 + seconds * SECOND, entity_id=entity_id) for _, operation, seconds in arrivals
    ]
    verdicts: list[bool] = []
    start = 0
    for size in cuts * len(claims):  # batches of the drawn sizes, in turn, until all are claimed
        if start >= len(claims):
            break
        verdicts += await claim_batch(pool, claims[start : start + size])
        start += size

    newest: tuple[datetime, int] | None = None
    published: list[tuple[datetime, int]] = []
    for record, passed in zip(claims, verdicts, strict=True):
        assert record.version is not None
        if record.operation in ALWAYS_PASS:
            assert passed
            continue
        mark = (record.version, operation_rank(record.operation))
        assert passed == (newest is None or mark > newest)
        if passed:
            published.append(mark)
        newest = mark if newest is None else max(newest, mark)
    assert published == sorted(set(published))  # strictly increasing
    found = await stored(pool, claims[0])
    assert found == newest


# Claims over a few records of a few connections (one of them also spelled in upper case), with
# versions from a small range so equal versions are common, and some without a version.
CONNECTIONS = ["0193a6f2-7c1e-7d4b-8a5f-2b9c4d6e8f01", "0193a6f2-7c1e-7d4b-8a5f-2b9c4d6e8f02"]
SPELLINGS = [*CONNECTIONS, CONNECTIONS[0].upper()]
many_claims = st.lists(
    st.one_of(
        st.none(),
        st.builds(
            RecordVersion,
            connection_id=st.sampled_from(SPELLINGS),
            entity=st.sampled_from(["invoice", "contact"]),
            entity_id=st.sampled_from(["1", "2"]),
            operation=st.sampled_from(WEBHOOK_OPERATIONS),
            version=st.one_of(st.none(), st.integers(0, 4).map(lambda s: T0 + s * SECOND)),
        ),
    ),
    max_size=30,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=many_claims, cuts=st.lists(st.integers(1, 12), min_size=1, max_size=8))
async def test_batches_of_many_records_decide_as_the_rule_in_memory(
    pool: asyncpg.Pool, claims: list[RecordVersion | None], cuts: list[int]
) -> None:
    """Whatever the batching, each claim's verdict is the rule applied one claim at a time
    (`LatestMarks`), per record and connection however the connection id is spelled, and the
    stored version of each record is the latest that passed."""
    namespace = uuid.uuid4().hex  # records of this example's own
    claims = [
        None
        if c is None
        else RecordVersion(c.connection_id, c.entity, namespace + c.entity_id, c.operation, c.version)
        for c in claims
    ]
    verdicts: list[bool] = []
    start = 0
    for size in cuts * (len(claims) + 1):
        if start >= len(claims):
            break
        verdicts += await claim_batch(pool, claims[start : start + size])
        start += size

    model = LatestMarks()
    latest: dict[tuple[str, str, str], tuple[datetime, int]] = {}
    for record, passed in zip(claims, verdicts, strict=True):
        mark = None if record is None else record.mark()
        if record is None or mark is None:
            assert passed
            continue
        key = (record.connection_id.lower(), record.entity, record.entity_id)
        assert passed == model.passes(key, mark)
        if passed:
            latest[key] = mark
    for (connection_id, entity, entity_id), mark in latest.items():
        assert (
            await stored(pool, claim(connection_id=connection_id, entity=entity, entity_id=entity_id)) == mark
        )


async def test_two_spellings_of_a_connection_in_one_batch_are_one_record(pool: asyncpg.Pool) -> None:
    lower = str(uuid.uuid4())
    upper = lower.upper()
    batch = [
        claim("updated", T0 + SECOND, connection_id=lower),
        claim("updated", T0, connection_id=upper),  # older than the claim before it
        claim("updated", T0 + SECOND, connection_id=upper),  # the same version
        claim("deleted", T0 + SECOND, connection_id=upper),
    ]
    assert await claim_batch(pool, batch) == [True, False, False, True]
    assert await stored(pool, claim(connection_id=lower)) == (T0 + SECOND, 2)


async def test_a_batch_spanning_many_connections_and_entities(pool: asyncpg.Pool) -> None:
    """Each record's claims are judged against that record only, whatever shares the batch."""
    connections = [str(uuid.uuid4()) for _ in range(30)]
    entities = ["invoice", "contact", "payment"]
    first = [claim("updated", T0 + SECOND, connection_id=c, entity=e) for c in connections for e in entities]
    assert await claim_batch(pool, first) == [True] * len(first)
    # Each record: an older version (dropped), the same (dropped), a newer one (passes).
    second = [
        claim("updated", T0 + seconds * SECOND, connection_id=c, entity=e)
        for c in reversed(connections)
        for e in entities
        for seconds in (0, 1, 2)
    ]
    assert await claim_batch(pool, second) == [False, False, True] * len(first)
    assert await stored(pool, claim(connection_id=connections[7], entity="payment")) == (T0 + 2 * SECOND, 0)


def test_a_claims_mark_is_its_version_and_rank() -> None:
    assert claim("updated", T0).mark() == (T0, 0)
    assert claim("voided", T0).mark() == (T0, 1)
    assert claim("deleted", T0).mark() == (T0, 2)
    assert claim("updated", None).mark() is None
    assert [claim(operation).mark() for operation in sorted(ALWAYS_PASS)] == [None] * len(ALWAYS_PASS)


def test_latest_marks_passes_only_what_is_later_per_record() -> None:
    latest = LatestMarks()
    assert latest.passes("a", (T0, 0))
    assert not latest.passes("a", (T0, 0))  # the same mark
    assert latest.passes("a", (T0, 2))  # a deletion of that instant
    assert not latest.passes("a", (T0, 1))  # a void after it
    assert latest.passes("a", (T0 + SECOND, 0))  # a newer version
    assert not latest.passes("a", (T0, 2))
    assert latest.passes("b", (T0 - SECOND, 0))  # another record


async def test_pruning_forgets_old_versions_in_batches(pool: asyncpg.Pool) -> None:
    old = [claim(entity_id=f"old-{n}") for n in range(12)]
    recent = [claim(entity_id=f"recent-{n}") for n in range(3)]
    assert await claim_batch(pool, old + recent) == [True] * 15
    await pool.execute(
        "UPDATE record_versions SET seen_at = now() - interval '8 days' WHERE entity_id LIKE 'old-%'"
    )
    assert await prune(pool, timedelta(days=7), batch_size=5) == 12
    assert await pool.fetchval("SELECT count(*) FROM record_versions") == 3
    assert await prune(pool, timedelta(days=7)) == 0
    # What a too-early prune costs: a late repeat of a forgotten version is published once more.
    assert await claim_batch(pool, [old[0], recent[0]]) == [True, False]
    assert await claim_batch(pool, [old[0]]) == [False]


async def test_a_moved_version_counts_as_recent_again(pool: asyncpg.Pool) -> None:
    assert await claim_batch(pool, [claim("updated", T0)]) == [True]
    await pool.execute("UPDATE record_versions SET seen_at = now() - interval '8 days'")
    assert await claim_batch(pool, [claim("updated", T0 + SECOND)]) == [True]
    assert await prune(pool, timedelta(days=7)) == 0
    assert await stored(pool, claim()) == (T0 + SECOND, 0)


async def test_the_table_stays_under_its_documented_size(pool: asyncpg.Pool) -> None:
    """docs/architecture.md, "Reconciliation": about 210 bytes per record with its indexes once
    written, up to about 380 once every record was moved again (the dead rows' space is kept for
    reuse), for QuickBooks-like ids (a few digits) and Xero-like ids (UUIDs), half each."""
    connections = [str(uuid.uuid4()) for _ in range(100)]
    entities = ["invoice", "contact", "payment", "bill", "credit_note"]
    rows = 20_000
    ids = [str(n) if n % 2 else str(uuid.uuid4()) for n in range(rows)]
    for version in (T0, T0 + SECOND):
        batch: list[RecordVersion | None] = [
            RecordVersion(connections[n % 100], entities[n % 5], ids[n], "updated", version)
            for n in range(rows)
        ]
        for start in range(0, rows, 5_000):
            assert all(await claim_batch(pool, batch[start : start + 5_000]))
        await pool.execute("VACUUM ANALYZE record_versions")
        size = await pool.fetchval("SELECT pg_total_relation_size('record_versions')")
        assert size / rows < (250 if version == T0 else 400), size / rows


def test_a_record_version_is_built_from_a_normalized_change() -> None:
    change = NormalizedChange("realm", "contact", "Customer", "58", "merged", T0, merged_into="12")
    assert RecordVersion.of("0193a6f2-7c1e-7d4b-8a5f-2b9c4d6e8f01", change) == RecordVersion(
        "0193a6f2-7c1e-7d4b-8a5f-2b9c4d6e8f01", "contact", "58", "merged", T0
    )
