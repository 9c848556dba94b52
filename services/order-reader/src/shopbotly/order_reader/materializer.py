"""Kafka → store: every partition of the orders and tickets topics, assigned by hand (no consumer group).

Each replica reads all partitions and keeps a full copy, so any replica answers any key. Positions are
the offsets kept in the store, never committed to Kafka: the store is the only place they live.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from shopbotly.common.health import Health
from shopbotly.common.kafka import make_admin, make_consumer
from shopbotly.common.logging import get_logger
from shopbotly.common.topics import Topic
from shopbotly.order_reader.domain import (
    CatchUp,
    Change,
    Delete,
    Kind,
    RecordError,
    decode_record,
    latest_per_key,
    plan_start,
)
from shopbotly.order_reader.lookups import Lookups
from shopbotly.order_reader.metrics import Metrics
from shopbotly.order_reader.settings import Settings
from shopbotly.order_reader.store import ApplyResult, Store

__all__ = ["Materializer"]

_log = get_logger(__name__)
T = TypeVar("T")

READY = "table"
LIVE = "consumer"

# (kind, topic, partition, offset, key, value)
RawRecord = tuple[Kind, str, int, int, bytes | None, bytes | None]


class TopicsMissing(Exception):
    pass


@dataclass(frozen=True)
class BatchOutcome:
    result: ApplyResult
    changes: list[Change]
    consumed: Counter[tuple[str, str]]
    rejected: list[tuple[str, int, int, str]]


def decode_and_apply(store: Store, raw: Sequence[RawRecord]) -> BatchOutcome:
    """Decode a batch and write it with its partitions' next offsets (runs in the store thread)."""
    changes: list[Change] = []
    rejected: list[tuple[str, int, int, str]] = []
    consumed: Counter[tuple[str, str]] = Counter()
    offsets: dict[tuple[str, int], int] = {}
    for kind, topic, partition, offset, key, value in raw:
        offsets[(topic, partition)] = offset + 1
        try:
            change = decode_record(kind, partition, offset, key, value)
        except RecordError as exc:
            # The record stays on the topic at these coordinates; the previous state of its key is kept.
            rejected.append((topic, partition, offset, str(exc)))
            consumed[(topic, "rejected")] += 1
            continue
        consumed[(topic, "delete" if isinstance(change, Delete) else "upsert")] += 1
        changes.append(change)
    latest = latest_per_key(changes)
    return BatchOutcome(store.apply(latest, offsets), latest, consumed, rejected)


class Materializer:
    def __init__(
        self, settings: Settings, store: Store, lookups: Lookups, metrics: Metrics, health: Health
    ) -> None:
        self._settings = settings
        self._store = store
        self._lookups = lookups
        self._metrics = metrics
        self._health = health
        kafka = settings.kafka
        self._kinds = {kafka.topic(Topic.ORDERS): Kind.ORDER, kafka.topic(Topic.TICKETS): Kind.TICKET}
        # One thread owns the writer connection; batches are written strictly one after another.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="order-reader-store")
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.catchup: CatchUp | None = None
        self.counts: dict[Kind, int] = {}

    async def _in_writer(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    def start(self, reset_reason: str | None) -> None:
        self._task = asyncio.create_task(self._run(reset_reason), name="order-reader-materializer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # A consumer that failed was logged when it failed; stopping must still close everything.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._stop_consumer()
        # Lets a batch already handed to the store thread finish its transaction before the store closes.
        self._writer.shutdown(wait=True)

    async def _run(self, reset_reason: str | None) -> None:
        self._health.set_ready(READY, False, "connecting to Kafka")
        while True:
            await self._start_consuming(reset_reason)
            reset_reason = None
            try:
                await self._consume()
            except OffsetOutOfRangeError as exc:
                # Our positions are outside the log: the topic was deleted and created again, or records
                # were deleted. Plan the start again; the stored offsets then call for a rebuild.
                _log.error("positions outside the topic; planning the start again", error=str(exc))
                self._health.set_ready(READY, False, "positions outside the topic; starting again")
                await self._stop_consumer()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Liveness stops beating, so the orchestrator restarts us; the store resumes from its offsets.
                self._health.set_ready(READY, False, "consumer failed")
                _log.exception("order-reader consumer failed")
                raise

    async def _start_consuming(self, reset_reason: str | None) -> None:
        while True:
            self._health.beat(LIVE, self._settings.liveness_max_age_s)
            try:
                await self._prepare(reset_reason)
                return
            except (KafkaError, OSError, TopicsMissing) as exc:
                detail = f"{type(exc).__name__}: {exc}"
                self._health.set_ready(READY, False, f"waiting: {detail}")
                _log.warning("order-reader cannot start consuming yet", error=detail)
                await asyncio.sleep(self._settings.startup_retry_s)

    async def _stop_consumer(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _prepare(self, reset_reason: str | None) -> None:
        consumer = make_consumer(
            self._settings.kafka,
            group_id=None,
            client_role="order-reader",
            # Never jump silently: a position outside the log means the local copy no longer matches it.
            auto_offset_reset="none",
            # Larger fetches than the defaults: a rebuild reads the whole topic as fast as it can.
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        partitions = await self._partitions()
        await consumer.start()
        try:
            consumer.assign(partitions)
            beginning = await consumer.beginning_offsets(partitions)
            end = await consumer.end_offsets(partitions)
            stored = await self._in_writer(self._store.offsets)
            plan = plan_start(
                stored,
                {(tp.topic, tp.partition): o for tp, o in beginning.items()},
                {(tp.topic, tp.partition): o for tp, o in end.items()},
            )
            if plan.rebuild_reason is not None and stored:
                await self._in_writer(self._store.reset)
                self._lookups.clear()
                reset_reason = plan.rebuild_reason
            if plan.rebuild_reason is not None:
                label = "reset" if reset_reason else "empty"
                self._metrics.rebuilds.labels(label).inc()
                _log.info("rebuilding the table from the topics", reason=reset_reason or plan.rebuild_reason)
            else:
                _log.info("resuming from stored offsets", partitions=len(partitions), new=plan.new_partitions)
            for tp in partitions:
                consumer.seek(tp, plan.offsets[(tp.topic, tp.partition)])
            self.catchup = CatchUp(
                targets={(tp.topic, tp.partition): o for tp, o in end.items()},
                start=dict(plan.offsets),
                max_lag=self._settings.ready_max_lag,
            )
            counts = await self._in_writer(self._store.counts)
            self._set_counts(counts)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    async def _partitions(self) -> list[TopicPartition]:
        """Every partition of both topics, from the brokers' metadata."""
        admin = make_admin(self._settings.kafka, client_role="order-reader-admin")
        await admin.start()
        try:
            described = await admin.describe_topics(list(self._kinds))
        finally:
            await admin.close()
        found = {t["topic"]: t for t in described if t.get("error_code", 0) == 0 and t.get("partitions")}
        partitions: list[TopicPartition] = []
        for topic in self._kinds:
            if topic not in found:
                raise TopicsMissing(f"topic {topic} does not exist yet")
            partitions += [TopicPartition(topic, p["partition"]) for p in found[topic]["partitions"]]
        return sorted(partitions)

    def _set_counts(self, counts: dict[Kind, int]) -> None:
        self.counts = counts
        for kind, n in counts.items():
            self._metrics.table_records.labels(kind.value).set(n)

    async def _consume(self) -> None:
        consumer = self._consumer
        catchup = self.catchup
        assert consumer is not None and catchup is not None
        settings = self._settings
        started = time.monotonic()
        last_progress_log = started
        self._report(consumer, catchup)
        await self._update_positions(consumer, catchup)
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=settings.fetch_max_records)
            self._health.beat(LIVE, settings.liveness_max_age_s)
            if batch:
                raw: list[RawRecord] = [
                    (self._kinds[tp.topic], tp.topic, tp.partition, r.offset, r.key, r.value)
                    for tp, records in batch.items()
                    for r in records
                ]
                t0 = time.perf_counter()
                outcome: BatchOutcome = await self._in_writer(decode_and_apply, self._store, raw)
                self._metrics.apply_seconds.observe(time.perf_counter() - t0)
                # Only after the commit: a lookup in between sees the old answer, never a stale one after.
                for change in outcome.changes:
                    self._lookups.invalidate(change.kind, change.tenant, change.id)
                for (topic, result), n in outcome.consumed.items():
                    self._metrics.records.labels(topic, result).inc(n)
                for topic, partition, offset, reason in outcome.rejected:
                    _log.error(
                        "record rejected; previous state kept",
                        topic=topic,
                        partition=partition,
                        offset=offset,
                        reason=reason,
                    )
                self._set_counts(outcome.result.counts)
            await self._update_positions(consumer, catchup)
            was_ready = catchup.latched
            self._report(consumer, catchup)
            now = time.monotonic()
            if catchup.latched and not was_ready:
                _log.info(
                    "table caught up",
                    seconds=round(now - started, 3),
                    read=catchup.total() - catchup.remaining(),
                    orders=self.counts.get(Kind.ORDER, 0),
                    tickets=self.counts.get(Kind.TICKET, 0),
                )
            elif not catchup.latched and now - last_progress_log >= settings.progress_log_interval_s:
                last_progress_log = now
                _log.info(
                    "catching up",
                    progress=round(catchup.progress(), 4),
                    remaining=catchup.remaining(),
                    seconds=round(now - started, 1),
                )

    async def _update_positions(self, consumer: AIOKafkaConsumer, catchup: CatchUp) -> None:
        # The fetch position, not the last record + 1: it also moves past offsets compaction removed.
        for tp in consumer.assignment():
            catchup.advance((tp.topic, tp.partition), await consumer.position(tp))

    def _report(self, consumer: AIOKafkaConsumer, catchup: CatchUp) -> None:
        for tp in consumer.assignment():
            key = (tp.topic, tp.partition)
            highwater = consumer.highwater(tp)
            if highwater is None:
                highwater = catchup.targets.get(key, 0)
            lag = max(0, highwater - catchup.positions.get(key, 0))
            self._metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
        ready = catchup.caught_up()
        self._metrics.rebuild_progress.set(catchup.progress())
        self._metrics.catchup_remaining.set(catchup.remaining())
        self._metrics.ready.set(1 if ready else 0)
        if ready:
            self._health.set_ready(READY, True)
        else:
            self._health.set_ready(
                READY, False, f"catching up: {catchup.remaining()} messages to go ({catchup.progress():.1%})"
            )
