"""Quarantine (every reason, the original record kept) and redrive (CLI and function, filters, once)."""

import asyncio
import hashlib
import subprocess
import sys
import uuid
from typing import Any

import aiohttp
import orjson

from fanout.quarantine import Reason
from fanout.redrive import RedriveResult
from gateway.admin.quarantine import redrive_once
from provider_auth.accounts.store import ConnectionStatus, ConnectionStore
from provider_auth.providers import Provider
from tests.fanout.pipeline.pipeline_support import (
    PipelineStack,
    Received,
    caught_up,
    expected_id,
    post_signed,
    produce_raw,
    read_events,
    read_quarantine,
    read_records,
    sample_value,
    settings_env,
    worker_running,
)
from tests.support import ADMIN_TOKEN

QUARANTINE_HEADERS = {
    "ledgerhook-quarantine-reason",
    "ledgerhook-quarantine-detail",
    "ledgerhook-quarantine-topic",
    "ledgerhook-quarantine-partition",
    "ledgerhook-quarantine-offset",
    "ledgerhook-quarantined-at",
}


def account() -> str:
    return str(uuid.uuid4().int)[:12]


def legacy(*notifications: tuple[str, list[tuple[str, str, str, str]]]) -> bytes:
    """A QuickBooks legacy body: (realm, [(entity, id, operation, lastUpdated)]) per notification."""
    return orjson.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": realm,
                    "dataChangeEvent": {
                        "entities": [
                            {"name": name, "id": entity_id, "operation": op, "lastUpdated": at}
                            for name, entity_id, op, at in entities
                        ]
                    },
                }
                for realm, entities in notifications
            ]
        }
    )


async def raw_records(stack: PipelineStack) -> list[Received]:
    return sorted(
        await read_records(stack.settings.kafka_bootstrap_servers, stack.settings.topic_raw),
        key=lambda r: (r.partition, r.offset),
    )


def assert_quarantined_copy(quarantined: Received, raw: Received, reason: str, topic: str) -> None:
    """The original record, byte for byte, plus the quarantine headers."""
    assert quarantined.value == raw.value
    assert quarantined.key == raw.key
    assert {k: v for k, v in quarantined.headers.items() if k not in QUARANTINE_HEADERS} == raw.headers
    assert quarantined.header("ledgerhook-quarantine-reason") == reason
    assert quarantined.header("ledgerhook-quarantine-topic") == topic
    assert quarantined.header("ledgerhook-quarantine-partition") == str(raw.partition)
    assert quarantined.header("ledgerhook-quarantine-offset") == str(raw.offset)
    assert (quarantined.header("ledgerhook-quarantined-at") or "").endswith("Z")


CLI = [sys.executable, "-m", "gateway.cli"]


async def test_unknown_realm_is_quarantined_then_redriven_by_the_cli(
    stack: PipelineStack, store: ConnectionStore
) -> None:
    realm = account()
    body = legacy((realm, [("Invoice", "12", "Create", "2025-02-03T04:05:06.789Z")]))
    delivery_id = await post_signed(stack.gateway, "quickbooks", body)
    async with worker_running(stack) as registry:
        await caught_up(stack.settings)
        assert await read_events(stack.settings) == []
        [quarantined] = await read_quarantine(stack.settings)
        [raw] = await raw_records(stack)
        assert_quarantined_copy(quarantined, raw, "unknown_account", stack.settings.topic_raw)
        assert (
            quarantined.header("ledgerhook-quarantine-detail")
            == f"no connection for quickbooks account '{realm}'"
        )
        assert sample_value(registry, "ledgerhook_fanout_quarantined_total", reason="unknown_account") == 1

        connection = await store.create("tenant-1", Provider.QUICKBOOKS, realm)
        result = await asyncio.to_thread(
            subprocess.run,
            # Through the gateway's admin API, with the token from the environment.
            [*CLI, "redrive", "--reason", "unknown_account", "--url", stack.gateway.base_url],
            env=settings_env(stack.settings, ADMIN_TOKEN=ADMIN_TOKEN),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "redriven: 1, skipped: 0"
        await caught_up(stack.settings)

        [event] = await read_events(stack.settings)
        assert event.key == connection.id.encode()
        assert event.event().get_id() == expected_id(
            connection.id, "quickbooks", realm, "invoice", "12", "created", "2025-02-03T04:05:06.789000+00:00"
        )
        assert event.event().get_data()["delivery_id"] == delivery_id  # type: ignore[index]
        # The redriven raw record: the original, without quarantine headers, redrive count 1.
        first, again = await raw_records(stack)
        assert again.value == first.value and again.key == first.key
        assert again.headers == first.headers | {"ledgerhook-redrive-count": b"1"}
        # Once: nothing is pending any more.
        assert await redrive_once(stack.settings) == RedriveResult(0, 0)


async def test_mixed_delivery_publishes_the_known_account_and_quarantines_the_rest(
    stack: PipelineStack, store: ConnectionStore
) -> None:
    known, unknown = account(), account()
    connection = await store.create("tenant-1", Provider.QUICKBOOKS, known)
    body = legacy(
        (
            known,
            [
                ("Customer", "1", "Update", "2025-02-03T04:05:06Z"),
                ("Bill", "2", "Delete", "2025-02-03T04:05:07Z"),
            ],
        ),
        (unknown, [("Invoice", "3", "Void", "2025-02-03T04:05:08Z")]),
    )
    await post_signed(stack.gateway, "quickbooks", body)
    async with worker_running(stack) as registry:
        await caught_up(stack.settings)
        events = await read_events(stack.settings)
        assert sorted(e.event().get_type() for e in events) == [
            "accounting.bill.deleted",
            "accounting.contact.updated",
        ]
        [quarantined] = await read_quarantine(stack.settings)
        assert quarantined.value == body
        assert quarantined.header("ledgerhook-quarantine-reason") == "unknown_account"
        detail = quarantined.header("ledgerhook-quarantine-detail") or ""
        assert unknown in detail and known not in detail

        other = await store.create("tenant-2", Provider.QUICKBOOKS, unknown)
        assert await redrive_once(stack.settings, Reason.UNKNOWN_ACCOUNT) == RedriveResult(1, 0)
        await caught_up(stack.settings)
        events = await read_events(stack.settings)
        # The known account's two events are not repeated (dedupe), the other account's one arrives.
        assert sorted((e.key, e.event().get_type()) for e in events) == sorted(
            [
                (connection.id.encode(), "accounting.bill.deleted"),
                (connection.id.encode(), "accounting.contact.updated"),
                (other.id.encode(), "accounting.invoice.voided"),
            ]
        )
        assert sample_value(registry, "ledgerhook_fanout_duplicates_dropped_total") == 2
        assert len(await read_quarantine(stack.settings)) == 1  # nothing quarantined again


async def test_disconnected_account_is_quarantined(stack: PipelineStack, store: ConnectionStore) -> None:
    realm = account()
    connection = await store.create("tenant-1", Provider.QUICKBOOKS, realm)
    await store.disconnect(connection.id)
    await post_signed(
        stack.gateway, "quickbooks", legacy((realm, [("Item", "5", "Create", "2025-01-01T00:00:00Z")]))
    )
    async with worker_running(stack) as registry:
        await caught_up(stack.settings)
    assert await read_events(stack.settings) == []
    [quarantined] = await read_quarantine(stack.settings)
    assert quarantined.header("ledgerhook-quarantine-reason") == "disconnected"
    assert realm in (quarantined.header("ledgerhook-quarantine-detail") or "")
    assert sample_value(registry, "ledgerhook_fanout_quarantined_total", reason="disconnected") == 1


async def test_paused_connection_is_quarantined_then_delivered_after_resume_and_redrive(
    stack: PipelineStack, store: ConnectionStore
) -> None:
    realm = account()
    sibling = await store.create("tenant-1", Provider.QUICKBOOKS, realm)
    held = await store.create("tenant-2", Provider.QUICKBOOKS, realm)
    await store.update(held.id, status=ConnectionStatus.PAUSED)
    body = legacy((realm, [("Invoice", "7", "Create", "2025-06-07T08:09:10Z")]))
    delivery_id = await post_signed(stack.gateway, "quickbooks", body)
    async with worker_running(stack) as registry:
        await caught_up(stack.settings)
        # The active sibling of the same account gets its event; the paused one gets none.
        [event] = await read_events(stack.settings)
        assert event.key == sibling.id.encode()
        [quarantined] = await read_quarantine(stack.settings)
        [raw] = await raw_records(stack)
        assert_quarantined_copy(quarantined, raw, "paused", stack.settings.topic_raw)
        assert quarantined.header("ledgerhook-quarantine-detail") == (
            f"connection '{held.id}' of quickbooks account '{realm}' is paused"
        )
        assert sample_value(registry, "ledgerhook_fanout_quarantined_total", reason="paused") == 1

        await store.update(held.id, status=ConnectionStatus.ACTIVE)  # resumed
        assert await redrive_once(stack.settings, Reason.PAUSED) == RedriveResult(1, 0)
        await caught_up(stack.settings)
        events = await read_events(stack.settings)
        # The sibling's event is not repeated (dedupe); the resumed connection's arrives, same id as
        # it would have had.
        assert sorted(e.key or b"" for e in events) == sorted([sibling.id.encode(), held.id.encode()])
        [resumed] = [e for e in events if e.key == held.id.encode()]
        assert resumed.event().get_id() == expected_id(
            held.id, "quickbooks", realm, "invoice", "7", "created", "2025-06-07T08:09:10.000000+00:00"
        )
        assert resumed.event().get_data()["delivery_id"] == delivery_id  # type: ignore[index]
        assert sample_value(registry, "ledgerhook_fanout_duplicates_dropped_total") == 1
        assert len(await read_quarantine(stack.settings)) == 1  # nothing quarantined again


async def test_paused_per_connection_delivery_and_paused_outranks_disconnected(
    stack: PipelineStack, store: ConnectionStore
) -> None:
    org = account()
    zoho = await store.create("tenant-1", Provider.ZOHO_BOOKS, org)
    await store.update(zoho.id, status=ConnectionStatus.PAUSED)
    await produce_raw(
        stack,
        orjson.dumps({"invoice": {"invoice_id": "1", "last_modified_time": "2025-01-01T00:00:00+0000"}}),
        org.encode(),
        {
            "ledgerhook-provider": "zoho-books",
            "ledgerhook-connection-id": zoho.id,
            "ledgerhook-delivery-id": str(uuid.uuid4()),
            "ledgerhook-received-at": "2025-01-01T00:00:00.000Z",
        },
    )
    # One delivery, two realms: one only paused, one only disconnected.
    paused_realm, gone_realm = account(), account()
    paused = await store.create("tenant-1", Provider.QUICKBOOKS, paused_realm)
    await store.update(paused.id, status=ConnectionStatus.PAUSED)
    await store.disconnect((await store.create("tenant-1", Provider.QUICKBOOKS, gone_realm)).id)
    mixed = await post_signed(
        stack.gateway,
        "quickbooks",
        legacy(
            (gone_realm, [("Bill", "2", "Create", "2025-01-01T00:00:02Z")]),
            (paused_realm, [("Item", "3", "Create", "2025-01-01T00:00:03Z")]),
        ),
    )
    async with worker_running(stack) as registry:
        await caught_up(stack.settings)
    assert await read_events(stack.settings) == []
    # Raw records are keyed by their one account, else (two accounts) by the delivery id.
    quarantined = {q.key: q for q in await read_quarantine(stack.settings)}
    assert {key: q.header("ledgerhook-quarantine-reason") for key, q in quarantined.items()} == {
        org.encode(): "paused",
        mixed.encode(): "paused",  # not `disconnected`: it must be among the records redriven on resume
    }
    assert (
        quarantined[org.encode()].header("ledgerhook-quarantine-detail")
        == f"connection '{zoho.id}' is paused"
    )
    assert quarantined[mixed.encode()].header("ledgerhook-quarantine-detail") == (
        f"every connection of quickbooks account '{gone_realm}' is disconnected; "
        f"connection '{paused.id}' of quickbooks account '{paused_realm}' is paused"
    )
    assert sample_value(registry, "ledgerhook_fanout_quarantined_total", reason="paused") == 2
    assert sample_value(registry, "ledgerhook_fanout_quarantined_total", reason="disconnected") == 0


async def test_signed_but_unparseable_body_is_quarantined_without_echoing_it(stack: PipelineStack) -> None:
    body = b'{"eventNotifications": "do-not-echo-this-token-7f3a"}'
    await post_signed(stack.gateway, "quickbooks", body)
    async with worker_running(stack):
        await caught_up(stack.settings)
    [quarantined] = await read_quarantine(stack.settings)
    [raw] = await raw_records(stack)
    assert_quarantined_copy(quarantined, raw, "unparseable", stack.settings.topic_raw)
    detail = quarantined.header("ledgerhook-quarantine-detail") or ""
    assert "eventNotifications must be a JSON array" in detail
    assert "do-not-echo" not in detail


async def test_unknown_provider_and_unknown_connection(stack: PipelineStack) -> None:
    delivery = {
        "ledgerhook-delivery-id": str(uuid.uuid4()),
        "ledgerhook-received-at": "2025-01-01T00:00:00.000Z",
    }
    await produce_raw(stack, b"{}", b"a", delivery | {"ledgerhook-provider": "myob"})
    await produce_raw(stack, b"{}", b"b", delivery)  # no provider header at all
    missing = str(uuid.uuid4())
    zoho = orjson.dumps({"invoice": {"invoice_id": "1", "last_modified_time": "2025-01-01T00:00:00+0000"}})
    await produce_raw(
        stack,
        zoho,
        b"c",
        delivery | {"ledgerhook-provider": "zoho-books", "ledgerhook-connection-id": missing},
    )
    async with worker_running(stack):
        await caught_up(stack.settings)
    quarantined = {q.key: q for q in await read_quarantine(stack.settings)}
    reasons = {key: q.header("ledgerhook-quarantine-reason") for key, q in quarantined.items()}
    assert reasons == {b"a": "unknown_provider", b"b": "unknown_provider", b"c": "unknown_connection"}
    details = {key: q.header("ledgerhook-quarantine-detail") for key, q in quarantined.items()}
    assert details == {
        b"a": "provider 'myob' is unknown",
        b"b": "no provider header",
        b"c": f"no zoho-books connection '{missing}'",
    }
    assert await read_events(stack.settings) == []


async def test_per_connection_delivery_goes_to_that_connection_only(
    stack: PipelineStack, store: ConnectionStore
) -> None:
    org = account()
    mine = await store.create("tenant-1", Provider.ZOHO_BOOKS, org)
    await store.create("tenant-2", Provider.ZOHO_BOOKS, org)  # same organization, another tenant: not its URL
    headers = {
        "ledgerhook-provider": "zoho-books",
        "ledgerhook-connection-id": mine.id,
        "ledgerhook-delivery-id": "01900000-0000-7000-8000-000000000001",
        "ledgerhook-received-at": "2025-03-04T05:06:07.000Z",
    }
    # No timestamp, no event id: the version part of the id is the body's SHA-256.
    unnamed = orjson.dumps({"contact": {"contact_id": 46, "contact_type": "vendor"}})
    foreign = orjson.dumps(
        {
            "invoice": {"invoice_id": "9", "last_modified_time": "2025-01-01T00:00:00+0000"},
            "organization_id": "999",
        }
    )
    await produce_raw(stack, unnamed, org.encode(), headers)
    await produce_raw(stack, foreign, org.encode(), headers)
    async with worker_running(stack):
        await caught_up(stack.settings)

    [record] = await read_events(stack.settings)
    event = record.event()
    assert record.key == mine.id.encode()
    assert event.get_id() == expected_id(
        mine.id, "zoho-books", org, "contact", "46", "updated", hashlib.sha256(unnamed).hexdigest()
    )
    data: Any = event.get_data()
    assert (data["provider_account_id"], data["contact_type"], data["occurred_at"]) == (org, "vendor", None)
    assert event.get_time() is not None and event.get_time().isoformat() == "2025-03-04T05:06:07+00:00"
    [quarantined] = await read_quarantine(stack.settings)
    assert quarantined.value == foreign
    assert quarantined.header("ledgerhook-quarantine-reason") == "unknown_account"


async def test_redrive_filters_and_progress(settings_factory: Any, store: ConnectionStore) -> None:
    """One partition, so offsets follow arrival: q0 d1 unknown, q1 d2 unknown, q2 d3 disconnected."""
    from gateway.runtime.infra import open_infrastructure
    from tests.support import running_gateway

    settings = settings_factory(
        topic_partitions=1, worker_group_id=f"fanout-{uuid.uuid4().hex[:8]}", worker_session_timeout_ms=1000
    )
    async with running_gateway(settings) as gateway, open_infrastructure(settings) as infra:
        stack = PipelineStack(settings, gateway, infra)
        unknown_1, unknown_2, gone = account(), account(), account()
        await store.disconnect((await store.create("tenant-1", Provider.QUICKBOOKS, gone)).id)
        d1 = await post_signed(
            gateway, "quickbooks", legacy((unknown_1, [("Item", "1", "Create", "2025-01-01T00:00:01Z")]))
        )
        await post_signed(
            gateway, "quickbooks", legacy((unknown_2, [("Item", "2", "Create", "2025-01-01T00:00:02Z")]))
        )
        await post_signed(
            gateway, "quickbooks", legacy((gone, [("Item", "3", "Create", "2025-01-01T00:00:03Z")]))
        )
        async with worker_running(stack):
            await caught_up(settings)
            assert len(await read_quarantine(settings)) == 3

            # d1 only: d2 (same reason) and d3 (another reason) stay pending.
            assert await redrive_once(settings, delivery_id=d1) == RedriveResult(1, 2)
            await caught_up(settings)  # d1 is still unknown: quarantined again (q3, redrive count 1)
            # Disconnected only: q1 (d2) and q3 (d1) are left alone.
            assert await redrive_once(settings, Reason.DISCONNECTED) == RedriveResult(1, 2)
            await caught_up(settings)  # d3 is still disconnected: q4

        quarantine = sorted(await read_quarantine(settings), key=lambda q: q.offset)
        delivery_ids = [q.header("ledgerhook-delivery-id") for q in quarantine]
        assert delivery_ids[0] == delivery_ids[3] == d1
        assert delivery_ids[2] == delivery_ids[4]
        assert [q.header("ledgerhook-redrive-count") for q in quarantine] == [None, None, None, "1", "1"]
        # Everything pending, each once: q1 (d2), q3 (d1), q4 (d3); q0 and q2 were redriven before.
        assert await redrive_once(settings) == RedriveResult(3, 0)
        # No worker runs, so nothing was quarantined again: a second call finds nothing.
        assert await redrive_once(settings) == RedriveResult(0, 0)
        raw = await read_records(settings.kafka_bootstrap_servers, settings.topic_raw)
        counts = sorted(r.header("ledgerhook-redrive-count") or "0" for r in raw)
        assert counts == ["0", "0", "0", "1", "1", "1", "2", "2"]  # 3 deliveries, 2 single redrives, then 3
        for record in raw:
            assert not QUARANTINE_HEADERS & set(record.headers)


async def test_admin_endpoint_redrives_after_a_reconnect(
    stack: PipelineStack, store: ConnectionStore
) -> None:
    realm = account()
    connection = await store.create("tenant-1", Provider.QUICKBOOKS, realm)
    await store.disconnect(connection.id)
    await post_signed(
        stack.gateway, "quickbooks", legacy((realm, [("Payment", "8", "Create", "2025-05-06T07:08:09Z")]))
    )
    url = f"{stack.gateway.base_url}/admin/v1/quarantine/redrive"
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with worker_running(stack), aiohttp.ClientSession() as http:
        await caught_up(stack.settings)
        [quarantined] = await read_quarantine(stack.settings)
        assert quarantined.header("ledgerhook-quarantine-reason") == "disconnected"

        async with http.post(url, json={"reason": "disconnected"}) as response:
            assert response.status == 401  # no token
        async with http.post(url, json={"reason": "gone-fishing"}, headers=auth) as response:
            assert response.status == 422
            assert response.content_type == "application/problem+json"
            problem = await response.json()
            assert problem["errors"][0]["pointer"] == "#/reason"

        await store.update(connection.id, status=ConnectionStatus.ACTIVE)  # reconnected
        async with http.post(url, json={"reason": "disconnected"}, headers=auth) as response:
            assert response.status == 200
            assert await response.json() == {"redriven": 1, "skipped": 0}
        await caught_up(stack.settings)
        [event] = await read_events(stack.settings)
        assert event.key == connection.id.encode()
        assert event.event().get_type() == "accounting.payment.created"
        async with http.post(url, headers=auth) as response:  # no body: every reason; nothing left
            assert response.status == 200
            assert await response.json() == {"redriven": 0, "skipped": 0}


async def test_a_discarded_delivery_is_never_redriven(stack: PipelineStack, store: ConnectionStore) -> None:
    from fanout.quarantine_pending import PendingQuarantine
    from gateway.runtime.kafka import connection_options

    realm = account()
    dropped = await post_signed(
        stack.gateway, "quickbooks", legacy((realm, [("Bill", "1", "Create", "2025-04-01T00:00:01Z")]))
    )
    wanted = await post_signed(
        stack.gateway, "quickbooks", legacy((realm, [("Bill", "2", "Create", "2025-04-01T00:00:02Z")]))
    )
    pending = PendingQuarantine(
        stack.infra.pool,
        connection_options(stack.settings),
        topic=stack.settings.topic_quarantine,
        group_id=stack.settings.worker_group_id,
    )
    async with worker_running(stack):
        await caught_up(stack.settings)
        listed = {record.delivery_id: record for record in (await pending.page()).items}
        assert set(listed) == {dropped, wanted}
        async with stack.infra.pool.acquire() as conn:
            done = await pending.discard(conn, "ops", ids=[listed[dropped].id])
        assert [record.delivery_id for record in done.records] == [dropped]

        connection = await store.create("tenant-1", Provider.QUICKBOOKS, realm)
        assert await redrive_once(stack.settings, Reason.UNKNOWN_ACCOUNT) == RedriveResult(1, 0)
        await caught_up(stack.settings)
        [event] = await read_events(stack.settings)
        assert event.key == connection.id.encode()
        assert event.event().get_data()["delivery_id"] == wanted  # type: ignore[index]
        assert await redrive_once(stack.settings) == RedriveResult(0, 0)
        assert (await pending.page()).items == []
