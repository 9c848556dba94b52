"""A real Prometheus server scrapes the running stack with the repository's scrape configuration and rules:
every target is up, the key series exist (consumer lag per partition, end-to-end latency, ...), every exported
series is in the catalogue, the rules evaluate without errors and none fires on a healthy stack, and every
dashboard query runs."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest

from .catalogue import DASHBOARD, as_list, parse_catalogue, rules
from .conftest import TENANT, ObservedStack, Prometheus
from .promql import substitute_grafana_variables

pytestmark = pytest.mark.e2e

SERVICES = {"ingest", "mapper", "crm-writer", "order-reader", "console", "crm-emulator"}
T = TypeVar("T")

# (PromQL, what it proves): each must return at least one sample.
KEY_SERIES = [
    (
        'shopbotly_console_read_model_entries{job="shopbotly", service="console", kind="events"} > 0',
        "the console's read model holds the lead",
    ),
    (
        'shopbotly_console_consumer_lag_messages{job="shopbotly", service="console"}',
        "the console exports its lag per partition",
    ),
    (
        'up{job="shopbotly"} == 1',
        "the four services and the console answer their scrapes",
    ),
    (
        'up{job="crm-emulator"} == 1',
        "the CRM emulator answers its scrape",
    ),
    (
        'shopbotly_ingest_requests_total{job="shopbotly", service="ingest", outcome="accepted"} > 0',
        "ingest counted the lead",
    ),
    (
        'shopbotly_ingest_rejections_total{job="shopbotly", reason=~"signature_.+"} > 0',
        "ingest counted the bad signature",
    ),
    (
        'shopbotly_ingest_broker_up{job="shopbotly"} == 1',
        "ingest has broker metadata",
    ),
    (
        'shopbotly_mapper_events_total{job="shopbotly", service="mapper", outcome="mapped"} > 0',
        "the mapper mapped it",
    ),
    (
        'shopbotly_crm_writer_commands_total{job="shopbotly", service="crm-writer", outcome="applied"} > 0',
        "crm-writer applied it",
    ),
    (
        'shopbotly_crm_writer_e2e_latency_seconds_count{job="shopbotly"} > 0',
        "end-to-end latency was observed",
    ),
    (
        'shopbotly_crm_writer_requests_total{job="shopbotly", status="200"} > 0',
        "crm-writer counted CRM requests",
    ),
    (
        'shopbotly_crm_writer_circuit_state{job="shopbotly"} == 0',
        "the circuit is exported, closed",
    ),
    (
        'shopbotly_crm_writer_commands_created{job="shopbotly"}',
        "_created series are ingested (ShopbotlyDeadLetters uses them)",
    ),
    (
        'shopbotly_mapper_consumer_lag_messages{job="shopbotly", partition="0"}',
        "the mapper exports lag per partition",
    ),
    (
        'shopbotly_crm_writer_consumer_lag_messages{job="shopbotly", partition="0"}',
        "crm-writer exports lag per partition",
    ),
    (
        'shopbotly_order_reader_consumer_lag_messages{job="shopbotly", partition="0"}',
        "order-reader exports lag per partition",
    ),
    (
        'shopbotly:consumer_lag_messages:sum{service="mapper"}',
        "the lag recording rule covers the mapper",
    ),
    (
        'shopbotly:consumer_lag_messages:sum{service="crm-writer"}',
        "the lag recording rule covers crm-writer",
    ),
    (
        'shopbotly:consumer_lag_messages:sum{service="order-reader"}',
        "the lag recording rule covers order-reader",
    ),
    (
        'shopbotly_order_reader_ready{job="shopbotly"} == 1',
        "order-reader caught up",
    ),
    (
        'shopbotly_order_reader_lookups_total{job="shopbotly", kind="order"} > 0',
        "order-reader counted the lookup",
    ),
    (
        'shopbotly_crm_emulator_requests_total{job="crm-emulator"} > 0',
        "the emulator counted CRM requests",
    ),
]


def eventually(check: Callable[[], T], timeout: float, what: str) -> T:
    """Retry `check` until it stops raising AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} after {timeout:.0f} s: {exc}") from None
        time.sleep(0.5)


def drive_traffic(observed: ObservedStack) -> None:
    """A lead through the whole flow, a webhook with a bad signature, and an order lookup."""
    auth = {"Authorization": f"Bearer {observed.api_key}"}
    lead = httpx.post(
        f"{observed.url('ingest')}/api/v1/leads",
        headers=auth,
        json={"email": f"jane.{uuid.uuid4().hex[:8]}@example.com", "first_name": "Jane"},
        timeout=10,
    )
    assert lead.status_code == 202, lead.text
    forged = httpx.post(
        f"{observed.url('ingest')}/v1/webhooks/{TENANT}/shopbotly",
        headers={
            "content-type": "application/json",
            "webhook-id": f"msg_{uuid.uuid4().hex}",
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl",
        },
        content=json.dumps({"type": "conversation.started", "data": {}}),
        timeout=10,
    )
    assert forged.status_code == 401, forged.text
    lookup = httpx.get(f"{observed.url('order-reader')}/api/v1/orders/o-404", headers=auth, timeout=10)
    assert lookup.status_code == 404, lookup.text


def test_prometheus_scrapes_the_stack_and_the_rules_and_dashboard_work(
    observed_stack: ObservedStack, prometheus: Prometheus
) -> None:
    drive_traffic(observed_stack)

    # Every target of the repository's scrape configuration is up, each service with its `service` label.
    jobs = prometheus.config["scrape_configs"]
    configured = sum(len(static["targets"]) for job in jobs for static in job["static_configs"])

    def targets_up() -> list[dict[str, Any]]:
        active = prometheus.get("/api/v1/targets", state="active")["activeTargets"]
        assert len(active) == configured, f"{len(active)} of {configured} targets discovered"
        down = [f"{t['scrapeUrl']}: {t['lastError']}" for t in active if t["health"] != "up"]
        assert not down, f"targets not up: {down}"
        return list(active)

    active = eventually(targets_up, 30, "targets not up")
    assert {t["labels"].get("service") for t in active} - {None} == SERVICES

    # The key series exist: the flow ran end to end, and every consumer exports lag per partition.
    def key_series() -> None:
        missing = [f"{what} ({expr})" for expr, what in KEY_SERIES if not prometheus.query(expr)]
        assert not missing, "no samples: " + "; ".join(missing)

    eventually(key_series, 45, "key series missing")
    assert len(prometheus.query('up{job="shopbotly"} == 1')) == 5  # the four services and the console

    # Every series the services export is in docs/metrics.md (the unit test checks the code; this, the wire).
    known = parse_catalogue().names()
    # (ALERTS and ALERTS_FOR_STATE carry an alert's labels, job included; they are Prometheus's own.)
    match = {"match[]": '{job=~"shopbotly|crm-emulator"}'}
    exported = set(prometheus.get("/api/v1/label/__name__/values", **match)) - {"ALERTS", "ALERTS_FOR_STATE"}
    assert not exported - known, f"exported but not in docs/metrics.md: {as_list(exported - known)}"

    # The rules loaded and evaluate against real series without errors; none fires on a healthy stack.
    expected = {rule.get("alert") or rule["record"] for rule in rules("alert") + rules("record")}

    def rules_evaluated() -> list[dict[str, Any]]:
        loaded = [r for g in prometheus.get("/api/v1/rules")["groups"] for r in g["rules"]]
        assert {r["name"] for r in loaded} == expected
        never = [r["name"] for r in loaded if r.get("lastEvaluation", "").startswith("0001-")]
        assert not never, f"not evaluated yet: {never}"
        return loaded

    loaded = eventually(rules_evaluated, 15, "rules not evaluated")
    broken = {r["name"]: r.get("lastError") for r in loaded if r["health"] != "ok"}
    assert not broken, f"rules that fail to evaluate: {broken}"
    alerts = prometheus.get("/api/v1/alerts")["alerts"]
    active_alerts = [(a["labels"], a["state"], a["value"]) for a in alerts]
    assert not active_alerts, f"alerts active on a healthy stack: {active_alerts}"

    # Every dashboard query runs against the live server.
    dashboard = json.loads(DASHBOARD.read_text())
    failing: list[str] = []
    for panel in [p for top in dashboard["panels"] for p in (top, *top.get("panels", []))]:
        for target in panel.get("targets", []):
            expr = substitute_grafana_variables(target["expr"])
            response = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": expr}, timeout=10)
            if response.status_code != 200 or response.json()["status"] != "success":
                failing.append(f"{panel['title']} / {target['refId']}: {response.text[:200]}")
    assert not failing, "dashboard queries Prometheus refuses:\n" + "\n".join(failing)
