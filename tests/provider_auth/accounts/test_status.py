"""Status transitions on real PostgreSQL, published on the real broker by `fanout.account_events`: one
event per real transition, and the same id again when the transaction that published it rolls back."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from fanout.account_events import AccountEventPublisher
from gateway.runtime.infra import Infrastructure, open_infrastructure
from gateway.runtime.kafka import ensure_topics
from gateway.settings import Settings
from provider_auth.accounts.events import AuthFailure, AuthFailureReason, ReactivationReason
from provider_auth.accounts.status import StatusTransitions
from provider_auth.accounts.store import ConnectionStore
from provider_auth.providers import Provider
from tests.fanout.pipeline.pipeline_support import Received, read_records

# The namespace of account event ids, fixed forever (not imported: the test pins the formula).
NAMESPACE = uuid.UUID("4c3d1b8e-5a47-4f0e-9a53-2f4d0c6b7e21")
FAILED_AT = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
BACK_AT = datetime(2025, 1, 3, 4, 5, 6, 789012, tzinfo=UTC)
FAILURE = AuthFailure("xero", AuthFailureReason.INVALID_GRANT, "invalid_grant: revoked", FAILED_AT)


class RolledBack(Exception):
    """Raised inside a transaction to roll it back."""


@pytest.fixture
async def stack(settings_factory: Any, database_url: str) -> AsyncIterator[tuple[Settings, Infrastructure]]:
    settings: Settings = settings_factory(database_url=database_url)
    await ensure_topics(settings)
    async with open_infrastructure(settings) as infra:
        yield settings, infra


def transitions(settings: Settings, infra: Infrastructure) -> StatusTransitions:
    return StatusTransitions(AccountEventPublisher(infra.producer, settings.topic_account_events))


def expected_id(event_type: str, connection_id: str, left_at: datetime) -> str:
    """The id formula: type, connection and the instant of the state left (RFC 3339, UTC, `Z`)."""
    moment = left_at.astimezone(UTC)
    text = moment.isoformat(timespec="microseconds" if moment.microsecond % 1000 else "milliseconds")
    return str(uuid.uuid5(NAMESPACE, f"{event_type}|{connection_id}|{text[:-6]}Z"))


async def published(settings: Settings) -> list[Received]:
    records = await read_records(settings.kafka_bootstrap_servers, settings.topic_account_events)
    return sorted(records, key=lambda r: (r.partition, r.offset))


async def status_and_stamp(infra: Infrastructure, connection_id: str) -> tuple[str, datetime]:
    row = await infra.pool.fetchrow("SELECT status, updated_at FROM connections WHERE id = $1", connection_id)
    assert row is not None
    return row["status"], row["updated_at"]


async def test_one_event_per_real_transition(stack: tuple[Settings, Infrastructure]) -> None:
    settings, infra = stack
    store = ConnectionStore(infra.pool, None)
    first = await store.create("tenant-a", Provider.XERO, "org-a")
    second = await store.create("tenant-b", Provider.XERO, "org-b")
    gone = await store.create("tenant-c", Provider.XERO, "org-c")
    await store.disconnect(gone.id)
    events = transitions(settings, infra)
    ids = [first.id, second.id, gone.id]

    async with infra.pool.acquire() as conn, conn.transaction():
        assert sorted(await events.broken(conn, ids, FAILURE)) == sorted([first.id, second.id])
    async with infra.pool.acquire() as conn, conn.transaction():
        assert await events.broken(conn, ids, FAILURE) == []  # already broken: no second event
    status, broken_at = await status_and_stamp(infra, first.id)
    assert status == "needs_reauth"
    async with infra.pool.acquire() as conn, conn.transaction():
        assert await events.reactivated(
            conn, [first.id, gone.id], ReactivationReason.RECONNECTED, BACK_AT
        ) == [first.id]
    async with infra.pool.acquire() as conn, conn.transaction():
        assert await events.reactivated(conn, ids, ReactivationReason.RECONNECTED, BACK_AT) == [second.id]

    assert [(await status_and_stamp(infra, c))[0] for c in ids] == ["active", "active", "disconnected"]
    records = await published(settings)
    by_connection: dict[bytes | None, list[Received]] = {}
    for record in records:
        by_connection.setdefault(record.key, []).append(record)
    assert set(by_connection) == {first.id.encode(), second.id.encode()}
    failed, back = by_connection[first.id.encode()]
    assert failed.header("ce_type") == "integrated_account:authentication_error"
    assert failed.header("ce_id") == expected_id(failed.header("ce_type") or "", first.id, first.updated_at)
    assert back.header("ce_type") == "integrated_account:reactivated"
    assert back.header("ce_id") == expected_id(back.header("ce_type") or "", first.id, broken_at)
    for record in (failed, back):
        # As docs/events.md documents them: the account's source, the connection as subject.
        assert record.header("ce_source") == "/ledgerhook/xero/org-a"
        assert record.header("ce_subject") == f"connection/{first.id}"
        assert record.header("ce_connectionid") == first.id
        assert record.header("ce_tenantid") == "tenant-a" and record.header("ce_provider") == "xero"
        assert record.header("content-type") == "application/json"
    assert failed.header("ce_time") == "2025-01-02T03:04:05.678Z"
    # The data, byte for byte: members in the documented order.
    assert failed.value == orjson.dumps(
        {
            "tenant_id": "tenant-a",
            "connection_id": first.id,
            "provider": "xero",
            "provider_account_id": "org-a",
            "reason": "invalid_grant",
            "provider_error": "invalid_grant: revoked",
            "occurred_at": "2025-01-02T03:04:05.678Z",
        }
    )
    assert orjson.loads(back.value) == {
        "tenant_id": "tenant-a",
        "connection_id": first.id,
        "provider": "xero",
        "provider_account_id": "org-a",
        "reason": "reconnected",
        "provider_error": None,
        "occurred_at": "2025-01-03T04:05:06.789012Z",
    }


async def test_a_rolled_back_transition_publishes_the_same_id_again(
    stack: tuple[Settings, Infrastructure],
) -> None:
    settings, infra = stack
    store = ConnectionStore(infra.pool, None)
    connection = await store.create("tenant-a", Provider.QUICKBOOKS, "realm-1")
    events = transitions(settings, infra)

    # Published, then the caller's transaction fails: the database still says active.
    with pytest.raises(RolledBack):
        async with infra.pool.acquire() as conn, conn.transaction():
            assert await events.broken(conn, [connection.id], FAILURE) == [connection.id]
            raise RolledBack
    assert (await status_and_stamp(infra, connection.id))[0] == "active"
    async with infra.pool.acquire() as conn, conn.transaction():
        assert await events.broken(conn, [connection.id], FAILURE) == [connection.id]

    first, again = await published(settings)
    assert first.header("ce_id") == again.header("ce_id")
    assert first.header("ce_id") == expected_id(
        "integrated_account:authentication_error", connection.id, connection.updated_at
    )
    assert first.value == again.value
