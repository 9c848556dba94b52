"""Kafka → read model: the shared topic follower over raw events, commands, results and both DLQs."""

from __future__ import annotations

import time

from aiokafka import TopicPartition

from shopbotly.common.follow import Batch, TopicFollower
from shopbotly.common.health import Health
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic
from shopbotly.console import metrics
from shopbotly.console.readmodel import ReadModel, Record, TopicRole

__all__ = ["READY", "Materializer", "topic_roles"]

READY = "read-model"


def topic_roles(kafka: KafkaSettings) -> dict[str, TopicRole]:
    return {
        kafka.topic(Topic.RAW_EVENTS): TopicRole.RAW_EVENTS,
        kafka.topic(Topic.CRM_COMMANDS): TopicRole.COMMANDS,
        kafka.topic(Topic.CRM_RESULTS): TopicRole.RESULTS,
        kafka.topic(Topic.RAW_EVENTS_DLQ): TopicRole.RAW_EVENTS_DLQ,
        kafka.topic(Topic.CRM_COMMANDS_DLQ): TopicRole.COMMANDS_DLQ,
    }


class Materializer:
    """Reads from now minus the model's retention (older records would be dropped at once anyway)."""

    def __init__(self, kafka: KafkaSettings, model: ReadModel, health: Health, *, retry_s: float) -> None:
        self._model = model
        self._health = health
        self.follower = TopicFollower(
            kafka,
            list(topic_roles(kafka)),
            self._apply,
            client_role="console",
            since_ms=lambda: int(time.time() * 1000) - model.max_age_ms,
            retry_s=retry_s,
            on_lag=self._lag,
        )

    def _apply(self, batch: Batch) -> None:
        model = self._model
        model.apply(
            Record(tp.topic, r.partition, r.offset, r.timestamp, r.key, r.value, tuple(r.headers or ()))
            for tp, records in batch.items()
            for r in records
        )
        for kind, size in model.sizes().items():
            metrics.READ_MODEL_ENTRIES.labels(kind).set(size)

    @staticmethod
    def _lag(lags: dict[TopicPartition, int]) -> None:
        for tp, lag in lags.items():
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)

    def start(self) -> None:
        self._health.set_ready(READY, False, "reading the topics")
        self.follower.start()

    async def wait_caught_up(self) -> None:
        await self.follower.caught_up.wait()
        self._health.set_ready(READY, True)

    async def stop(self) -> None:
        await self.follower.stop()
