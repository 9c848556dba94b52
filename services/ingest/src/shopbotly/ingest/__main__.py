"""`shopbotly-ingest`: serve webhooks and the lead API on SHOPBOTLY_PORT (8080) with uvloop and httptools.

SIGTERM: /readyz fails at once; after SHOPBOTLY_DRAIN_DELAY_S the server stops accepting, finishes the
requests in flight (up to SHOPBOTLY_SHUTDOWN_GRACE_S), then flushes and stops the Kafka producer.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from types import FrameType

import uvicorn

from shopbotly.common.config import ConfigError
from shopbotly.common.health import Health
from shopbotly.common.logging import configure_logging, get_logger
from shopbotly.common.settings import load_settings
from shopbotly.ingest.app import create_app
from shopbotly.ingest.settings import Settings

__all__ = ["IngestServer", "main", "uvicorn_config"]


class IngestServer(uvicorn.Server):
    """uvicorn with a drain phase: readiness fails first, the listener closes `drain_delay_s` later."""

    def __init__(self, config: uvicorn.Config, health: Health, drain_delay_s: float) -> None:
        super().__init__(config)
        self.health = health
        self.drain_delay_s = drain_delay_s
        self._exit_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.health.draining = True
        if self.drain_delay_s > 0 and self._exit_at is None:
            self._exit_at = time.monotonic() + self.drain_delay_s
            self._captured_signals.append(sig)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)


def uvicorn_config(app: object, settings: Settings) -> uvicorn.Config:
    """The server settings ingest runs with (the benchmark serves its baseline with the same ones)."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
    )


def main() -> None:
    settings = load_settings(Settings)
    configure_logging("ingest", level=settings.log_level, fmt=settings.log_format)
    try:
        app = create_app(settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    server = IngestServer(uvicorn_config(app, settings), app.state.runtime.health, settings.drain_delay_s)
    # uvicorn re-raises the signal it stopped for once it is done; ours makes that a clean exit (status 0)
    # rather than death by SIGTERM, since the shutdown was orderly.
    signal.signal(signal.SIGTERM, lambda *_: None)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the same orderly shutdown, no traceback
        server.run()
    get_logger(__name__).info("ingest exited")


if __name__ == "__main__":
    main()
