"""One partition's commands in one lane per connection, so a connection that is down or slow holds back
only its own work.

Pure data structures, driven by the engine. Each lane (`tenant:connection`) has its own key-ordered queue
(one identity strictly in order, several at once) with its own bounds: at most `max_active` identities
in flight, and at most `max_queued` commands held in memory. A lane whose connection is held (circuit
open or probing) gets one identity in flight at a time, the one that waits for (and is) the probe.

A record that finds its lane full is not kept: its offset is remembered as *dropped*, stays unfinished
(so it is never committed) and is fetched again from Kafka once its lane has room (`refetch_from`). Once
a lane has dropped a record it drops every later one too, and takes them back strictly in offset order,
so one identity's commands are never applied out of order. So memory stays bounded however long a
connection is down, no other lane waits, and a crash loses nothing: everything unfinished is read again
by the next owner.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from shopbotly.crm_writer.domain import Envelope
from shopbotly.crm_writer.ordering import KeyedScheduler

__all__ = ["LaneStats", "PartitionLanes", "lane_of"]


def lane_of(env: Envelope) -> str:
    """The lane of a record: its command's `tenant:connection` ("invalid" for a record with no command)."""
    cmd = env.command
    return f"{cmd.tenant}:{cmd.connection}" if cmd is not None else "invalid"


@dataclass
class LaneStats:
    """What one lane holds: commands not finished (queued, in flight, or dropped to fetch again)."""

    held: int = 0
    dropped: int = 0
    oldest_ms: int | None = None


@dataclass
class _Lane:
    scheduler: KeyedScheduler[bytes, Envelope]
    # Unfinished records kept in memory (queued or in flight): offset -> record timestamp (ms).
    unfinished: dict[int, int] = field(default_factory=dict)


class PartitionLanes:
    def __init__(self, *, max_active: int, max_take: int, max_queued: int) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        self.max_active = max_active
        self.max_take = max_take
        self.max_queued = max_queued
        self._lanes: dict[str, _Lane] = {}
        self._turn: list[str] = []  # lanes in round-robin order for take()
        self._next_turn = 0
        # Offsets not kept in memory, ascending: offset -> (lane, record timestamp ms).
        self._dropped: dict[int, tuple[str, int]] = {}
        self._dropped_by_lane: dict[str, deque[int]] = {}

    # -- admission ----------------------------------------------------------------------------------

    def _lane(self, label: str) -> _Lane:
        lane = self._lanes.get(label)
        if lane is None:
            lane = self._lanes[label] = _Lane(
                KeyedScheduler(max_active=self.max_active, max_take=self.max_take)
            )
            self._turn.append(label)
        return lane

    def admit(self, env: Envelope, *, now_ms: int) -> bool:
        """Queue a newly fetched record in its lane; False: the lane is full, the offset is dropped (to be
        fetched again)."""
        label = lane_of(env)
        lane = self._lane(label)
        stamp = env.timestamp_ms if env.timestamp_ms is not None else now_ms
        if lane.scheduler.queued >= self.max_queued or label in self._dropped_by_lane:
            self._dropped[env.offset] = (label, stamp)
            self._dropped_by_lane.setdefault(label, deque()).append(env.offset)
            return False
        lane.unfinished[env.offset] = stamp
        lane.scheduler.push(env.key or b"", env)
        return True

    def is_dropped(self, offset: int) -> bool:
        return offset in self._dropped

    def readmit(self, env: Envelope) -> bool:
        """A dropped record fetched again: queue it if it is its lane's oldest dropped one and the lane has
        room (False: it stays dropped, and so do the lane's later ones)."""
        entry = self._dropped.get(env.offset)
        if entry is None:
            return False
        label, stamp = entry
        lane = self._lane(label)
        waiting = self._dropped_by_lane[label]
        if waiting[0] != env.offset or lane.scheduler.queued >= self.max_queued:
            return False
        waiting.popleft()
        if not waiting:
            del self._dropped_by_lane[label]
        del self._dropped[env.offset]
        lane.unfinished[env.offset] = stamp
        lane.scheduler.push(env.key or b"", env)
        return True

    def refetch_from(self, held: Callable[[str], bool]) -> int | None:
        """The offset to fetch again from, when some lane with dropped records has room and is not held."""
        ready = [
            waiting[0]
            for label, waiting in self._dropped_by_lane.items()
            if not held(label) and self._lanes[label].scheduler.queued <= self.max_queued // 2
        ]
        return min(ready, default=None)

    # -- work ---------------------------------------------------------------------------------------

    def take(self, held: Callable[[str], bool]) -> tuple[str, bytes, list[Envelope]] | None:
        """The next identity to write, taking lanes in turn: (lane, key, its queued commands in order)."""
        n = len(self._turn)
        for i in range(n):
            label = self._turn[(self._next_turn + i) % n]
            scheduler = self._lanes[label].scheduler
            if held(label) and scheduler.active >= 1:
                continue  # one identity waits for the circuit (and probes); the rest stay queued
            taken = scheduler.take()
            if taken is not None:
                self._next_turn = (self._next_turn + i + 1) % n
                key, envs = taken
                return label, key, envs
        return None

    def done(self, label: str, key: bytes, *, requeue: list[Envelope] | None = None) -> None:
        self._lanes[label].scheduler.done(key, requeue=requeue)

    def finished(self, env: Envelope) -> None:
        lane = self._lanes.get(lane_of(env))
        if lane is not None:
            lane.unfinished.pop(env.offset, None)

    # -- what is held -------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return sum(lane.scheduler.queued for lane in self._lanes.values())

    @property
    def active(self) -> int:
        return sum(lane.scheduler.active for lane in self._lanes.values())

    @property
    def dropped(self) -> int:
        return len(self._dropped)

    def labels(self) -> Iterator[str]:
        return iter(self._lanes)

    def stats(self) -> dict[str, LaneStats]:
        out: dict[str, LaneStats] = {}
        for label, lane in self._lanes.items():
            oldest = min(lane.unfinished.values(), default=None)
            out[label] = LaneStats(held=len(lane.unfinished), oldest_ms=oldest)
        for label, stamp in self._dropped.values():
            s = out.setdefault(label, LaneStats())
            s.held += 1
            s.dropped += 1
            s.oldest_ms = stamp if s.oldest_ms is None else min(s.oldest_ms, stamp)
        return out
