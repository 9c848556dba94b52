"""Prometheus metrics of the emulator (module-level: collectors register once per process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shopbotly.common.metrics import LATENCY_BUCKETS

__all__ = [
    "INJECTED_FAULTS",
    "RATE_LIMITED",
    "REQUESTS",
    "REQUEST_SECONDS",
    "WEBHOOK_ATTEMPTS",
    "WEBHOOK_EVENTS",
]

REQUESTS = Counter(
    "shopbotly_crm_emulator_requests_total",
    "CRM API requests answered, by CRM and status.",
    ["system", "status"],
)
REQUEST_SECONDS = Histogram(
    "shopbotly_crm_emulator_request_duration_seconds",
    "Time to answer a CRM API request, injected latency included.",
    ["system"],
    buckets=LATENCY_BUCKETS,
)
RATE_LIMITED = Counter(
    "shopbotly_crm_emulator_rate_limited_total",
    "Requests refused by a rate limit or quota.",
    ["system", "policy"],
)
INJECTED_FAULTS = Counter(
    "shopbotly_crm_emulator_injected_faults_total",
    "Errors added by the fault injector.",
    ["system", "status"],
)
WEBHOOK_EVENTS = Counter(
    "shopbotly_crm_emulator_webhook_events_total",
    "Webhook events emitted, or dropped with no target.",
    ["outcome"],
)
WEBHOOK_ATTEMPTS = Counter(
    "shopbotly_crm_emulator_webhook_attempts_total",
    "Webhook delivery attempts by outcome (delivered, retried, exhausted).",
    ["outcome"],
)
