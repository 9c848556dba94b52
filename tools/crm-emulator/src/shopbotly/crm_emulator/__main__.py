"""`shopbotly-crm-emulator [--host H] [--port P] [--db-path FILE] [--tls] [--tls-ca-path FILE]`: serve the
emulator with uvicorn, over HTTPS with `--tls` (a local CA, its PEM written for clients to trust)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from shopbotly.common.logging import configure_logging, get_logger
from shopbotly.common.settings import load_settings
from shopbotly.crm_emulator.app import create_app
from shopbotly.crm_emulator.settings import EmulatorSettings
from shopbotly.crm_emulator.tls import prepare_tls


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="shopbotly-crm-emulator", description=__doc__)
    parser.add_argument("--host", help="bind address (SHOPBOTLY_EMULATOR_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (SHOPBOTLY_EMULATOR_PORT, default 8090)")
    parser.add_argument(
        "--db-path", type=Path, help="SQLite file (SHOPBOTLY_EMULATOR_DB_PATH, default in memory)"
    )
    parser.add_argument(
        "--tls", action="store_true", default=None, help="serve HTTPS (SHOPBOTLY_EMULATOR_TLS, default off)"
    )
    parser.add_argument(
        "--tls-ca-path",
        type=Path,
        help="where the CA's PEM is written for clients (SHOPBOTLY_EMULATOR_TLS_CA_PATH, "
        "default <data dir>/crm-emulator-ca.pem)",
    )
    args = parser.parse_args(argv)
    given = {
        "host": args.host,
        "port": args.port,
        "db_path": args.db_path,
        "tls": args.tls,
        "tls_ca_path": args.tls_ca_path,
    }
    settings = load_settings(EmulatorSettings, **{k: v for k, v in given.items() if v is not None})
    configure_logging("crm-emulator", level=settings.log_level, fmt=settings.log_format)
    chain: str | None = None
    if settings.tls:
        served = prepare_tls(settings.ca_path(), settings.host, settings.tls_names)
        chain = str(served.chain)
        get_logger(__name__).info("serving HTTPS; clients trust the CA bundle", ca_bundle=str(served.ca_path))
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ssl_certfile=chain,
        ssl_keyfile=chain,
    )


if __name__ == "__main__":
    main()
