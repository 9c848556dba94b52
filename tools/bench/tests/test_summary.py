"""latest.md from a results dict: every target with its figure and margin, and every failed benchmark."""

from __future__ import annotations

from typing import Any

import pytest

from shopbotly.bench.e2e import isolation
from shopbotly.bench.summary import failures, render, target_rows
from shopbotly.bench.targets import target

pytestmark = pytest.mark.unit


def sample_results() -> dict[str, Any]:
    return {
        "machine": {
            "commit": "abc1234",
            "cores": 2,
            "memory_gib": 7.8,
            "python": "3.11.9",
            "kafka": "4.4.0",
            "started_at": "2026-11-24T21:00:00Z",
            "load_average_at_start": [0.42, 0.3, 0.2],
        },
        "ingest": {
            "ingest": {"accepted_per_s_median": 1500.0},
            "bare": {"accepted_per_s_median": 5000.0},
            "ratio_vs_bare": 0.3,
            "ingest_half_rate": {"target_per_s": 750.0, "latency_ms": {"p50": 3.1, "p99": 128.0}},
            "stored_on_topic": 30000,
            "ingest_accepted_total": 30000,
            "targets": {
                "ratio_vs_bare": target(0.3, ">=", 0.6, what="accepted/s, ingest ÷ bare FastAPI 202"),
                "p99_at_half_rate": target(128.0, "<=", 20, unit="ms", what="p99 at half the maximum rate"),
            },
        },
        "crm": {
            "crm": {
                "targets": {"ratio_to_ceiling": target(0.93, ">=", 0.8, what="contacts/s ÷ ceiling")},
            }
        },
        "lookups": {"error": "exit 1: hey is not installed", "log": "bench/results/runs/x/lookups.log"},
        "replay": {
            "records": 200000,
            "record_bytes": 1024,
            "replay": {
                "events_per_s": 9634,
                "wall_s": 25.0,
                "outside_copy_s": 2.0,
                "cpu_us_per_event": 180.0,
            },
            "baseline": {"events_per_s": 14327, "cpu_us_per_event": 70.0},
            "ratio_vs_baseline": 0.672,
            "cli_startup_s": 1.4,
            "targets": {
                "replay_complete": target(200000, "==", 200000, unit="records", what="records on the target"),
            },
        },
        "e2e": {"error": "ConnectError: All connection attempts failed"},
    }


def test_a_missed_target_says_by_how_much() -> None:
    lines = render(sample_results()).splitlines()
    assert "| ingest | accepted/s, ingest ÷ bare FastAPI 202 | 0.3 | ≥ 0.6 | **no** | 50 % short |" in lines
    assert "| ingest | p99 at half the maximum rate | 128 ms | ≤ 20 ms | **no** | 6.4× the limit |" in lines  # noqa: RUF001


def test_a_met_target_shows_its_headroom() -> None:
    lines = render(sample_results()).splitlines()
    assert "| crm | contacts/s ÷ ceiling | 0.93 | ≥ 0.8 | yes | 16 % above |" in lines
    assert "| replay | records on the target | 200000 records | = 200000 records | yes | exact |" in lines


def test_every_failed_benchmark_is_listed_with_its_error() -> None:
    text = render(sample_results())
    lines = text.splitlines()
    assert "| lookups | (benchmark failed) | — | — | **failed** | exit 1: hey is not installed |" in lines
    assert (
        "| e2e | (benchmark failed) | — | — | **failed** | ConnectError: All connection attempts failed |"
        in lines
    )
    assert "- lookups: exit 1: hey is not installed (log: `bench/results/runs/x/lookups.log`)" in lines
    assert "- e2e: ConnectError: All connection attempts failed" in lines
    assert "2 of 4 targets met, 2 missed, 0 not measured; 2 benchmark(s) failed." in lines


def test_headline_figures_come_from_the_results() -> None:
    lines = render(sample_results()).splitlines()
    assert (
        "- replay: `shopbotly replay` 9634 events/s vs bare aiokafka copy 14327 events/s: ratio 0.672; "
        "200000 records of 1024 B; CLI wall time 25 s, of which 2 s outside the copy (start-up alone 1.4 s); "
        "CPU 180 µs per event vs 70 µs"
    ) in lines
    # a failed benchmark has no headline line, only its failure
    assert not any(line.startswith("- lookups: ") and "/s" in line for line in lines)


def test_targets_are_found_at_any_depth_in_benchmark_order() -> None:
    rows = [(suite, name) for suite, name, _ in target_rows(sample_results())]
    assert rows == [
        ("ingest", "ratio_vs_bare"),
        ("ingest", "p99_at_half_rate"),
        ("crm", "ratio_to_ceiling"),
        ("replay", "replay_complete"),
    ]
    assert [suite for suite, *_ in failures(sample_results())] == ["lookups", "e2e"]


def test_a_partial_result_still_renders() -> None:
    results = {"machine": {}, "ingest": {"ingest_half_rate": None, "targets": {}}}
    text = render(results)
    assert "- ingest: figures incomplete" in text
    assert "0 of 0 targets met" in text


def test_a_pipe_in_an_error_does_not_break_the_table() -> None:
    lines = render({"machine": {}, "crm": {"error": "exit 2: a | b"}}).splitlines()
    assert "| crm | (benchmark failed) | — | — | **failed** | exit 2: a \\| b |" in lines
    assert "(none: no benchmark finished)" in lines


def test_memory_of_each_service_idle_and_under_load() -> None:
    results = {"machine": {}, "memory_rss_mib": {"idle": {"ingest": 68.2}, "under_load": {"ingest": 71.0}}}
    lines = render(results).splitlines()
    assert (
        "- RSS of each stack service, idle → peak under the end-to-end load (MiB): ingest 68.2 → 71" in lines
    )


def test_the_run_with_one_connection_down_is_judged_against_the_healthy_run() -> None:
    healthy = {"e2e_p50_ms": 40.0, "e2e_p99_ms": 200.0, "lost": 0}
    section = isolation(healthy, {"e2e_p50_ms": 44.0, "e2e_p99_ms": 260.0, "lost": 0})
    assert section["targets"]["p50_ratio"]["figure"] == 1.1 and section["targets"]["p50_ratio"]["met"]
    assert section["targets"]["p99_ratio"]["figure"] == 1.3 and not section["targets"]["p99_ratio"]["met"]
    missing = isolation(healthy, {"error": "the stack did not start"})
    assert missing["targets"]["p99_ratio"]["met"] is None  # not measured, never "met"
    text = render({"e2e": healthy, "e2e_one_connection_down": section})
    assert "bot endpoint down" in text and "260" in text
