"""Prometheus helpers: standard buckets, the `/metrics` response, and consumer-lag gauges.

Names follow `shopbotly_<service>_<thing>_<unit>`; counters end in `_total`; durations are seconds.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Gauge, generate_latest
from starlette.responses import Response

__all__ = [
    "BATCH_BUCKETS",
    "E2E_BUCKETS",
    "LATENCY_BUCKETS",
    "REGISTRY",
    "consumer_lag_gauge",
    "metrics_response",
]

# Request/handler latency: 0.5 ms to 10 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# End to end (event received → CRM applied): 5 ms to 5 min, retries and outages included; finer between 50 and
# 250 ms, where a rate-limited connection's latency lies (a quantile is interpolated within its bucket).
E2E_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200)


def metrics_response(registry: CollectorRegistry = REGISTRY) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def consumer_lag_gauge(service: str, registry: CollectorRegistry = REGISTRY) -> Gauge:
    """Per-partition consumer lag in messages (high watermark minus committed/position)."""
    return Gauge(
        f"shopbotly_{service}_consumer_lag_messages",
        "Messages between the consumer's position and the partition's high watermark.",
        ["topic", "partition"],
        registry=registry,
    )
