"""The one bounded in-memory cache: at most `max_entries` entries, least recently used out first, and
optionally entries that expire a time after they were put.

It sits on hot paths (every order lookup reads it), so each operation is a few dict operations on an
`OrderedDict` (C); the clock is only read when entries expire. Time comes from an injected clock, so
expiry is tested without sleeping.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K")
V = TypeVar("V")

_MISSING: Any = object()
# Expired entries dropped from the old end by one `put`: with one TTL the old end expires first, so a few
# per write keep memory following the TTL without a sweep.
_PRUNE_PER_PUT = 2


class BoundedCache(Generic[K, V]):
    """A map of at most `max_entries` entries; when full, the least recently used (read or put) goes.

    With `ttl_s`, an entry expires `ttl_s` seconds after it was put (a `put` may give its own `ttl_s`);
    an expired entry is never returned. `max_entries` 0, or a TTL of 0 or less, stores nothing. `None`
    cannot be cached: `get` answers None for "not there". `hits` and `misses` count `get` answers.
    """

    __slots__ = ("_clock", "_data", "hits", "max_entries", "misses", "ttl_s")

    def __init__(
        self,
        max_entries: int,
        *,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be 0 or more, got {max_entries}")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        # Without a TTL the values themselves; with one, (expires_at, value).
        self._data: OrderedDict[K, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        """Entries held, expired ones not yet dropped included."""
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        data: dict[Any, Any] = self._data
        entry = data.get(key, _MISSING)
        if entry is _MISSING:
            return False
        return self.ttl_s is None or self._clock() < entry[0]

    def get(self, key: K) -> V | None:
        """The value, made the most recently used; None when absent or expired."""
        data = self._data
        entry = data.get(key, _MISSING)
        if entry is _MISSING:
            self.misses += 1
            return None
        if self.ttl_s is not None:
            expires_at, entry = entry
            if self._clock() >= expires_at:
                del data[key]
                self.misses += 1
                return None
        data.move_to_end(key)
        self.hits += 1
        value: V = entry
        return value

    def put(self, key: K, value: V, *, ttl_s: float | None = None) -> None:
        """Store or replace; `ttl_s` overrides the cache's TTL for this entry (only in a cache with one)."""
        if self.max_entries <= 0:
            return
        data = self._data
        if self.ttl_s is None:
            data[key] = value
        else:
            ttl = self.ttl_s if ttl_s is None else ttl_s
            if ttl <= 0:
                data.pop(key, None)
                return
            now = self._clock()
            data[key] = (now + ttl, value)
            self._prune_expired(now)
        data.move_to_end(key)
        while len(data) > self.max_entries:
            data.popitem(last=False)

    def _prune_expired(self, now: float) -> None:
        data = self._data
        for _ in range(_PRUNE_PER_PUT):
            oldest = next(iter(data.items()), None)
            if oldest is None or oldest[1][0] > now:
                return
            del data[oldest[0]]

    def pop(self, key: K) -> V | None:
        """Remove the entry and return its value (None when absent or expired)."""
        entry = self._data.pop(key, _MISSING)
        if entry is _MISSING:
            return None
        if self.ttl_s is not None:
            expires_at, entry = entry
            if self._clock() >= expires_at:
                return None
        value: V = entry
        return value

    def discard_where(self, predicate: Callable[[K, V], bool]) -> int:
        """Remove every entry whose key and value satisfy `predicate`; how many were removed."""
        timed = self.ttl_s is not None
        doomed = [k for k, e in self._data.items() if predicate(k, e[1] if timed else e)]
        for key in doomed:
            del self._data[key]
        return len(doomed)

    def items(self) -> Iterator[tuple[K, V]]:
        """Entries that have not expired, least recently used first (a snapshot)."""
        if self.ttl_s is None:
            yield from list(self._data.items())
            return
        now = self._clock()
        for key, (expires_at, value) in list(self._data.items()):
            if now < expires_at:
                yield key, value

    def clear(self) -> None:
        self._data.clear()
