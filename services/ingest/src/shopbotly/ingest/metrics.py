"""ingest's Prometheus metrics (registered once, on the default registry served at /metrics).

Label values are bounded: tenants and sources come from the config, never from the URL of an unknown
source (those count as `_unknown`); `reason` and `outcome` are fixed vocabularies.
"""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter, Gauge, Histogram

from shopbotly.common.metrics import LATENCY_BUCKETS

__all__ = [
    "BODY_BYTES",
    "BROKER_UP",
    "DEDUP_ENTRIES",
    "EVENTS_PUBLISHED",
    "IDEMPOTENCY_CLAIM_DURATION",
    "IDEMPOTENCY_ENTRIES",
    "IDEMPOTENCY_EVICTIONS",
    "IDEMPOTENCY_INVALID_RECORDS",
    "IN_FLIGHT",
    "PRODUCER_REPLACED",
    "PUBLISH_DURATION",
    "PUBLISH_FAILURES",
    "REJECTIONS",
    "REQUESTS",
    "REQUEST_DURATION",
    "UNKNOWN",
    "body_bytes",
    "events_published",
    "rejections",
    "request_duration",
    "requests",
]

UNKNOWN = "_unknown"

REQUESTS = Counter(
    "shopbotly_ingest_requests_total",
    "Requests by tenant, source and outcome (accepted, duplicate, challenge, rejected, unavailable).",
    ["tenant", "source", "outcome"],
)
REJECTIONS = Counter(
    "shopbotly_ingest_rejections_total",
    "Refused requests by reason (signature_mismatch, too_large, malformed_json, ...); none is published.",
    ["tenant", "source", "reason"],
)
REQUEST_DURATION = Histogram(
    "shopbotly_ingest_request_duration_seconds",
    "Time from the request's arrival to its answer, body read included.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
PUBLISH_DURATION = Histogram(
    "shopbotly_ingest_publish_duration_seconds",
    "Time from handing events to the producer to the broker's acknowledgement (acks=all).",
    buckets=LATENCY_BUCKETS,
)
BODY_BYTES = Counter(
    "shopbotly_ingest_request_body_bytes_total",
    "Bytes of request bodies read, by tenant and source.",
    ["tenant", "source"],
)
EVENTS_PUBLISHED = Counter(
    "shopbotly_ingest_events_published_total",
    "Raw events acknowledged by Kafka (a HubSpot batch counts each element).",
    ["tenant", "source"],
)
PUBLISH_FAILURES = Counter(
    "shopbotly_ingest_publish_failures_total",
    "Publishes that did not get an acknowledgement: timeout, broker unavailable or a Kafka error.",
    ["reason"],
)
PRODUCER_REPLACED = Counter(
    "shopbotly_ingest_producer_replacements_total",
    "Kafka producers replaced after a failed delivery (a new producer id; see ResilientProducer).",
)
BROKER_UP = Gauge(
    "shopbotly_ingest_broker_up",
    "1 while the producer has fresh broker metadata, else 0 (requests get 503 while it is 0).",
)
IN_FLIGHT = Gauge("shopbotly_ingest_in_flight_requests", "Requests being handled right now.")
DEDUP_ENTRIES = Gauge(
    "shopbotly_ingest_dedup_entries", "Event ids remembered for dedup of repeated deliveries (this replica)."
)
IDEMPOTENCY_ENTRIES = Gauge(
    "shopbotly_ingest_idempotency_entries",
    "Idempotency-Key bindings of the lead API within the window, as this replica read them from the topic.",
)
IDEMPOTENCY_CLAIM_DURATION = Histogram(
    "shopbotly_ingest_idempotency_claim_duration_seconds",
    "Claiming a new Idempotency-Key: writing its record (acks=all) until this replica has read it back.",
    buckets=LATENCY_BUCKETS,
)
IDEMPOTENCY_EVICTIONS = Counter(
    "shopbotly_ingest_idempotency_evictions_total",
    "Bindings dropped before their window ended because SHOPBOTLY_IDEMPOTENCY_MAX_ENTRIES was reached.",
)
IDEMPOTENCY_INVALID_RECORDS = Counter(
    "shopbotly_ingest_idempotency_invalid_records_total",
    "Records of the lead-idempotency topic this replica could not read (they bind nothing).",
)


# The label children of the hot path, looked up once per label set: `labels()` converts, locks and hashes on
# every call. The label sets are bounded (see above), so these caches are too.


@cache
def requests(tenant: str, source: str, outcome: str) -> Counter:
    return REQUESTS.labels(tenant, source, outcome)


@cache
def rejections(tenant: str, source: str, reason: str) -> Counter:
    return REJECTIONS.labels(tenant, source, reason)


@cache
def request_duration(route: str) -> Histogram:
    return REQUEST_DURATION.labels(route)


@cache
def body_bytes(tenant: str, source: str) -> Counter:
    return BODY_BYTES.labels(tenant, source)


@cache
def events_published(tenant: str, source: str) -> Counter:
    return EVENTS_PUBLISHED.labels(tenant, source)
