"""`shopbotly-order-reader`: serve lookups on SHOPBOTLY_PORT (8081) with uvloop and httptools."""

from __future__ import annotations

import gc
import math
import sys
from types import FrameType

import uvicorn

from shopbotly.common.config import ConfigError, load_config
from shopbotly.common.logging import configure_logging
from shopbotly.common.settings import load_settings
from shopbotly.order_reader.app import create_app
from shopbotly.order_reader.runtime import Runtime
from shopbotly.order_reader.settings import Settings


class _Server(uvicorn.Server):
    """Fails /readyz as soon as SIGTERM arrives, while in-flight requests finish within the grace period."""

    runtime: Runtime | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.runtime is not None:
            self.runtime.health.draining = True
        super().handle_exit(sig, frame)


def main() -> None:
    settings = load_settings(Settings)
    configure_logging("order-reader", level=settings.log_level, fmt=settings.log_format)
    try:
        config = load_config(settings.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    app = create_app(settings, config=config)
    server = _Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
        )
    )
    server.runtime = app.state.runtime
    # What exists now (modules, schemas, the app) lives as long as the process: keep it out of the
    # collector's full passes, which otherwise pause every request for tens of milliseconds.
    gc.collect()
    gc.freeze()
    server.run()


if __name__ == "__main__":
    main()
