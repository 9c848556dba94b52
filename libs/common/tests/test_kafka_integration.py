"""With the real broker: the common factories produce and consume, and topic creation is idempotent."""

import asyncio

import pytest

from shopbotly.common.events import decode_headers, message_headers
from shopbotly.common.kafka import KafkaSettings, make_admin, make_consumer, make_producer
from shopbotly.common.topics import Topic, ensure_topics

pytestmark = pytest.mark.integration


async def test_produce_and_consume_with_headers(kafka_settings: KafkaSettings) -> None:
    topic = kafka_settings.topic(Topic.RAW_EVENTS)
    producer = make_producer(kafka_settings, client_role="test")
    await producer.start()
    try:
        for i in range(20):
            hdrs = message_headers(event_id=f"e{i}", tenant="demo", trace_id=None, schema="x/1")
            await producer.send_and_wait(topic, b"v%d" % i, key=b"demo:k%d" % (i % 4), headers=hdrs)
    finally:
        await producer.stop()
    consumer = make_consumer(kafka_settings, topic, group_id=f"{topic}-g", client_role="test")
    await consumer.start()
    seen: dict[bytes, list[bytes]] = {}
    try:
        async with asyncio.timeout(20):
            while sum(len(v) for v in seen.values()) < 20:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        assert decode_headers(r.headers)["tenant"] == "demo"
                        seen.setdefault(r.key, []).append(r.value)
        await consumer.commit()
    finally:
        await consumer.stop()
    # One key, one partition: per-key order is the produce order.
    assert seen[b"demo:k1"] == [b"v1", b"v5", b"v9", b"v13", b"v17"]


async def test_ensure_topics_is_idempotent_and_reports_drift(kafka_settings: KafkaSettings) -> None:
    admin = make_admin(kafka_settings)
    await admin.start()
    try:
        specs = list(kafka_settings.topics().values())
        created, drift = await ensure_topics(admin, specs)
        assert created == [] and drift == []  # the fixture created them with the declared configs
        changed = KafkaSettings(
            bootstrap=kafka_settings.bootstrap, topic_prefix=kafka_settings.topic_prefix, partitions=4
        )
        _, drift = await ensure_topics(admin, [changed.topics()[Topic.ORDERS]])
        assert [(d.setting, d.declared, d.actual) for d in drift] == [("partitions", "4", "3")]
    finally:
        await admin.close()


def test_producer_factory_refuses_unsafe_overrides() -> None:
    with pytest.raises(ValueError, match="acks=all"):
        make_producer(KafkaSettings(), client_role="x", acks=1)
    with pytest.raises(ValueError, match="manually"):
        make_consumer(KafkaSettings(), "t", group_id="g", client_role="x", enable_auto_commit=True)
