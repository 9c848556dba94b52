"""structlog JSON logging with `event_id`, `tenant`, `trace_id` bound per message, and redaction.

Secrets (by key name) are replaced by `***`; e-mail addresses anywhere in a log line are masked, so
raw PII does not reach log storage.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, merge_contextvars

__all__ = ["bind", "bound", "configure_logging", "get_logger", "mask_email", "redact"]

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
            processor=renderer, foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries are loud at INFO; their warnings still come through.
    for noisy in ("aiokafka", "kafka", "faust", "mode", "uvicorn.access", "httpx"):
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
