"""`shopbotly-console`: serve the operator console on SHOPBOTLY_PORT (8082) with the shared HTTP runner."""

from __future__ import annotations

from shopbotly.common.http import run_server, server_config
from shopbotly.common.logging import configure_logging
from shopbotly.common.settings import load_settings
from shopbotly.console.app import create_app
from shopbotly.console.settings import Settings


def main() -> None:
    settings = load_settings(Settings)
    configure_logging("console", level=settings.log_level, fmt=settings.log_format)
    app = create_app(settings)
    server = server_config(
        app,
        host=settings.host,
        port=settings.port,
        limits=settings.http,
        shutdown_grace_s=settings.shutdown_grace_s,
    )
    run_server(server, app.state.health)


if __name__ == "__main__":
    main()
