"""Fixtures for the CLI's integration tests: publish, read back independently, and run the CLI.

The CLI runs in a worker thread (it calls asyncio.run itself) against this test's own topics, chosen
through SHOPBOTLY_KAFKA_* like an operator's shell would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from typer.testing import CliRunner, Result

from shopbotly.cli.app import app
from shopbotly.common.kafka import KafkaSettings, make_admin, make_consumer, make_producer


@dataclass(frozen=True)
class Got:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


Produce = Callable[[str, Sequence[dict[str, Any]]], Awaitable[list[tuple[int, int]]]]
ReadAll = Callable[[str], Awaitable[list[Got]]]
Cli = Callable[..., Awaitable[Result]]


@pytest.fixture
def produce(kafka_settings: KafkaSettings) -> Produce:
    """Publish messages ({key, value, headers, timestamp_ms}) in order; return (partition, offset) of each."""

    async def go(topic: str, messages: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
        producer = make_producer(kafka_settings, client_role="test")
        await producer.start()
        try:
            placed = []
            for m in messages:
                meta = await producer.send_and_wait(
                    topic,
                    m.get("value"),
                    key=m.get("key"),
                    headers=m.get("headers", []),
                    timestamp_ms=m.get("timestamp_ms"),
                )
                placed.append((meta.partition, meta.offset))
            return placed
        finally:
            await producer.stop()

    return go


@pytest.fixture
def read_all(kafka_settings: KafkaSettings) -> ReadAll:
    """Everything a topic holds, sorted by (partition, offset), read with a plain group-less consumer."""

    async def go(topic: str) -> list[Got]:
        consumer = make_consumer(kafka_settings, group_id=None, client_role="test")
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(kafka_settings.partitions)]
            end = await consumer.end_offsets(tps)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            got: list[Any] = []
            async with asyncio.timeout(30):  # a guard against a hang, not a timing assertion
                while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        got.extend(records)
        finally:
            await consumer.stop()
        return sorted(
            (Got(r.partition, r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in got),
            key=lambda g: (g.partition, g.offset),
        )

    return go


@pytest.fixture
async def scratch_topic(kafka_settings: KafkaSettings) -> AsyncIterator[str]:
    """A topic outside the registry (same partition count) to replay into."""
    name = f"{kafka_settings.topic_prefix}scratch"
    admin = make_admin(kafka_settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, kafka_settings.partitions, 1)])
        async with asyncio.timeout(15):
            while True:
                described = await admin.describe_topics([name])
                parts = described[0]["partitions"]
                if len(parts) == kafka_settings.partitions and all(p["leader"] >= 0 for p in parts):
                    break
                await asyncio.sleep(0.1)
    finally:
        await admin.close()
    yield name
    admin = make_admin(kafka_settings)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


@pytest.fixture
def cli(kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Run `shopbotly ARGS...` against this test's topics; returns click's Result."""
    monkeypatch.setenv("SHOPBOTLY_KAFKA_BOOTSTRAP", kafka_settings.bootstrap)
    monkeypatch.setenv("SHOPBOTLY_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    monkeypatch.setenv("COLUMNS", "250")  # rich tables wide enough to hold ids on one line
    runner = CliRunner()

    async def invoke(*args: str) -> Result:
        return await asyncio.to_thread(lambda: runner.invoke(app, list(args)))

    return invoke
