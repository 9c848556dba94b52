"""Token bucket, backoff and circuit breaker (pure, simulated time)."""

from __future__ import annotations

import random

import pytest

from shopbotly.crm_writer.circuit import CircuitBreaker, CircuitState
from shopbotly.crm_writer.ratelimit import AdaptiveRateLimit, TokenBucket, partition_share
from shopbotly.crm_writer.retry import RetryPolicy, full_jitter
from shopbotly.testkit.crm_writer import max_in_window

pytestmark = pytest.mark.unit


def greedy(limits: list[AdaptiveRateLimit], seconds: float, step: float = 0.001) -> list[float]:
    """Every limiter sends whenever it may; returns all send times."""
    sent: list[float] = []
    t = 0.0
    while t < seconds:
        for lim in limits:
            while lim.reserve(t) == 0.0:
                sent.append(t)
        t += step
    return sent


def test_rolling_window_limit_holds_and_is_nearly_used() -> None:
    lim = AdaptiveRateLimit(requests=100, per_seconds=10, burst=5, now=0.0)
    assert lim.requests_per_second == pytest.approx(95 / 10.25)
    sent = greedy([lim], 60)
    assert max_in_window(sent, 10.0) <= 100
    # Sent 250 ms late, any request still lands in a window of at most 100 (the margin for jitter).
    assert max_in_window(sent, 10.25) <= 100
    assert len(sent) >= 0.9 * 600  # the burst (5 %) and the jitter margin (2.5 %) cost that much, no more


def test_replicas_sharing_by_partitions_stay_within_the_limit_together() -> None:
    shares = [partition_share(2, 6), partition_share(1, 6), partition_share(3, 6)]
    limits = [AdaptiveRateLimit(requests=100, per_seconds=10, burst=5, now=0.0, share=s) for s in shares]
    sent = greedy(limits, 40)
    assert max_in_window(sent, 10.0) <= 100
    assert len(sent) >= 0.85 * 400


def test_share_is_recomputed_on_rebalance() -> None:
    lim = AdaptiveRateLimit(requests=100, per_seconds=10, burst=5, now=0.0, share=1.0)
    lim.set_share(0.5, 0.0)
    assert lim.requests_per_second == pytest.approx((50 - 2.5) / 10.25)
    assert partition_share(0, 6) == 0.0 and partition_share(3, 0) == 1.0


def test_crm_quota_headers_can_only_lower_the_limit() -> None:
    lim = AdaptiveRateLimit(requests=100, per_seconds=10, burst=5, now=0.0)
    lim.observe(0.0, max_requests=200, interval_s=10.0)
    assert lim.requests_per_second == pytest.approx(95 / 10.25)  # a higher advertised limit is not taken
    lim.observe(0.0, max_requests=50, interval_s=10.0)
    assert lim.requests_per_second == pytest.approx(45 / 10.25)
    lim.observe(0.0, remaining=0)
    assert lim.reserve(0.0) > 0  # the CRM says nothing is left: no token either


def test_throttling_blocks_until_retry_after() -> None:
    lim = AdaptiveRateLimit(requests=100, per_seconds=10, burst=5, now=0.0)
    lim.throttled(1.0, 2.0)
    assert lim.reserve(1.5) == pytest.approx(1.5)
    assert lim.reserve(3.0) > 0  # nothing saved up during the block bursts out after it
    assert lim.reserve(3.2) == 0.0


def test_bucket_refund_and_reconfigure() -> None:
    b = TokenBucket.full(rate=1.0, capacity=2.0, now=0.0)
    assert b.reserve(0.0) == 0.0 and b.reserve(0.0) == 0.0
    assert b.reserve(0.0) == pytest.approx(1.0)
    b.refund(0.0)
    assert b.reserve(0.0) == 0.0
    b.reconfigure(0.0, 1.0, 0.0)
    assert b.reserve(10.0) == float("inf")


def test_full_jitter_is_bounded_and_spread() -> None:
    rng = random.Random(7)
    draws = [full_jitter(4, base_s=0.5, cap_s=30, rng=rng) for _ in range(2000)]
    assert all(0 <= d <= 4.0 for d in draws)
    assert max(draws) > 3.5 and min(draws) < 0.5  # spread over the whole range, not clustered
    assert all(full_jitter(40, base_s=0.5, cap_s=30, rng=rng) <= 30 for _ in range(100))
    with pytest.raises(ValueError, match="counts from 1"):
        full_jitter(0, base_s=1, cap_s=1, rng=rng)


def test_retry_after_wins_but_is_capped() -> None:
    policy = RetryPolicy(max_attempts=3, base_s=0.5, cap_s=30, max_retry_after_s=60)
    rng = random.Random(1)
    assert policy.delay(1, 12.0, rng) == 12.0
    assert policy.delay(1, 3600.0, rng) == 60.0
    assert 0 <= policy.delay(2, None, rng) <= 1.0
    assert not policy.exhausted(2) and policy.exhausted(3)


def test_circuit_opens_after_consecutive_failures_only() -> None:
    cb = CircuitBreaker(failure_threshold=3, open_s=5, max_open_s=40)
    cb.failure(0, probe=False)
    cb.failure(0, probe=False)
    cb.success(probe=False)  # an answer in between resets the count
    cb.failure(1, probe=False)
    cb.failure(1, probe=False)
    assert cb.state is CircuitState.CLOSED
    assert cb.failure(1, probe=False) is True
    assert cb.state is CircuitState.OPEN
    d = cb.allow(3.0)
    assert not d.go and d.wait_s == pytest.approx(3.0)


def test_half_open_lets_one_probe_through_and_its_outcome_decides() -> None:
    cb = CircuitBreaker(failure_threshold=1, open_s=5, max_open_s=40)
    cb.failure(0, probe=False)
    probe = cb.allow(5.0)
    assert probe.go and probe.probe and cb.state is CircuitState.HALF_OPEN
    other = cb.allow(5.0)
    assert not other.go  # everyone else waits for the probe
    cb.failure(5.0, probe=True)
    assert cb.state is CircuitState.OPEN and cb.open_until == pytest.approx(15.0)  # twice as long
    assert cb.allow(15.0).probe
    cb.abandon(probe=True)  # the probe was never sent: someone else may probe
    again = cb.allow(15.0)
    assert again.go and again.probe
    assert cb.success(probe=True) is True
    assert cb.state is CircuitState.CLOSED and cb.allow(15.0).go


def test_explicit_outage_trips_at_once_for_its_retry_after() -> None:
    cb = CircuitBreaker(failure_threshold=5, open_s=5, max_open_s=600)
    assert cb.trip(0.0, open_for_s=120, reason="daily limit") is True
    assert cb.state is CircuitState.OPEN and cb.open_until == 120 and cb.reason == "daily limit"
    cb2 = CircuitBreaker(failure_threshold=5, open_s=5, max_open_s=60)
    cb2.trip(0.0, open_for_s=86_400)
    assert cb2.open_until == 60  # capped
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0, open_s=1, max_open_s=1)
