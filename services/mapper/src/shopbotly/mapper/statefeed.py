"""Reads the compacted orders and tickets topics into the StateStore: in full at start, then as they grow.

An unassigned consumer (no group) over every partition: each mapper replica holds all state, so a
rebalance moves no state. The merge of a key is done by one replica at a time (the owner of its
state-patches partition); a replica that takes a partition over first waits for `catch_up`, so it merges
onto everything the previous owner published.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from shopbotly.common.kafka import KafkaSettings, make_consumer
from shopbotly.common.topics import Topic
from shopbotly.mapper.metrics import STATE_ENTRIES, STATE_INVALID
from shopbotly.mapper.state import StateKind, StateStore

__all__ = ["StateFeed"]


class StateFeed:
    def __init__(self, kafka: KafkaSettings, store: StateStore, *, log: Any) -> None:
        self._store = store
        self._log = log
        self._kinds = {
            kafka.topic(Topic.ORDERS): StateKind.ORDER,
            kafka.topic(Topic.TICKETS): StateKind.TICKET,
        }
        self._kafka = kafka
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None
        self._polled = asyncio.Event()  # set after each poll of the follow loop has been applied
        self.loaded = asyncio.Event()

    def _invalid(self, what: str) -> None:
        STATE_INVALID.inc()
        self._log.error("state.invalid_record", record=what)

    def _apply(self, batch: dict[TopicPartition, list[Any]]) -> None:
        for tp, records in batch.items():
            kind = self._kinds[tp.topic]
            for record in records:
                if record.key is None:
                    self._invalid(f"{kind} at {tp.partition}:{record.offset} has no key")
                    continue
                self._store.apply_record(
                    kind,
                    record.key.decode("utf-8", "replace"),
                    record.value,
                    record.offset,
                    on_invalid=self._invalid,
                )
        for kind in StateKind:
            STATE_ENTRIES.labels(kind.value).set(self._store.size(kind))

    async def start(self, partitions_of: dict[str, int]) -> None:
        """Read both topics to their current end, then keep following them in the background.

        `partitions_of`: partition count per topic name (from the admin client's describe).
        """
        # Built here, not in __init__: aiokafka clients bind to the running loop.
        consumer = self._consumer = make_consumer(
            self._kafka, group_id=None, client_role="mapper-state", max_partition_fetch_bytes=4 * 1024 * 1024
        )
        await consumer.start()
        partitions = [TopicPartition(topic, p) for topic in self._kinds for p in range(partitions_of[topic])]
        self._partitions = partitions
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        remaining = {tp for tp, offset in end.items() if offset > 0}
        while remaining:
            self._apply(await consumer.getmany(timeout_ms=500, max_records=5000))
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        self.loaded.set()
        self._log.info(
            "state.loaded",
            orders=self._store.size(StateKind.ORDER),
            tickets=self._store.size(StateKind.TICKET),
        )
        self._task = asyncio.create_task(self._follow(), name="mapper-state-follow")

    async def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                # A short poll: `catch_up` waits for one to end.
                self._apply(await consumer.getmany(timeout_ms=250, max_records=5000))
                self._polled.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the feed must outlive a broker hiccup; the consumer reconnects
                self._log.warning("state.follow_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)

    async def catch_up(self) -> None:
        """Return once every orders/tickets record written before the call is applied to the store.

        The consumer's position moves only when getmany hands records out (aiokafka's fetcher drains
        and returns without awaiting in between), and the follow loop applies them before its next
        await: a position at or past the end offset means everything before it is in the store.
        """
        consumer = self._consumer
        assert consumer is not None, "catch_up() before start()"
        end = await consumer.end_offsets(self._partitions)
        while not all([await consumer.position(tp) >= offset for tp, offset in end.items()]):
            self._polled.clear()
            await self._polled.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
