"""The alert rules: valid (`promtool check rules`), unit-tested (`promtool test rules`), one source for
compose and Kubernetes, built on catalogued series, and documented with a runbook each."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import pytest

from .catalogue import (
    K8S_RULE,
    OPERATIONS,
    PROMETHEUS_YML,
    RULE_TESTS,
    RULES,
    as_list,
    load_yaml,
    parse_catalogue,
    rule_groups,
    rules,
    run_promtool,
)
from .promql import series_names, unscoped_selectors

pytestmark = pytest.mark.unit

SEVERITIES = {"critical", "warning"}


def _rule_test_files() -> list[Path]:
    files = sorted(RULE_TESTS.glob("*.yml"))
    assert files, f"no promtool unit tests in {RULE_TESTS}"
    return files


def test_promtool_check_rules_accepts_the_rule_file() -> None:
    done = run_promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    count = sum(len(group["rules"]) for group in rule_groups())
    assert f"SUCCESS: {count} rules found" in done.stdout, done.stdout


def test_promtool_unit_tests_pass() -> None:
    files = _rule_test_files()
    done = run_promtool("test", "rules", *files, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(files), done.stdout


def test_unit_tests_load_the_real_rule_file() -> None:
    for path in _rule_test_files():
        spec = load_yaml(path)
        loaded = [(path.parent / f).resolve() for f in spec["rule_files"]]
        assert loaded == [RULES.resolve()], f"{path.name} loads {loaded}, not {RULES}"


def test_every_alert_has_a_case_that_fires_it_and_one_that_does_not() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    recorded_checked: set[str] = set()
    for path in _rule_test_files():
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
            for check in case.get("promql_expr_test", []):
                recorded_checked |= series_names(check["expr"])
    alerts = {rule["alert"] for rule in rules("alert")}
    assert alerts - firing == set(), f"alerts no unit test fires: {as_list(alerts - firing)}"
    assert alerts - quiet == set(), (
        f"alerts with no unit test where they stay quiet: {as_list(alerts - quiet)}"
    )
    assert firing | quiet <= alerts, (
        f"unit tests of alerts that do not exist: {as_list((firing | quiet) - alerts)}"
    )
    records = {rule["record"] for rule in rules("record")}
    assert records <= recorded_checked, (
        f"recording rules without a promql_expr_test: {as_list(records - recorded_checked)}"
    )


def test_kubernetes_prometheusrule_carries_the_same_groups() -> None:
    """deploy/observability/alerts.rules.yml is the source; k8s_rules.py writes the PrometheusRule from it."""
    resource = load_yaml(K8S_RULE)
    assert resource["apiVersion"] == "monitoring.coreos.com/v1" and resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == rule_groups(), (
        f"{K8S_RULE.relative_to(RULES.parents[2])} differs from {RULES.name}: "
        "run `uv run python deploy/observability/k8s_rules.py`"
    )


def test_compose_prometheus_loads_the_rule_file() -> None:
    patterns = load_yaml(PROMETHEUS_YML)["rule_files"]
    assert any(fnmatch.fnmatch(RULES.name, p) for p in patterns), (patterns, RULES.name)


def test_rules_read_only_catalogued_series_of_the_shopbotly_job() -> None:
    known = parse_catalogue().names()
    problems: list[str] = []
    for rule in rules("alert") + rules("record"):
        name = rule.get("alert") or rule["record"]
        expr = rule["expr"]
        if "__name__" in expr:
            problems.append(f"{name}: selects by __name__; name the metrics so they can be checked")
        unknown = series_names(expr) - known
        if unknown:
            problems.append(f"{name}: series not in docs/metrics.md: {as_list(unknown)}")
        problems += [f'{name}: {s} is not scoped to job="shopbotly"' for s in unscoped_selectors(expr)]
    assert not problems, "\n".join(problems)


def test_alerts_have_severity_summary_description_and_runbook() -> None:
    for rule in rules("alert"):
        name = rule["alert"]
        assert re.fullmatch(r"Shopbotly[A-Z][A-Za-z]+", name), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations: dict[str, Any] = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        assert re.fullmatch(r"docs/operations\.md#[a-z0-9-]+", annotations["runbook_url"]), name


def test_alerts_section_of_the_catalogue_lists_every_alert_with_its_runbook() -> None:
    documented = parse_catalogue().alerts
    defined = {rule["alert"]: rule for rule in rules("alert")}
    assert set(documented) == set(defined), (
        f"docs/metrics.md ### Alerts: missing {as_list(set(defined) - set(documented))}, "
        f"unknown {as_list(set(documented) - set(defined))}"
    )
    for name, (severity, link) in documented.items():
        rule = defined[name]
        assert severity == rule["labels"]["severity"], name
        assert "docs/" + link == rule["annotations"]["runbook_url"], (name, link)


def _anchors(markdown: str) -> set[str]:
    """Explicit `{#id}` anchors and GitHub's heading slugs."""
    anchors = set(re.findall(r"\{#([A-Za-z0-9_-]+)\}", markdown))
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_runbook_anchors_exist_in_the_operations_runbook() -> None:
    anchors = _anchors(OPERATIONS.read_text())
    wanted = {rule["annotations"]["runbook_url"].split("#", 1)[1] for rule in rules("alert")}
    assert wanted <= anchors, f"docs/operations.md has no section for: {as_list(wanted - anchors)}"
