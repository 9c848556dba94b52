"""The one bounded cache: eviction order, expiry (time from a fake clock), and what its users rely on."""

from __future__ import annotations

import pytest

from shopbotly.common.cache import BoundedCache
from shopbotly.testkit.crm_emulator import Clock

pytestmark = pytest.mark.unit


def test_the_least_recently_used_entry_goes_first_and_reads_count_as_use() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now more recent than b
    cache.put("c", 3)
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)
    assert (cache.hits, cache.misses) == (3, 1)
    assert len(cache) == 2


def test_put_replaces_and_makes_recent_and_pop_removes() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 10)  # replaced, and now the most recent: b goes next
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 10
    assert cache.pop("a") == 10 and cache.pop("a") is None and cache.pop("never-there") is None
    assert "a" not in cache and len(cache) == 1


def test_max_entries_zero_keeps_nothing_and_a_negative_size_is_refused() -> None:
    cache: BoundedCache[str, int] = BoundedCache(0)
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0
    with pytest.raises(ValueError, match="max_entries must be 0 or more"):
        BoundedCache(-1)


def test_entries_expire_ttl_after_they_were_put_and_not_after_a_read() -> None:
    clock = Clock()
    cache: BoundedCache[str, int] = BoundedCache(10, ttl_s=30.0, clock=clock)
    cache.put("a", 1)
    clock.advance(29)
    assert cache.get("a") == 1 and "a" in cache
    clock.advance(1)
    assert "a" not in cache
    assert cache.get("a") is None and len(cache) == 0
    assert (cache.hits, cache.misses) == (1, 1)


def test_a_put_can_give_its_own_ttl_and_zero_means_not_kept() -> None:
    clock = Clock()
    cache: BoundedCache[str, int] = BoundedCache(10, ttl_s=30.0, clock=clock)
    cache.put("short", 1, ttl_s=5.0)
    cache.put("long", 2, ttl_s=300.0)
    cache.put("kept", 3)
    cache.put("kept", 4, ttl_s=0.0)  # a put that may not be kept drops what was there
    assert cache.get("kept") is None
    clock.now += 10
    assert (cache.get("short"), cache.get("long")) == (None, 2)
    clock.now += 100
    assert cache.get("long") == 2


def test_expired_entries_are_dropped_by_later_puts_without_being_read() -> None:
    clock = Clock()
    cache: BoundedCache[int, int] = BoundedCache(1000, ttl_s=1.0, clock=clock)
    for i in range(100):
        cache.put(i, i)
    clock.now += 2
    for i in range(100, 150):
        cache.put(i, i)
    assert len(cache) == 50  # each put dropped up to two expired entries from the old end
    assert [k for k, _ in cache.items()] == list(range(100, 150))


def test_a_full_cache_with_a_ttl_still_drops_the_least_recently_used() -> None:
    clock = Clock()
    cache: BoundedCache[str, int] = BoundedCache(2, ttl_s=60.0, clock=clock)
    for i, key in enumerate("abc"):
        cache.put(key, i)
    assert cache.get("a") is None
    assert (cache.get("b"), cache.get("c")) == (1, 2)


def test_discard_where_and_items_see_values_not_expiry_times() -> None:
    clock = Clock()
    for cache in (BoundedCache[str, int](10), BoundedCache[str, int](10, ttl_s=60.0, clock=clock)):
        for i, key in enumerate("abcd"):
            cache.put(key, i)
        assert cache.discard_where(lambda _k, v: v % 2 == 1) == 2
        assert list(cache.items()) == [("a", 0), ("c", 2)]
        cache.clear()
        assert len(cache) == 0 and list(cache.items()) == []


def test_items_leave_out_expired_entries() -> None:
    clock = Clock()
    cache: BoundedCache[str, int] = BoundedCache(10, ttl_s=10.0, clock=clock)
    cache.put("old", 1)
    clock.now += 5
    cache.put("new", 2)
    clock.now += 6
    assert list(cache.items()) == [("new", 2)]
    assert cache.pop("old") is None
