"""`python -m shopbotly.ingest`'s start: what it does before serving."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from shopbotly.ingest import __main__ as ingest_main

pytestmark = pytest.mark.unit

SECRET = "whsec_" + "YmVuY2gtc2VjcmV0LTAxMjM0NTY3ODlhYmNkZWY="


def test_objects_built_at_start_are_frozen_before_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "shopbotly.yaml"
    config.write_text(
        "tenants:\n  acme:\n    sources:\n      bot:\n"
        "        kind: shopbotly\n        secrets: [{env: SHOPBOTLY_TEST_MAIN_SECRET}]\n"
    )
    monkeypatch.setenv("SHOPBOTLY_TEST_MAIN_SECRET", SECRET)
    monkeypatch.setenv("SHOPBOTLY_CONFIG", str(config))
    seen: dict[str, Any] = {}

    def run_server(config: Any, health: Any, *, drain_delay_s: float) -> None:
        seen["frozen"] = gc.get_freeze_count()
        seen["app"] = config.app

    gc.unfreeze()
    monkeypatch.setattr(ingest_main, "run_server", run_server)
    try:
        ingest_main.main()
    finally:
        gc.unfreeze()
    # The app and everything imported are out of the collector's reach when requests start.
    assert seen["frozen"] > 10_000
    assert seen["app"] is not None
