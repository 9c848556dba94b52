"""Offset commits taken out of faust's bookkeeping: the mapper commits the low watermark of what it finished.

faust-streaming 0.15.3's consumer (the same code as its master) can commit an offset that was never
processed, and records a commit as done when Kafka refused it (docs/architecture.md, "mapper offset
commits", explains how). `MapperConsumer` keeps faust's fetching, rebalancing and commit timer, and replaces
what is committed: per partition, the offset after the last message the agent finished in the current
generation.
That is a low watermark because aiokafka hands out a partition's records in log order from the committed
position within one assignment, and the agent finishes them in that order (`Watermarks.finished`).

It is wired in through faust's own extension point: the `faust.transports` entry point `shopbotly-mapper`
(services/mapper/pyproject.toml) names `MapperTransport`, and the app's `broker_consumer` URL uses that
scheme; the producer keeps faust's stock transport.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, cast

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerT, Message
from mode.utils.futures import notify

from shopbotly.common.logging import get_logger

__all__ = ["SCHEME", "MapperConsumer", "MapperTransport", "Watermarks"]

SCHEME = "shopbotly-mapper"

log = get_logger("shopbotly.mapper.commits")


class Watermarks:
    """What may be committed, per partition of the current assignment; no I/O.

    A partition's watermark is the offset after the last message finished in the generation that assigned
    it; until one is finished there is none (Kafka keeps the committed offset the generation started from).
    Messages of an earlier generation never count: after a rebalance their partition is fetched again from
    its committed offset, so what they carried is redelivered and finished under the new generation.
    """

    def __init__(self) -> None:
        self.generation: int | None = None
        self._assigned: set[TP] = set()
        self._finished: dict[TP, int] = {}  # partition -> offset after the last finished message
        self._committed: dict[TP, int] = {}  # partition -> the last offset Kafka accepted

    def assign(self, partitions: Iterable[TP], generation: int) -> None:
        """A new generation: only its partitions count, each starting over."""
        self.generation = generation
        self._assigned = set(partitions)
        self._finished.clear()
        self._committed.clear()

    def revoke(self) -> None:
        """A rebalance started: nothing is committable until the next assignment."""
        self.generation = None
        self._assigned.clear()
        self._finished.clear()
        self._committed.clear()

    def finished(self, tp: TP, offset: int, generation: int | None) -> bool:
        """The agent finished the message at `offset`; it must be called in the order messages were handed
        out. Returns whether it counts (False: another generation, a revoked partition, or a repeat)."""
        if generation is None or generation != self.generation or tp not in self._assigned:
            return False
        if offset < self._finished.get(tp, offset):
            return False
        self._finished[tp] = offset + 1
        return True

    def committable(self) -> dict[TP, int]:
        """Watermarks Kafka does not have yet."""
        return {tp: offset for tp, offset in self._finished.items() if offset > self._committed.get(tp, -1)}

    def committed(self, offsets: Mapping[TP, int], generation: int | None) -> None:
        """Kafka accepted `offsets` (only then: a failed commit is tried again on the next round)."""
        if generation is None or generation != self.generation:
            return
        for tp, offset in offsets.items():
            if tp in self._assigned and offset > self._committed.get(tp, -1):
                self._committed[tp] = offset


class MapperConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer with the commit decision replaced by `Watermarks`.

    faust still fetches, rebalances, tracks unacknowledged messages and runs the commit timer; its `_acked`,
    `_gap` and `_committed_offset` no longer decide anything. Only `finished()` (the agent, after a batch's
    outputs are acknowledged) moves a watermark: faust also acknowledges messages it never delivered (those
    it skips after a rebalance), so its acknowledgements cannot tell what was processed.
    """

    watermarks: Watermarks

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.watermarks = Watermarks()
        super().__init__(*args, **kwargs)

    def finished(self, messages: Iterable[Message]) -> None:
        for message in messages:
            self.watermarks.finished(message.tp, message.offset, message.generation_id)

    def ack(self, message: Message) -> bool:
        # Mark the message acknowledged for faust's shutdown and rebalance waits, and count it for
        # `broker_commit_every`; keep no commit bookkeeping (what to commit is `watermarks`).
        if message.acked:
            return False
        message.acked = True
        self._unacked_messages.discard(message)
        self._n_acked += 1
        notify(self._waiting_for_ack)
        return True

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.watermarks.revoke()
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self.watermarks.assign(assigned, generation_id)
        await super().on_partitions_assigned(assigned, generation_id)

    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        generation = self.watermarks.generation
        assignment = self.assignment()
        offsets = {tp: o for tp, o in self.watermarks.committable().items() if tp in assignment}
        if not offsets:
            return False
        # False when Kafka refused it (a rebalance under way); other failures crash the worker (faust's
        # aiokafka driver), which restarts from what Kafka really has.
        if not await self._commit(offsets):
            log.info("commit.refused", partitions=len(offsets))
            return False
        self.watermarks.committed(offsets, generation)
        self.app.monitor.on_tp_commit(offsets)
        return True


class MapperTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with `MapperConsumer` (entry point `faust.transports: shopbotly-mapper`)."""

    Consumer: ClassVar[type[ConsumerT]] = cast(type[ConsumerT], MapperConsumer)
