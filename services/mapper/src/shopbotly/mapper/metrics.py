"""The mapper's Prometheus metrics (docs/services/mapper.md lists them with their labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shopbotly.common.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, consumer_lag_gauge

__all__ = [
    "BATCH_SIZE",
    "COMMANDS",
    "CONSUMER_LAG",
    "EVENTS",
    "MAPPING_SECONDS",
    "PATCHES",
    "PRODUCED",
    "PRODUCER_REPLACED",
    "PRODUCE_RETRIES",
    "PUBLISH_SECONDS",
    "RESULTS",
    "RULE_HITS",
    "STATE_ENTRIES",
    "STATE_INVALID",
]

# Tenants and rule ids come from the config, so these label sets are bounded; an event for a tenant the
# config does not know is counted under tenant="unknown".
EVENTS = Counter(
    "shopbotly_mapper_events_total",
    "Raw events by outcome: mapped, no_rule (no rule matched), dead_lettered.",
    ["tenant", "outcome"],
)
RULE_HITS = Counter("shopbotly_mapper_rule_hits_total", "Events that triggered a rule.", ["tenant", "rule"])
COMMANDS = Counter("shopbotly_mapper_commands_total", "CRM commands emitted, by op.", ["op"])
MAPPING_SECONDS = Histogram(
    "shopbotly_mapper_mapping_duration_seconds",
    "Time to map one raw event (parse, rules, merge), without I/O.",
    buckets=LATENCY_BUCKETS,
)
PUBLISH_SECONDS = Histogram(
    "shopbotly_mapper_publish_duration_seconds",
    "Time from a batch's first produce to the broker's acknowledgement of its last.",
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "shopbotly_mapper_batch_size_events", "Events per processed batch.", buckets=BATCH_BUCKETS
)
PRODUCED = Counter(
    "shopbotly_mapper_produced_messages_total",
    "Messages acknowledged by the broker, by logical topic.",
    ["topic"],
)
PRODUCER_REPLACED = Counter(
    "shopbotly_mapper_producer_replacements_total",
    "Kafka producers replaced after a failed delivery (a new producer id; see ResilientProducer).",
)
PRODUCE_RETRIES = Counter(
    "shopbotly_mapper_produce_retries_total", "Batch publishes retried after a produce failure."
)
RESULTS = Counter(
    "shopbotly_mapper_crm_results_total",
    "crm-results messages read: ticket_seeded, ignored, invalid.",
    ["outcome"],
)
PATCHES = Counter(
    "shopbotly_mapper_state_patches_total",
    "State patches by kind (order, ticket) and outcome: routed (stage 1 sent one), merged, dead_lettered "
    "(stage 2), invalid (unreadable, skipped).",
    ["kind", "outcome"],
)
STATE_ENTRIES = Gauge("shopbotly_mapper_state_entries", "Orders and tickets held in memory.", ["kind"])
STATE_INVALID = Counter(
    "shopbotly_mapper_state_invalid_records_total", "Unreadable records skipped on the orders/tickets topics."
)
CONSUMER_LAG = consumer_lag_gauge("mapper")
