"""Shared fixtures of the mapper tests: the golden tenant config, compiled mappings, an empty state."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from shopbotly.common.config import ShopbotlyConfig, load_config
from shopbotly.mapper.domain import Mappings
from shopbotly.mapper.state import StateStore

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 3, 2, 10, 15, 31, tzinfo=UTC)


@pytest.fixture(scope="session")
def golden_config() -> ShopbotlyConfig:
    return load_config(GOLDEN / "shopbotly.yaml")


@pytest.fixture(scope="session")
def mappings(golden_config: ShopbotlyConfig) -> Mappings:
    return Mappings.from_config(golden_config)


@pytest.fixture
def store() -> StateStore:
    return StateStore()
