"""The idempotency ledger: command ids already applied, with the CRM ids they produced.

Kept on the compacted crm-ledger topic (key = command id). Each replica reads the whole topic at start,
before it consumes any command, and keeps tailing it, so a partition taken over from another replica
finds everything that replica applied (the engine waits for the tail to reach the topic's end before it
starts on newly assigned partitions). A tombstone (null value) removes an id: that is how an operator
lets a command be applied again.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from shopbotly.common.events import Headers, LedgerEntry
from shopbotly.common.kafka import KafkaSettings, ResilientProducer, make_admin, make_consumer
from shopbotly.common.logging import get_logger
from shopbotly.common.topics import Topic

__all__ = ["Ledger"]

log = get_logger(__name__)


class Ledger:
    def __init__(self, kafka: KafkaSettings, producer: ResilientProducer) -> None:
        self.topic = kafka.topic(Topic.CRM_LEDGER)
        self._kafka = kafka
        self._producer = producer
        self._applied: dict[str, dict[str, str]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    def __len__(self) -> int:
        return len(self._applied)

    @property
    def failure(self) -> BaseException | None:
        """Why tailing stopped, if it did (the writer must not go on without the ledger)."""
        return self._failure

    def get(self, command_id: str) -> dict[str, str] | None:
        """The CRM ids of an applied command, or None if it was not applied."""
        return self._applied.get(command_id)

    async def start(self, *, timeout_s: float) -> None:
        """Read the ledger from the beginning to its current end, then keep tailing it."""
        # The tail is not latency-sensitive (only a catch-up on assignment waits for it): fetch in
        # batches rather than once for every marker this replica itself just wrote.
        consumer = make_consumer(
            self._kafka,
            group_id=None,
            client_role="crm-writer-ledger",
            fetch_min_bytes=16 * 1024,
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        self._consumer = consumer
        partitions = await _partition_ids(self._kafka, self.topic)
        if not partitions:
            raise RuntimeError(f"ledger topic {self.topic} does not exist (create topics first)")
        self._partitions = [TopicPartition(self.topic, p) for p in partitions]
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._tail(), name="ledger-tail")
        await self.caught_up(timeout_s=timeout_s)
        log.info("ledger restored", entries=len(self._applied), topic=self.topic)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def caught_up(self, *, timeout_s: float) -> None:
        """Wait until everything on the ledger now (from any replica) has been read."""
        assert self._consumer is not None
        end = await self._consumer.end_offsets(self._partitions)
        async with asyncio.timeout(timeout_s):
            while True:
                if self._failure is not None:
                    raise RuntimeError("ledger tail failed") from self._failure
                if all(self._positions.get(tp, 0) >= end[tp] for tp in self._partitions):
                    return
                event = self._progress
                await event.wait()

    async def _tail(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                for records in batch.values():
                    for r in records:
                        if r.key is None:
                            continue
                        command_id = r.key.decode()
                        if r.value is None:
                            self._applied.pop(command_id, None)
                            continue
                        try:
                            entry = LedgerEntry.from_json(r.value)
                        except ValueError:
                            log.warning(
                                "unreadable ledger record skipped", offset=r.offset, partition=r.partition
                            )
                            continue
                        self._applied[command_id] = dict(entry.crm_ids)
                for tp in self._partitions:
                    self._positions[tp] = await consumer.position(tp)
                self._progress.set()
                self._progress = asyncio.Event()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._failure = exc
            self._progress.set()
            raise

    async def record(self, entry: LedgerEntry, *, headers: Headers) -> None:
        """Publish an applied marker and wait for the broker's acknowledgement.

        Remembered at once: a write that follows in this process must already see it. If the publish
        fails the caller retries it; if the process dies first, the command is applied again on replay
        (at-least-once), which the connectors' upsert semantics absorb.
        """
        self._applied[entry.command_id] = dict(entry.crm_ids)
        await self._producer.send_and_wait(
            self.topic, entry.to_json(), key=entry.command_id.encode(), headers=headers
        )


async def _partition_ids(kafka: KafkaSettings, topic: str) -> list[int]:
    admin = make_admin(kafka, client_role="crm-writer-ledger-admin")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for t in described:
        if t.get("topic") == topic and t.get("error_code", 0) == 0:
            return sorted(p["partition"] for p in t["partitions"])
    return []
