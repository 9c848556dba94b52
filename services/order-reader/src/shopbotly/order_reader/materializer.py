"""Kafka → store: every partition of the orders and tickets topics, read by the shared `TopicFollower`.

Each replica reads all partitions and keeps a full copy, so any replica answers any key. Positions are
the offsets kept in the store, never committed to Kafka: the store is the only place they live, and each
(re)start of the follower plans from them (resume, or rebuild when they no longer describe the topics).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from shopbotly.common.follow import Batch, LogBounds, TopicFollower
from shopbotly.common.health import Health
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
        self._follower = TopicFollower(
            kafka,
            list(self._kinds),
            self._apply,
            client_role="order-reader",
            # Positions live in the store: each (re)start plans from them (and may rebuild).
            start_at=self._plan,
            retry_s=settings.startup_retry_s,
            max_records=settings.fetch_max_records,
            on_lag=self._report,
            on_error=self._failed,
            consumer_options={
                # Never jump silently: a position outside the log means the local copy no longer matches it.
                "auto_offset_reset": "none",
                # Larger fetches than the defaults: a rebuild reads the whole topic as fast as it can.
                "max_partition_fetch_bytes": 4 * 1024 * 1024,
                "fetch_max_bytes": 64 * 1024 * 1024,
            },
        )
        self._reset_reason: str | None = None
        self._still_ready = False  # a restart after a broker error resumes a caught-up table
        self._started = self._last_progress_log = 0.0
        self.catchup: CatchUp | None = None
        self.counts: dict[Kind, int] = {}

    async def _in_writer(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    def start(self, reset_reason: str | None) -> None:
        self._reset_reason = reset_reason
        self._health.set_ready(READY, False, "connecting to Kafka")
        self._health.beat(LIVE, self._settings.liveness_max_age_s)
        self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()
        # Lets a batch already handed to the store thread finish its transaction before the store closes.
        self._writer.shutdown(wait=True)

    def _failed(self, exc: BaseException, retrying: bool) -> None:
        detail = f"{type(exc).__name__}: {exc}"
        if not retrying:
            # Liveness stops beating, so the orchestrator restarts us; the store resumes from its offsets.
            self._health.set_ready(READY, False, "consumer failed")
            _log.error("order-reader consumer failed", exc_info=exc)
            return
        self._health.beat(LIVE, self._settings.liveness_max_age_s)
        self._still_ready = False
        if isinstance(exc, OffsetOutOfRangeError):
            # Our positions are outside the log: the topic was deleted and created again, or records were
            # deleted. The next start is planned again; the stored offsets then call for a rebuild.
            _log.error("positions outside the topic; planning the start again", error=str(exc))
            self._health.set_ready(READY, False, "positions outside the topic; starting again")
            self.catchup = None  # what it had read no longer counts
        else:
            # A table that was caught up stays served while the consumer restarts and resumes from the store
            # (lag is a metric, not a reason for every replica to leave the load balancer at once).
            self._still_ready = self.catchup is not None and self.catchup.latched
            if not self._still_ready:
                self._health.set_ready(READY, False, f"waiting: {detail}")
            _log.warning("order-reader cannot consume; retrying", error=detail)

    async def _plan(self, bounds: LogBounds) -> dict[TopicPartition, int]:
        """Where to start: the stored offsets if they still describe the topics, else a rebuild."""
        self._health.beat(LIVE, self._settings.liveness_max_age_s)
        reset_reason = self._reset_reason
        stored = await self._in_writer(self._store.offsets)
        end = {(tp.topic, tp.partition): o for tp, o in bounds.end.items()}
        plan = plan_start(stored, {(tp.topic, tp.partition): o for tp, o in bounds.beginning.items()}, end)
        if plan.rebuild_reason is not None and stored:
            await self._in_writer(self._store.reset)
            self._lookups.clear()
            reset_reason = plan.rebuild_reason
        if plan.rebuild_reason is not None:
            label = "reset" if reset_reason else "empty"
            self._metrics.rebuilds.labels(label).inc()
            _log.info("rebuilding the table from the topics", reason=reset_reason or plan.rebuild_reason)
        else:
            _log.info(
                "resuming from stored offsets", partitions=len(bounds.partitions), new=plan.new_partitions
            )
        self._reset_reason = None
        self.catchup = CatchUp(
            targets=end,
            start=dict(plan.offsets),
            max_lag=self._settings.ready_max_lag,
            latched=self._still_ready and plan.rebuild_reason is None,
        )
        self._set_counts(await self._in_writer(self._store.counts))
        self._started = self._last_progress_log = time.monotonic()
        return {tp: plan.offsets[(tp.topic, tp.partition)] for tp in bounds.partitions}

    def _set_counts(self, counts: dict[Kind, int]) -> None:
        self.counts = counts
        for kind, n in counts.items():
            self._metrics.table_records.labels(kind.value).set(n)

    async def _apply(self, batch: Batch) -> None:
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

    def _report(self, lags: dict[TopicPartition, int]) -> None:
        """After each poll (and once the reading starts): positions, lag, catch-up progress, readiness."""
        settings = self._settings
        catchup = self.catchup
        assert catchup is not None
        self._health.beat(LIVE, settings.liveness_max_age_s)
        for tp, position in self._follower.positions.items():
            catchup.advance((tp.topic, tp.partition), position)
        for tp, lag in lags.items():
            self._metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
        was_ready = catchup.latched
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
        now = time.monotonic()
        if ready and not was_ready:
            _log.info(
                "table caught up",
                seconds=round(now - self._started, 3),
                read=catchup.total() - catchup.remaining(),
                orders=self.counts.get(Kind.ORDER, 0),
                tickets=self.counts.get(Kind.TICKET, 0),
            )
        elif not ready and now - self._last_progress_log >= settings.progress_log_interval_s:
            self._last_progress_log = now
            _log.info(
                "catching up",
                progress=round(catchup.progress(), 4),
                remaining=catchup.remaining(),
                seconds=round(now - self._started, 1),
            )
