"""Bench history: each run appends its figures with the machine facts, and the chart draws every target."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from shopbotly.bench.history import _chartable, append_history, chart, history_rows, read_history
from shopbotly.bench.summary import render
from shopbotly.bench.targets import target

pytestmark = pytest.mark.unit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_results(started_at: str, commit: str, ratio: float, p99: float) -> dict[str, Any]:
    return {
        "machine": {
            "commit": commit,
            "uncommitted_changes": False,
            "cores": 2,
            "memory_gib": 7.8,
            "python": "3.11.9",
            "kafka": "4.4.0",
            "started_at": started_at,
            "load_average_at_start": [0.42, 0.3, 0.2],
            "load_average_at_end": [1.5, 1.0, 0.5],
        },
        "ingest": {
            "args": ["--duration", "3"],
            "ingest": {"accepted_per_s_median": 1500.0},
            "bare": {"accepted_per_s_median": 5000.0},
            "targets": {
                "ratio_vs_bare": target(ratio, ">=", 0.6, what="accepted/s, ingest ÷ bare FastAPI 202"),
                "p99_at_half_rate": target(p99, "<=", 20, unit="ms", what="p99 at half the maximum rate"),
                "accepted_stored": target(30000, ">=", 30000, unit="records", what="records vs 202s"),
            },
        },
        "replay": {"ratio_vs_baseline": 0.672},
        "lookups": {"error": "exit 1: hey is not installed"},
    }


def test_a_run_gives_one_row_per_figure_with_commit_and_machine_facts() -> None:
    rows = history_rows(run_results("2026-12-07T20:00:00Z", "abc1234", 0.3, 64.8))
    by_figure = {(r["benchmark"], r["figure"]): r for r in rows}
    ratio = by_figure[("ingest", "ratio_vs_bare")]
    assert ratio["value"] == "0.3"
    assert (ratio["op"], ratio["bound"], ratio["met"]) == (">=", "0.6", "no")
    assert (ratio["commit"], ratio["cores"], ratio["load_average_at_start"]) == ("abc1234", "2", "0.42")
    assert ratio["args"] == "--duration 3"
    assert by_figure[("ingest", "p99_at_half_rate")]["unit"] == "ms"
    # Headline figures without a target are kept too; a failed benchmark adds nothing.
    assert by_figure[("ingest", "bare_per_s")]["value"] == "5000.0"
    assert by_figure[("replay", "ratio_vs_baseline")]["op"] == ""
    assert not any(r["benchmark"] == "lookups" for r in rows)


def test_an_unmeasured_figure_is_an_empty_cell_not_a_guess() -> None:
    results = run_results("2026-12-07T20:00:00Z", "abc1234", 0.3, 64.8)
    results["ingest"]["targets"]["p99_at_half_rate"] = target(None, "<=", 20, unit="ms")
    row = next(r for r in history_rows(results) if r["figure"] == "p99_at_half_rate")
    assert (row["value"], row["met"]) == ("", "")


def test_each_run_appends_and_earlier_runs_survive(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    first = append_history(path, run_results("2026-12-01T10:00:00Z", "fbcd507", 0.202, 80.5))
    second = append_history(path, run_results("2026-12-07T20:00:00Z", "abc1234", 0.61, 18.0))
    assert len(second) == 2 * len(first)
    stored = read_history(path)
    assert stored == second
    ratios = [(r["commit"], r["value"], r["met"]) for r in stored if r["figure"] == "ratio_vs_bare"]
    assert ratios == [("fbcd507", "0.202", "no"), ("abc1234", "0.61", "yes")]
    assert path.read_text().splitlines()[0].startswith("started_at,commit,")
    assert not (tmp_path / "history.csv.tmp").exists()


def test_columns_of_an_older_file_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text(
        "started_at,commit,benchmark,figure,value,note\n2026-11-24T00:00:00Z,91c1d41,ingest,x,1,kept\n"
    )
    rows = append_history(path, run_results("2026-12-07T20:00:00Z", "abc1234", 0.3, 64.8))
    assert rows[0]["note"] == "kept"
    assert read_history(path)[0]["note"] == "kept"


def test_the_chart_is_a_png_of_the_targets_over_the_runs(tmp_path: Path) -> None:
    history: list[dict[str, str]] = []
    for i, (ratio, p99) in enumerate([(0.202, 80.5), (0.3, 40.0), (0.61, 18.0)]):
        history += history_rows(run_results(f"2026-12-0{i + 1}T10:00:00Z", f"c{i}", ratio, p99))
    out = tmp_path / "latest.png"
    assert chart(history, out) is True
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert out.stat().st_size > 5_000


def test_the_chart_has_one_panel_per_figure_with_a_fixed_target() -> None:
    history = history_rows(run_results("2026-12-01T10:00:00Z", "c0", 0.3, 40.0))
    # The ratio and the p99; not the stored-records check (its bound is another count of the same run).
    assert set(_chartable(history)) == {("ingest", "ratio_vs_bare"), ("ingest", "p99_at_half_rate")}


def test_no_chart_without_a_figure_that_has_a_target(tmp_path: Path) -> None:
    results = run_results("2026-12-07T20:00:00Z", "abc1234", 0.3, 64.8)
    del results["ingest"]["targets"]
    out = tmp_path / "latest.png"
    assert chart(history_rows(results), out) is False
    assert not out.exists()


def test_latest_md_links_the_chart_only_when_there_is_one() -> None:
    results = run_results("2026-12-07T20:00:00Z", "abc1234", 0.3, 64.8)
    assert "![each target over the runs](latest.png)" in render(copy.deepcopy(results), chart="latest.png")
    assert "latest.png" not in render(results)
