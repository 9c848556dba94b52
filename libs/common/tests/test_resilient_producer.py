"""With the real broker: a producer whose sequence numbers no longer match the broker's recovers.

The state is the one a broker restart leaves behind (aio-libs/aiokafka#1017): a batch was numbered, then
failed (it expired while its partition had no leader), so the broker's next expected number for that
partition is below the producer's. It is made here by advancing the producer's number for one partition,
as the lost batch did; the broker's refusal that follows is real.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber
from prometheus_client import CollectorRegistry, Counter

from shopbotly.common.kafka import KafkaSettings, ResilientProducer, make_consumer, make_producer
from shopbotly.common.topics import Topic

pytestmark = pytest.mark.integration


def _lose_a_numbered_batch(producer: AIOKafkaProducer, tp: TopicPartition) -> None:
    producer._txn_manager.increment_sequence_number(tp, 3)


async def _values(settings: KafkaSettings, topic: str, partition: int, count: int) -> list[bytes]:
    consumer = make_consumer(settings, group_id=None, client_role="test")
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    await consumer.start()
    values: list[bytes] = []
    try:
        await consumer.seek_to_beginning(tp)
        async with asyncio.timeout(20):
            while len(values) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    values += [r.value for r in records]
        assert (await consumer.getmany(timeout_ms=500)) == {}, "more records than expected"
    finally:
        await consumer.stop()
    return values


async def test_aiokafka_alone_keeps_failing_after_a_lost_numbered_batch(
    kafka_settings: KafkaSettings,
) -> None:
    """The defect the wrapper exists for, shown on the plain producer: every later send to the partition
    is refused, not just the first."""
    topic = kafka_settings.topic(Topic.RAW_EVENTS)
    producer = make_producer(kafka_settings, client_role="test")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before", partition=0)
        _lose_a_numbered_batch(producer, TopicPartition(topic, 0))
        for attempt in range(3):
            with pytest.raises(OutOfOrderSequenceNumber):
                await producer.send_and_wait(topic, b"attempt %d" % attempt, partition=0)
    finally:
        await producer.stop()


async def test_the_producer_is_replaced_after_a_failed_delivery_and_the_retry_lands(
    kafka_settings: KafkaSettings,
) -> None:
    topic = kafka_settings.topic(Topic.RAW_EVENTS)
    replaced = Counter("test_producer_replacements_total", "replacements", registry=CollectorRegistry())
    producer = ResilientProducer(kafka_settings, client_role="test", resets=replaced)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before", partition=0)
        await producer.send_and_wait(topic, b"other partition", partition=1)
        first = await producer.healthy()
        _lose_a_numbered_batch(first, TopicPartition(topic, 0))

        with pytest.raises(OutOfOrderSequenceNumber):
            await producer.send_and_wait(topic, b"refused", partition=0)
        assert isinstance(producer.failure, OutOfOrderSequenceNumber)

        # The caller retries as it would after any failed send: it lands, through a new producer.
        await producer.send_and_wait(topic, b"retried", partition=0)
        await producer.send_and_wait(topic, b"after", partition=0)
        assert producer.failure is None
        assert producer.replaced == 1 and replaced._value.get() == 1
        assert await producer.healthy() is not first
    finally:
        await producer.stop()

    assert await _values(kafka_settings, topic, 0, 3) == [b"before", b"retried", b"after"]
    assert await _values(kafka_settings, topic, 1, 1) == [b"other partition"]


async def test_concurrent_failures_replace_the_producer_once(kafka_settings: KafkaSettings) -> None:
    topic = kafka_settings.topic(Topic.RAW_EVENTS)
    producer = ResilientProducer(kafka_settings, client_role="test", linger_ms=20)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before", partition=0)
        _lose_a_numbered_batch(await producer.healthy(), TopicPartition(topic, 0))
        # Twenty sends in one batch: all refused together.
        futures = [await producer.send(topic, b"refused %d" % i, partition=0) for i in range(20)]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(o, OutOfOrderSequenceNumber) for o in outcomes), outcomes
        # Retried in order, as the services do (sends handed over one after the other, then awaited).
        futures = [await producer.send(topic, b"retried %d" % i, partition=0) for i in range(20)]
        await asyncio.gather(*futures)
        assert producer.replaced == 1
    finally:
        await producer.stop()
    values = await _values(kafka_settings, topic, 0, 21)
    assert values == [b"before"] + [b"retried %d" % i for i in range(20)]


async def test_a_replacement_that_cannot_connect_fails_the_send_and_is_tried_again(
    kafka_settings: KafkaSettings,
) -> None:
    topic = kafka_settings.topic(Topic.RAW_EVENTS)
    producer = ResilientProducer(kafka_settings, client_role="test")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before", partition=2)
        _lose_a_numbered_batch(await producer.healthy(), TopicPartition(topic, 2))
        with pytest.raises(OutOfOrderSequenceNumber):
            await producer.send_and_wait(topic, b"refused", partition=2)
        good = producer._new
        unreachable = kafka_settings.model_copy(
            update={"bootstrap": "127.0.0.1:1", "request_timeout_ms": 1000}
        )
        producer._new = lambda: make_producer(unreachable, client_role="test")
        with pytest.raises(KafkaConnectionError):
            await producer.send_and_wait(topic, b"broker away", partition=2)
        assert producer.failure is not None and producer.replaced == 0
        producer._new = good
        await producer.send_and_wait(topic, b"broker back", partition=2)
        assert producer.replaced == 1
    finally:
        await producer.stop()
    assert await _values(kafka_settings, topic, 2, 2) == [b"before", b"broker back"]
