"""The one topic-follow loop on the real broker: read to the end, follow, catch up, restart, fail loudly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from shopbotly.common.follow import Batch, FollowFailed, LogBounds, TopicFollower, TopicsMissing
from shopbotly.common.kafka import KafkaSettings, make_producer
from shopbotly.common.topics import Topic

pytestmark = pytest.mark.integration


@pytest.fixture
async def producer(kafka_settings: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    p = make_producer(kafka_settings, client_role="test-follow")
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def send(producer: AIOKafkaProducer, topic: str, n: int, *, start: int = 0) -> None:
    for i in range(start, start + n):
        await producer.send_and_wait(topic, b"v%d" % i, key=b"k%d" % i, partition=i % 3)


async def test_reads_to_the_end_then_follows_and_catch_up_waits_for_a_slow_store(
    kafka_settings: KafkaSettings, producer: AIOKafkaProducer
) -> None:
    topic = kafka_settings.topic(Topic.ORDERS)
    await send(producer, topic, 30)
    stored: list[bytes] = []
    lags: list[dict[TopicPartition, int]] = []

    async def write(batch: Batch) -> None:
        await asyncio.sleep(0.05)  # a store written off the loop: positions must not move before it returns
        stored.extend(r.value for records in batch.values() for r in records)

    follower = TopicFollower(kafka_settings, [topic], write, client_role="test-follow", on_lag=lags.append)
    follower.start()
    try:
        await follower.wait_caught_up(timeout_s=30)
        assert sorted(stored) == sorted(b"v%d" % i for i in range(30))
        assert lags[0] == {TopicPartition(topic, p): 10 for p in range(3)}  # before the first poll
        assert lags[-1] == {TopicPartition(topic, p): 0 for p in range(3)}
        await send(producer, topic, 30, start=30)
        await follower.catch_up(timeout_s=30)
        # Everything written before catch_up() was handled, each record once.
        assert sorted(stored) == sorted(b"v%d" % i for i in range(60))
        assert dict(follower.positions) == {TopicPartition(topic, p): 20 for p in range(3)}
    finally:
        await follower.stop()


async def test_start_positions_are_planned_again_after_the_consumer_fails(
    kafka_settings: KafkaSettings, producer: AIOKafkaProducer
) -> None:
    topic = kafka_settings.topic(Topic.ORDERS)
    await send(producer, topic, 9)  # 3 records a partition
    plans: list[LogBounds] = []
    errors: list[tuple[type[BaseException], bool]] = []
    seen: list[tuple[int, int]] = []

    async def start_at(bounds: LogBounds) -> Mapping[TopicPartition, int]:
        plans.append(bounds)
        if len(plans) == 1:  # a stored position past the end: the topic was recreated under the reader
            return {tp: 99 if tp.partition == 0 else 2 for tp in bounds.partitions}
        return {tp: 1 for tp in bounds.partitions}

    def handle(batch: Batch) -> None:
        seen.extend((r.partition, r.offset) for records in batch.values() for r in records)

    follower = TopicFollower(
        kafka_settings,
        [topic],
        handle,
        client_role="test-follow",
        start_at=start_at,
        retry_s=0.1,
        on_error=lambda exc, retrying: errors.append((type(exc), retrying)),
        consumer_options={"auto_offset_reset": "none"},
    )
    follower.start()
    try:
        async with asyncio.timeout(30):
            while len(plans) < 2:  # the restart is what is waited for
                await asyncio.sleep(0.05)
        await follower.catch_up(timeout_s=30)
        assert errors and errors[0] == (OffsetOutOfRangeError, True)
        assert len(plans) >= 2
        assert plans[-1].end == {TopicPartition(topic, p): 3 for p in range(3)}
        # The last plan's positions hold: offsets 1 and 2 of every partition, nothing before.
        assert {(p, o) for p in range(3) for o in (1, 2)} <= set(seen)
        assert all(o >= 1 for _, o in seen)
    finally:
        await follower.stop()


async def test_a_missing_topic_is_waited_for_or_fails_as_asked(
    kafka_settings: KafkaSettings, producer: AIOKafkaProducer
) -> None:
    missing = f"{kafka_settings.topic_prefix}never-created"
    strict = TopicFollower(
        kafka_settings, [missing], lambda b: None, client_role="test-follow", wait_for_topics=False
    )
    patient = TopicFollower(kafka_settings, [missing], lambda b: None, client_role="test-follow", retry_s=0.1)
    strict.start()
    patient.start()
    try:
        with pytest.raises(FollowFailed) as failed:
            await strict.catch_up(timeout_s=30)
        assert isinstance(failed.value.__cause__, TopicsMissing)
        with pytest.raises(TimeoutError):
            await patient.wait_caught_up(timeout_s=1.0)
        assert patient.failure is None
        assert patient.last_error is not None and "does not exist" in patient.last_error
    finally:
        await strict.stop()
        await patient.stop()


async def test_a_failing_handler_stops_the_follower_and_every_wait_says_why(
    kafka_settings: KafkaSettings, producer: AIOKafkaProducer
) -> None:
    topic = kafka_settings.topic(Topic.TICKETS)
    await send(producer, topic, 3)
    errors: list[tuple[BaseException, bool]] = []

    def broken(batch: Batch) -> None:
        raise ValueError("cannot store this")

    follower = TopicFollower(
        kafka_settings,
        [topic],
        broken,
        client_role="test-follow",
        on_error=lambda exc, retrying: errors.append((exc, retrying)),
    )
    follower.start()
    try:
        with pytest.raises(FollowFailed) as failed:
            await follower.wait_caught_up(timeout_s=30)
        assert isinstance(failed.value.__cause__, ValueError)
        assert [(str(e), r) for e, r in errors] == [("cannot store this", False)]
        with pytest.raises(FollowFailed):
            await follower.catch_up(timeout_s=5)
    finally:
        await follower.stop()
