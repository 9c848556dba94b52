"""The console's Prometheus metrics (registered once, on the default registry served at /metrics).

Label values are fixed vocabularies: `kind` of the read model, sign-in `outcome`, redrive `decision`,
replay diff `outcome`; topics and partitions of the five topics it follows.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from shopbotly.common.metrics import consumer_lag_gauge

__all__ = ["CONSUMER_LAG", "READ_MODEL_ENTRIES", "REDRIVES", "REPLAY_DIFFS", "SIGN_INS"]

CONSUMER_LAG = consumer_lag_gauge("console")
READ_MODEL_ENTRIES = Gauge(
    "shopbotly_console_read_model_entries",
    "Entries the read model holds, by kind (events, commands, dead_letters).",
    ["kind"],
)
SIGN_INS = Counter(
    "shopbotly_console_sign_ins_total",
    "Sign-in attempts by outcome: accepted, refused (not an operator key).",
    ["outcome"],
)
REDRIVES = Counter(
    "shopbotly_console_redrives_total",
    "Dead letters confirmed for redrive, by decision: redriven, skipped_applied, skipped_redriven, failed.",
    ["decision"],
)
REPLAY_DIFFS = Counter(
    "shopbotly_console_replay_diffs_total",
    "Replay diffs run from the console, by outcome: same, differs, incomplete, refused (bad input or scope).",
    ["outcome"],
)
