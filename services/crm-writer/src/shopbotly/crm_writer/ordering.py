"""Key-ordered parallelism within a partition, and the low watermark that may be committed.

Pure data structures, driven by the engine: records are added in offset order, handed out per key (one
identity strictly in order, several identities at once, bounded), and finished in any order. The offset
that may be committed is the lowest one not finished yet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["KeyedScheduler", "OffsetTracker"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class OffsetTracker:
    """Offsets handed out for work in one partition; `committable()` is the low watermark of finished work."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._finished: set[int] = set()
        self._next: int | None = None  # one past the highest offset added

    def add(self, offset: int) -> None:
        if self._next is not None and offset < self._next:
            raise ValueError(f"offset {offset} added after {self._next - 1}: records must arrive in order")
        self._pending.append(offset)
        self._next = offset + 1

    def is_new(self, offset: int) -> bool:
        """Whether `offset` comes after every offset added so far."""
        return self._next is None or offset >= self._next

    def finish(self, offset: int) -> None:
        if offset in self._finished:
            return
        if (
            not self._pending
            or offset < self._pending[0]
            or (self._next is not None and offset >= self._next)
        ):
            raise ValueError(f"offset {offset} was not handed out or is already finished")
        self._finished.add(offset)
        while self._pending and self._pending[0] in self._finished:
            self._finished.discard(self._pending.popleft())

    @property
    def next_offset(self) -> int | None:
        """One past the highest offset added (None before any)."""
        return self._next

    def committable(self) -> int | None:
        """The offset to commit (the next record to read on restart), or None before any record."""
        if self._pending:
            return self._pending[0]
        return self._next

    @property
    def unfinished(self) -> int:
        return len(self._pending) - len(self._finished)


class KeyedScheduler(Generic[K, T]):
    """Per-key FIFO queues; a key is handed out to at most one worker at a time.

    `take()` returns the next ready key (FIFO over keys, so no identity starves) with up to `max_take`
    of its queued items, while fewer than `max_active` keys are out; `done(key)` returns the key.
    """

    def __init__(self, *, max_active: int, max_take: int) -> None:
        if max_active < 1 or max_take < 1:
            raise ValueError("max_active and max_take must be at least 1")
        self.max_active = max_active
        self.max_take = max_take
        self._queues: dict[K, deque[T]] = {}
        self._ready: deque[K] = deque()
        self._active: set[K] = set()
        self._queued = 0

    def push(self, key: K, item: T) -> None:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        if not queue and key not in self._active:
            self._ready.append(key)
        queue.append(item)
        self._queued += 1

    def take(self) -> tuple[K, list[T]] | None:
        if len(self._active) >= self.max_active or not self._ready:
            return None
        key = self._ready.popleft()
        queue = self._queues[key]
        n = min(self.max_take, len(queue))
        items = [queue.popleft() for _ in range(n)]
        self._queued -= n
        self._active.add(key)
        if not queue:
            del self._queues[key]
        return key, items

    def done(self, key: K, *, requeue: list[T] | None = None) -> None:
        """The worker for `key` finished; `requeue` puts unprocessed items back at the head of its queue."""
        if key not in self._active:
            raise ValueError(f"key {key!r} is not active")
        self._active.discard(key)
        if requeue:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = deque()
            queue.extendleft(reversed(requeue))
            self._queued += len(requeue)
        if key in self._queues:
            self._ready.append(key)

    @property
    def queued(self) -> int:
        """Items waiting (not handed out)."""
        return self._queued

    @property
    def active(self) -> int:
        return len(self._active)
