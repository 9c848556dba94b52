"""`shopbotly-mapper`: run the mapper worker (settings from SHOPBOTLY_*, tenants from SHOPBOTLY_CONFIG)."""

from __future__ import annotations

import sys

from shopbotly.common.config import load_config
from shopbotly.common.errors import ConfigError
from shopbotly.common.logging import configure_logging
from shopbotly.common.settings import load_settings
from shopbotly.mapper.settings import Settings


def main() -> None:
    settings = load_settings(Settings)
    configure_logging("mapper", level=settings.log_level, fmt=settings.log_format)
    # Imported here: faust is heavy and `--help`-style failures above should be quick.
    import faust

    from shopbotly.mapper.app import create_app
    from shopbotly.mapper.domain import Mappings

    try:
        mappings = Mappings.from_config(load_config(settings.config))
    except (ConfigError, ValueError) as exc:
        print(f"shopbotly-mapper: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.mapper_uvloop:
        import mode.loop

        mode.loop.use("uvloop")
    app = create_app(settings, mappings)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
