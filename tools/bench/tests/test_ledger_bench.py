"""The ledger benchmark: a small real run (fresh processes, no broker), its targets and its summary line."""

from __future__ import annotations

import pytest

from shopbotly.bench.history import history_rows
from shopbotly.bench.ledger import run
from shopbotly.bench.summary import render

pytestmark = pytest.mark.unit


def test_a_small_run_reports_rss_per_million_against_the_target_and_misses_nothing() -> None:
    results = {"machine": {"commit": "abc1234"}, "ledger": run(20_000, 2_000)}
    ledger = results["ledger"]
    for kind in ("ledger", "dict", "set"):
        assert ledger[kind]["ids"] == 20_000
        assert ledger[kind]["rss_mb_per_million"] > 0
    assert ledger["ledger"]["false_negatives"] == 0
    assert ledger["ledger"]["never_applied_found"] == 0
    targets = ledger["targets"]
    assert targets["ledger_rss_mb_per_million"]["target"] == "≤ 30 MB"
    assert targets["ledger_rss_mb_per_million"]["figure"] == ledger["ledger"]["rss_mb_per_million"]
    assert targets["ledger_false_negatives"]["met"] is True
    assert ledger["miss_lookup_ratio_vs_set"] > 0
    summary = render(results)
    assert "| ledger | crm-writer ledger RSS per million applied ids |" in summary
    assert "- ledger: " in summary and "for the old dict" in summary
    rows = {r["figure"] for r in history_rows(results) if r["benchmark"] == "ledger"}
    assert {"ledger_rss_mb_per_million", "miss_lookup_ratio_vs_set", "memory_ratio_vs_dict"} <= rows
