"""Settings from the environment: defaults, SHOPBOTLY_* overrides, and what production refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shopbotly.order_reader.settings import Settings

pytestmark = pytest.mark.unit


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SHOPBOTLY_PORT", "SHOPBOTLY_DATA_DIR", "SHOPBOTLY_READY_MAX_LAG"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().port == 8081
    monkeypatch.setenv("SHOPBOTLY_PORT", "9999")
    monkeypatch.setenv("SHOPBOTLY_DATA_DIR", "/var/lib/x")
    monkeypatch.setenv("SHOPBOTLY_READY_MAX_LAG", "10")
    s = Settings()
    assert (s.port, s.store_path, s.ready_max_lag) == (9999, Path("/var/lib/x/order-reader.sqlite3"), 10)


def test_production_needs_an_absolute_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPBOTLY_ENVIRONMENT", "production")
    monkeypatch.setenv("SHOPBOTLY_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("SHOPBOTLY_KAFKA_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("SHOPBOTLY_DATA_DIR", "relative/dir")
    with pytest.raises(ValidationError, match="SHOPBOTLY_DATA_DIR must be an absolute path"):
        Settings()
    monkeypatch.setenv("SHOPBOTLY_DATA_DIR", "/var/lib/shopbotly")
    assert Settings().data_dir == Path("/var/lib/shopbotly")


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPBOTLY_CACHE_ENTRIES", "-1")
    with pytest.raises(ValidationError, match="cache_entries"):
        Settings()
