"""The mapper's faust consumer: it commits the low watermark of what the agents finished, and hands each fetch
to the agents in one piece.

faust-streaming 0.15.3's consumer (the same code as its master) can commit an offset that was never
processed, and records a commit as done when Kafka refused it (docs/architecture.md, "mapper offset
commits", explains how). `MapperConsumer` keeps faust's fetching, rebalancing and commit timer, and replaces
what is committed: per partition, the offset after the last message the agent finished in the current
generation.
That is a low watermark because aiokafka hands out a partition's records in log order from the committed
position within one assignment, and the agent finishes them in that order (`Watermarks.finished`).

It also replaces faust's per-message delivery (`_drain_messages`: a task, the conductor, an event in the
agent's channel, the stream) with one hand-over per fetch into the agent's `BatchInbox` (batches.py): faust's
fetching, read offsets, flow control and rebalancing stay as they are.

It is wired in through faust's own extension point: the `faust.transports` entry point `shopbotly-mapper`
(services/mapper/pyproject.toml) names `MapperTransport`, and the app's `broker_consumer` URL uses that
scheme; the producer keeps faust's stock transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from time import monotonic
from typing import Any, ClassVar, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerT, Message
from mode import Service, ServiceT
from mode.utils.futures import notify
from mode.utils.queues import FlowControlQueue

from shopbotly.common.logging import get_logger
from shopbotly.mapper.batches import BatchInbox

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

    @property
    def assigned(self) -> frozenset[TP]:
        return frozenset(self._assigned)

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
        self._inboxes: dict[str, BatchInbox[Message]] = {}
        self._inbox_added = asyncio.Event()
        super().__init__(*args, **kwargs)

    def finished(self, messages: Iterable[Message]) -> None:
        """The agent finished these messages (every output acknowledged), in the order it took them."""
        finished = self.watermarks.finished
        counted = 0
        for message in messages:
            counted += finished(message.tp, message.offset, message.generation_id)
        self._n_acked += counted  # towards `broker_commit_every`

    def inbox(self, topics: Iterable[str], *, max_events: int, within_s: float) -> BatchInbox[Message]:
        """The batches of `topics` for one agent (the same inbox again when the agent restarts)."""
        names = list(topics)
        found = {id(self._inboxes[t]): self._inboxes[t] for t in names if t in self._inboxes}
        if found:
            if len(found) > 1 or any(t not in self._inboxes for t in names):
                raise ValueError(f"topics {names} are already split between other agents' inboxes")
            return next(iter(found.values()))
        inbox: BatchInbox[Message] = BatchInbox(max_events=max_events, within_s=within_s)
        # faust clears the queues it manages when a rebalance starts and when flow resumes after it.
        self.app.flow_control.manage_queue(cast(FlowControlQueue[Any], inbox))
        for topic in names:
            self._inboxes[topic] = inbox
        self._inbox_added.set()
        return inbox

    def taken(self, messages: Iterable[Message]) -> list[Message]:
        """The agent took `messages` from its inbox: those of the current generation's assignment, to map.

        Others are fetched again after a rebalance (from the committed offsets), so mapping them now would
        only publish them twice. Also tells faust's monitor the partitions' streams are moving (its
        slow-processing check, which faust's stream used to feed per event, reads it)."""
        generation = self.watermarks.generation
        assigned = self.watermarks.assigned
        current = [m for m in messages if m.generation_id == generation and m.tp in assigned]
        now = monotonic()
        self.app.monitor.stream_inbound_time.update({m.tp: now for m in current})
        return current

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover - the fetch loop
        """faust's fetch loop (`Consumer._drain_messages`), delivering a fetch per inbox at once."""
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)  # as faust: a fetch loop that never yields starves the agents
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    # As faust's getmany: fetched while a rebalance stopped the flow; restart from Kafka's.
                    try:
                        await self.perform_seek()
                    except Exception as exc:
                        log.warning("seek.failed", error=f"{type(exc).__name__}: {exc}")
                    continue
                await self._deliver(records, active)
                self.diag.unset_flag(CONSUMER_FETCHING)
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(self, records: Mapping[TP, list[Any]], active: set[TP] | None) -> None:
        generation = self.app.consumer_generation_id
        if generation != self.watermarks.generation:
            return  # a rebalance is under way: these are fetched again from the committed offsets after it
        to_message = self._to_message
        read_offset = self._read_offset
        batches: dict[int, tuple[BatchInbox[Message], list[Message], dict[TP, int]]] = {}
        for tp, fetched in records.items():
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            inbox = self._inboxes.get(tp.topic) or await self._wait_for_inbox(tp.topic)
            if inbox is None:
                return  # the flow stopped meanwhile
            r_offset = read_offset[tp]
            # faust skips what is behind its read offset (already delivered in this assignment).
            messages = [to_message(tp, r) for r in fetched if r_offset is None or r.offset >= r_offset]
            if not messages:
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            _, batch, offsets = batches.setdefault(id(inbox), (inbox, [], {}))
            batch.extend(messages)
            offsets[tp] = messages[-1].offset
        for inbox, batch, offsets in batches.values():
            await self.wait_first(inbox.put(batch), self.suspend_flow.wait())
            if self.suspend_flow.is_set() or self.app.consumer_generation_id != generation:
                return  # not delivered, or about to be cleared: fetched again after the rebalance
            read_offset.update(offsets)

    async def _wait_for_inbox(self, topic: str) -> BatchInbox[Message] | None:
        """An agent registers its inbox when it starts; a fetch can come first."""
        while topic not in self._inboxes:
            self._inbox_added.clear()
            await self.wait_first(self._inbox_added.wait(), self.suspend_flow.wait())
            if self.suspend_flow.is_set():
                return None
        return self._inboxes[topic]

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
