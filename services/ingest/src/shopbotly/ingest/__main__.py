"""`shopbotly-ingest`: serve webhooks and the lead API on SHOPBOTLY_PORT (8080) with the shared HTTP runner.

SIGTERM: /readyz fails at once; after SHOPBOTLY_DRAIN_DELAY_S the server stops accepting, finishes the
requests in flight (up to SHOPBOTLY_SHUTDOWN_GRACE_S), then flushes and stops the Kafka producer (bounded
by the same grace), and exits 0.
"""

from __future__ import annotations

import gc
import sys

import uvicorn

from shopbotly.common.config import ConfigError
from shopbotly.common.http import run_server, server_config
from shopbotly.common.logging import configure_logging, get_logger
from shopbotly.common.settings import load_settings
from shopbotly.ingest.app import create_app
from shopbotly.ingest.settings import Settings

__all__ = ["main", "uvicorn_config"]


def uvicorn_config(app: object, settings: Settings, *, port: int | None = None) -> uvicorn.Config:
    """The server settings ingest runs with (`port` overrides the setting: 0 picks a free one, for tests)."""
    return server_config(
        app,
        host=settings.host,
        port=settings.port if port is None else port,
        limits=settings.http,
        shutdown_grace_s=settings.shutdown_grace_s,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


def main() -> None:
    settings = load_settings(Settings)
    configure_logging("ingest", level=settings.log_level, fmt=settings.log_format)
    try:
        app = create_app(settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    # What exists now (modules, the app, its models: ~80,000 objects) lives as long as the process: frozen out
    # of the collector's reach, a full collection under load walks a few thousand objects instead of pausing
    # the one event loop for tens of milliseconds, which was most of the p99 at half the maximum rate
    # (docs/benchmarks.md, "What bounds ingest").
    gc.collect()
    gc.freeze()
    run_server(uvicorn_config(app, settings), app.state.runtime.health, drain_delay_s=settings.drain_delay_s)
    get_logger(__name__).info("ingest exited")


if __name__ == "__main__":
    main()
