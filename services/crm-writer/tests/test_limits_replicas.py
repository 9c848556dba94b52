"""A connection's limit across writer replicas, whatever the partition assignment (pure, simulated time).

Each replica runs its bucket at its share of the partitions (ratelimit.py). These tests drive the buckets
the way the engine does through assignments, rebalances and restarts (revoked partitions leave a share before
the new owner's assignment adds them), with every replica sending whenever its bucket lets it, and count the
requests in every rolling window.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from shopbotly.crm_writer.ratelimit import AdaptiveRateLimit, partition_share
from shopbotly.testkit.crm_writer import max_in_window

pytestmark = pytest.mark.unit

PARTITIONS = 6
LIMITS = [(100, 10.0, 5), (100, 10.0, 50), (20, 1.0, 1), (20, 1.0, 10), (6, 1.0, 1), (60, 1.0, 30)]
SPLITS = [(6,), (5, 1), (4, 1, 1), (4, 2), (3, 3), (3, 2, 1), (2, 2, 2), (1, 1, 1, 1, 1, 1)]
MIN_SHARE = 1e-6  # what the router gives a replica without partitions (routing.py)


@dataclass
class _Replica:
    owned: int = 0
    busy_from: float = 0.0  # idle before: its bucket saves up (the worst case for the next window)
    limit: AdaptiveRateLimit | None = None


def simulate(
    limit: tuple[int, float, int],
    assignments: list[tuple[float, dict[str, int]]],
    *,
    busy_from: dict[str, float] | None = None,
    windows: float = 6.0,
    handover_s: float = 0.01,
) -> tuple[dict[str, list[float]], float]:
    """Send times of each replica, and the largest sum of shares seen at any instant.

    `assignments`: (time, partitions each replica owns). At each time the partitions that leave a replica
    leave its share at once (revocation); `handover_s` later the new owners add theirs (assignment after
    the ledger caught up). A replica's bucket is built when it first owns partitions (the route is built on
    its first command); a name not seen before is a new process (a new replica, or one restarted).
    """
    requests, per, burst = limit
    replicas: dict[str, _Replica] = {}
    events: list[tuple[float, str, int]] = []
    previous: dict[str, int] = {}
    for at, owned in assignments:
        for name in set(previous) | set(owned):
            before, after = previous.get(name, 0), owned.get(name, 0)
            events.append((at, name, min(before, after)))
            events.append((at + handover_s, name, after))
        previous = owned
    events.sort(key=lambda e: e[0])
    sent: dict[str, list[float]] = {}
    worst_share_sum = 0.0
    step = per / 400
    t = 0.0
    while t < windows * per:
        while events and events[0][0] <= t:
            _, name, count = events.pop(0)
            replica = replicas.setdefault(name, _Replica(busy_from=(busy_from or {}).get(name, 0.0)))
            replica.owned = count
            share = max(partition_share(count, PARTITIONS) if count else 0.0, MIN_SHARE)
            if replica.limit is None and count:
                replica.limit = AdaptiveRateLimit(
                    requests=requests, per_seconds=per, burst=burst, now=t, share=share
                )
            elif replica.limit is not None:
                replica.limit.set_share(share, t)
        worst_share_sum = max(worst_share_sum, sum(r.owned for r in replicas.values()) / PARTITIONS)
        for name, replica in replicas.items():
            if replica.limit is None or replica.owned == 0 or t < replica.busy_from:
                continue
            while replica.limit.reserve(t) == 0.0:
                sent.setdefault(name, []).append(t)
        t += step
    return sent, worst_share_sum


def every(sent: dict[str, list[float]]) -> list[float]:
    return [t for times in sent.values() for t in times]


@pytest.mark.parametrize("split", SPLITS, ids=lambda s: "/".join(map(str, s)))
@pytest.mark.parametrize("limit", LIMITS, ids=lambda lim: f"{lim[0]}per{lim[1]:g}s-burst{lim[2]}")
def test_the_limit_holds_whatever_the_split(limit: tuple[int, float, int], split: tuple[int, ...]) -> None:
    owned = {f"r{i}": k for i, k in enumerate(split)}
    sent, shares = simulate(limit, [(0.0, owned)])
    assert shares <= 1.0
    assert max_in_window(every(sent), limit[1]) <= limit[0]
    # Respected, and not by starving anyone: every replica sends, in every window of the run's second half.
    for replica in owned:
        mine = [t for t in sent[replica] if t >= 3 * limit[1]]
        assert len(mine) >= 3, replica


SCENARIOS: dict[str, tuple[list[tuple[float, dict[str, int]]], dict[str, float]]] = {
    # One partition moves from the replica with four to one with one (4/1/1 -> 3/2/1), right after the first
    # replica spent everything it had saved up.
    "a partition moves": (
        [(0.0, {"a": 4, "b": 1, "c": 1}), (1.5, {"a": 3, "b": 2, "c": 1})],
        {"a": 1.0, "b": 1.0, "c": 1.0},
    ),
    # Scale up: one replica with all six, then a new one takes three (its first bucket on top of a window
    # the old one already used).
    "a new replica joins": ([(0.0, {"a": 6}), (1.5, {"a": 3, "new": 3})], {"a": 1.0}),
    "5/1 becomes 4/1/1": ([(0.0, {"a": 5, "b": 1}), (1.5, {"a": 4, "b": 1, "new": 1})], {"a": 1.0}),
    # A replica dies (its partitions go to the survivor), or restarts at once with the same partitions.
    "a replica dies": ([(0.0, {"a": 3, "b": 3}), (1.5, {"a": 6})], {"a": 1.0, "b": 1.0}),
    "a replica restarts": ([(0.0, {"a": 3, "b": 3}), (1.5, {"a": 3, "b-again": 3})], {"a": 1.0, "b": 1.0}),
    "the only replica restarts": ([(0.0, {"a": 6}), (1.5, {"a-again": 6})], {"a": 1.0}),
    "two moves in a row": (
        [(0.0, {"a": 2, "b": 2, "c": 2}), (1.3, {"a": 4, "b": 1, "c": 1}), (1.8, {"a": 1, "b": 1, "c": 4})],
        {"a": 1.0, "b": 1.0, "c": 1.0},
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("limit", LIMITS, ids=lambda lim: f"{lim[0]}per{lim[1]:g}s-burst{lim[2]}")
def test_the_limit_holds_through_rebalances_and_restarts(
    limit: tuple[int, float, int], scenario: str
) -> None:
    timeline, busy = SCENARIOS[scenario]
    per = limit[1]
    # Times are in windows: idle for the first window (buckets save up), then busy throughout.
    assignments = [(at * per, owned) for at, owned in timeline]
    sent, shares = simulate(limit, assignments, busy_from={k: v * per for k, v in busy.items()})
    assert shares <= 1.0
    assert max_in_window(every(sent), per) <= limit[0]


def test_a_limit_below_one_request_a_window_per_replica_is_recognised() -> None:
    # 5 requests a second over six partitions: a replica with one partition has 5/6 of a request a window,
    # and a bucket needs a whole token to send, so six such replicas could send six (ratelimit.py).
    small = AdaptiveRateLimit(requests=5, per_seconds=1, burst=1, now=0.0, share=partition_share(1, 6))
    assert small.below_one_request
    sent, _ = simulate((5, 1.0, 1), [(0.0, {f"r{i}": 1 for i in range(6)})])
    assert max_in_window(every(sent), 1.0) > 5  # why the writer warns about it
    # With as many requests a window as partitions, every share is at least one request.
    for k in range(1, 7):
        lim = AdaptiveRateLimit(requests=6, per_seconds=1, burst=1, now=0.0, share=partition_share(k, 6))
        assert not lim.below_one_request
    # A learned (lower) limit counts too.
    learned = AdaptiveRateLimit(requests=60, per_seconds=1, burst=1, now=0.0, share=partition_share(1, 6))
    learned.observe(0.0, max_requests=3, interval_s=1.0)
    assert learned.below_one_request
