"""Benchmark targets: a measured figure, the bound it must meet, whether it does, and by how much.

Every benchmark module reports its targets through `target()`, so the figure, the bound and the margin
travel together into latest.json and the summary renders them without knowing what was measured.
"""

from __future__ import annotations

import math
from typing import Any, Literal

__all__ = ["TIMES", "Comparison", "figure_text", "margin", "number", "target"]

Comparison = Literal[">=", "<=", "=="]
_SYMBOL: dict[str, str] = {">=": "≥", "<=": "≤", "==": "="}
TIMES = "\u00d7"  # the multiplication sign of "6.4x the limit"


def number(value: float) -> str:
    """A figure as people read it: whole numbers as such, three significant digits below 100."""
    if float(value).is_integer():
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def figure_text(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    shown = number(value)
    return f"{shown} {unit}" if unit else shown


def _percent(share: float) -> str:
    # One decimal below 10 %, so a near miss does not read as "0 % short".
    pct = 100 * share
    return f"{pct:.1f} %" if pct < 10 else f"{pct:.0f} %"


def margin(figure: float, op: Comparison, bound: float) -> str:
    """How far `figure` is from `bound`, in the words the summary uses.

    `>=` (more is better): "50 % short" when missed, "20 % above" when met.
    `<=` (less is better): "6.4x the limit" (with a multiplication sign) when missed by 2x or more, else
    "10 % over"; "45 % under" when met.
    `==` (an exact count): "exact", "1000 short" or "3 too many".
    """
    if op == ">=":
        if figure == bound:
            return "at the limit"
        if bound == 0:
            return f"{number(figure)} above" if figure > bound else f"{number(bound - figure)} short"
        gap = (figure - bound) / abs(bound)
        return f"{_percent(gap)} above" if gap > 0 else f"{_percent(-gap)} short"
    if op == "<=":
        if figure == bound:
            return "at the limit"
        if bound <= 0:
            return f"{number(figure - bound)} over" if figure > bound else f"{number(bound - figure)} under"
        factor = figure / bound
        if factor < 1:
            return f"{_percent(1 - factor)} under"
        return f"{factor:.1f}{TIMES} the limit" if factor >= 2 else f"{_percent(factor - 1)} over"
    diff = figure - bound
    if diff == 0:
        return "exact"
    return f"{number(-diff)} short" if diff < 0 else f"{number(diff)} too many"


def _met(figure: float, op: Comparison, bound: float) -> bool:
    if op == ">=":
        return figure >= bound
    if op == "<=":
        return figure <= bound
    return figure == bound


def target(
    figure: float | None, op: Comparison, bound: float, *, unit: str = "", what: str = ""
) -> dict[str, Any]:
    """One target as it goes into the results: `met` is None (and the margin "not measured") when the figure
    is missing, e.g. because the run that would give it did not finish."""
    if figure is not None and math.isnan(figure):
        figure = None
    return {
        "what": what,
        "figure": figure,
        "unit": unit,
        "target": f"{_SYMBOL[op]} {figure_text(bound, unit)}",
        # The bound as numbers too, so bench history can draw the target line.
        "op": op,
        "bound": bound,
        "met": None if figure is None else _met(figure, op, bound),
        "margin": "not measured" if figure is None else margin(figure, op, bound),
    }
