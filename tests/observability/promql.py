"""PromQL helpers for the tests: the series names an expression reads, and a syntax check with promtool.

promtool parses; this module only needs to find the names. An identifier is a series name unless it is a
keyword, a function or aggregation (followed by `(`), a label inside `{...}` or a grouping clause, or part of
a number or duration.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from .catalogue import run_promtool

__all__ = [
    "GRAFANA_VARIABLES",
    "check_syntax",
    "series_names",
    "substitute_grafana_variables",
    "unscoped_selectors",
]

KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
    "inf", "nan", "atan2",
}  # fmt: skip
# Grafana's built-in interval variables, as a query sent to Prometheus would see them.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*")
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def series_names(expr: str) -> set[str]:
    """The metric and recording-rule names `expr` selects."""
    text = _STRINGS.sub('""', expr)
    text = re.sub(r"#[^\n]*", " ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        token = match.group(0)
        if token.lower() in KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        names.add(token)
    return names


def unscoped_selectors(expr: str, matcher: str = 'job="shopbotly"') -> list[str]:
    """Selectors in `expr` whose label matchers do not include `matcher`."""
    found: list[str] = []
    for series in sorted(series_names(expr)):
        pattern = rf"(?<![\w:]){re.escape(series)}(?![\w:])\s*(\{{[^}}]*\}})?"
        for selector in re.finditer(pattern, expr):
            if matcher not in (selector.group(1) or ""):
                found.append(selector.group(0).strip())
    return found


def substitute_grafana_variables(expr: str, extra: Mapping[str, str] | None = None) -> str:
    """Replace `$__rate_interval` and friends; an unknown variable is an error (it cannot be checked)."""
    values = {**GRAFANA_VARIABLES, **(extra or {})}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def check_syntax(exprs: Mapping[str, str]) -> str:
    """Parse each expression with `promtool check rules` (as recording rules of a temporary file).

    Returns promtool's complaint, or "" when every expression parses.
    """
    rules = [{"record": f"check:expr_{i}", "expr": expr} for i, expr in enumerate(exprs.values())]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "exprs.rules.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}, sort_keys=False))
        done = run_promtool("check", "rules", path)
    if done.returncode == 0:
        return ""
    labels = {f"check:expr_{i}": key for i, key in enumerate(exprs)}
    report = done.stdout + done.stderr
    for record, key in labels.items():
        report = report.replace(record, f"{record} ({key})")
    return report
