"""The error classes of DESIGN.md: what a failure means for delivery, at a glance.

ShopbotlyError
├── RetryableError   timeout, connection error, 5xx, 429, 409 lock: back off and retry, then DLQ
├── PermanentError   400/422 from the CRM, mapping or schema error: DLQ at once
├── OutageError      circuit open / quota exhausted: pause consumption for the connection
└── AuthError        401: refresh credentials once and retry, then DLQ
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AuthError",
    "ConfigError",
    "ErrorClass",
    "OutageError",
    "PermanentError",
    "RetryableError",
    "ShopbotlyError",
    "classify_http_status",
]


class ErrorClass(StrEnum):
    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    OUTAGE = "outage"
    AUTH = "auth"


class ShopbotlyError(Exception):
    """Base of every error that crosses a service edge. `error_class` drives handling."""

    error_class: ErrorClass = ErrorClass.PERMANENT

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.status = status


class RetryableError(ShopbotlyError):
    error_class = ErrorClass.RETRYABLE


class PermanentError(ShopbotlyError):
    error_class = ErrorClass.PERMANENT


class OutageError(ShopbotlyError):
    error_class = ErrorClass.OUTAGE


class AuthError(ShopbotlyError):
    error_class = ErrorClass.AUTH


class ConfigError(ValueError):
    """The configuration file is invalid. The message names the file, the field path and what was expected."""


def classify_http_status(status: int) -> ErrorClass | None:
    """The error class of an HTTP answer from a peer, or None for success."""
    if 200 <= status < 300:
        return None
    if status == 401:
        return ErrorClass.AUTH
    if status in (408, 409, 425, 429) or status >= 500:
        return ErrorClass.RETRYABLE
    return ErrorClass.PERMANENT
