"""Idempotency-Key records of the lead API, shared by every ingest replica through one Kafka topic.

A key (`{tenant}:{Idempotency-Key}`) is bound to the body of its first record on `lead-idempotency`. Every
replica follows the topic (the shared TopicFollower) and consults what it read before publishing. A key it
has not seen is claimed by writing a record and waiting until its own follower has read that record back:
all records of a key are on one partition, so by then every earlier claim of the key has been read too,
and every replica agrees on the first one, whichever replica wrote it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.structs import RecordMetadata
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shopbotly.common.events import message_headers
from shopbotly.common.follow import Batch, TopicFollower
from shopbotly.common.health import Health
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.logging import get_logger
from shopbotly.common.topics import Topic
from shopbotly.ingest import metrics
from shopbotly.ingest.publisher import PublishFailed

__all__ = [
    "READY",
    "Binding",
    "IdempotencyIndex",
    "IdempotencyRecord",
    "LeadIdempotency",
    "RecordSender",
    "record_key",
]

log = get_logger(__name__)

READY = "idempotency-records"
SCHEMA = "shopbotly.idempotency-record/1"


class IdempotencyRecord(BaseModel):
    """One record of the topic: a claim (`stored` false) or the note that the lead was stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    event_id: str = Field(min_length=1, max_length=200)
    first_seen_ms: int = Field(ge=0)
    stored: bool = False


def record_key(tenant: str, idempotency_key: str) -> bytes:
    # Tenant names cannot contain ':' (config Name), so the first ':' separates the two.
    return f"{tenant}:{idempotency_key}".encode()


@dataclass(slots=True)
class Binding:
    """The body a key is bound to: its first record within the window."""

    fingerprint: str
    event_id: str
    first_seen_ms: int
    stored: bool


class IdempotencyIndex:
    """Keys and the body each is bound to, built from the topic's records in their order (no I/O).

    The first record of a key within the window binds it; later records with the same fingerprint can only
    add that the lead was stored; records with another fingerprint lost a race and change nothing. A binding
    expires `ttl_ms` after its first record; at most `max_entries` are held (the oldest go first).
    """

    def __init__(self, ttl_ms: int, max_entries: int) -> None:
        self.ttl_ms = ttl_ms
        self.max_entries = max_entries
        # Insertion order is first-seen order (records are applied as they were written), so the expired
        # and the oldest entries are at the front.
        self._bindings: OrderedDict[bytes, Binding] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._bindings)

    def _live(self, binding: Binding, now_ms: int) -> bool:
        return binding.first_seen_ms > now_ms - self.ttl_ms

    def get(self, key: bytes, now_ms: int) -> Binding | None:
        binding = self._bindings.get(key)
        if binding is None or self._live(binding, now_ms):
            return binding
        del self._bindings[key]
        return None

    def apply(self, key: bytes, record: IdempotencyRecord, now_ms: int) -> None:
        if record.first_seen_ms <= now_ms - self.ttl_ms:
            return  # outside the window: it binds nothing any more
        binding = self.get(key, now_ms)
        if binding is None:
            self._bindings[key] = Binding(
                record.fingerprint, record.event_id, record.first_seen_ms, record.stored
            )
            self._trim(now_ms)
        elif record.fingerprint == binding.fingerprint and record.stored:
            binding.stored = True

    def mark_stored(self, key: bytes, fingerprint: str, now_ms: int) -> None:
        binding = self.get(key, now_ms)
        if binding is not None and binding.fingerprint == fingerprint:
            binding.stored = True

    def _trim(self, now_ms: int) -> None:
        while self._bindings:
            key, oldest = next(iter(self._bindings.items()))
            if self._live(oldest, now_ms) and len(self._bindings) <= self.max_entries:
                return
            del self._bindings[key]
            if self._live(oldest, now_ms):
                self.evicted += 1
                metrics.IDEMPOTENCY_EVICTIONS.inc()


class RecordSender(Protocol):
    """The producer side ingest already has (RawEventPublisher)."""

    async def hand_over(
        self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[RecordMetadata]: ...

    async def send_record(
        self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> RecordMetadata: ...


class LeadIdempotency:
    """This replica's view of the lead-idempotency topic, and the claims it writes there."""

    def __init__(
        self,
        kafka: KafkaSettings,
        sender: RecordSender,
        health: Health,
        *,
        ttl_s: float,
        max_entries: int,
        wait_s: float,
        retry_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = kafka.topic(Topic.LEAD_IDEMPOTENCY)
        self.index = IdempotencyIndex(int(ttl_s * 1000), max_entries)
        self._sender = sender
        self._health = health
        self._wait_s = wait_s
        self._clock = clock
        self._read: dict[int, int] = {}  # partition -> next offset to read
        self._waiters: dict[int, list[tuple[int, asyncio.Future[None]]]] = {}
        self._watch: asyncio.Task[None] | None = None
        # Read from the start of the window: older records bind nothing.
        self.follower = TopicFollower(
            kafka,
            [self.topic],
            self._on_poll,
            client_role="ingest-idempotency",
            since_ms=lambda: self._now_ms() - self.index.ttl_ms,
            retry_s=retry_s,
        )
        health.set_ready(READY, False, "reading Idempotency-Key records")

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @property
    def ready(self) -> bool:
        return self.follower.caught_up.is_set()

    def start(self) -> None:
        self.follower.start()
        self._watch = asyncio.create_task(self._watch_catch_up(), name="ingest-idempotency-ready")

    async def wait_ready(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.follower.caught_up.wait(), timeout_s)
        return self.ready

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self.follower.stop()
        for waiters in self._waiters.values():
            for _, future in waiters:
                future.cancel()
        self._waiters.clear()

    async def _watch_catch_up(self) -> None:
        """Not ready until the window has been read: a replica that answered earlier could miss a binding."""
        while not self.ready:
            detail = self.follower.last_error or "reading Idempotency-Key records"
            self._health.set_ready(READY, False, detail)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.follower.caught_up.wait(), 1.0)
        self._health.set_ready(READY, True)
        log.info("idempotency records read", keys=len(self.index), topic=self.topic)

    # --- reading -----------------------------------------------------------------------------------------

    def _on_poll(self, batch: Batch) -> None:
        for tp, records in batch.items():
            self._on_batch(tp.topic, records)

    def _on_batch(self, topic: str, records: list[Any]) -> None:
        now_ms = self._now_ms()
        for r in records:
            try:
                record = IdempotencyRecord.model_validate_json(r.value)
            except (ValidationError, TypeError):
                # Only ingest writes here; a record it cannot read binds nothing (and is counted).
                metrics.IDEMPOTENCY_INVALID_RECORDS.inc()
                log.warning("unreadable idempotency record", partition=r.partition, offset=r.offset)
                continue
            if r.key is not None:
                self.index.apply(r.key, record, now_ms)
        partition = records[-1].partition
        self._read[partition] = records[-1].offset + 1
        metrics.IDEMPOTENCY_ENTRIES.set(len(self.index))
        waiters = self._waiters.get(partition)
        if waiters:
            still = []
            for offset, future in waiters:
                if offset < self._read[partition]:
                    if not future.done():
                        future.set_result(None)
                else:
                    still.append((offset, future))
            self._waiters[partition] = still

    async def _read_back(self, partition: int, offset: int, timeout_s: float) -> None:
        """Wait until the follower has applied the record at `offset` (and so every record before it)."""
        if self._read.get(partition, 0) > offset:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(partition, []).append((offset, future))
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise PublishFailed(
                "timeout", f"own idempotency record not read back within {timeout_s:g}s"
            ) from None
        finally:
            waiters = self._waiters.get(partition)
            if waiters is not None:
                self._waiters[partition] = [w for w in waiters if w[1] is not future]

    # --- writing -----------------------------------------------------------------------------------------

    def binding(self, tenant: str, idempotency_key: str) -> Binding | None:
        return self.index.get(record_key(tenant, idempotency_key), self._now_ms())

    async def claim(
        self, tenant: str, idempotency_key: str, fingerprint: str, event_id: str, trace_id: str | None
    ) -> Binding:
        """Bind the key to this body unless another body claimed it first; the binding that holds.

        Raises PublishFailed when the claim is not acknowledged or not read back within the wait.
        """
        key = record_key(tenant, idempotency_key)
        record = IdempotencyRecord(fingerprint=fingerprint, event_id=event_id, first_seen_ms=self._now_ms())
        loop = asyncio.get_running_loop()
        started = loop.time()
        headers = message_headers(event_id=event_id, tenant=tenant, trace_id=trace_id, schema=SCHEMA)
        meta = await self._sender.send_record(self.topic, key, record.model_dump_json().encode(), headers)
        left = max(self._wait_s - (loop.time() - started), 0.05)
        await self._read_back(meta.partition, meta.offset, left)
        metrics.IDEMPOTENCY_CLAIM_DURATION.observe(loop.time() - started)
        binding = self.index.get(key, self._now_ms())
        if binding is None:  # read back, then dropped at once: a window or a bound too small to hold it
            return Binding(fingerprint, event_id, record.first_seen_ms, False)
        return binding

    async def stored(self, tenant: str, idempotency_key: str, binding: Binding, trace_id: str | None) -> None:
        """Note that the bound lead is stored, here at once and for the other replicas on the topic.

        Only handed over, not awaited: if it is lost, a retry of the same body publishes the lead again under
        the same event id, which downstream absorbs.
        """
        key = record_key(tenant, idempotency_key)
        self.index.mark_stored(key, binding.fingerprint, self._now_ms())
        record = IdempotencyRecord(
            fingerprint=binding.fingerprint,
            event_id=binding.event_id,
            first_seen_ms=binding.first_seen_ms,
            stored=True,
        )
        headers = message_headers(event_id=binding.event_id, tenant=tenant, trace_id=trace_id, schema=SCHEMA)
        try:
            await self._sender.hand_over(self.topic, key, record.model_dump_json().encode(), headers)
        except PublishFailed as exc:
            log.info("stored-note not written; a retry will publish again", reason=exc.reason)
