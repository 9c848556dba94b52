"""Fixtures of the ingest tests: the test secrets in the environment, settings with or without Kafka."""

from __future__ import annotations

import pytest

from shopbotly.common.kafka import KafkaSettings
from shopbotly.ingest.settings import Settings
from shopbotly.testkit.ingest import set_secret_env


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    env: dict[str, str] = {}
    set_secret_env(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def offline_settings() -> Settings:
    """Settings whose Kafka is never contacted (apps built with them run without lifespan)."""
    return Settings(kafka=KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="offline."))


@pytest.fixture
def settings(kafka_settings: KafkaSettings) -> Settings:
    """Settings on this test's own topics of the real broker."""
    return Settings(kafka=kafka_settings, publish_timeout_s=5.0, broker_check_interval_s=0.5)
