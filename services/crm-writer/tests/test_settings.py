"""The writer's consumer group follows the topic prefix, so stacks with different prefixes on one broker
do not share (and steal each other's partitions and offsets in) one group."""

from __future__ import annotations

import pytest

from shopbotly.crm_writer.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SHOPBOTLY_CONSUMER_GROUP", "SHOPBOTLY_KAFKA_TOPIC_PREFIX"):
        monkeypatch.delenv(var, raising=False)


def test_the_default_group_is_named_after_the_default_topic_prefix() -> None:
    assert Settings().consumer_group == "shopbotly.crm-writer"


def test_stacks_with_different_topic_prefixes_join_different_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    groups = set()
    for prefix in ("stage.", "e2e1234."):
        monkeypatch.setenv("SHOPBOTLY_KAFKA_TOPIC_PREFIX", prefix)
        settings = Settings()
        assert settings.consumer_group == f"{prefix}crm-writer"
        groups.add(settings.consumer_group)
    assert len(groups) == 2


def test_an_explicit_group_wins_over_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPBOTLY_KAFKA_TOPIC_PREFIX", "stage.")
    monkeypatch.setenv("SHOPBOTLY_CONSUMER_GROUP", "shopbotly-crm-writer")
    assert Settings().consumer_group == "shopbotly-crm-writer"
    assert Settings(consumer_group="pinned").consumer_group == "pinned"
