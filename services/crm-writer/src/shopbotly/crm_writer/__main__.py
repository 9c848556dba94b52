"""`python -m shopbotly.crm_writer` / `shopbotly-crm-writer`: run the writer."""

from __future__ import annotations

import asyncio
import gc
import sys

from shopbotly.common.errors import ConfigError
from shopbotly.common.settings import load_settings
from shopbotly.crm_writer.app import run
from shopbotly.crm_writer.settings import Settings


def main() -> None:
    settings = load_settings(Settings)
    # What exists now (the imported modules and their objects) lives as long as the process: frozen out of the
    # collector's reach, a full collection walks the writer's own objects only, instead of pausing the one
    # event loop for tens of milliseconds (as in ingest: docs/benchmarks.md, "What bounds ingest").
    gc.collect()
    gc.freeze()
    try:
        asyncio.run(run(settings))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
