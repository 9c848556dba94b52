"""Reads the compacted orders and tickets topics into the StateStore: in full at start, then as they grow.

The shared `TopicFollower` over every partition (no group): each mapper replica holds all state, so a
rebalance moves no state. The merge of a key is done by one replica at a time (the owner of its
state-patches partition); a replica that takes a partition over first waits for `catch_up`, so it merges
onto everything the previous owner published.
"""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from shopbotly.common.follow import Batch, TopicFollower
from shopbotly.common.kafka import KafkaSettings
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
        self._follower: TopicFollower | None = None

    def _invalid(self, what: str) -> None:
        STATE_INVALID.inc()
        self._log.error("state.invalid_record", record=what)

    def _apply(self, batch: Batch) -> None:
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
        partitions = [TopicPartition(topic, p) for topic in self._kinds for p in range(partitions_of[topic])]
        follower = self._follower = TopicFollower(
            self._kafka,
            list(self._kinds),
            self._apply,
            client_role="mapper-state",
            partitions=partitions,
            retry_s=1.0,
            # A short poll when idle: a `catch_up` with nothing new returns after one.
            poll_ms=250,
            consumer_options={"max_partition_fetch_bytes": 4 * 1024 * 1024},
        )
        follower.start()
        await follower.wait_caught_up()
        self._log.info(
            "state.loaded",
            orders=self._store.size(StateKind.ORDER),
            tickets=self._store.size(StateKind.TICKET),
        )

    async def catch_up(self) -> None:
        """Return once every orders/tickets record written before the call is applied to the store."""
        assert self._follower is not None, "catch_up() before start()"
        await self._follower.catch_up()

    async def stop(self) -> None:
        if self._follower is not None:
            await self._follower.stop()
