"""docs/metrics.md lists exactly the metrics the services define, with their types, labels and buckets, and
the names follow the house conventions (STYLE.md: shopbotly_<service>_<thing>_<unit>, counters _total,
durations as histograms in seconds, small bounded label sets)."""

from __future__ import annotations

import re

import pytest

from .catalogue import (
    METRICS_MODULES,
    CodeMetric,
    as_list,
    code_metrics,
    instruments_outside_metrics_modules,
    parse_catalogue,
)

pytestmark = pytest.mark.unit

# Labels whose values grow with traffic: they would make a series per request or per customer.
UNBOUNDED_LABELS = {
    "event_id", "trace_id", "command_id", "email", "identity", "subject", "customer", "order_id", "ticket_id",
    "key", "offset", "url", "path", "user", "ip",
}  # fmt: skip
# Unit suffixes the conventions exclude: base units only (seconds, bytes).
NON_BASE_UNITS = (
    "_ms",
    "_milliseconds",
    "_microseconds",
    "_minutes",
    "_hours",
    "_days",
    "_kb",
    "_mb",
    "_kilobytes",
)
MAX_LABELS = 4


@pytest.fixture(scope="module")
def code() -> dict[str, CodeMetric]:
    return code_metrics()


def test_every_metric_in_code_is_in_the_catalogue_and_back(code: dict[str, CodeMetric]) -> None:
    documented = parse_catalogue().metrics
    missing = set(code) - set(documented)
    stale = set(documented) - set(code)
    assert not missing, f"defined in the code, missing from docs/metrics.md: {as_list(missing)}"
    assert not stale, f"in docs/metrics.md, defined nowhere in the code: {as_list(stale)}"


def test_catalogue_types_labels_and_buckets_match_the_code(code: dict[str, CodeMetric]) -> None:
    catalogue = parse_catalogue()
    wrong: list[str] = []
    for name, doc in catalogue.metrics.items():
        metric = code.get(name)
        if metric is None:
            continue  # reported by the test above
        if doc.type != metric.type:
            wrong.append(f"{name}: type {doc.type!r} documented, {metric.type!r} in code")
        if sorted(doc.labels) != sorted(metric.labels):
            wrong.append(f"{name}: labels {list(doc.labels)} documented, {list(metric.labels)} in code")
        if metric.buckets is None:
            if doc.buckets is not None:
                wrong.append(f"{name}: buckets {doc.buckets} documented for a {metric.type}")
        elif doc.buckets not in catalogue.bucket_sets:
            wrong.append(f"{name}: bucket set {doc.buckets!r} is not in the 'Histogram buckets' table")
        elif catalogue.bucket_sets[doc.buckets] != metric.buckets:
            wrong.append(
                f"{name}: {doc.buckets} is {catalogue.bucket_sets[doc.buckets]} in the docs, "
                f"buckets are {metric.buckets} in code"
            )
    assert not wrong, "docs/metrics.md disagrees with the code:\n" + "\n".join(wrong)


def test_each_metric_is_documented_under_its_service(code: dict[str, CodeMetric]) -> None:
    sections = {"ingest", "mapper", "crm-writer", "order-reader", "console", "CRM emulator"}
    for name, doc in parse_catalogue().metrics.items():
        assert doc.section in sections, f"{name} is listed under {doc.section!r}, not a service section"
        if name in code:
            expected = {"crm_emulator": "CRM emulator"}.get(
                code[name].service, code[name].service.replace("_", "-")
            )
            assert doc.section == expected, f"{name} is listed under {doc.section!r}, expected {expected!r}"


def test_metric_names_follow_the_conventions(code: dict[str, CodeMetric]) -> None:
    problems: list[str] = []
    for name, metric in sorted(code.items()):
        if not re.fullmatch(rf"shopbotly_{metric.service}_[a-z][a-z0-9_]*[a-z0-9]", name):
            problems.append(f"{name}: not shopbotly_{metric.service}_<thing>_<unit> in snake case")
        if metric.type == "counter" and not name.endswith("_total"):
            problems.append(f"{name}: a counter must end in _total")
        if metric.type != "counter" and name.endswith("_total"):
            problems.append(f"{name}: only counters end in _total ({metric.type})")
        # An age or a timestamp is a point-in-time value, a gauge (as process_start_time_seconds); the
        # time things take is a histogram.
        point_in_time = metric.type == "gauge" and re.search(r"_(age|timestamp)_seconds$", name)
        if (
            re.search(r"(duration|latency|_seconds)", name)
            and not point_in_time
            and not (metric.type == "histogram" and name.endswith("_seconds"))
        ):
            problems.append(f"{name}: a duration is a histogram in seconds, named *_seconds")
        if any(name.endswith(unit) or f"{unit}_" in name for unit in NON_BASE_UNITS):
            problems.append(f"{name}: use base units (seconds, bytes)")
        if metric.type == "histogram" and name.endswith("_seconds"):
            assert metric.buckets is not None
            if not 0 < metric.buckets[0] < 1 or metric.buckets[-1] > 3600:
                problems.append(f"{name}: buckets {metric.buckets} do not look like seconds")
        unbounded = set(metric.labels) & UNBOUNDED_LABELS
        if unbounded:
            problems.append(f"{name}: unbounded labels {sorted(unbounded)}")
        if len(metric.labels) > MAX_LABELS:
            problems.append(f"{name}: {len(metric.labels)} labels, at most {MAX_LABELS}")
        if any(not re.fullmatch(r"[a-z][a-z0-9_]*", label) for label in metric.labels):
            problems.append(f"{name}: labels {metric.labels} are not snake case")
    assert not problems, "metric naming conventions:\n" + "\n".join(problems)


def test_every_service_module_defines_metrics_and_consumers_export_lag_per_partition(
    code: dict[str, CodeMetric],
) -> None:
    by_service = {
        service: {m.name for m in code.values() if m.service == service} for service in METRICS_MODULES
    }
    empty = [service for service, names in by_service.items() if not names]
    assert not empty, f"metrics modules that define nothing: {empty}"
    for consumer in ("mapper", "crm_writer", "order_reader", "console"):
        lag = code.get(f"shopbotly_{consumer}_consumer_lag_messages")
        assert lag is not None and lag.type == "gauge", f"{consumer}: no consumer lag gauge"
        assert set(lag.labels) == {"topic", "partition"}, f"{consumer}: lag is not per partition"
    e2e = code.get("shopbotly_crm_writer_e2e_latency_seconds")
    assert e2e is not None and e2e.type == "histogram", "no end-to-end latency histogram"


def test_no_instrument_is_defined_outside_the_metrics_modules() -> None:
    """The catalogue check reads the metrics modules; an instrument elsewhere would escape it."""
    stray = instruments_outside_metrics_modules()
    assert not stray, f"Prometheus instruments outside a metrics.py module: {stray}"


def test_catalogue_parser_reads_every_documented_table() -> None:
    """The check above would pass vacuously on a file it cannot parse."""
    catalogue = parse_catalogue()
    assert len(catalogue.metrics) >= 50
    assert set(catalogue.bucket_sets) >= {"LATENCY_BUCKETS", "E2E_BUCKETS", "BATCH_BUCKETS"}
    assert {"up", "process_resident_memory_bytes"} <= set(catalogue.other)
    assert catalogue.alerts and catalogue.recorded
