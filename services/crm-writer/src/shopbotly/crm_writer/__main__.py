"""`python -m shopbotly.crm_writer` / `shopbotly-crm-writer`: run the writer."""

from __future__ import annotations

import asyncio
import sys

from shopbotly.common.errors import ConfigError
from shopbotly.common.settings import load_settings
from shopbotly.crm_writer.app import run
from shopbotly.crm_writer.settings import Settings


def main() -> None:
    settings = load_settings(Settings)
    try:
        asyncio.run(run(settings))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
