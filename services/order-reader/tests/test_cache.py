"""The in-memory caches: LRU eviction order and TTL expiry (time is passed in)."""

from __future__ import annotations

import pytest

from shopbotly.order_reader.cache import LruCache, TtlCache

pytestmark = pytest.mark.unit


def test_lru_drops_the_least_recently_used_entry() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now more recent than b
    cache.put("c", 3)
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)
    assert (cache.hits, cache.misses) == (3, 1)


def test_lru_put_overwrites_and_invalidate_removes() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("a", 2)
    assert cache.get("a") == 2 and len(cache) == 1
    cache.invalidate("a")
    cache.invalidate("never-there")
    assert cache.get("a") is None


def test_lru_of_capacity_zero_keeps_nothing() -> None:
    cache: LruCache[str, int] = LruCache(0)
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0


def test_ttl_entries_expire() -> None:
    cache: TtlCache[str, int] = TtlCache(10)
    cache.put("a", 1, now=100.0, ttl=30.0)
    assert cache.get("a", now=129.9) == 1
    assert cache.get("a", now=130.0) is None
    assert len(cache) == 0


def test_ttl_zero_means_not_cached_and_capacity_drops_oldest() -> None:
    cache: TtlCache[str, int] = TtlCache(2)
    cache.put("a", 1, now=0.0, ttl=0.0)
    assert cache.get("a", now=0.0) is None
    for i, key in enumerate("bcd"):
        cache.put(key, i, now=0.0, ttl=60.0)
    assert cache.get("b", now=1.0) is None
    assert (cache.get("c", now=1.0), cache.get("d", now=1.0)) == (1, 2)
