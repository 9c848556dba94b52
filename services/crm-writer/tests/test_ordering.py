"""Key-ordered parallelism and the low watermark (pure)."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopbotly.crm_writer.ordering import KeyedScheduler, OffsetTracker

pytestmark = pytest.mark.unit


def test_committable_is_the_lowest_unfinished_offset() -> None:
    t = OffsetTracker()
    assert t.committable() is None
    for o in (5, 6, 7, 8):
        t.add(o)
    assert t.committable() == 5
    t.finish(7)
    t.finish(6)
    assert t.committable() == 5  # 5 is still in flight: nothing past it may be committed
    t.finish(5)
    assert t.committable() == 8
    t.finish(8)
    assert t.committable() == 9
    assert t.unfinished == 0


def test_gaps_in_offsets_do_not_hold_the_watermark() -> None:
    t = OffsetTracker()
    for o in (10, 13, 20):  # compaction or transaction markers leave gaps
        t.add(o)
    t.finish(10)
    assert t.committable() == 13
    t.finish(20)
    t.finish(13)
    assert t.committable() == 21


def test_tracker_refuses_out_of_order_adds_and_unknown_finishes() -> None:
    t = OffsetTracker()
    t.add(3)
    with pytest.raises(ValueError, match="in order"):
        t.add(2)
    with pytest.raises(ValueError, match="not handed out"):
        t.finish(4)
    assert not t.is_new(3) and t.is_new(4)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=60), st.randoms())
def test_watermark_never_passes_unfinished_work(gaps: list[int], rnd: random.Random) -> None:
    t = OffsetTracker()
    offsets, o = [], 0
    for g in gaps:
        o += g
        offsets.append(o)
        t.add(o)
    order = offsets[:]
    rnd.shuffle(order)
    done: set[int] = set()
    for off in order:
        t.finish(off)
        done.add(off)
        unfinished = [x for x in offsets if x not in done]
        expected = min(unfinished) if unfinished else offsets[-1] + 1
        assert t.committable() == expected


def test_one_key_at_a_time_many_keys_concurrently() -> None:
    s: KeyedScheduler[str, int] = KeyedScheduler(max_active=2, max_take=10)
    for i, key in enumerate(["a", "a", "b", "c", "a"]):
        s.push(key, i)
    assert s.take() == ("a", [0, 1, 4])
    assert s.take() == ("b", [2])
    assert s.take() is None  # two keys out: the bound is reached
    s.push("a", 5)  # arrives while "a" is being written: waits for it
    s.done("b")
    assert s.take() == ("c", [3])
    s.done("a")
    assert s.take() == ("a", [5])  # "a" may go again now that its first batch is done
    assert s.take() is None
    assert s.queued == 0


def test_take_is_bounded_and_requeue_goes_first() -> None:
    s: KeyedScheduler[str, int] = KeyedScheduler(max_active=1, max_take=2)
    for i in range(5):
        s.push("k", i)
    _, items = s.take() or ("", [])
    assert items == [0, 1]
    s.done("k", requeue=[1])  # item 1 was not processed: it comes back before 2
    assert s.take() == ("k", [1, 2])
    s.done("k")
    assert s.take() == ("k", [3, 4])


def test_ready_keys_are_served_in_arrival_order() -> None:
    s: KeyedScheduler[str, int] = KeyedScheduler(max_active=1, max_take=1)
    for key in "xyz":
        s.push(key, 0)
    seen = []
    while (taken := s.take()) is not None:
        seen.append(taken[0])
        s.done(taken[0])
    assert seen == ["x", "y", "z"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from("abcde"), min_size=1, max_size=80), st.randoms(), st.integers(1, 4))
def test_per_key_order_holds_under_any_completion_order(
    keys: list[str], rnd: random.Random, width: int
) -> None:
    s: KeyedScheduler[str, int] = KeyedScheduler(max_active=width, max_take=3)
    processed: dict[str, list[int]] = {}
    pending = list(enumerate(keys))
    out: list[tuple[str, list[int]]] = []
    while pending or out or s.queued:
        if pending and rnd.random() < 0.5:
            i, k = pending.pop(0)
            s.push(k, i)
        while (taken := s.take()) is not None:
            assert sum(1 for key, _ in out if key == taken[0]) == 0  # never two workers for one key
            out.append(taken)
        if out and rnd.random() < 0.7:
            key, items = out.pop(rnd.randrange(len(out)))
            processed.setdefault(key, []).extend(items)
            s.done(key)
        elif not pending and not out:
            continue
    for key, items in processed.items():
        assert items == sorted(items)
        assert items == [i for i, k in enumerate(keys) if k == key]
