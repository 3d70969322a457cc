"""`wait_for_acks`: every acknowledgement awaited, whatever order they complete in; failures raised."""

import asyncio

import pytest

from fanout.dedupe import wait_for_acks


async def test_returns_only_once_every_future_is_done_in_any_order() -> None:
    loop = asyncio.get_running_loop()
    pending = [loop.create_future() for _ in range(5)]
    # The last completes first, the first last: waiting on the last alone would return too early.
    for delay, future in zip((0.04, 0.03, 0.02, 0.01, 0.0), pending, strict=True):
        loop.call_later(delay, future.set_result, None)
    await wait_for_acks(pending)
    assert all(future.done() for future in pending)


async def test_the_first_failure_in_send_order_is_raised_after_all_are_done() -> None:
    loop = asyncio.get_running_loop()
    pending = [loop.create_future() for _ in range(4)]
    loop.call_later(0.02, pending[0].set_result, None)
    loop.call_later(0.01, pending[1].set_exception, ConnectionError("first"))
    loop.call_later(0.0, pending[2].set_exception, TimeoutError("second"))
    loop.call_later(0.03, pending[3].set_result, None)
    with pytest.raises(ConnectionError, match="first"):
        await wait_for_acks(pending)
    assert all(future.done() for future in pending)


async def test_nothing_to_wait_for() -> None:
    await wait_for_acks([])
