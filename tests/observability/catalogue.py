"""What the services' metrics modules define, what docs/metrics.md lists, and the series PromQL may use.

Shared by the observability tests: the catalogue check, the rules and dashboard checks, and the live test.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "metrics.md"
OPERATIONS = ROOT / "docs" / "operations.md"
OBSERVABILITY = ROOT / "deploy" / "observability"
RULES = OBSERVABILITY / "alerts.rules.yml"
RULE_TESTS = OBSERVABILITY / "tests"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "shopbotly.json"
PROMETHEUS_YML = OBSERVABILITY / "prometheus.yml"
K8S_RULE = ROOT / "deploy" / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"

# The `<service>` part of metric names -> the module that defines the service's metrics.
METRICS_MODULES: dict[str, str] = {
    "ingest": "shopbotly.ingest.metrics",
    "mapper": "shopbotly.mapper.metrics",
    "crm_writer": "shopbotly.crm_writer.metrics",
    "order_reader": "shopbotly.order_reader.metrics",
    "console": "shopbotly.console.metrics",
    "crm_emulator": "shopbotly.crm_emulator.metrics",
}
# Source trees whose Prometheus instruments must all live in those modules (or in shopbotly.common.metrics).
SOURCE_TREES = [
    ROOT / "libs" / "common" / "src",
    *ROOT.glob("services/*/src"),
    ROOT / "tools" / "crm-emulator" / "src",
]

PROMETHEUS_CLIENT_TYPES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}

__all__ = [
    "DASHBOARD",
    "DOCS",
    "K8S_RULE",
    "METRICS_MODULES",
    "OBSERVABILITY",
    "OPERATIONS",
    "PROMETHEUS_YML",
    "ROOT",
    "RULES",
    "RULE_TESTS",
    "Catalogue",
    "CodeMetric",
    "DocMetric",
    "as_list",
    "code_metrics",
    "instruments_outside_metrics_modules",
    "load_yaml",
    "markdown_tables",
    "parse_catalogue",
    "promtool",
    "rule_groups",
    "rules",
    "run_promtool",
]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def promtool() -> str:
    """The promtool binary; missing is a failure with the fix, never a skip."""
    path = shutil.which("promtool")
    assert path, "promtool not found: install the Debian package `prometheus` (apt-get install -y prometheus)"
    return path


def run_promtool(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )


# -- the code ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeMetric:
    service: str  # the metric-name segment: ingest, crm_writer, ...
    name: str  # as exposed: counters with `_total`
    type: str  # counter, gauge, histogram, summary, info, stateset
    labels: tuple[str, ...]
    buckets: tuple[float, ...] | None  # histograms: upper bounds without +Inf


def _instruments(obj: object) -> list[MetricWrapperBase]:
    return [v for v in vars(obj).values() if isinstance(v, MetricWrapperBase)]


def _collected(obj: object) -> list[CodeMetric]:
    """The metrics of custom collectors among `obj`'s attributes (a `Collector` whose samples are read when
    scraped, e.g. order-reader's answer-cache counts), as their `collect()` describes them."""
    found = []
    for value in vars(obj).values():
        if callable(getattr(value, "collect", None)) and not isinstance(
            value, (MetricWrapperBase, CollectorRegistry)
        ):
            for family in value.collect():
                suffix = "_total" if family.type == "counter" else ""
                labels = tuple(dict.fromkeys(k for sample in family.samples for k in sample.labels))
                found.append(CodeMetric("", family.name + suffix, family.type, labels, None))
    return found


def _describe(service: str, metric: MetricWrapperBase) -> CodeMetric:
    # prometheus_client keeps a counter's name without `_total` and appends it when exposing.
    kind = str(metric._type)
    name = str(metric._name) + ("_total" if kind == "counter" else "")
    bounds = getattr(metric, "_upper_bounds", None)
    buckets = tuple(float(b) for b in bounds if not math.isinf(b)) if kind == "histogram" and bounds else None
    return CodeMetric(service, name, kind, tuple(metric._labelnames), buckets)


def code_metrics() -> dict[str, CodeMetric]:
    """Every instrument of every metrics module, by exposed name.

    Module-level instruments are read directly; a class of the module whose constructor takes a `registry`
    (order-reader's per-app `Metrics`) is instantiated on a private registry and its attributes are read.
    """
    found: dict[str, CodeMetric] = {}
    for service, module_name in METRICS_MODULES.items():
        module = importlib.import_module(module_name)
        instruments = _instruments(module)
        collected: list[CodeMetric] = []
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and value.__module__ == module_name
                and "registry" in inspect.signature(value).parameters
            ):
                factory: Callable[..., object] = value
                instance = factory(registry=CollectorRegistry())
                instruments += _instruments(instance)
                collected += [replace(m, service=service) for m in _collected(instance)]
        for described in [*(_describe(service, i) for i in instruments), *collected]:
            assert described.name not in found or found[described.name] == described, described.name
            found[described.name] = described
    return found


def instruments_outside_metrics_modules() -> list[str]:
    """`file:line` of prometheus_client instruments constructed outside a `metrics.py` module."""
    hits: list[str] = []
    for tree in SOURCE_TREES:
        for path in sorted(tree.rglob("*.py")):
            if path.name == "metrics.py":
                continue
            module = ast.parse(path.read_text(), str(path))
            imported = {
                alias.asname or alias.name
                for node in ast.walk(module)
                if isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("prometheus_client")
                for alias in node.names
                if alias.name in PROMETHEUS_CLIENT_TYPES
            }
            for node in ast.walk(module):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                direct = isinstance(func, ast.Name) and func.id in imported
                dotted = (
                    isinstance(func, ast.Attribute)
                    and func.attr in PROMETHEUS_CLIENT_TYPES
                    and isinstance(func.value, ast.Name)
                    and func.value.id == "prometheus_client"
                )
                if direct or dotted:
                    hits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return hits


# -- the docs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocMetric:
    section: str
    name: str
    type: str
    labels: tuple[str, ...]
    buckets: str | None  # the name of a bucket set


@dataclass(frozen=True)
class Catalogue:
    metrics: dict[str, DocMetric]  # shopbotly_* metrics of the services
    other: dict[str, str]  # series Prometheus and the client library add: name -> type
    recorded: set[str]  # recording rules
    bucket_sets: dict[str, tuple[float, ...]]
    alerts: dict[str, tuple[str, str]]  # alert -> (severity, runbook link)

    def names(self) -> set[str]:
        """Every series name a query may use: metrics, their derived series, other series, recording rules."""
        names = set(self.other) | self.recorded
        for metric in self.metrics.values():
            names.add(metric.name)
            if metric.type == "histogram":
                names |= {f"{metric.name}_{suffix}" for suffix in ("bucket", "sum", "count", "created")}
            elif metric.type == "counter":
                names.add(metric.name.removesuffix("_total") + "_created")
        for name, kind in self.other.items():
            if kind == "counter":
                names.add(name.removesuffix("_total") + "_created")
        return names


_CODE = re.compile(r"`([^`]+)`")


def markdown_tables(text: str) -> list[tuple[str, list[str]]]:
    """(heading, cells) of every table body row; the heading is the nearest `##`/`###` title above."""
    rows: list[tuple[str, list[str]]] = []
    heading = ""
    previous = ""
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        stripped = line.strip()
        if stripped.startswith("|") and stripped.endswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            is_separator = all(re.fullmatch(r":?-{3,}:?", c) for c in cells)
            is_header = previous.strip().startswith("|") is False
            if not is_separator and not is_header:
                rows.append((heading, cells))
        previous = line
    return rows


def _codes(cell: str) -> tuple[str, ...]:
    return tuple(_CODE.findall(cell))


def parse_catalogue(text: str | None = None) -> Catalogue:
    text = DOCS.read_text() if text is None else text
    metrics: dict[str, DocMetric] = {}
    other: dict[str, str] = {}
    recorded: set[str] = set()
    bucket_sets: dict[str, tuple[float, ...]] = {}
    alerts: dict[str, tuple[str, str]] = {}
    for heading, cells in markdown_tables(text):
        first = _codes(cells[0])
        if len(first) != 1:
            continue
        name = first[0]
        if heading == "Histogram buckets":
            bucket_sets[name] = tuple(float(b) for b in cells[1].split(","))
        elif heading == "Alerts":
            link = re.search(r"\]\(([^)]+)\)", cells[3])
            alerts[name] = (cells[1], link.group(1) if link else "")
        elif ":" in name:
            recorded.add(name)
        elif name.startswith("shopbotly_"):
            assert len(cells) == 5, f"docs/metrics.md: row of {name} needs 5 cells, has {len(cells)}"
            assert name not in metrics, f"docs/metrics.md lists {name} twice"
            buckets = _codes(cells[3])
            metrics[name] = DocMetric(
                section=heading,
                name=name,
                type=cells[1],
                labels=_codes(cells[2]),
                buckets=buckets[0] if buckets else None,
            )
        else:
            other[name] = cells[1]
    return Catalogue(metrics, other, recorded, bucket_sets, alerts)


def rule_groups() -> list[dict[str, Any]]:
    return list(load_yaml(RULES)["groups"])


def rules(kind: str) -> list[dict[str, Any]]:
    """The alerting (`alert`) or recording (`record`) rules of the rule file."""
    return [rule for group in rule_groups() for rule in group["rules"] if kind in rule]


def as_list(values: Iterable[str]) -> str:
    return ", ".join(sorted(values)) or "(none)"
