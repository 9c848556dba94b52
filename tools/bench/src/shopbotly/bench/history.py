"""Bench history: every `make bench` run's figures appended to bench/results/history.csv, and latest.png,
a chart of each target's figure over the runs with its target line.

One CSV row per figure of a run (long format), with the run's commit and machine facts on every row, so a
partial run (`--only ingest`) or a new target never needs a new column, and the file reads in any tool.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from shopbotly.bench.summary import target_rows

__all__ = ["FIELDS", "append_history", "chart", "history_rows", "read_history"]

FIELDS = (
    "started_at",
    "commit",
    "uncommitted_changes",
    "cores",
    "memory_gib",
    "python",
    "kafka",
    "load_average_at_start",
    "load_average_at_end",
    "benchmark",
    "figure",
    "what",
    "value",
    "unit",
    "op",
    "bound",
    "met",
    "args",
)

# Headline figures without a target that are still worth following over the runs:
# (benchmark, name in the history, path in the benchmark's results, unit, what).
EXTRA_FIGURES: tuple[tuple[str, str, tuple[str, ...], str, str], ...] = (
    ("ingest", "ingest_per_s", ("ingest", "accepted_per_s_median"), "/s", "ingest accepted/s (median)"),
    ("ingest", "bare_per_s", ("bare", "accepted_per_s_median"), "/s", "bare FastAPI 202 accepted/s (median)"),
    ("mapper", "ratio_to_bare_copy", ("kafka", "ratio_to_baseline"), "", "mapper ÷ bare aiokafka copy"),
    ("replay", "ratio_vs_baseline", ("ratio_vs_baseline",), "", "replay ÷ bare aiokafka copy"),
    ("ledger", "miss_lookup_ratio_vs_set", ("miss_lookup_ratio_vs_set",), "", "ledger new-id lookups ÷ set"),
    ("ledger", "memory_ratio_vs_dict", ("memory_ratio_vs_dict",), "", "ledger RSS ÷ the old dict's"),
)


def _get(data: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _load(value: Any) -> str:
    return f"{value[0]:.2f}" if isinstance(value, list | tuple) and value else ""


def history_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """The rows one run adds: each target's figure, then the extra headline figures, with machine facts."""
    m = results.get("machine", {})
    run = {
        "started_at": str(m.get("started_at") or ""),
        "commit": str(m.get("commit") or ""),
        "uncommitted_changes": "yes" if m.get("uncommitted_changes") else "no",
        "cores": str(m.get("cores") or ""),
        "memory_gib": str(m.get("memory_gib") or ""),
        "python": str(m.get("python") or ""),
        "kafka": str(m.get("kafka") or ""),
        "load_average_at_start": _load(m.get("load_average_at_start")),
        "load_average_at_end": _load(m.get("load_average_at_end")),
    }

    def args(suite: str) -> str:
        given = _get(results, (suite, "args"))
        return " ".join(str(a) for a in given) if isinstance(given, list) else ""

    rows: list[dict[str, str]] = []
    for suite, name, t in target_rows(results):
        value = _number(t.get("figure"))
        bound = _number(t.get("bound"))
        rows.append(
            {
                **run,
                "benchmark": suite,
                "figure": name,
                "what": str(t.get("what") or name),
                "value": "" if value is None else repr(value),
                "unit": str(t.get("unit") or ""),
                "op": str(t.get("op") or ""),
                "bound": "" if bound is None else repr(bound),
                "met": {True: "yes", False: "no"}.get(bool(t["met"]), "") if t.get("met") is not None else "",
                "args": args(suite),
            }
        )
    for suite, name, path, unit, what in EXTRA_FIGURES:
        value = _number(_get(results.get(suite), path))
        if value is not None:
            rows.append(
                {
                    **run,
                    "benchmark": suite,
                    "figure": name,
                    "what": what,
                    "value": repr(value),
                    "unit": unit,
                    "op": "",
                    "bound": "",
                    "met": "",
                    "args": args(suite),
                }
            )
    return rows


def read_history(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_history(path: Path, results: dict[str, Any]) -> list[dict[str, str]]:
    """Append this run's rows to `path` and return the whole history.

    The file is rewritten through a temporary file and renamed, so an interrupted run leaves the previous
    history whole; columns an older file has and this version does not are kept.
    """
    old = read_history(path)
    rows = old + history_rows(results)
    fields = list(FIELDS) + sorted({k for row in old for k in row if k not in FIELDS and k})
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="", extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return rows


def _chartable(rows: Iterable[dict[str, str]]) -> dict[tuple[str, str], list[dict[str, str]]]:
    """Rows with a number and a ≥/≤ bound, grouped by (benchmark, figure), in the order first seen. Counts
    checked against another count of the same run ("records on the topic ≥ 202s") are left out: their bound
    moves with the run, and the table in latest.md says all there is to say about them."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        if row.get("unit") == "records":
            continue
        if row.get("op") in (">=", "<=") and row.get("value") and row.get("bound"):
            groups.setdefault((row["benchmark"], row["figure"]), []).append(row)
    return groups


def chart(rows: Sequence[dict[str, str]], path: Path, *, last_runs: int = 30) -> bool:
    """Write a PNG with one panel per target (ratios first): its figure over the last runs, the target as a
    dashed line, each point green when met and red when missed. False (and no file) when nothing has a
    target yet."""
    runs = sorted({row["started_at"] for row in rows})[-last_runs:]
    kept = [row for row in rows if row["started_at"] in runs]
    groups = _chartable(kept)
    if not groups:
        return False
    # Ratios (no unit) first: they are what the targets are about.
    keys = sorted(groups, key=lambda k: (groups[k][0].get("unit", "") != "", k))

    from matplotlib.figure import Figure  # imported here: a second of start-up nobody else needs

    position = {run: i for i, run in enumerate(runs)}
    commits = {row["started_at"]: row.get("commit", "") for row in kept}
    ticks = [f"{run[5:10]}\n{commits.get(run, '')}" for run in runs]
    cols = min(3, len(keys))
    rows_n = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.0 * rows_n), layout="constrained")
    axes = fig.subplots(rows_n, cols, squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        series = sorted(groups[key], key=lambda r: r["started_at"])
        xs = [position[r["started_at"]] for r in series]
        ys = [float(r["value"]) for r in series]
        ax.plot(xs, ys, color="0.5", linewidth=1, zorder=1)
        ax.scatter(xs, ys, c=["tab:green" if r["met"] == "yes" else "tab:red" for r in series], zorder=2)
        bound, op = float(series[-1]["bound"]), series[-1]["op"]
        ax.axhline(bound, color="tab:blue", linestyle="--", linewidth=1)
        ax.annotate(
            f"target {'≥' if op == '>=' else '≤'} {bound:g}", (0, bound), fontsize=7, color="tab:blue"
        )
        what = series[-1]["what"]
        ax.set_title(f"{key[0]}: {what[:60]}", fontsize=8)
        ax.set_ylabel(series[-1]["unit"] or "ratio", fontsize=7)
        ax.set_xticks(range(len(runs)), ticks, fontsize=6)
        ax.set_xlim(-0.5, max(len(runs) - 0.5, 0.5))
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    fig.suptitle(
        "make bench: each target over the runs (dashed: the target; green met, red missed)", fontsize=9
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return True
