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


def test_the_rebalance_deadline_outlasts_the_drain() -> None:
    """A draining replica (revoke grace, then a commit bounded to 10 s) must rejoin before the group's
    deadline, or its partitions go to another replica while it still writes them."""
    for grace in (0.0, 2.0, 10.0, 60.0):
        settings = Settings(revoke_grace_s=grace)
        assert settings.effective_rebalance_timeout_ms >= (grace + 10.0) * 1000 + 5000
        assert settings.effective_rebalance_timeout_ms >= settings.session_timeout_ms
    assert Settings(revoke_grace_s=10, rebalance_timeout_ms=45_000).effective_rebalance_timeout_ms == 45_000


def test_a_rebalance_timeout_shorter_than_the_drain_is_refused() -> None:
    with pytest.raises(ValueError, match="REBALANCE_TIMEOUT_MS must exceed"):
        Settings(revoke_grace_s=10, rebalance_timeout_ms=10_000)
