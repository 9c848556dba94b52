"""The per-connection rate limit: a token bucket that holds the CRM's limit across replicas and adapts.

Pure (time is passed in). A limit of L requests per rolling window W is met by a bucket of B tokens
refilled at (L - B) / W: in any window of length W it grants at most B + (L - B) = L (W is stretched by a
small margin, so jitter between sending and the CRM's clock does not push a window over). Each replica runs
the bucket at its share of the partitions (the commands of a connection spread over all partitions by
key), so the replicas together stay within L. The CRM's own quota headers can only lower the limit;
a throttling answer blocks the bucket until the CRM's Retry-After (capped) has passed.

A bucket starts empty: the replica that owned these partitions a moment ago (or this replica before a
restart) may have used the current window already, so a new bucket's burst would come on top of what was
spent (up to B over L in that window, issue 20). Shares are disjoint (a partition joins its new owner's share
only after its old owner released it), so the replicas' refill rates add up to at most (L - B) / W.

Partition shares cannot hold a limit below one request per window for a replica: a replica owning k of P
partitions gets L * k / P requests a window, and a bucket needs one whole token to send at all, so when
L * k / P < 1 every such replica may send one request a window and together they can exceed L.
`below_one_request` says when that is so (the writer logs it); the remedy is a limit of at least P requests
a window (P = the crm-commands partitions, 6 by default) or fewer partitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["AdaptiveRateLimit", "TokenBucket", "arrival_margin_s", "partition_share"]


@dataclass
class TokenBucket:
    """Tokens refill at `rate` per second up to `capacity`; one request takes one token."""

    rate: float
    capacity: float
    tokens: float
    updated: float
    blocked_until: float = 0.0

    @classmethod
    def full(cls, rate: float, capacity: float, now: float) -> TokenBucket:
        return cls(rate=rate, capacity=capacity, tokens=capacity, updated=now)

    @classmethod
    def empty(cls, rate: float, capacity: float, now: float) -> TokenBucket:
        return cls(rate=rate, capacity=capacity, tokens=0.0, updated=now)

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def reserve(self, now: float) -> float:
        """Take a token and return 0.0, or take nothing and return the seconds until one is available."""
        if now < self.blocked_until:
            return self.blocked_until - now
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        if self.rate <= 0:
            return math.inf
        return (1.0 - self.tokens) / self.rate

    def refund(self, now: float) -> None:
        """Give back a token taken for a request that was never sent."""
        self._refill(now)
        self.tokens = min(self.capacity, self.tokens + 1.0)

    def reconfigure(self, rate: float, capacity: float, now: float) -> None:
        self._refill(now)
        self.rate = rate
        self.capacity = capacity
        self.tokens = min(self.tokens, capacity)

    def clamp(self, at_most: float, now: float) -> None:
        self._refill(now)
        self.tokens = min(self.tokens, max(0.0, at_most))

    def block(self, until: float) -> None:
        self.blocked_until = max(self.blocked_until, until)
        # Nothing saved up during the block may burst out after it.
        self.tokens = min(self.tokens, 0.0)
        self.updated = max(self.updated, until)


def arrival_margin_s(window_s: float) -> float:
    """Allowance for network and scheduling jitter between sending and the CRM's clock: 2.5 % of the
    window, between 50 ms and 500 ms."""
    return min(0.5, max(0.05, 0.025 * window_s))


def partition_share(assigned: int, total: int) -> float:
    """This replica's share of a connection's limit: the fraction of the topic's partitions it owns."""
    if total <= 0:
        return 1.0
    return max(0.0, min(1.0, assigned / total))


class AdaptiveRateLimit:
    """A connection's bucket: configured limit times share, lowered by the CRM's reports, blocked on 429s."""

    def __init__(
        self, *, requests: int, per_seconds: float, burst: int, now: float, share: float = 1.0
    ) -> None:
        if requests < 1 or per_seconds <= 0 or burst < 1:
            raise ValueError("requests and burst must be at least 1, per_seconds above 0")
        self._configured = (requests, per_seconds)
        self._learned: tuple[int, float] | None = None
        self._burst = burst
        self._share = share
        rate, capacity = self._params()
        self.bucket = TokenBucket.empty(rate, capacity, now)  # see the module docstring

    def _limit(self) -> tuple[int, float]:
        req, per = self._configured
        if self._learned is not None:
            lreq, lper = self._learned
            if lreq / lper < req / per:
                return lreq, lper
        return req, per

    def _params(self) -> tuple[float, float]:
        requests, per = self._limit()
        # At least one token of capacity, or a small share could never send anything.
        capacity = max(1.0, min(self._burst, requests) * self._share)
        budget = requests * self._share
        # The CRM counts arrivals, not departures: requests sent W apart can arrive a little closer.
        # Refilling over a slightly longer window keeps the CRM's view within the limit too.
        window = per + arrival_margin_s(per)
        # The burst is paid for out of the window's budget, so burst + refill never exceeds the limit.
        rate = (budget - capacity) / window if budget > capacity else budget / window
        return rate, capacity

    @property
    def share(self) -> float:
        return self._share

    @property
    def below_one_request(self) -> bool:
        """True when this replica's share of the limit is less than one request a window: the replicas
        together may then exceed the limit (see the module docstring)."""
        return self._limit()[0] * self._share < 1.0

    @property
    def requests_per_second(self) -> float:
        """The sustained rate this replica may send at now."""
        return self.bucket.rate

    def set_share(self, share: float, now: float) -> None:
        self._share = share
        self.bucket.reconfigure(*self._params(), now)

    def observe(
        self,
        now: float,
        *,
        max_requests: int | None = None,
        interval_s: float | None = None,
        remaining: int | None = None,
    ) -> None:
        """Adapt to the CRM's quota headers: a lower advertised limit wins; never hold more than remains."""
        if max_requests is not None and interval_s is not None and max_requests > 0 and interval_s > 0:
            learned = (max_requests, interval_s)
            if self._learned != learned:
                self._learned = learned
                self.bucket.reconfigure(*self._params(), now)
        if remaining is not None:
            # The CRM counts every replica's requests; this replica may use its share of what is left.
            self.bucket.clamp(remaining * self._share, now)

    def throttled(self, now: float, retry_after_s: float) -> None:
        """The CRM refused a request for rate: send nothing until `retry_after_s` has passed."""
        self.bucket.block(now + max(0.0, retry_after_s))

    def reserve(self, now: float) -> float:
        return self.bucket.reserve(now)

    def refund(self, now: float) -> None:
        self.bucket.refund(now)
