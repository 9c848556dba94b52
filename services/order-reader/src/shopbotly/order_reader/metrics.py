"""The order-reader's Prometheus instruments, registered on one registry per app instance.

Per instance rather than module globals, so two replicas can run in one test process; `close()`
unregisters them so the process registry can be reused by the next app.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from shopbotly.common.cache import BoundedCache
from shopbotly.common.metrics import LATENCY_BUCKETS, consumer_lag_gauge

__all__ = ["LookupKind", "Metrics", "Outcome"]

SERVICE = "order_reader"
# Lookups answer from memory in tens of microseconds; the shared buckets start at 0.5 ms.
LOOKUP_BUCKETS = (0.00005, 0.0001, 0.00025, *LATENCY_BUCKETS)


class LookupKind(StrEnum):
    ORDER = "order"
    ORDER_HISTORY = "order_history"
    TICKET = "ticket"
    TICKET_HISTORY = "ticket_history"


class Outcome(StrEnum):
    FOUND = "found"
    NOT_MODIFIED = "not_modified"
    NOT_FOUND = "not_found"
    READTHROUGH_FOUND = "readthrough_found"
    READTHROUGH_UNAVAILABLE = "readthrough_unavailable"
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = f"shopbotly_{SERVICE}"
        self.lookups = Counter(
            f"{p}_lookups_total",
            "Lookups answered, by kind and outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
        self.lookup_seconds = Histogram(
            f"{p}_lookup_duration_seconds",
            "Time to answer a lookup inside the app (auth, cache or store, encoding).",
            ["kind"],
            buckets=LOOKUP_BUCKETS,
            registry=registry,
        )
        self.cache = _CacheRequests(f"{p}_cache_requests", "Answer-cache lookups by result (hit, miss).")
        registry.register(self.cache)
        self.readthrough = Counter(
            f"{p}_readthrough_requests_total",
            "Local misses handled by read-through, by outcome "
            "(found, not_found, error, cached, negative_cached).",
            ["outcome"],
            registry=registry,
        )
        self.readthrough_seconds = Histogram(
            f"{p}_readthrough_duration_seconds",
            "Time of calls to upstream order APIs.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.table_records = Gauge(
            f"{p}_table_records", "Records in the local table, by table.", ["table"], registry=registry
        )
        self.lag = consumer_lag_gauge(SERVICE, registry)
        self.rebuild_progress = Gauge(
            f"{p}_rebuild_progress_ratio",
            "Share of the catch-up to the high watermarks captured at start that is done (0..1).",
            registry=registry,
        )
        self.catchup_remaining = Gauge(
            f"{p}_catchup_remaining_messages",
            "Messages still to read before the table has caught up with the start high watermarks.",
            registry=registry,
        )
        self.records = Counter(
            f"{p}_records_consumed_total",
            "Records read from the topics since start, by topic and result (upsert, delete, rejected).",
            ["topic", "result"],
            registry=registry,
        )
        self.rebuilds = Counter(
            f"{p}_rebuilds_total",
            "Times the store was emptied and rebuilt from the topics, by reason (empty, reset).",
            ["reason"],
            registry=registry,
        )
        self.apply_seconds = Histogram(
            f"{p}_apply_duration_seconds",
            "Time to decode and write one batch of records with its offsets.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ready = Gauge(f"{p}_ready", "1 once the table has caught up, else 0.", registry=registry)
        self._lookup_counts: dict[tuple[str, str], Counter] = {}
        self._lookup_times: dict[str, Histogram] = {}
        self._collectors: list[Collector] = [
            self.lookups,
            self.lookup_seconds,
            self.cache,
            self.readthrough,
            self.readthrough_seconds,
            self.table_records,
            self.lag,
            self.rebuild_progress,
            self.catchup_remaining,
            self.records,
            self.rebuilds,
            self.apply_seconds,
            self.ready,
        ]

    def watch_answer_cache(self, cache: BoundedCache[Any, Any]) -> None:
        self.cache.cache = cache

    def count_lookup(self, kind: str, outcome: str) -> None:
        # Children are looked up once: `labels()` takes a lock and builds a key on every call. LookupKind and
        # Outcome members are passed as they are: they are str, and hash and compare as their values.
        child = self._lookup_counts.get((kind, outcome))
        if child is None:
            child = self._lookup_counts[(kind, outcome)] = self.lookups.labels(kind, outcome)
        child.inc()

    def observe_lookup(self, kind: str, seconds: float) -> None:
        child = self._lookup_times.get(kind)
        if child is None:
            child = self._lookup_times[kind] = self.lookup_seconds.labels(kind)
        child.observe(seconds)

    def close(self) -> None:
        for collector in self._collectors:
            with contextlib.suppress(KeyError):  # already unregistered
                self.registry.unregister(collector)
        self._collectors.clear()


class _CacheRequests(Collector):
    """A counter read from the cache's own hit and miss counts when scraped, so a lookup counts nothing."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.cache: BoundedCache[Any, Any] | None = None

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=["result"])
        cache = self.cache
        family.add_metric(["hit"], cache.hits if cache is not None else 0)
        family.add_metric(["miss"], cache.misses if cache is not None else 0)
        yield family
