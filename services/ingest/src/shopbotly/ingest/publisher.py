"""The Kafka edge: an idempotent `acks=all` producer for raw events, and the broker's health.

The producer connects in the background, so /healthz and /readyz answer while Kafka is still away.
A monitor refreshes broker metadata every `broker_check_interval_s`: `/readyz` and the publish path
follow it, so requests get 503 at once while the broker is unreachable instead of each waiting for
the publish timeout. After a failed delivery the monitor replaces the producer at once (see
`ResilientProducer`); `/readyz` is red while that replacement fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from shopbotly.common.events import RawEvent, message_headers
from shopbotly.common.health import Health
from shopbotly.common.ids import raw_event_key
from shopbotly.common.kafka import KafkaSettings, ResilientProducer
from shopbotly.common.logging import get_logger
from shopbotly.ingest import metrics

__all__ = ["PublishFailed", "RawEventPublisher"]

log = get_logger(__name__)

READY = "kafka"
# Longest wait for the monitor task to end once cancelled (the rest of the shutdown time is the flush's).
_MONITOR_STOP_S = 2.0


class PublishFailed(Exception):
    """No acknowledgement for an event: `reason` is unavailable, timeout or error."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RawEventPublisher:
    """Writes RawEvents to the raw-events topic and reports broker reachability to Health."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        health: Health,
        *,
        publish_timeout_s: float,
        check_interval_s: float,
        also_writes: Sequence[str] = (),
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._also_writes = tuple(also_writes)
        self._health = health
        self._timeout = publish_timeout_s
        self._interval = check_interval_s
        self._producer: ResilientProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._available = False
        self._ready_event = asyncio.Event()
        self._wake = asyncio.Event()
        health.set_ready(READY, False, "connecting to Kafka")
        metrics.BROKER_UP.set(0)

    @property
    def available(self) -> bool:
        return self._available and self._producer is not None

    async def start(self) -> None:
        """Start connecting and monitoring in the background; returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ingest-kafka-supervisor")

    async def wait_ready(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready_event.wait(), timeout_s)
        return self.available

    async def stop(self, timeout_s: float) -> None:
        """Stop monitoring, then flush what the producer holds and close it; returns within `timeout_s`.

        Every step is bounded and never waits for a cancelled task to finish: the monitor may be inside
        aiokafka's start or stop, which can outlast a cancel, and the flush waits for acknowledgements
        that a missing partition leader never sends.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            _, late = await asyncio.wait({task}, timeout=min(_MONITOR_STOP_S, timeout_s / 2))
            if late:
                log.warning("kafka monitor did not stop in time; left behind")
        producer, self._producer = self._producer, None
        self._set_available(False, "stopped")
        if producer is not None:
            # stop() flushes pending batches before closing the connections, bounded by what is left (and
            # not trusted to keep to it: a stop still running then is cancelled and left behind).
            left = max(deadline - loop.time(), 0.1)
            stopping = asyncio.ensure_future(producer.stop(left))
            _, late = await asyncio.wait({stopping}, timeout=left)
            if late:
                stopping.cancel()
                log.warning("kafka producer did not stop in time; left behind", timeout_s=timeout_s)

    async def publish(self, events: Sequence[RawEvent]) -> list[BaseException | None]:
        """Write events and wait for the broker's acks (bounded by the publish timeout).

        Returns one entry per event: None when acknowledged, else the failure (PublishFailed).
        """
        producer = self._producer
        if producer is None or not self._available:
            metrics.PUBLISH_FAILURES.labels("unavailable").inc(len(events))
            failure = PublishFailed("unavailable", "Kafka is unavailable")
            return [failure for _ in events]
        started = time.perf_counter()
        deliveries: list[asyncio.Future[Any] | BaseException] = []
        timed_out = False
        try:
            # One deadline for handing over and acknowledgement; the timeout never cancels aiokafka's
            # own futures (asyncio.wait leaves them alone), it only stops this request waiting.
            async with asyncio.timeout(self._timeout):
                for event in events:
                    try:
                        deliveries.append(await self._send(producer, event))
                    except KafkaError as exc:
                        deliveries.append(exc)
                waiting = [d for d in deliveries if isinstance(d, asyncio.Future)]
                if waiting:
                    await asyncio.wait(waiting)
        except TimeoutError:
            timed_out = True
        if len(deliveries) < len(events):
            deliveries += [PublishFailed("timeout", "not handed over")] * (len(events) - len(deliveries))
        results = [self._outcome(delivery) for delivery in deliveries]
        if timed_out or any(r is not None for r in results):
            # Probably the broker went away, or the producer must be replaced: look now rather than at
            # the next tick.
            self._wake.set()
        else:
            metrics.PUBLISH_DURATION.observe(time.perf_counter() - started)
        return results

    async def hand_over(
        self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[RecordMetadata]:
        """Hand one record (not a raw event) to the producer, bounded by the publish timeout; the future
        resolves on the broker's ack. PublishFailed when it cannot be handed over."""
        producer = self._producer
        if producer is None or not self._available:
            metrics.PUBLISH_FAILURES.labels("unavailable").inc()
            raise PublishFailed("unavailable", "Kafka is unavailable")
        try:
            async with asyncio.timeout(self._timeout):
                delivery: asyncio.Future[RecordMetadata] = await producer.send(
                    topic, value, key=key, headers=list(headers)
                )
        except TimeoutError:
            self._wake.set()
            metrics.PUBLISH_FAILURES.labels("timeout").inc()
            raise PublishFailed("timeout", "not handed over") from None
        except KafkaError as exc:
            self._wake.set()
            metrics.PUBLISH_FAILURES.labels("error").inc()
            raise PublishFailed("error", type(exc).__name__) from None
        return delivery

    async def send_record(
        self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> RecordMetadata:
        """Write one record and wait for its ack (hand-over and ack together bounded by the publish timeout);
        PublishFailed otherwise."""
        started = time.perf_counter()
        delivery = await self.hand_over(topic, key, value, headers)
        # The timeout never cancels aiokafka's future (asyncio.wait leaves it alone).
        await asyncio.wait([delivery], timeout=max(self._timeout - (time.perf_counter() - started), 0.01))
        failure = self._outcome(delivery)
        if failure is not None:
            self._wake.set()
            raise failure
        return delivery.result()

    def _outcome(self, delivery: asyncio.Future[Any] | BaseException) -> BaseException | None:
        if isinstance(delivery, asyncio.Future):
            if not delivery.done():
                metrics.PUBLISH_FAILURES.labels("timeout").inc()
                return PublishFailed("timeout", f"no acknowledgement within {self._timeout:g}s")
            if delivery.cancelled():
                failure: BaseException = asyncio.CancelledError()
            elif (exc := delivery.exception()) is None:
                return None
            else:
                failure = exc
        else:
            failure = delivery
        if isinstance(failure, PublishFailed):
            metrics.PUBLISH_FAILURES.labels(failure.reason).inc()
            return failure
        metrics.PUBLISH_FAILURES.labels("error").inc()
        log.warning("publish failed", error=type(failure).__name__, detail=str(failure)[:200])
        return PublishFailed("error", type(failure).__name__)

    async def _send(self, producer: ResilientProducer, event: RawEvent) -> asyncio.Future[Any]:
        """Hand the event to the producer; the returned future resolves on the broker's ack."""
        key = raw_event_key(event.tenant, event.subject or event.id)
        headers = message_headers(
            event_id=event.id, tenant=event.tenant, trace_id=event.traceid, schema=RawEvent.SCHEMA
        )
        delivery: asyncio.Future[Any] = await producer.send(
            self._topic, event.to_json(), key=key, headers=headers
        )
        return delivery

    # --- background ------------------------------------------------------------------------------

    def _set_available(self, ok: bool, detail: str = "") -> None:
        if ok != self._available:
            log.info("kafka reachability changed", available=ok, detail=detail)
        self._available = ok
        self._health.set_ready(READY, ok, detail)
        metrics.BROKER_UP.set(1 if ok else 0)
        if ok:
            self._ready_event.set()

    async def _run(self) -> None:
        await self._connect()
        while True:
            await self._check()
            self._health.beat("kafka-monitor", max_age_s=max(30.0, self._interval * 10))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()

    async def _connect(self) -> None:
        backoff = min(self._interval, 1.0)
        while True:
            # 256 KiB batches: with one request in flight per broker (idempotence), a full 16 KiB batch
            # makes every further send to that partition wait for the round trip.
            # linger 0: while that one request is in flight, the sends of concurrent webhooks pile up into
            # the next batch anyway; lingering only delays each answer, and with clients that wait for it
            # (every webhook sender) that cost throughput too: 0 ms gave 1.26x the accepted/s of 5 ms and
            # 20 ms gave 0.6x (docs/benchmarks.md, "What bounds ingest").
            producer = ResilientProducer(
                self._kafka,
                client_role="ingest",
                resets=metrics.PRODUCER_REPLACED,
                max_batch_size=256 * 1024,
                linger_ms=0,
            )
            try:
                await producer.start()
            except Exception as exc:
                self._set_available(False, f"cannot connect to Kafka: {type(exc).__name__}")
                with contextlib.suppress(Exception):
                    await producer.stop()
                self._health.beat("kafka-monitor", max_age_s=60.0)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for topic in (self._topic, *self._also_writes):
                producer.client.add_topic(topic)
            self._producer = producer
            return

    async def _check(self) -> None:
        producer = self._producer
        if producer is None:
            return
        if producer.failure is not None:
            # A delivery failed: replace the producer now (a new producer id), not at the next request.
            try:
                await asyncio.wait_for(producer.healthy(), max(self._interval * 2, 2.0))
            except Exception as exc:
                self._set_available(False, f"cannot replace the Kafka producer: {type(exc).__name__}")
                return
        try:
            updated = await asyncio.wait_for(
                producer.client.force_metadata_update(), max(self._interval * 2, 2.0)
            )
        except TimeoutError:
            updated = False
        if not updated:
            self._set_available(False, "no broker metadata: Kafka unreachable")
        elif producer.client.cluster.partitions_for_topic(self._topic) is None:
            self._set_available(False, f"topic {self._topic} does not exist")
        else:
            self._set_available(True)
