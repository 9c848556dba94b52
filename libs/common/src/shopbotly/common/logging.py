"""structlog JSON logging with `event_id`, `tenant`, `trace_id` bound per message, and redaction.

Secrets (by key name) are replaced by `***`; e-mail addresses anywhere in a log line are masked, so
raw PII does not reach log storage. Client libraries that repeat themselves (aiokafka while a broker is
down) are folded: one line per kind per interval, with the count of those held back (`RepeatFilter`).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, merge_contextvars

__all__ = ["RepeatFilter", "bind", "bound", "configure_logging", "get_logger", "mask_email", "redact"]

_SECRET_KEY = re.compile(r"(secret|password|passwd|token|authorization|signature|api[_-]?key|cookie)", re.I)
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def mask_email(text: str) -> str:
    """`jane.doe@example.com` → `j***@example.com`: enough to correlate, not enough to contact."""
    return _EMAIL.sub(r"\1***@\2", text)


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return "***"
    if isinstance(value, str):
        return mask_email(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hide secrets and mask e-mail addresses."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


# The loggers of the Kafka clients (aiokafka, and faust/mode around it in the mapper): while a broker is away
# they report every reconnect and every retry of every background loop.
CLIENT_LOGGERS = ("aiokafka", "kafka", "faust", "mode")


@dataclass
class _Kind:
    shown_at: float
    held_back: int = 0


class RepeatFilter(logging.Filter):
    """Lets the first record of a kind through, then at most one per `interval_s`; the one let through
    carries `repeated`: how many of its kind were held back since the last one shown.

    A kind is logger, level and message template (`Unable connect to node with id %s: %s`), so the same
    error with other arguments (another node, another errno) counts as a repeat. Only records of the
    `loggers` (and their children) are folded; the services' own lines always pass. Thread-safe: faust's
    consumer thread logs too. The count of the last interval shows on the next line of its kind, if any.
    """

    def __init__(
        self,
        interval_s: float = 10.0,
        loggers: tuple[str, ...] = CLIENT_LOGGERS,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 1024,
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._loggers = loggers
        self._clock = clock
        self._max_kinds = max_kinds
        self._kinds: dict[tuple[str, int, str], _Kind] = {}
        self._lock = threading.Lock()

    def _folds(self, name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in self._loggers)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._folds(record.name):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            kind = self._kinds.get(key)
            if kind is not None and now - kind.shown_at < self.interval_s:
                kind.held_back += 1
                return False
            if kind is not None and kind.held_back:
                record.__dict__["repeated"] = kind.held_back
            if kind is None and len(self._kinds) >= self._max_kinds:
                # Bounded memory: forget the kind shown longest ago.
                del self._kinds[min(self._kinds, key=lambda k: self._kinds[k].shown_at)]
            self._kinds[key] = _Kind(shown_at=now)
            return True


def configure_logging(service: str, *, level: str = "info", fmt: str = "json") -> None:
    """Configure structlog and route the standard library's logging (uvicorn, aiokafka) through it."""
    shared: list[Any] = [
        merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=("repeated",)),
                *shared,
            ],
        )
    )
    # On the handler, not the loggers: a logger's filters do not see its children's records.
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries are loud at INFO; their warnings still come through.
    for noisy in (*CLIENT_LOGGERS, "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    bind_contextvars(service=service)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)


def bind(**values: Any) -> None:
    bind_contextvars(**{k: v for k, v in values.items() if v is not None})


@contextmanager
def bound(
    *, event_id: str | None = None, tenant: str | None = None, trace_id: str | None = None, **extra: Any
) -> Iterator[None]:
    """Bind the standard correlation fields for the duration of one message."""
    values = {"event_id": event_id, "tenant": tenant, "trace_id": trace_id, **extra}
    with bound_contextvars(**{k: v for k, v in values.items() if v is not None}):
        yield
