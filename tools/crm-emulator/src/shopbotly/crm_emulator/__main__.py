"""`shopbotly-crm-emulator [--host H] [--port P] [--db-path FILE]`: serve the emulator with uvicorn."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from shopbotly.common.logging import configure_logging
from shopbotly.common.settings import load_settings
from shopbotly.crm_emulator.app import create_app
from shopbotly.crm_emulator.settings import EmulatorSettings


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="shopbotly-crm-emulator", description=__doc__)
    parser.add_argument("--host", help="bind address (SHOPBOTLY_EMULATOR_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (SHOPBOTLY_EMULATOR_PORT, default 8090)")
    parser.add_argument(
        "--db-path", type=Path, help="SQLite file (SHOPBOTLY_EMULATOR_DB_PATH, default in memory)"
    )
    args = parser.parse_args(argv)
    settings = load_settings(EmulatorSettings)
    overrides = {
        k: v
        for k, v in {"host": args.host, "port": args.port, "db_path": args.db_path}.items()
        if v is not None
    }
    if overrides:
        settings = settings.model_copy(update=overrides)
    configure_logging("crm-emulator", level=settings.log_level, fmt=settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
