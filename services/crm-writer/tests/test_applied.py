"""The ledger's compact index of applied ids (pure): no indexed id is ever missed; ~17 bytes an id."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopbotly.crm_writer.applied import AppliedIndex, digest32

pytestmark = pytest.mark.unit


def test_every_indexed_id_is_found_at_its_place_across_runs_and_merges() -> None:
    index = AppliedIndex(staged=64, max_run=1024)
    placed: dict[str, tuple[int, int]] = {}
    offsets = dict.fromkeys(range(3), 0)
    rng = random.Random(7)
    for i in range(5000):
        partition = rng.randrange(3)
        offsets[partition] += rng.randrange(1, 4)  # gaps: records compacted away
        cid = f"cmd_{i}"
        index.add(partition, cid, offsets[partition])
        placed[cid] = (partition, offsets[partition])
    assert len(index) == 5000
    for cid, place in placed.items():
        assert place in index.places(cid)
    # Not indexed: found nowhere, or at most as a digest collision (which the ledger rules out by key).
    strangers = [f"other_{i}" for i in range(5000)]
    assert sum(bool(index.places(cid)) for cid in strangers) <= 2


def test_runs_stay_few_and_bounded_and_memory_is_about_17_bytes_an_id() -> None:
    index = AppliedIndex(staged=256, max_run=4096)
    for i in range(20_000):
        index.add(i % 6, f"cmd_{i}", i // 6)
    runs = index.runs
    assert sum(runs) == 20_000 - 20_000 % 256
    assert all(size <= 4096 for size in runs)
    assert len(runs) <= 20_000 // 4096 + 5  # full runs plus a binary counter of smaller ones
    assert index.nbytes <= 20_000 * 17 * 1.15


def test_an_id_recorded_again_is_found_at_every_place_newest_first() -> None:
    index = AppliedIndex(staged=4)
    for i in range(10):
        index.add(1, "again", 100 + i)
        index.add(2, f"filler{i}", i)
    assert index.places("again") == [(1, 100 + i) for i in reversed(range(10))]


def test_places_far_apart_and_on_many_partitions_are_kept_exactly() -> None:
    index = AppliedIndex(staged=4, max_run=64)
    places = [(p, o) for p in (0, 5, 200) for o in (0, 1, 1 << 33, (1 << 48) - 1)]
    for i, (partition, offset) in enumerate(places):
        index.add(partition, f"c{i}", offset)
    for i, place in enumerate(places):
        assert index.places(f"c{i}") == [place]
    with pytest.raises(ValueError, match="not a ledger place"):
        index.add(0, "x", 1 << 48)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.text(min_size=1, max_size=12), st.integers(1, 1 << 34)), max_size=300
    )
)
def test_no_false_negatives(entries: list[tuple[int, str, int]]) -> None:
    index = AppliedIndex(staged=8, max_run=64)
    offsets = dict.fromkeys(range(3), 0)
    placed: list[tuple[int, str, int]] = []
    for partition, cid, gap in entries:
        offsets[partition] += gap
        index.add(partition, cid, offsets[partition])
        placed.append((partition, cid, offsets[partition]))
    for partition, cid, offset in placed:
        assert (partition, offset) in index.places(cid)


def test_digest_is_the_same_in_every_process() -> None:
    # blake2b, not `hash` (salted per process): a rebuilt index must agree with the one it replaces.
    assert digest32("x") == int.from_bytes(hashlib.blake2b(b"x", digest_size=4).digest(), "big")
