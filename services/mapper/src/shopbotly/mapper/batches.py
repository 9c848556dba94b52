"""What the consumer fetched for one agent, handed over a batch at a time (no I/O; asyncio only).

faust hands every fetched message on by itself: a task racing the flow-control event, the conductor, a
decoded `Event` in the agent's channel queue, the stream's iteration and sensors, then one acknowledgement
each. At the mapper's rates that was about a third of the worker's CPU (docs/benchmarks.md, "What bounds the
mapper"). `MapperConsumer` puts each fetch for an agent's topics into that agent's `BatchInbox` in one piece,
and the agent takes up to `max_events` at a time, in fetch order (per partition: offset order).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

__all__ = ["BatchInbox"]

T = TypeVar("T")


class BatchInbox(Generic[T]):
    """A bounded buffer of fetched messages, taken in batches.

    `take()` waits for the first message, then up to `within_s` for the batch to fill to `max_events`
    (what `Stream.take(max, within)` did). `put()` waits while `capacity` messages or more are buffered, so
    the consumer stops fetching ahead of a slow agent. `clear()` drops what is buffered: faust calls it
    through `app.flow_control` when a rebalance starts and when flow resumes after it; the partitions are
    then fetched again from their committed offsets.
    """

    def __init__(self, *, max_events: int, within_s: float, capacity: int | None = None) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.max_events = max_events
        self.within_s = within_s
        self.capacity = capacity if capacity is not None else 4 * max_events
        self._chunks: deque[Sequence[T]] = deque()
        self._pending = 0
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def pending(self) -> int:
        return self._pending

    async def put(self, messages: Sequence[T]) -> None:
        """Buffer one fetch's messages (in their order), once there is room."""
        while self._pending >= self.capacity:
            self._room.clear()
            await self._room.wait()
        if messages:
            self._chunks.append(messages)
            self._pending += len(messages)
            self._arrived.set()

    async def take(self) -> list[T]:
        """The next batch: at least one message, at most `max_events`, in the order they were put."""
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            if self._pending < self.max_events and self.within_s > 0:
                await self._fill()
            if self._pending:  # a rebalance may have cleared it meanwhile
                return self._pop()

    async def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.within_s
        while 0 < self._pending < self.max_events:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                return

    def _pop(self) -> list[T]:
        batch: list[T] = []
        chunks = self._chunks
        while chunks and len(batch) < self.max_events:
            chunk = chunks[0]
            room = self.max_events - len(batch)
            if len(chunk) <= room:
                batch.extend(chunk)
                chunks.popleft()
            else:
                batch.extend(chunk[:room])
                chunks[0] = chunk[room:]
        self._pending -= len(batch)
        self._room.set()
        return batch

    def clear(self) -> None:
        """Drop everything buffered (a rebalance: it is fetched again from the committed offsets)."""
        self._chunks.clear()
        self._pending = 0
        self._room.set()
