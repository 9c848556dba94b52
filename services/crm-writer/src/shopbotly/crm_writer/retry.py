"""Retry policy: exponential backoff with full jitter, Retry-After honoured up to a cap, bounded attempts.

Pure. Full jitter (a uniform draw between 0 and the exponential ceiling) spreads retries of many
writers that failed together, so they do not hit a recovering CRM in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy", "full_jitter"]


def full_jitter(attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Delay before retry `attempt` (1 = the first retry): uniform in [0, min(cap, base * 2^(attempt-1))]."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    ceiling = min(cap_s, base_s * (2 ** min(attempt - 1, 62)))
    return rng.uniform(0.0, ceiling)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_s: float
    cap_s: float
    max_retry_after_s: float

    def exhausted(self, attempts: int) -> bool:
        """True when `attempts` tries have been made and no more are allowed."""
        return attempts >= self.max_attempts

    def delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds before retry `attempt`. The CRM's Retry-After wins, capped at `max_retry_after_s`."""
        if retry_after_s is not None and retry_after_s >= 0:
            return min(retry_after_s, self.max_retry_after_s)
        return full_jitter(attempt, base_s=self.base_s, cap_s=self.cap_s, rng=rng)
