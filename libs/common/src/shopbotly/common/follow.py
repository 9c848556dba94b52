"""The one loop that reads topics from a start point to the end they had, then keeps following them.

A group-less consumer assigned every partition by hand, so each replica reads everything (read models,
materialized views, the mapper's state, crm-writer's ledger). `caught_up` is set once the ends seen at start
are reached; `catch_up()` waits for everything written before the call. A broker failure restarts the
consumer at the positions reached (or where `start_at` says), so a handler sees every record once per
process unless its owner asks for a rebuild (handlers should still tolerate repeats across restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from shopbotly.common.kafka import KafkaSettings, make_admin, make_consumer
from shopbotly.common.logging import get_logger

__all__ = ["Batch", "FollowFailed", "LogBounds", "TopicFollower", "TopicsMissing"]

_log = get_logger(__name__)

# One poll: the records handed out, by partition.
Batch = dict[TopicPartition, list[Any]]
# Sync handlers do in-memory work; an async one may write to a store off the loop (it is awaited before the
# positions move, so a position always means "handled up to here").
BatchHandler = Callable[[Batch], Awaitable[None] | None]
LagHandler = Callable[[dict[TopicPartition, int]], None]
ErrorHandler = Callable[[BaseException, bool], None]


class TopicsMissing(LookupError):
    """A followed topic does not exist (yet)."""


class FollowFailed(RuntimeError):
    """The follower stopped for good (a handler raised, or a topic is missing and may not be waited for)."""


@dataclass(frozen=True)
class LogBounds:
    """What a (re)start found: the partitions, their log-start and end offsets."""

    partitions: list[TopicPartition]
    beginning: dict[TopicPartition, int]
    end: dict[TopicPartition, int]


StartPlanner = Callable[[LogBounds], Awaitable[Mapping[TopicPartition, int]]]


class TopicFollower:
    """Follow `topics`, handing each poll to `on_batch(batch)`.

    Where reading starts, at each (re)start of the consumer: `start_at(bounds)` if given (the owner keeps
    positions, e.g. in a store, and may decide to rebuild); otherwise the positions reached so far, and for a
    partition not read yet `since_ms()` (a time: records older than it are skipped) or the beginning.

    `partitions` fixes the partitions; otherwise every partition of the topics, from the metadata at each
    start. A missing topic is waited for (retry every `retry_s`) unless `wait_for_topics` is false, which
    makes it a failure. Broker errors restart the consumer after `retry_s`; any other error (a handler's)
    stops the follower: `failure` says why and the waits raise `FollowFailed`. `on_error(error, retrying)`
    hears of both. `on_lag(lags)` gets, per partition, the messages between the position and the high
    watermark (the end seen at start before the first fetch) once the reading starts and after each poll.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Sequence[str],
        on_batch: BatchHandler,
        *,
        client_role: str,
        partitions: Sequence[TopicPartition] | None = None,
        since_ms: Callable[[], int | None] = lambda: None,
        start_at: StartPlanner | None = None,
        wait_for_topics: bool = True,
        retry_s: float = 2.0,
        poll_ms: int = 500,
        max_records: int = 5000,
        on_lag: LagHandler | None = None,
        on_error: ErrorHandler | None = None,
        consumer_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._kafka = kafka
        self._topics = list(topics)
        self._on_batch = on_batch
        self._client_role = client_role
        self._fixed = sorted(partitions) if partitions is not None else None
        self._since_ms = since_ms
        self._start_at = start_at
        self._wait_for_topics = wait_for_topics
        self._retry_s = retry_s
        self._poll_ms = poll_ms
        self._max_records = max_records
        self._on_lag = on_lag
        self._on_error = on_error
        self._consumer_options = dict(consumer_options or {})
        self._positions: dict[TopicPartition, int] = {}
        self._assigned: list[TopicPartition] = []
        self._consumer: AIOKafkaConsumer | None = None  # set while reading (after the seek)
        self._progress = asyncio.Event()  # replaced after each poll, set to wake the waiters
        self._task: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()
        self.last_error: str | None = None
        self.failure: BaseException | None = None

    @property
    def positions(self) -> Mapping[TopicPartition, int]:
        """Per partition, the next offset to read: every record before it has been handled."""
        return self._positions

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._client_role}-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def wait_caught_up(self, timeout_s: float | None = None) -> None:
        """Wait for `caught_up` (TimeoutError after `timeout_s`; FollowFailed if the follower stopped)."""
        async with asyncio.timeout(timeout_s):
            while not self.caught_up.is_set():
                await self._next_progress()

    async def catch_up(self, timeout_s: float | None = None) -> None:
        """Return once every record on the topics when called has been handled.

        The positions move only after a poll's records were handed to the handler and it returned, and the
        consumer hands records out only in the loop's poll: a position at or past the end offset asked for
        here means everything before it has been handled.
        """
        async with asyncio.timeout(timeout_s):
            while True:
                self._raise_if_failed()
                consumer = self._consumer
                if consumer is not None:
                    try:
                        ends = await consumer.end_offsets(list(self._assigned))
                        break
                    except (KafkaError, OSError):
                        pass  # the loop restarts the consumer; ask the next one
                await self._next_progress()
            while not all(self._positions.get(tp, 0) >= end for tp, end in ends.items()):
                await self._next_progress()

    async def _next_progress(self) -> None:
        self._raise_if_failed()
        await self._progress.wait()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise FollowFailed(f"following {', '.join(self._topics)} stopped") from self.failure

    def _pulse(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def _run(self) -> None:
        while True:
            consumer = make_consumer(
                self._kafka, group_id=None, client_role=self._client_role, **self._consumer_options
            )
            retrying = True
            try:
                await consumer.start()
                await self._follow(consumer)
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError, TopicsMissing) as exc:
                retrying = self._wait_for_topics or not isinstance(exc, TopicsMissing)
                self._failed(exc, retrying=retrying)
            except Exception as exc:
                retrying = False
                self._failed(exc, retrying=False)
            finally:
                self._consumer = None
                with contextlib.suppress(Exception):
                    await consumer.stop()
            if not retrying:
                return
            await asyncio.sleep(self._retry_s)

    def _failed(self, exc: BaseException, *, retrying: bool) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if retrying:
            _log.warning("following topics failed; retrying", topics=self._topics, error=self.last_error)
        else:
            _log.error("following topics stopped", topics=self._topics, error=self.last_error)
            self.failure = exc
        self._pulse()
        if self._on_error is not None:
            self._on_error(exc, retrying)

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
                raise TopicsMissing(f"topic {topic} does not exist yet")
            partitions += [TopicPartition(topic, p["partition"]) for p in found[topic]["partitions"]]
        return sorted(partitions)

    async def _plan(self, consumer: AIOKafkaConsumer, bounds: LogBounds) -> dict[TopicPartition, int]:
        if self._start_at is not None:
            planned = await self._start_at(bounds)
            return {tp: planned[tp] for tp in bounds.partitions}
        positions = {tp: self._positions[tp] for tp in bounds.partitions if tp in self._positions}
        fresh = [tp for tp in bounds.partitions if tp not in positions]
        since = self._since_ms()
        if fresh and since is not None:
            found = await consumer.offsets_for_times(dict.fromkeys(fresh, since))
            for tp in fresh:
                at = found.get(tp)
                positions[tp] = at.offset if at is not None else bounds.end[tp]
        for tp in fresh:
            positions.setdefault(tp, bounds.beginning[tp])
        return positions

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        partitions = self._fixed if self._fixed is not None else await self._partitions()
        consumer.assign(partitions)
        bounds = LogBounds(
            partitions,
            await consumer.beginning_offsets(partitions),
            await consumer.end_offsets(partitions),
        )
        self._positions = await self._plan(consumer, bounds)
        for tp in partitions:
            consumer.seek(tp, self._positions[tp])
        self._assigned = partitions
        self._consumer = consumer
        targets = bounds.end
        self._polled(consumer, targets)
        while True:
            batch = await consumer.getmany(timeout_ms=self._poll_ms, max_records=self._max_records)
            if batch:
                handled = self._on_batch(batch)
                if handled is not None:
                    await handled
            # The fetch position, not the last record + 1: it also moves past offsets compaction removed.
            for tp in partitions:
                self._positions[tp] = await consumer.position(tp)
            self._polled(consumer, targets)
            self.last_error = None

    def _polled(self, consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]) -> None:
        positions = self._positions
        if self._on_lag is not None:
            highs = {tp: consumer.highwater(tp) for tp in targets}
            self._on_lag(
                {
                    tp: max(0, (targets[tp] if high is None else high) - positions[tp])
                    for tp, high in highs.items()
                }
            )
        if not self.caught_up.is_set() and all(positions[tp] >= end for tp, end in targets.items()):
            self.caught_up.set()
            _log.info("topics read to their end; following", topics=self._topics)
        self._pulse()
