"""Fixtures of the order-reader tests."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from shopbotly.testkit.order_reader import Running, ServeFactory, serve


@pytest.fixture
def start(tmp_path: Path) -> ServeFactory:
    """`async with start("a", kafka=..., **settings) as running:` an app with its data dir under tmp_path."""

    def factory(name: str = "a", **kwargs: Any) -> AbstractAsyncContextManager[Running]:
        return serve(tmp_path / name, **kwargs)

    return factory
