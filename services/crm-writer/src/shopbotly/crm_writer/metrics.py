"""crm-writer's Prometheus metrics (served on /metrics by shopbotly.common.health).

`connection` labels are `tenant:connection` (bounded by the config); `partition` labels by the topic's
partition count.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shopbotly.common.metrics import BATCH_BUCKETS, E2E_BUCKETS, LATENCY_BUCKETS, consumer_lag_gauge

__all__ = [
    "ASSIGNED_PARTITIONS",
    "ASSIGNMENTS",
    "BATCH_RECORDS",
    "CIRCUIT_STATE",
    "COMMANDS",
    "CONSUMER_LAG",
    "DEAD_LETTERED",
    "DROPPED_PROPERTIES",
    "E2E_LATENCY",
    "FENCED",
    "HELD",
    "HELD_AGE",
    "IN_FLIGHT",
    "PAUSED_PARTITIONS",
    "PRODUCER_REPLACED",
    "QUEUE_DEPTH",
    "RATE_LIMIT_RATE",
    "RATE_LIMIT_REMAINING",
    "REFETCHES",
    "REQUESTS",
    "REQUEST_DURATION",
    "RETRIES",
    "THROTTLED",
]

_S = "shopbotly_crm_writer"

REQUESTS = Counter(
    f"{_S}_requests_total",
    "HTTP requests to CRMs and bots, by connection, request op and status (HTTP code, or error).",
    ["connection", "op", "status"],
)
REQUEST_DURATION = Histogram(
    f"{_S}_request_duration_seconds",
    "Duration of one HTTP request to a CRM or bot.",
    ["connection", "op"],
    buckets=LATENCY_BUCKETS,
)
COMMANDS = Counter(
    f"{_S}_commands_total",
    "Commands finished, by connection, command op and outcome (applied, duplicate, dead_lettered).",
    ["connection", "op", "outcome"],
)
IN_FLIGHT = Gauge(f"{_S}_in_flight_identities", "Identities being written right now.", ["partition"])
QUEUE_DEPTH = Gauge(
    f"{_S}_queue_depth_commands", "Commands received and waiting for their identity's turn.", ["partition"]
)
RETRIES = Counter(
    f"{_S}_retries_total",
    "Write attempts that will be retried, by connection and error class (retryable, throttled, outage).",
    ["connection", "error_class"],
)
DEAD_LETTERED = Counter(
    f"{_S}_dead_lettered_total",
    "Commands copied to the dead-letter topic, by connection and error class.",
    ["connection", "error_class"],
)
CIRCUIT_STATE = Gauge(
    f"{_S}_circuit_state",
    "Circuit breaker state per connection: 0 closed, 1 half-open, 2 open.",
    ["connection"],
)
RATE_LIMIT_REMAINING = Gauge(
    f"{_S}_rate_limit_remaining_requests",
    "Requests left in the CRM's current window, from its quota headers (scope: window or daily).",
    ["connection", "scope"],
)
RATE_LIMIT_RATE = Gauge(
    f"{_S}_rate_limit_requests_per_second",
    "Sustained request rate this replica allows itself per connection (its share of the limit).",
    ["connection"],
)
THROTTLED = Counter(
    f"{_S}_throttled_total", "429 answers by connection and the CRM's policy name.", ["connection", "policy"]
)
E2E_LATENCY = Histogram(
    f"{_S}_e2e_latency_seconds",
    "From ingest accepting the source event to the effect applied in the CRM (or the bot notified).",
    ["connection"],
    buckets=E2E_BUCKETS,
)
BATCH_RECORDS = Histogram(
    f"{_S}_batch_records", "Records per batch request to a CRM.", ["connection", "op"], buckets=BATCH_BUCKETS
)
PAUSED_PARTITIONS = Gauge(f"{_S}_paused_partitions", "crm-commands partitions whose fetching is paused.")
HELD = Gauge(
    f"{_S}_held_commands",
    "Commands of a connection not finished yet in this replica: queued, in flight (throttled or waiting for "
    "an open circuit included) or left in Kafka to fetch again.",
    ["connection"],
)
HELD_AGE = Gauge(
    f"{_S}_held_oldest_age_seconds",
    "Age of the oldest command of a connection not finished yet in this replica (0: none).",
    ["connection"],
)
REFETCHES = Counter(
    f"{_S}_refetches_total",
    "Times a partition was read again from an older offset for commands a full connection lane dropped.",
)
ASSIGNED_PARTITIONS = Gauge(
    f"{_S}_assigned_partitions", "crm-commands partitions this replica owns and writes (0 while it drains)."
)
ASSIGNMENTS = Counter(
    f"{_S}_partition_assignments_total", "Rebalances that gave this replica its partitions (ready to write)."
)
FENCED = Counter(
    f"{_S}_fenced_total",
    "Times the group had already thrown this replica out when it learned of a rebalance (in-flight writes "
    "abandoned at once).",
)
CONSUMER_LAG = consumer_lag_gauge("crm_writer")
PRODUCER_REPLACED = Counter(
    "shopbotly_crm_writer_producer_replacements_total",
    "Kafka producers replaced after a failed delivery (a new producer id; see ResilientProducer).",
)

# Property names stay out of the labels (a tenant's extra_fields make them unbounded); each is logged once.
DROPPED_PROPERTIES = Counter(
    f"{_S}_dropped_properties_total",
    "Property values left out of CRM writes because the CRM refused the property (unknown_properties: drop).",
    ["connection", "object_type"],
)
