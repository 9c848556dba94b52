"""The agents' inbox (shopbotly.mapper.batches): fetches in, batches of at most `max_events` out, in order."""

from __future__ import annotations

import asyncio

import pytest

from shopbotly.mapper.batches import BatchInbox

pytestmark = pytest.mark.unit


async def test_batches_keep_the_fetch_order_and_never_exceed_max_events() -> None:
    inbox: BatchInbox[int] = BatchInbox(max_events=4, within_s=0)
    await inbox.put([0, 1, 2])
    await inbox.put([3, 4, 5, 6, 7, 8])
    assert await inbox.take() == [0, 1, 2, 3]  # a fetch is split where the batch is full ...
    assert await inbox.take() == [4, 5, 6, 7]
    assert await inbox.take() == [8]  # ... and the rest comes next, nothing lost or repeated
    assert inbox.pending == 0


async def test_a_batch_waits_up_to_within_for_more_then_goes_as_it_is() -> None:
    inbox: BatchInbox[int] = BatchInbox(max_events=10, within_s=0.2)
    taking = asyncio.create_task(inbox.take())
    await inbox.put([1])
    await asyncio.sleep(0.02)
    assert not taking.done()  # waiting for the batch to fill
    await inbox.put([2, 3])
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await taking == [1, 2, 3]
    assert loop.time() - started < 0.3


async def test_a_full_batch_goes_at_once() -> None:
    inbox: BatchInbox[int] = BatchInbox(max_events=3, within_s=60)
    await inbox.put([1, 2, 3, 4])
    async with asyncio.timeout(1):
        assert await inbox.take() == [1, 2, 3]


async def test_put_waits_while_the_inbox_is_at_capacity() -> None:
    inbox: BatchInbox[int] = BatchInbox(max_events=2, within_s=0, capacity=2)
    await inbox.put([1, 2])
    putting = asyncio.create_task(inbox.put([3]))
    await asyncio.sleep(0.01)
    assert not putting.done()  # the consumer stops fetching ahead of a slow agent
    assert await inbox.take() == [1, 2]
    await asyncio.wait_for(putting, 1)
    assert await inbox.take() == [3]


async def test_clear_drops_what_is_buffered_and_a_waiting_take_waits_for_new_fetches() -> None:
    """A rebalance clears the inbox (faust's flow control); the partitions are fetched again from the
    committed offsets, so what was buffered must not be mapped on top of it."""
    inbox: BatchInbox[int] = BatchInbox(max_events=10, within_s=0.2)
    taking = asyncio.create_task(inbox.take())
    await inbox.put([1, 2])
    await asyncio.sleep(0.02)
    inbox.clear()
    await asyncio.sleep(0.3)
    assert not taking.done()  # not an empty batch: it waits for the next fetch
    await inbox.put([1, 2, 3])
    assert await asyncio.wait_for(taking, 1) == [1, 2, 3]
