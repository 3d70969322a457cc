"""Backfills and history gaps on real PostgreSQL, the real broker and the provider emulator: a backfill
replays a connection's changes from `since` with `origin: "backfill"`, reconciled with what polls
published, resumes where it stopped, waits while its connection cannot be polled, and says when the
provider no longer serves what was asked (`integrated_account:history_gap`), as a poll with a
watermark older than the provider answers for does."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.polling import quickbooks, xero
from fanout.polling.adapters import oldest_served
from fanout.polling.backfills import (
    BackfillJob,
    BackfillJobs,
    BackfillOpen,
    BackfillState,
    requests_from_json,
    requests_to_json,
    resolve_entities,
)
from fanout.polling.pages import PageRequest, PollTarget
from fanout.polling.state import PollState
from provider_auth.accounts.store import ConnectionStatus
from provider_auth.providers import Provider
from tests.fanout.pipeline.pipeline_support import Received, read_events, read_records
from tests.fanout.polling.polling_support import (
    count_events,
    eventually,
    new_poller,
    outcome_is,
    polled,
    polling,
)
from tests.provider_auth.tokens.token_support import CLIENT_ID, TokenStack

QB = Provider.QUICKBOOKS
XERO = Provider.XERO
DAY = 86400.0


async def account_events(stack: TokenStack, event_type: str) -> list[dict[str, Any]]:
    """The data of every event of `event_type` on the account events topic."""
    records: list[Received] = await read_records(
        stack.settings.kafka_bootstrap_servers, stack.settings.topic_account_events
    )
    out = []
    for record in records:
        event = record.event()
        if event.get_type() == event_type:
            data = event.get_data()
            assert isinstance(data, dict)
            out.append({"id": event.get_id(), **data})
    return out


def job_is(stack: TokenStack, job_id: str, *states: BackfillState) -> Any:
    jobs = BackfillJobs(stack.pool)

    async def check() -> bool:
        job = await jobs.get(job_id)
        return job is not None and job.state in states

    return check


async def the_job(stack: TokenStack, job_id: str) -> BackfillJob:
    job = await BackfillJobs(stack.pool).get(job_id)
    assert job is not None
    return job


async def connection(stack: TokenStack, connection_id: str) -> Any:
    found = await stack.connections.get(connection_id)
    assert found is not None
    return found


async def test_a_backfill_replays_history_from_before_the_connection_with_origin_backfill(
    stack: TokenStack,
) -> None:
    realm = str(uuid.uuid4().int)[:16]
    book = stack.emu.book(QB, realm)
    old = book.create_many("Invoice", 12, spacing=DAY)  # the last now, the first 11 days ago
    connection_id, _, _ = await stack.connect(QB, account=realm)
    jobs = BackfillJobs(stack.pool)
    job = await jobs.create(
        await connection(stack, connection_id), datetime.now(UTC) - timedelta(days=20), ["invoice"]
    )
    assert (job.state, job.entities, job.pages_pending) == (BackfillState.QUEUED, ("Invoice",), None)
    with pytest.raises(BackfillOpen) as refused:
        await jobs.create(await connection(stack, connection_id), datetime.now(UTC) - timedelta(days=2))
    assert refused.value.job.id == job.id

    async with polling(stack):
        await eventually(job_is(stack, job.id, BackfillState.DONE))
    done = await the_job(stack, job.id)
    assert (done.pages_done, done.pages_pending, done.records_read) == (1, 0, 12)
    assert done.events_published >= 11  # the newest may have been polled first (reconciled)
    assert done.progress() == 1.0 and done.seconds_left(datetime.now(UTC)) == 0.0
    events = polled(await read_events(stack.settings))
    assert sorted(e["entity_id"] for e in events) == sorted(r.id for r in old)  # each once
    backfilled = [e for e in events if e["origin"] == "backfill"]
    assert len(backfilled) == done.events_published
    assert {e["connection_id"] for e in events} == {connection_id}
    # Nothing older than 30 days was asked for: no gap.
    assert await account_events(stack, "integrated_account:history_gap") == []


async def test_a_backfill_resumes_at_its_page_after_a_crash_without_repeats(stack: TokenStack) -> None:
    tenant = str(uuid.uuid4())
    book = stack.emu.book(XERO, tenant)
    invoices = book.create_many("Invoice", 2 * xero.PAGE_SIZE + 30, spacing=60.0)
    connection_id, _, _ = await stack.connect(XERO, account=tenant)
    since = datetime.now(UTC) - timedelta(days=10)
    job = await BackfillJobs(stack.pool).create(await connection(stack, connection_id), since, ["Invoice"])
    stack.emu.set_latency(XERO, 0.3, endpoint="Invoices")

    crashed = new_poller(stack)
    task = asyncio.create_task(crashed.run(asyncio.Event()))

    async def a_page_done() -> bool:
        return (await the_job(stack, job.id)).pages_done >= 1

    await eventually(a_page_done)
    task.cancel()  # mid-job: the lease is left to run out
    await asyncio.gather(task, return_exceptions=True)
    midway = await the_job(stack, job.id)
    assert midway.state is BackfillState.RUNNING and midway.pages_pending
    assert 0 < midway.progress() < 1
    assert midway.seconds_left(datetime.now(UTC)) is not None

    async with polling(stack):
        await eventually(job_is(stack, job.id, BackfillState.DONE), timeout=30)
    events = polled(await read_events(stack.settings))
    assert sorted(e["entity_id"] for e in events) == sorted(r.id for r in invoices)  # count-exact
    # The newest few are within the first poll's overlap before the connection's creation.
    recent = xero.OVERLAP.total_seconds() / 60 + 1
    assert len([e for e in events if e["origin"] == "backfill"]) >= len(invoices) - recent
    done = await the_job(stack, job.id)
    assert done.pages_done >= 3 and done.records_read >= len(invoices)


async def test_a_backfill_waits_while_its_connection_needs_reauth_and_then_finishes(
    stack: TokenStack,
) -> None:
    realm = str(uuid.uuid4().int)[:16]
    stack.emu.book(QB, realm).create_many("Invoice", 3, spacing=DAY)
    connection_id, _, _ = await stack.connect(QB, account=realm)
    await stack.connections.update(connection_id, status=ConnectionStatus.NEEDS_REAUTH)
    job = await BackfillJobs(stack.pool).create(
        await connection(stack, connection_id), datetime.now(UTC) - timedelta(days=5)
    )

    async def waiting() -> bool:
        found = await the_job(stack, job.id)
        return found.attempts >= 1 and found.last_error == "the connection is needs_reauth"

    calls = stack.emu.calls(QB, "cdc")
    async with polling(stack):
        await eventually(waiting)
        assert stack.emu.calls(QB, "cdc") == calls  # no request for an account that cannot be read
        await stack.connections.update(connection_id, status=ConnectionStatus.ACTIVE)
        await stack.pool.execute("UPDATE poll_backfills SET next_attempt_at = now() WHERE id = $1", job.id)
        await eventually(job_is(stack, job.id, BackfillState.DONE))
    assert len(polled(await read_events(stack.settings))) == 3


async def test_a_backfill_past_what_quickbooks_serves_publishes_one_history_gap(stack: TokenStack) -> None:
    realm = str(uuid.uuid4().int)[:16]
    stack.emu.book(QB, realm).create_many("Invoice", 2, spacing=DAY)
    connection_id, _, _ = await stack.connect(QB, account=realm)
    since = datetime.now(UTC) - timedelta(days=45)
    job = await BackfillJobs(stack.pool).create(
        await connection(stack, connection_id), since, ["Invoice", "Bill"]
    )
    async with polling(stack):
        await eventually(job_is(stack, job.id, BackfillState.DONE))
    gaps = await account_events(stack, "integrated_account:history_gap")
    assert len(gaps) == 1
    gap = gaps[0]
    assert (gap["connection_id"], gap["origin"], gap["entities"]) == (
        connection_id,
        "backfill",
        ["bill", "invoice"],
    )
    lost_until = datetime.fromisoformat(gap["lost_until"])
    assert datetime.fromisoformat(gap["lost_from"]) == since
    assert timedelta(days=29) < datetime.now(UTC) - lost_until < timedelta(days=30)
    assert len(polled(await read_events(stack.settings))) == 2  # what it still serves was read


async def backfill_planned_at(stack: TokenStack, planned_since: datetime) -> str:
    """A 5-day backfill of a realm with three invoices whose saved first request starts at
    `planned_since`, as if planned then, run to its end (done, no error); its connection's id."""
    realm = str(uuid.uuid4().int)[:16]
    stack.emu.book(QB, realm).create_many("Invoice", 3, spacing=DAY)
    connection_id, _, _ = await stack.connect(QB, account=realm)
    jobs = BackfillJobs(stack.pool)
    job = await jobs.create(await connection(stack, connection_id), datetime.now(UTC) - timedelta(days=5))
    (planned,) = quickbooks.first_requests(PollTarget(realm), planned_since, ["Invoice"])
    await stack.pool.execute(
        "UPDATE poll_backfills SET pending = $2::jsonb WHERE id = $1", job.id, requests_to_json([planned])
    )
    async with polling(stack):
        await eventually(job_is(stack, job.id, BackfillState.DONE, BackfillState.FAILED))
    done = await the_job(stack, job.id)
    assert (done.state, done.last_error) == (BackfillState.DONE, None)
    assert len(polled(await read_events(stack.settings))) == 3
    return connection_id


async def test_a_quickbooks_page_planned_at_the_edge_and_sent_later_is_moved_up_with_a_gap(
    stack: TokenStack,
) -> None:
    # As if planned at CDC's 30-day edge and resumed after a long wait (a handover, a 429).
    stale = datetime.now(UTC) - timedelta(days=30, minutes=5)
    connection_id = await backfill_planned_at(stack, stale)
    gaps = await account_events(stack, "integrated_account:history_gap")
    assert [(g["origin"], g["connection_id"]) for g in gaps] == [("backfill", connection_id)]
    assert datetime.fromisoformat(gaps[0]["lost_from"]) == stale.replace(microsecond=0)


async def test_a_quickbooks_page_planned_at_the_floor_a_moment_ago_keeps_its_start(
    stack: TokenStack,
) -> None:
    """The floor moves with the clock: a request planned there a few seconds before it is sent (so
    its start is a few whole seconds behind the floor now) is still served, and is neither moved up
    nor announced as a gap."""
    floor = oldest_served(QB, datetime.now(UTC) - timedelta(seconds=3))
    assert floor is not None
    await backfill_planned_at(stack, floor)
    assert await account_events(stack, "integrated_account:history_gap") == []


async def test_a_watermark_older_than_quickbooks_serves_gives_one_history_gap_per_connection(
    stack: TokenStack,
) -> None:
    realm = str(uuid.uuid4().int)[:16]
    connections = []
    for _ in range(2):
        grant = stack.emu.issue_grant(QB, CLIENT_ID, accounts=[realm])
        connection_id, _, _ = await stack.connect(QB, account=realm, grant=grant)
        connections.append(connection_id)
    state = PollState(stack.pool)
    async with polling(stack):
        await eventually(outcome_is(stack, QB, realm, "ok"))
    old = datetime.now(UTC) - timedelta(days=31)
    await stack.pool.execute(
        "UPDATE poll_watermarks SET watermark = $2 WHERE provider_account_id = $1",
        realm,
        old,
    )
    changed = stack.emu.book(QB, realm).create("Invoice")
    async with polling(stack):
        await eventually(lambda: count_events(stack, 2))
        # Polled again from the same watermark (a failure in between, say): still one gap each.
        await stack.pool.execute(
            "UPDATE poll_watermarks SET watermark = $2 WHERE provider_account_id = $1", realm, old
        )
        await stack.pool.execute(
            "UPDATE poll_accounts SET next_due_at = now() WHERE provider_account_id = $1", realm
        )

        async def moved() -> bool:
            return min((await state.watermarks(QB, realm)).values()) > old + timedelta(days=1)

        await eventually(moved)
    gaps = await account_events(stack, "integrated_account:history_gap")
    assert sorted(g["connection_id"] for g in gaps) == sorted(connections)
    assert {g["origin"] for g in gaps} == {"poll"}
    assert all(len(g["entities"]) > 5 and "invoice" in g["entities"] for g in gaps)
    events = polled(await read_events(stack.settings))
    assert sorted(e["connection_id"] for e in events) == sorted(connections)
    assert {e["entity_id"] for e in events} == {changed.id}


# --- pure parts -------------------------------------------------------------------------------------


def test_entities_are_named_by_the_provider_or_by_their_unified_name() -> None:
    assert resolve_entities(QB, None) == resolve_entities(QB, list(resolve_entities(QB, None)))
    assert resolve_entities(QB, ["contact", "Invoice"]) == ("Customer", "Invoice", "Vendor")
    assert resolve_entities(Provider.XERO, ["credit_note"]) == ("CreditNote",)
    with pytest.raises(ValueError, match="'Widget' is not an entity quickbooks polling reads"):
        resolve_entities(QB, ["Widget"])
    with pytest.raises(ValueError, match="at least one entity"):
        resolve_entities(QB, [])


_text = st.text(max_size=20)


@given(
    st.lists(
        st.builds(
            PageRequest,
            method=st.sampled_from(["GET", "POST"]),
            path=_text,
            params=st.lists(st.tuples(_text, _text), max_size=4).map(tuple),
            headers=st.lists(st.tuples(_text, _text), max_size=3).map(tuple),
            body=st.none() | st.binary(max_size=64),
        ),
        max_size=5,
    )
)
def test_saved_page_requests_read_back_the_same(requests: list[PageRequest]) -> None:
    assert requests_from_json(requests_to_json(requests)) == requests
