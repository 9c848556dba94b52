"""Target verdicts and margins: what the summary says about a figure against its bound."""

from __future__ import annotations

import pytest

from shopbotly.bench.targets import TIMES, margin, number, target

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("figure", "op", "bound", "expected"),
    [
        # more is better: the shortfall as a share of the bound
        (0.30, ">=", 0.6, "50 % short"),
        (0.598, ">=", 0.6, "0.3 % short"),
        (0.72, ">=", 0.6, "20 % above"),
        (0.6, ">=", 0.6, "at the limit"),
        # less is better: a factor from 2x on, a share below
        (128, "<=", 20, f"6.4{TIMES} the limit"),
        (40, "<=", 20, f"2.0{TIMES} the limit"),
        (22, "<=", 20, "10 % over"),
        (11, "<=", 20, "45 % under"),
        (20, "<=", 20, "at the limit"),
        (3, "<=", 0, "3 over"),
        # exact counts
        (200_000, "==", 200_000, "exact"),
        (199_000, "==", 200_000, "1000 short"),
        (3, "==", 0, "3 too many"),
    ],
)
def test_margin_says_by_how_much(figure: float, op: str, bound: float, expected: str) -> None:
    assert margin(figure, op, bound) == expected  # type: ignore[arg-type]


def test_a_missed_target_carries_figure_bound_and_margin() -> None:
    assert target(128.0, "<=", 20, unit="ms", what="p99 at half the maximum rate") == {
        "what": "p99 at half the maximum rate",
        "figure": 128.0,
        "unit": "ms",
        "target": "≤ 20 ms",
        "op": "<=",
        "bound": 20,
        "met": False,
        "margin": f"6.4{TIMES} the limit",
    }


def test_a_met_target() -> None:
    met = target(0.72, ">=", 0.6, what="ratio")
    assert (met["met"], met["target"], met["margin"]) == (True, "≥ 0.6", "20 % above")


@pytest.mark.parametrize("figure", [None, float("nan")])
def test_a_missing_figure_is_not_measured_rather_than_missed(figure: float | None) -> None:
    t = target(figure, ">=", 0.8)
    assert (t["figure"], t["met"], t["margin"]) == (None, None, "not measured")


@pytest.mark.parametrize(
    ("value", "shown"),
    [(200000, "200000"), (14327.4, "14327"), (0.672, "0.672"), (12.34, "12.3"), (0.0, "0")],
)
def test_numbers_read_like_figures(value: float, shown: str) -> None:
    assert number(value) == shown
