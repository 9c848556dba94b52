"""In-memory caches in front of the store: a bounded LRU of answers, and TTL maps for read-through.

Pure data structures: time is passed in, so expiry is tested without sleeping.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Answer", "LruCache", "TtlCache"]

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Answer:
    """An encoded lookup answer: the body we send and its ETag."""

    body: bytes
    etag: str


class LruCache(Generic[K, V]):
    """At most `capacity` entries; the least recently used is dropped first. Capacity 0 disables it."""

    __slots__ = ("_data", "capacity", "hits", "misses")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: K) -> bool:
        return key in self._data

    def get(self, key: K) -> V | None:
        try:
            value = self._data[key]
        except KeyError:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: K, value: V) -> None:
        if self.capacity <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def invalidate(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()


class TtlCache(Generic[K, V]):
    """Entries that expire `ttl` seconds after they were put; at most `capacity`, oldest dropped first."""

    __slots__ = ("_data", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K, now: float) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if now >= expires:
            del self._data[key]
            return None
        return value

    def put(self, key: K, value: V, *, now: float, ttl: float) -> None:
        if ttl <= 0 or self.capacity <= 0:
            return
        self._data.pop(key, None)
        self._data[key] = (now + ttl, value)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def invalidate(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()
