"""Kafka reading and writing for the operator commands: topic names, range bounds, filters, range reads.

Reads use a group-less consumer with assigned partitions: it never joins a consumer group and never
commits, so the services' groups and their offsets are untouched by anything the CLI does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import jmespath
import jmespath.exceptions
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from shopbotly.common.events import Headers
from shopbotly.common.expressions import truthy
from shopbotly.common.kafka import KafkaSettings, make_admin, make_consumer
from shopbotly.common.topics import Topic

__all__ = [
    "Bound",
    "BoundKind",
    "FilterError",
    "Gap",
    "Outgoing",
    "PartitionNotFoundError",
    "PartitionRange",
    "RangeRead",
    "Record",
    "RecordFilter",
    "TopicNotFoundError",
    "assigned_consumer",
    "clamp_range",
    "existing_topics",
    "filter_document",
    "format_time",
    "parse_bound",
    "parse_partition_offset",
    "parse_partition_offsets",
    "plan_range",
    "read_range",
    "read_topic",
    "resolve_bound",
    "resolve_topic",
    "send_all",
    "topic_partitions",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TopicNotFoundError(LookupError):
    """The named topic does not exist on the cluster."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"topic {topic!r} does not exist; check the name and SHOPBOTLY_KAFKA_TOPIC_PREFIX "
            "(`shopbotly topics describe` lists the declared topics)"
        )
        self.topic = topic


class PartitionNotFoundError(LookupError):
    """Partitions asked for that the topic does not have."""

    def __init__(self, topic: str, missing: Sequence[int], present: Sequence[int]) -> None:
        super().__init__(f"topic {topic!r} has no partition {list(missing)} (it has {list(present)})")


def resolve_topic(name: str, settings: KafkaSettings) -> str:
    """A logical name (`raw-events.v1`) gets the configured prefix; any other name is a full name."""
    name = name.strip()
    if name in {t.value for t in Topic}:
        return settings.topic(Topic(name))
    return name


class BoundKind(StrEnum):
    OFFSET = "offset"
    TIME = "time"
    EARLIEST = "earliest"
    LATEST = "latest"


@dataclass(frozen=True)
class Bound:
    """One end of a range: an offset (the same in every partition), a time (epoch ms), or a log end."""

    kind: BoundKind
    value: int = 0

    def __str__(self) -> str:
        if self.kind is BoundKind.OFFSET:
            return f"offset {self.value}"
        if self.kind is BoundKind.TIME:
            return format_time(self.value)
        return self.kind.value


def format_time(epoch_ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=epoch_ms)).isoformat(timespec="milliseconds")


def parse_bound(text: str) -> Bound:
    """`123` (offset), `2024-05-01T10:00:00Z` / `2024-05-01` (ISO 8601, no zone = UTC), earliest, latest."""
    value = text.strip()
    lowered = value.lower()
    if lowered == "earliest":
        return Bound(BoundKind.EARLIEST)
    if lowered == "latest":
        return Bound(BoundKind.LATEST)
    if value.isdigit():
        return Bound(BoundKind.OFFSET, int(value))
    if value.startswith("-") and value[1:].isdigit():
        raise ValueError(f"{text!r}: an offset cannot be negative")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an offset (a non-negative integer), an ISO 8601 time "
            "(e.g. 2024-05-01T10:00:00Z or 2024-05-01) or earliest/latest"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    epoch_ms = (moment - _EPOCH) // timedelta(milliseconds=1)
    if epoch_ms < 0:
        raise ValueError(f"{text!r} is before 1970-01-01")
    return Bound(BoundKind.TIME, epoch_ms)


def parse_partition_offset(text: str) -> tuple[int, int]:
    """`PARTITION:OFFSET`, both non-negative integers."""
    partition, sep, offset = text.strip().partition(":")
    if not sep or not partition.strip().isdigit() or not offset.strip().isdigit():
        raise ValueError(f"{text!r} is not PARTITION:OFFSET (e.g. 0:42)")
    return int(partition), int(offset)


def parse_partition_offsets(text: str) -> list[tuple[int, int]]:
    """A comma-separated list of `PARTITION:OFFSET`, e.g. `0:12,2:7`; duplicates are dropped, order kept."""
    parsed = [parse_partition_offset(part) for part in text.split(",") if part.strip()]
    if not parsed:
        raise ValueError("no PARTITION:OFFSET given (e.g. 0:12,2:7)")
    return list(dict.fromkeys(parsed))


@dataclass(frozen=True)
class Record:
    """One message as read from a topic: bytes as on the wire, plus where it was."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_consumer(cls, message: ConsumerRecord[Any, Any]) -> Record:
        return cls(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            timestamp_ms=message.timestamp,
            key=message.key,
            value=message.value,
            headers=tuple((k, v or b"") for k, v in message.headers or ()),
        )

    @property
    def coordinates(self) -> str:
        """`topic/partition/offset`: the form of the `replayed_from` and `redriven_from` headers."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def key_text(self) -> str | None:
        return None if self.key is None else self.key.decode("utf-8", "replace")

    def header(self, name: str) -> str | None:
        """The last value of a header, as text; None when absent."""
        found: bytes | None = None
        for k, v in self.headers:
            if k == name:
                found = v
        return None if found is None else found.decode("utf-8", "replace")

    def header_dict(self) -> dict[str, str]:
        return {k: v.decode("utf-8", "replace") for k, v in self.headers}

    def json_value(self) -> Any:
        """The value decoded as JSON; None for a tombstone or a value that is not JSON."""
        if self.value is None:
            return None
        try:
            return orjson.loads(self.value)
        except orjson.JSONDecodeError:
            return None


def filter_document(record: Record) -> dict[str, Any]:
    """What a `--filter` JMESPath expression sees for one message (docs/cli.md, "Filter documents")."""
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "key": record.key_text,
        "headers": record.header_dict(),
        "value": record.json_value(),
    }


class FilterError(ValueError):
    """A filter expression that does not parse, or that failed on one message."""


@dataclass(frozen=True)
class RecordFilter:
    """A compiled JMESPath expression over `filter_document`; a message matches when the result is true."""

    expression: str
    _compiled: Any = field(repr=False, compare=False)

    @classmethod
    def compile(cls, expression: str) -> RecordFilter:
        try:
            return cls(expression, jmespath.compile(expression))
        except jmespath.exceptions.JMESPathError as exc:
            raise FilterError(f"invalid JMESPath filter {expression!r}: {exc}") from None

    def matches(self, record: Record) -> bool:
        try:
            return truthy(self._compiled.search(filter_document(record)))
        except jmespath.exceptions.JMESPathError as exc:
            raise FilterError(f"filter failed on {record.coordinates}: {exc}") from None


@dataclass(frozen=True)
class PartitionRange:
    """Offsets `[start, stop)` of one partition."""

    partition: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return max(0, self.stop - self.start)


def resolve_bound(bound: Bound, *, beginning: int, end: int, offset_for_time: int | None = None) -> int:
    """The offset a bound means in one partition. A time with no message at or after it means the end."""
    if bound.kind is BoundKind.OFFSET:
        return bound.value
    if bound.kind is BoundKind.EARLIEST:
        return beginning
    if bound.kind is BoundKind.LATEST:
        return end
    return end if offset_for_time is None else offset_for_time


def clamp_range(start: int, stop: int, *, beginning: int, end: int) -> tuple[int, int]:
    """`[start, stop)` limited to the offsets the partition still holds; empty when stop <= start."""
    lo = min(max(start, beginning), end)
    hi = min(max(stop, lo), end)
    return lo, hi


@asynccontextmanager
async def assigned_consumer(settings: KafkaSettings, *, client_role: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer without a group (group_id=None): assign partitions to it; it commits nothing."""
    consumer = make_consumer(settings, group_id=None, client_role=client_role)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def existing_topics(settings: KafkaSettings, names: Iterable[str]) -> dict[str, list[int]]:
    """The partitions of each named topic that exists; topics that do not exist are left out."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    admin = make_admin(settings, client_role="cli")
    await admin.start()
    try:
        described = await admin.describe_topics(wanted)
    finally:
        await admin.close()
    return {
        t["topic"]: sorted(p["partition"] for p in t["partitions"])
        for t in described
        if t.get("error_code", 0) == 0 and t["partitions"]
    }


async def topic_partitions(settings: KafkaSettings, topic: str) -> list[int]:
    found = await existing_topics(settings, [topic])
    if topic not in found:
        raise TopicNotFoundError(topic)
    return found[topic]


async def plan_range(
    consumer: AIOKafkaConsumer, topic: str, partitions: Sequence[int], start: Bound, stop: Bound
) -> list[PartitionRange]:
    """Per partition, the offsets `[start, stop)` the bounds mean now (times through offsets_for_times)."""
    tps = [TopicPartition(topic, p) for p in partitions]
    beginning: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
    end: dict[TopicPartition, int] = await consumer.end_offsets(tps)

    async def offsets_at(bound: Bound) -> dict[TopicPartition, int | None]:
        if bound.kind is not BoundKind.TIME:
            return {}
        found = await consumer.offsets_for_times({tp: bound.value for tp in tps})
        return {tp: (None if hit is None else hit.offset) for tp, hit in found.items()}

    start_at, stop_at = await offsets_at(start), await offsets_at(stop)
    ranges = []
    for tp in tps:
        lo = resolve_bound(start, beginning=beginning[tp], end=end[tp], offset_for_time=start_at.get(tp))
        hi = resolve_bound(stop, beginning=beginning[tp], end=end[tp], offset_for_time=stop_at.get(tp))
        lo, hi = clamp_range(lo, hi, beginning=beginning[tp], end=end[tp])
        ranges.append(PartitionRange(tp.partition, lo, hi))
    return ranges


@dataclass(frozen=True)
class Gap:
    """A partition whose range ended early: no message came from `position` on (compaction, slow broker)."""

    partition: int
    position: int
    stop: int

    def __str__(self) -> str:
        return (
            f"partition {self.partition}: no messages from offset {self.position} to {self.stop} "
            "(removed by compaction or retention, or the broker did not answer in time)"
        )


@dataclass
class RangeRead:
    """Reads planned ranges of one topic in offset order per partition; `gaps`: ranges that ended early."""

    consumer: AIOKafkaConsumer
    topic: str
    ranges: Sequence[PartitionRange]
    idle_s: float = 10.0
    gaps: list[Gap] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(r.size for r in self.ranges)

    async def records(self) -> AsyncIterator[Record]:
        active = {TopicPartition(self.topic, r.partition): r for r in self.ranges if r.size > 0}
        if not active:
            return
        self.consumer.assign(list(active))
        for tp, r in active.items():
            self.consumer.seek(tp, r.start)
        loop = asyncio.get_running_loop()
        last_seen = dict.fromkeys(active, loop.time())
        while active:
            batch = await self.consumer.getmany(*active, timeout_ms=500)
            now = loop.time()
            for tp, messages in batch.items():
                wanted = active.get(tp)
                if wanted is None or not messages:
                    continue
                last_seen[tp] = now
                for message in messages:
                    if message.offset >= wanted.stop:
                        break
                    if message.offset >= wanted.start:
                        yield Record.from_consumer(message)
            for tp in list(active):
                position = await self.consumer.position(tp)
                if position >= active[tp].stop:
                    del active[tp]
                elif now - last_seen[tp] > self.idle_s:
                    self.gaps.append(Gap(tp.partition, position, active[tp].stop))
                    del active[tp]
                else:
                    continue
                self.consumer.pause(tp)


async def read_range(
    settings: KafkaSettings,
    topic: str,
    *,
    start: Bound,
    stop: Bound,
    partitions: Sequence[int] | None = None,
    client_role: str = "cli",
) -> tuple[list[Record], list[PartitionRange], list[Gap]]:
    """Every message of `topic` between the bounds, in offset order per partition (partitions in turn)."""
    chosen = partitions if partitions is not None else await topic_partitions(settings, topic)
    async with assigned_consumer(settings, client_role=client_role) as consumer:
        ranges = await plan_range(consumer, topic, chosen, start, stop)
        reader = RangeRead(consumer, topic, ranges)
        records = [r async for r in reader.records()]
    records.sort(key=lambda r: (r.partition, r.offset))
    return records, ranges, reader.gaps


async def read_topic(
    settings: KafkaSettings, topic: str, *, client_role: str = "cli"
) -> tuple[list[Record], list[PartitionRange], list[Gap]]:
    """Everything `topic` holds now (its end offsets when the read starts)."""
    return await read_range(
        settings,
        topic,
        start=Bound(BoundKind.EARLIEST),
        stop=Bound(BoundKind.LATEST),
        client_role=client_role,
    )


@dataclass(frozen=True)
class Outgoing:
    """A message to publish, and the record it comes from."""

    source: Record
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    partition: int | None = None


async def send_all(
    producer: AIOKafkaProducer,
    messages: Iterable[Outgoing],
    *,
    window: int = 500,
    on_done: Callable[[Outgoing, BaseException | None], None],
) -> None:
    """Publish in order, at most `window` unacknowledged at once; `on_done` gets each message's outcome.

    The producer is idempotent with acks=all (make_producer), so per-partition order is the send order.
    """
    pending: list[tuple[Outgoing, asyncio.Future[Any]]] = []

    async def drain() -> None:
        for message, future in pending:
            try:
                await future
            except Exception as exc:
                on_done(message, exc)
            else:
                on_done(message, None)
        pending.clear()

    for message in messages:
        try:
            future = await producer.send(
                message.topic,
                value=message.value,
                key=message.key,
                headers=message.headers,
                partition=message.partition,
            )
        except Exception as exc:
            on_done(message, exc)
            continue
        pending.append((message, future))
        if len(pending) >= window:
            await drain()
    await drain()
