"""Helpers of the change poller's tests: a poller wired as the worker wires it, waiting on what
the poll state and the topics say, reading polled events."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry

from fanout.polling.budget import RateBudgets
from fanout.polling.fetcher import PageFetcher
from fanout.polling.poller import Poller, PollerConfig, PollerMetrics
from fanout.polling.state import PollState
from gateway.runtime.polling import ManagerTokens
from provider_auth.providers import Provider
from provider_auth.tokens import TokenManager
from tests.fanout.pipeline.pipeline_support import Received, read_events, validate_data
from tests.provider_auth.tokens.token_support import TokenStack


def new_poller(
    stack: TokenStack,
    registry: CollectorRegistry | None = None,
    *,
    manager: TokenManager | None = None,
    tracer: Tracer | None = None,
) -> Poller:
    """A poller with one-second intervals, as the worker wires it (on the stack's token manager
    unless given another, traced when given a tracer)."""
    metrics = PollerMetrics(registry or CollectorRegistry())
    fetcher = PageFetcher(
        stack.http,
        RateBudgets(stack.pool),
        ManagerTokens(manager or stack.manager, stack.settings),
        observe=metrics.observe_request,
        backoff_base=0.05,
    )
    config = PollerConfig(
        changes_topic=stack.settings.topic_changes,
        quarantine_topic=stack.settings.topic_quarantine,
        account_events_topic=stack.settings.topic_account_events,
        poll_interval_seconds=1,
        sweep_interval_seconds=1,
        concurrency=4,
        lease_seconds=3.0,
        sync_seconds=0.2,
        idle_seconds=0.05,
        error_backoff_seconds=0.2,
    )
    return Poller(config, stack.pool, stack.producer, fetcher, metrics, tracer=tracer)


@asynccontextmanager
async def polling(stack: TokenStack, registry: CollectorRegistry | None = None) -> AsyncIterator[Poller]:
    """A poller running in this loop for the block, stopped at its end."""
    poller = new_poller(stack, registry)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        yield poller
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> None:
    """Wait until the async `check()` returns a true value."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def outcome_is(stack: TokenStack, provider: Provider, account: str, *outcomes: str) -> Callable[[], Any]:
    state = PollState(stack.pool)

    async def check() -> bool:
        row = await state.account(provider, account)
        return row is not None and row.last_outcome in outcomes

    return check


def polled(events: list[Received]) -> list[dict[str, Any]]:
    """Each event's data, checked as a CloudEvent with the official SDK and against its schema."""
    out = []
    for record in events:
        event = record.event()
        data = event.get_data()
        assert isinstance(data, dict)
        validate_data(event.get_type(), data)
        assert event.get_subject() == f"{data['entity']}/{data['entity_id']}"
        assert record.key == data["connection_id"].encode()
        out.append({"type": event.get_type(), "id": event.get_id(), **data})
    return out


async def count_events(stack: TokenStack, wanted: int) -> bool:
    return len(await read_events(stack.settings)) >= wanted
