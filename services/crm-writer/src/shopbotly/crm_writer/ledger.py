"""The idempotency ledger: command ids already applied, with the CRM ids they produced.

Kept on the compacted crm-ledger topic (key = command id). Each replica reads the whole topic at start,
before it consumes any command, and keeps tailing it (the shared `TopicFollower`), so a partition taken
over from another replica finds everything that replica applied (the engine waits for the tail to reach
the topic's end before it starts on newly assigned partitions). A tombstone (null value) removes an id:
that is how an operator lets a command be applied again.

What stays in memory is bounded per id (docs/architecture.md): the position of each id's record on the
topic (`AppliedIndex`, about 17 bytes an id), the CRM ids of the most recent `recent` ids, and the ids this
process recorded that the tail has not read back yet. A lookup of an older id reads its record back from
the topic (by offset) to confirm the key and return its CRM ids.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from shopbotly.common.events import Headers, LedgerEntry
from shopbotly.common.follow import Batch, FollowFailed, TopicFollower, TopicsMissing
from shopbotly.common.kafka import KafkaSettings, ResilientProducer, make_consumer
from shopbotly.common.logging import get_logger
from shopbotly.common.topics import Topic
from shopbotly.crm_writer.applied import AppliedIndex

__all__ = ["RECENT_IDS", "Ledger"]

log = get_logger(__name__)

# The CRM ids of this many of the newest applied ids stay in memory (about 0.7 KiB each): a command repeated
# soon after it was applied (a restart's replay) is answered without reading the topic.
RECENT_IDS = 8192


class Ledger:
    def __init__(
        self, kafka: KafkaSettings, producer: ResilientProducer, *, recent: int = RECENT_IDS
    ) -> None:
        self.topic = kafka.topic(Topic.CRM_LEDGER)
        self._kafka = kafka
        self._producer = producer
        self._index = AppliedIndex()
        # The CRM ids of the newest ids read (a lookup of one of them needs no read of the topic).
        self._recent: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._recent_limit = recent
        # Recorded by this process, not yet read back by the tail: not in the index yet.
        self._unread: dict[str, dict[str, str]] = {}
        # Ids removed by a tombstone, at its offset: a record of the id before it no longer counts.
        self._removed: dict[str, tuple[int, int]] = {}
        self._reader = _RecordReader(kafka)
        self._follower: TopicFollower | None = None
        self.reads = 0  # records read back from the topic to answer a lookup

    def __len__(self) -> int:
        """Applied ids known (ledger records indexed, plus ids recorded but not read back yet)."""
        return len(self._index) + len(self._unread)

    @property
    def failure(self) -> BaseException | None:
        """Why tailing stopped, if it did (the writer must not go on without the ledger)."""
        return self._follower.failure if self._follower is not None else None

    async def get(self, command_id: str) -> dict[str, str] | None:
        """The CRM ids of an applied command, or None if it was not applied."""
        found = self._unread.get(command_id)
        if found is None:
            found = self._recent.get(command_id)
        if found is not None:
            return found
        removed = self._removed.get(command_id)
        for partition, offset in self._index.places(command_id):
            if removed is not None and removed[0] == partition and removed[1] > offset:
                continue  # a record from before the id's tombstone
            self.reads += 1
            marker = await self._reader.read(TopicPartition(self.topic, partition), offset)
            if marker is not None and marker[0] == command_id:
                return dict(marker[1])
        return None

    def _remember(self, command_id: str, crm_ids: dict[str, str]) -> None:
        recent = self._recent
        recent[command_id] = crm_ids
        recent.move_to_end(command_id)
        while len(recent) > self._recent_limit:
            recent.popitem(last=False)

    def _forget(self, command_id: str, partition: int, offset: int) -> None:
        self._recent.pop(command_id, None)
        self._unread.pop(command_id, None)
        self._removed[command_id] = (partition, offset)

    async def start(self, *, timeout_s: float) -> None:
        """Read the ledger from the beginning to its current end, then keep tailing it."""
        # Built here, not in __init__: aiokafka clients bind to the running loop.
        self._follower = TopicFollower(
            self._kafka,
            [self.topic],
            self._apply_batch,
            client_role="crm-writer-ledger",
            wait_for_topics=False,
            poll_ms=200,
            # The tail is not latency-sensitive (only a catch-up on assignment waits for it): fetch in
            # batches rather than once for every marker this replica itself just wrote.
            consumer_options={"fetch_min_bytes": 16 * 1024, "fetch_max_wait_ms": 100},
        )
        self._follower.start()
        try:
            await self.caught_up(timeout_s=timeout_s)
        except RuntimeError as exc:
            if isinstance(exc.__cause__, TopicsMissing):
                missing = f"ledger topic {self.topic} does not exist (create topics first)"
                raise RuntimeError(missing) from None
            raise
        log.info("ledger restored", entries=len(self), topic=self.topic, index_bytes=self._index.nbytes)

    async def stop(self) -> None:
        if self._follower is not None:
            await self._follower.stop()
        await self._reader.stop()

    async def caught_up(self, *, timeout_s: float) -> None:
        """Wait until everything on the ledger now (from any replica) has been read."""
        assert self._follower is not None
        try:
            await self._follower.catch_up(timeout_s)
        except FollowFailed as exc:
            raise RuntimeError("ledger tail failed") from exc.__cause__

    def _apply_batch(self, batch: Batch) -> None:
        for records in batch.values():
            for r in records:
                self._apply(r.partition, r.offset, r.key, r.value)

    def _apply(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """One ledger record read by the tail."""
        if key is None:
            return
        command_id = key.decode()
        if value is None:
            self._forget(command_id, partition, offset)
            return
        try:
            entry = LedgerEntry.from_json(value)
        except ValueError:
            log.warning("unreadable ledger record skipped", offset=offset, partition=partition)
            return
        self._index.add(partition, command_id, offset)
        self._unread.pop(command_id, None)
        self._remember(command_id, dict(entry.crm_ids))

    async def record(self, entry: LedgerEntry, *, headers: Headers) -> None:
        """Publish an applied marker and wait for the broker's acknowledgement.

        Remembered at once: a write that follows in this process must already see it (until the tail
        reads the record back and indexes it). If the publish fails the caller retries it; if the process
        dies first, the command is applied again on replay (at-least-once), which the connectors' upsert
        semantics absorb.
        """
        self._unread[entry.command_id] = dict(entry.crm_ids)
        await self._producer.send_and_wait(
            self.topic, entry.to_json(), key=entry.command_id.encode(), headers=headers
        )


class _RecordReader:
    """Reads single ledger records back by offset (lookups of ids older than the recent ones).

    A group-less consumer assigned one partition at a time. The records fetched after the one asked for are
    kept (up to `keep`): a replay looks up ids in about the order they were applied, so the next lookups
    mostly find their record here without a fetch.
    """

    def __init__(self, kafka: KafkaSettings, *, keep: int = 4096, retry_cap_s: float = 5.0) -> None:
        self._kafka = kafka
        self._keep = keep
        self._retry_cap_s = retry_cap_s
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        # (partition, offset) -> (command id, CRM ids), or None where there is no applied marker.
        self._cache: OrderedDict[tuple[int, int], tuple[str, dict[str, str]] | None] = OrderedDict()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def read(self, tp: TopicPartition, offset: int) -> tuple[str, dict[str, str]] | None:
        """The command id and CRM ids of the marker at `offset`, or None if there is none there (compacted
        away, a tombstone, unreadable).

        A broker failure is retried until it answers (the command waits, as its outcome's publish would).
        """
        async with self._lock:
            delay = 0.2
            while True:
                if (tp.partition, offset) in self._cache:
                    return self._cache[(tp.partition, offset)]
                try:
                    return await self._fetch(tp, offset)
                except (KafkaError, OSError) as exc:
                    log.warning("ledger read failed, retrying", partition=tp.partition, error=repr(exc))
                    await self.stop()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._retry_cap_s)

    async def _fetch(self, tp: TopicPartition, offset: int) -> tuple[str, dict[str, str]] | None:
        consumer = self._consumer
        if consumer is None:
            consumer = make_consumer(self._kafka, group_id=None, client_role="crm-writer-ledger-reader")
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
        if consumer.assignment() != {tp}:
            consumer.assign([tp])
        consumer.seek(tp, offset)
        while True:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=self._keep)
            records = batch.get(tp, [])
            if records:
                break
            end = (await consumer.end_offsets([tp]))[tp]
            if offset >= end:
                return None
        found: tuple[str, dict[str, str]] | None = None
        for r in records:
            marker: tuple[str, dict[str, str]] | None = None
            if r.value is not None and r.key is not None:
                try:
                    marker = (r.key.decode(), dict(LedgerEntry.from_json(r.value).crm_ids))
                except ValueError:
                    marker = None
            self._cache[(tp.partition, r.offset)] = marker
            if r.offset == offset:
                found = marker
        self._cache[(tp.partition, offset)] = found  # also when the record there was compacted away
        while len(self._cache) > self._keep:
            self._cache.popitem(last=False)
        return found
