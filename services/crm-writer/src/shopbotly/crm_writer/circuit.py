"""Circuit breaker per connection: an outage stops the traffic instead of filling the dead-letter queue.

Pure (time is passed in). CLOSED: requests flow; `failure_threshold` consecutive failures, or an explicit
outage signal (a CRM's daily quota exhausted), open it. OPEN: nothing is sent until `open_until`; then the
first caller is allowed one probe (HALF_OPEN) while the others keep waiting. The probe's success closes
the circuit; its failure opens it again for twice as long (up to `max_open_s`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = ["CircuitBreaker", "CircuitState", "Decision"]


class CircuitState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True)
class Decision:
    """`go`: send (as the probe when `probe`). Otherwise wait `wait_s` (or a state change), ask again."""

    go: bool
    probe: bool = False
    wait_s: float = 0.0


class CircuitBreaker:
    def __init__(self, *, failure_threshold: int, open_s: float, max_open_s: float) -> None:
        if failure_threshold < 1 or open_s <= 0 or max_open_s < open_s:
            raise ValueError("failure_threshold >= 1 and 0 < open_s <= max_open_s are required")
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self.max_open_s = max_open_s
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.open_until = 0.0
        self._next_open_s = open_s
        self._probe_out = False
        self.reason = ""

    def allow(self, now: float) -> Decision:
        if self.state is CircuitState.CLOSED:
            return Decision(go=True)
        if self.state is CircuitState.OPEN:
            if now < self.open_until:
                return Decision(go=False, wait_s=self.open_until - now)
            self.state = CircuitState.HALF_OPEN
            self._probe_out = False
        # HALF_OPEN: exactly one probe at a time; the others wait for its outcome.
        if not self._probe_out:
            self._probe_out = True
            return Decision(go=True, probe=True)
        return Decision(go=False, wait_s=self.open_s)

    def success(self, *, probe: bool) -> bool:
        """The CRM answered (even with a 4xx). Returns True if this closed the circuit."""
        self.failures = 0
        if probe or self.state is CircuitState.HALF_OPEN:
            was_open = self.state is not CircuitState.CLOSED
            self.state = CircuitState.CLOSED
            self._probe_out = False
            self._next_open_s = self.open_s
            self.reason = ""
            return was_open
        return False

    def failure(self, now: float, *, probe: bool, reason: str = "") -> bool:
        """The CRM did not answer usefully (timeout, 5xx). Returns True if this opened the circuit."""
        if probe or self.state is CircuitState.HALF_OPEN:
            self._open(now, self._next_open_s, reason)
            self._next_open_s = min(self.max_open_s, self._next_open_s * 2)
            return True
        if self.state is CircuitState.OPEN:
            return False
        self.failures += 1
        if self.failures >= self.failure_threshold:
            self._open(now, self._next_open_s, reason)
            self._next_open_s = min(self.max_open_s, self._next_open_s * 2)
            return True
        return False

    def trip(self, now: float, *, open_for_s: float | None = None, reason: str = "") -> bool:
        """An explicit outage signal: open at once (for `open_for_s`, capped, or the current open period)."""
        was_closed = self.state is CircuitState.CLOSED
        period = (
            self._next_open_s if open_for_s is None else max(self.open_s, min(open_for_s, self.max_open_s))
        )
        self._open(now, period, reason)
        self._next_open_s = min(self.max_open_s, max(self._next_open_s * 2, period))
        return was_closed

    def abandon(self, *, probe: bool) -> None:
        """A granted request was never sent (cancelled): let the next caller probe instead."""
        if probe and self.state is CircuitState.HALF_OPEN:
            self._probe_out = False

    def _open(self, now: float, period: float, reason: str) -> None:
        self.state = CircuitState.OPEN
        self.open_until = max(self.open_until, now + period)
        self.failures = 0
        self._probe_out = False
        if reason:
            self.reason = reason
