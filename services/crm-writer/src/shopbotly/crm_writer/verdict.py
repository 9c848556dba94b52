"""What a CRM's answer means for delivery: the verdict every connector's classifier returns.

Pure. A verdict drives three things: the write (done, retry, dead-letter), the connection's circuit
(did the CRM answer at all?) and its rate limit (quota headers, throttling).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from shopbotly.common.errors import (
    AuthError,
    OutageError,
    PermanentError,
    RetryableError,
    ShopbotlyError,
)

__all__ = ["Quota", "ThrottledError", "Verdict", "VerdictKind", "parse_retry_after"]


class ThrottledError(RetryableError):
    """The CRM refused for rate (429). The connection's limiter holds everyone back; the write retries
    without spending one of its attempts, since nothing is wrong with it."""

    def __init__(self, message: str, *, retry_after: float | None = None, policy: str | None = None) -> None:
        super().__init__(message, retry_after=retry_after, status=429)
        self.policy = policy


class VerdictKind(StrEnum):
    OK = "ok"
    RETRY = "retry"  # transient: timeout, 5xx, 409 lock
    THROTTLED = "throttled"  # rate: 429 with a short policy
    OUTAGE = "outage"  # quota exhausted for a long time (HubSpot DAILY, Salesforce REQUEST_LIMIT_EXCEEDED)
    AUTH = "auth"  # credentials refused: refresh once
    PERMANENT = "permanent"  # the request itself is wrong: no retry helps
    DUPLICATE = "duplicate"  # the record already exists (a connection's response rule): converge on it


@dataclass(frozen=True)
class Quota:
    """What the CRM says about its limit (any field may be unknown)."""

    max_requests: int | None = None
    interval_s: float | None = None
    remaining: int | None = None
    daily_remaining: int | None = None


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    status: int
    message: str = ""
    retry_after: float | None = None
    policy: str | None = None
    quota: Quota | None = None

    @property
    def ok(self) -> bool:
        return self.kind is VerdictKind.OK

    @property
    def crm_answered(self) -> bool:
        """Whether this counts as the CRM being up, for the circuit breaker."""
        return self.kind not in (VerdictKind.RETRY, VerdictKind.OUTAGE)

    def error(self) -> ShopbotlyError:
        msg = self.message or f"HTTP {self.status}"
        match self.kind:
            case VerdictKind.RETRY:
                return RetryableError(msg, retry_after=self.retry_after, status=self.status)
            case VerdictKind.THROTTLED:
                return ThrottledError(msg, retry_after=self.retry_after, policy=self.policy)
            case VerdictKind.OUTAGE:
                return OutageError(msg, retry_after=self.retry_after, status=self.status)
            case VerdictKind.AUTH:
                return AuthError(msg, status=self.status)
            case _:
                return PermanentError(msg, status=self.status)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110). None when absent or unreadable."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw.strip().split(";")[0])
    except ValueError:
        return None
