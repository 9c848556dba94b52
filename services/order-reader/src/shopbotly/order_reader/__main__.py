"""`shopbotly-order-reader`: serve lookups on SHOPBOTLY_PORT (8081) with the shared HTTP runner."""

from __future__ import annotations

import gc
import sys

from shopbotly.common.config import ConfigError, load_config
from shopbotly.common.http import run_server, server_config
from shopbotly.common.logging import configure_logging
from shopbotly.common.settings import load_settings
from shopbotly.order_reader.app import create_app
from shopbotly.order_reader.settings import Settings


def main() -> None:
    settings = load_settings(Settings)
    configure_logging("order-reader", level=settings.log_level, fmt=settings.log_format)
    try:
        config = load_config(settings.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    app = create_app(settings, config=config)
    server = server_config(
        app,
        host=settings.host,
        port=settings.port,
        limits=settings.http,
        shutdown_grace_s=settings.shutdown_grace_s,
    )
    # What exists now (modules, schemas, the app) lives as long as the process: keep it out of the
    # collector's full passes, which otherwise pause every request for tens of milliseconds.
    gc.collect()
    gc.freeze()
    run_server(server, app.state.runtime.health)


if __name__ == "__main__":
    main()
