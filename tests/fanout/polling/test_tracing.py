"""Each account poll is an OpenTelemetry span (provider, account, entities, pages, records read, events
published, outcome), against the provider emulator: the token refresh it needed is its child, its
events carry its trace context as `ce_traceparent`, and a page it could not parse is quarantined with
it as `traceparent`."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from fanout.polling import quickbooks
from fanout.polling.poller import Poller
from provider_auth.providers import Provider
from tests.docs.test_asyncapi import conforming_message
from tests.fanout.pipeline.pipeline_support import read_events, read_quarantine
from tests.fanout.polling.polling_support import eventually, new_poller, outcome_is
from tests.provider_auth.tokens.test_tracing import in_memory, traced_manager
from tests.provider_auth.tokens.token_support import CLIENT_ID, TokenStack

QB = Provider.QUICKBOOKS


@asynccontextmanager
async def running(poller: Poller) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def traceparent(span: ReadableSpan) -> str:
    context = span.context
    assert context is not None and context.trace_flags & 0x01  # sampled
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def test_a_poll_is_a_span_that_its_token_refresh_events_and_refused_page_continue(
    stack: TokenStack,
) -> None:
    tracer, exporter = in_memory()
    manager = traced_manager(stack, tracer)
    realm = str(uuid.uuid4().int)[:16]
    grant = stack.emu.issue_grant(QB, CLIENT_ID, accounts=[realm])
    # A token that is not fresh: the first poll refreshes it before it asks for changes.
    connection_id, _, _ = await stack.connect(QB, account=realm, grant=grant, expires_in=5, manager=manager)
    book = stack.emu.book(QB, realm)
    book.create("Invoice", TotalAmt=120)
    book.create("Customer", DisplayName="Acme")

    async with running(new_poller(stack, manager=manager, tracer=tracer)):
        await eventually(outcome_is(stack, QB, realm, "ok"))
    polls = [span for span in exporter.get_finished_spans() if span.name == "poll quickbooks"]
    [first] = [span for span in polls if attributes(span)["ledgerhook.poll.events"] > 0]
    assert first.kind is SpanKind.INTERNAL and first.parent is None
    assert attributes(first) == {
        "ledgerhook.provider": "quickbooks",
        "ledgerhook.account": realm,
        "ledgerhook.poll.entities": len(quickbooks.ENTITIES),
        "ledgerhook.poll.pages": 1,
        "ledgerhook.poll.records": 2,
        "ledgerhook.poll.events": 2,
        "ledgerhook.outcome": "ok",
    }
    [refreshing] = [span for span in exporter.get_finished_spans() if span.name == "token refresh"]
    assert refreshing.parent is not None
    assert refreshing.parent.span_id == first.context.span_id
    assert refreshing.context.trace_id == first.context.trace_id
    events = await read_events(stack.settings)
    assert len(events) == 2 and {event.header("ce_connectionid") for event in events} == {connection_id}
    for event in events:
        assert event.header("ce_traceparent") == traceparent(first)
        assert conforming_message("changes", event).startswith("accounting.")

    # A 200 that is a Fault, not a CDC answer: the poll fails, its page is quarantined in its trace.
    exporter.clear()
    fault = {"Fault": {"type": "SystemFault", "Error": [{"code": "10000", "Message": "internal"}]}}
    stack.emu.fail_next(QB, status=200, endpoint="cdc", body=fault)
    book.create("Invoice")
    async with running(new_poller(stack, manager=manager, tracer=tracer)):
        await eventually(outcome_is(stack, QB, realm, "unparseable"))
    failed = [
        span
        for span in exporter.get_finished_spans()
        if span.name == "poll quickbooks" and attributes(span)["ledgerhook.outcome"] == "unparseable"
    ]
    assert len(failed) == 1 and failed[0].status.status_code is StatusCode.ERROR
    assert attributes(failed[0])["ledgerhook.poll.events"] == 0
    [page] = await read_quarantine(stack.settings)
    assert page.header("traceparent") == traceparent(failed[0])
    assert conforming_message("quarantine", page) == "quarantine.page"
