"""The Grafana dashboard: every panel query parses (promtool) and reads only catalogued series of the
shopbotly job; the dashboard has the sections operators look for and is provisioned where compose mounts
it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .catalogue import DASHBOARD, OBSERVABILITY, ROOT, as_list, load_yaml, parse_catalogue
from .promql import check_syntax, series_names, substitute_grafana_variables, unscoped_selectors

pytestmark = pytest.mark.unit

SECTIONS = ("intake", "flow", "crm health", "lag", "dead letters", "lookups")
# Series an operator must find on the dashboard: the DESIGN.md guarantees and the alerts' signals.
REQUIRED_SERIES = {
    "shopbotly_ingest_requests_total",
    "shopbotly_ingest_rejections_total",
    "shopbotly_mapper_events_total",
    "shopbotly_crm_writer_e2e_latency_seconds_bucket",
    "shopbotly_crm_writer_requests_total",
    "shopbotly_crm_writer_circuit_state",
    "shopbotly_crm_writer_throttled_total",
    "shopbotly_crm_writer_rate_limit_remaining_requests",
    "shopbotly_mapper_consumer_lag_messages",
    "shopbotly_crm_writer_consumer_lag_messages",
    "shopbotly_order_reader_consumer_lag_messages",
    "shopbotly_crm_writer_dead_lettered_total",
    "shopbotly_order_reader_lookups_total",
    "shopbotly_order_reader_ready",
}


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested (collapsed) panels included."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _queries() -> dict[str, str]:
    """'<panel title> / <refId>' -> the PromQL Prometheus receives."""
    queries: dict[str, str] = {}
    for panel in _panels(_dashboard()):
        for target in panel.get("targets", []):
            key = f"{panel['title']} / {target['refId']}"
            assert key not in queries, f"two queries named {key}"
            queries[key] = substitute_grafana_variables(target["expr"])
    return queries


def test_every_panel_query_parses() -> None:
    queries = _queries()
    assert len(queries) >= 30
    complaint = check_syntax(queries)
    assert not complaint, f"promtool cannot parse dashboard queries:\n{complaint}"


def test_panel_queries_read_only_catalogued_series_of_the_shopbotly_job() -> None:
    known = parse_catalogue().names()
    problems: list[str] = []
    for key, expr in _queries().items():
        names = series_names(expr)
        if not names:
            problems.append(f"{key}: reads no series")
        if names - known:
            problems.append(f"{key}: series not in docs/metrics.md: {as_list(names - known)}")
        if "__name__" in expr:
            problems.append(f"{key}: selects by __name__")
        problems += [f'{key}: {s} is not scoped to job="shopbotly"' for s in unscoped_selectors(expr)]
    assert not problems, "\n".join(problems)


def test_dashboard_shows_the_key_series() -> None:
    used = set().union(*(series_names(expr) for expr in _queries().values()))
    assert used >= REQUIRED_SERIES, f"not on the dashboard: {as_list(REQUIRED_SERIES - used)}"


def test_dashboard_has_a_row_per_section() -> None:
    rows = [p["title"].lower() for p in _dashboard()["panels"] if p["type"] == "row"]
    missing = [s for s in SECTIONS if not any(s in row for row in rows)]
    assert not missing, f"rows {rows} lack sections {missing}"


def test_panels_use_the_provisioned_datasource_and_do_not_overlap() -> None:
    provisioned = load_yaml(OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = [d for d in provisioned["datasources"] if d["type"] == "prometheus"]
    panels = _panels(_dashboard())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"{panel['title']}: no query"
        for ds in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert ds == {"type": "prometheus", "uid": source["uid"]}, panel["title"]


def test_compose_provisions_the_dashboard_folder() -> None:
    provider = load_yaml(OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "shopbotly.yml")
    (path,) = [p["options"]["path"] for p in provider["providers"]]
    compose = load_yaml(ROOT / "docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    source = "./" + str(DASHBOARD.parent.relative_to(ROOT))
    assert f"{source}:{path}:ro" in mounts or f"{source}:{path}" in mounts, (source, path, mounts)
    assert _dashboard()["uid"] and _dashboard()["title"] == "ShopBotly"
