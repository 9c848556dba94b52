"""Read topics from a start point to the end they had when reading began, then keep following them.

A group-less consumer assigned every partition by hand, so each replica reads everything (read models,
materialized views). `caught_up` is set once the ends seen at start are reached; the batches before and
after that go to the same handler. A broker failure restarts the consumer at the positions reached, so a
handler sees every record once per process (handlers should still tolerate repeats across restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from shopbotly.common.kafka import KafkaSettings, make_admin, make_consumer
from shopbotly.common.logging import get_logger

__all__ = ["TopicFollower"]

_log = get_logger(__name__)

BatchHandler = Callable[[str, list[Any]], None]
LagHandler = Callable[[dict[TopicPartition, int]], None]


class TopicFollower:
    """Follow `topics`: from `since_ms()` (a time: records older than it are skipped) or the beginning.

    `on_batch(topic, records)` runs in the event loop for each fetched batch of one partition; it must be
    quick (in-memory work). `on_lag(lags)`, if given, gets the messages between the position and the high
    watermark of each partition after each fetch (for a consumer-lag gauge). Missing topics are waited for
    (retry every `retry_s`).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Sequence[str],
        on_batch: BatchHandler,
        *,
        client_role: str,
        since_ms: Callable[[], int | None] = lambda: None,
        retry_s: float = 2.0,
        max_records: int = 5000,
        on_lag: LagHandler | None = None,
    ) -> None:
        self._kafka = kafka
        self._topics = list(topics)
        self._on_batch = on_batch
        self._client_role = client_role
        self._since_ms = since_ms
        self._retry_s = retry_s
        self._max_records = max_records
        self._on_lag = on_lag
        self._positions: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()
        self.last_error: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._client_role}-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            consumer = make_consumer(self._kafka, group_id=None, client_role=self._client_role)
            try:
                await consumer.start()
                await self._follow(consumer)
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError, LookupError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                _log.warning("following topics failed; retrying", error=self.last_error)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await asyncio.sleep(self._retry_s)

    async def _partitions(self) -> list[TopicPartition]:
        """Every partition of the topics, from the brokers' metadata."""
        admin = make_admin(self._kafka, client_role=f"{self._client_role}-admin")
        await admin.start()
        try:
            described = await admin.describe_topics(self._topics)
        finally:
            await admin.close()
        found = {t["topic"]: t for t in described if t.get("error_code", 0) == 0 and t.get("partitions")}
        partitions: list[TopicPartition] = []
        for topic in self._topics:
            if topic not in found:
                raise LookupError(f"topic {topic} does not exist yet")
            partitions += [TopicPartition(topic, p["partition"]) for p in found[topic]["partitions"]]
        return sorted(partitions)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        partitions = await self._partitions()
        consumer.assign(partitions)
        fresh = [tp for tp in partitions if tp not in self._positions]
        since = self._since_ms()
        if fresh and since is not None:
            found = await consumer.offsets_for_times(dict.fromkeys(fresh, since))
            ends = await consumer.end_offsets(fresh)
            for tp in fresh:
                at = found.get(tp)
                self._positions[tp] = at.offset if at is not None else ends[tp]
        elif fresh:
            beginnings = await consumer.beginning_offsets(fresh)
            self._positions.update(beginnings)
        for tp in partitions:
            consumer.seek(tp, self._positions[tp])
        targets = await consumer.end_offsets(partitions)
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=self._max_records)
            for tp, records in batch.items():
                if records:
                    self._on_batch(tp.topic, records)
                    self._positions[tp] = records[-1].offset + 1
            if self._on_lag is not None:
                self._on_lag(
                    {
                        tp: max(0, high - self._positions[tp])
                        for tp in partitions
                        if (high := consumer.highwater(tp)) is not None
                    }
                )
            if not self.caught_up.is_set():
                positions = {tp: await consumer.position(tp) for tp in partitions}
                if all(positions[tp] >= target for tp, target in targets.items()):
                    self.caught_up.set()
                    _log.info("topics read to their end; following", topics=self._topics)
            self.last_error = None
