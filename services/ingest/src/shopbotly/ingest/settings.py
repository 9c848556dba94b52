"""ingest settings: `SHOPBOTLY_*` environment variables on top of the shared service settings."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from shopbotly.common.config._sources import MAX_BODY_BYTES_LIMIT
from shopbotly.common.http import HttpServerSettings
from shopbotly.common.settings import ServiceSettings

__all__ = ["Settings"]


class Settings(ServiceSettings):
    """Everything ingest reads from the environment; the tenants file is `SHOPBOTLY_CONFIG`."""

    port: Annotated[int, Field(ge=1, le=65_535)] = 8080
    # Default request body limit; a source's `max_body_bytes` overrides it for that source.
    max_body_bytes: Annotated[int, Field(ge=1024, le=MAX_BODY_BYTES_LIMIT)] = 512 * 1024
    # Webhook senders give up after 5-10 s; answering 503 before that lets them retry cleanly.
    publish_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    # Retry-After (seconds) sent with 503 while Kafka is unavailable.
    retry_after_s: Annotated[int, Field(ge=1, le=3600)] = 5
    # Repeated webhook deliveries inside this window are answered from memory (per replica).
    dedup_ttl_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 86_400.0
    dedup_max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 200_000
    # Idempotency-Key records of the lead API: shared by every replica through the lead-idempotency topic,
    # whose retention (7 d) bounds the window; each replica holds the keys of the window in memory.
    idempotency_ttl_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 86_400.0
    idempotency_max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    # How often the broker is probed for metadata while up (readiness) and while down (recovery).
    broker_check_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # On SIGTERM, keep serving this long with /readyz failing, so load balancers stop sending first.
    drain_delay_s: Annotated[float, Field(ge=0, le=60)] = 0.0
    # Proxies trusted for X-Forwarded-Proto/For (uvicorn's forwarded_allow_ips), comma-separated.
    forwarded_allow_ips: str = "127.0.0.1"
    # Read deadlines and the connection cap of the HTTP server (`SHOPBOTLY_HTTP_*`).
    http: HttpServerSettings = Field(default_factory=HttpServerSettings)
