"""The connectors' contact cache on top of the shared bounded cache: expiry, size, stalls and partitions."""

from __future__ import annotations

import pytest

from shopbotly.crm_writer.connectors.base import ContactCache, ContactState
from shopbotly.testkit.crm_emulator import Clock

pytestmark = pytest.mark.unit


def _cache(clock: Clock, *, ttl_s: float = 60.0, max_entries: int = 100) -> ContactCache:
    return ContactCache(ttl_s=ttl_s, max_entries=max_entries, stall_reset_s=3.0, clock=clock)


def test_a_contact_is_forgotten_ttl_after_it_was_stored_so_crm_edits_are_read_again() -> None:
    clock = Clock()
    cache = _cache(clock, ttl_s=59.0)
    cache.put("a@example.com", ContactState("1", {"tags": "x"}, partition=0))
    for _ in range(29):  # used every 2 s (no stall), read all along: the TTL still counts from the put
        clock.now += 2
        assert cache.get("a@example.com") is not None
    clock.now += 2
    assert cache.get("a@example.com") is None


def test_a_ttl_of_zero_caches_nothing() -> None:
    clock = Clock()
    cache = _cache(clock, ttl_s=0)
    cache.put("a@example.com", ContactState("1"))
    assert cache.get("a@example.com") is None and len(cache) == 0


def test_the_least_recently_used_contact_goes_when_full() -> None:
    clock = Clock()
    cache = _cache(clock, max_entries=2)
    cache.put("a", ContactState("1"))
    cache.put("b", ContactState("2"))
    assert cache.get("a") is not None
    cache.put("c", ContactState("3"))
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2


def test_everything_is_dropped_after_the_cache_went_unused_longer_than_the_stall_limit() -> None:
    clock = Clock()
    cache = _cache(clock)
    cache.put("a", ContactState("1"))
    clock.now += 2.9
    assert cache.get("a") is not None
    clock.now += 3.1  # a frozen process may have lost its partitions meanwhile
    assert cache.get("a") is None and len(cache) == 0


def test_revoked_partitions_take_their_contacts_along_and_drop_removes_one() -> None:
    clock = Clock()
    cache = _cache(clock)
    for identity, partition in (("a", 0), ("b", 1), ("c", 2), ("d", 1)):
        cache.put(identity, ContactState(identity, partition=partition))
    cache.forget_partitions({1, 2})
    assert [i for i in "abcd" if cache.get(i) is not None] == ["a"]
    cache.drop("a")
    cache.drop("never-there")
    assert cache.get("a") is None and len(cache) == 0
