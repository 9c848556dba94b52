"""Pure rules: rate-limit windows, fault decisions, upsert merges, idempotency, tokens, ids, webhooks."""

from __future__ import annotations

import pytest

from shopbotly.crm_emulator.domain import (
    DAY_S,
    DailyQuota,
    FaultPlan,
    IdempotencyOutcome,
    PropertyChange,
    RateLimiter,
    RateLimitPolicy,
    RollingWindow,
    Subscription,
    System,
    TokenRegistry,
    TokenStatus,
    decide_fault,
    decide_idempotency,
    fault_delay,
    is_valid_email,
    is_valid_salesforce_id,
    iso_ms,
    join_multi,
    merge_properties,
    normalize_email,
    parse_timestamp,
    request_fingerprint,
    retry_delay_s,
    salesforce_id,
    salesforce_id_suffix,
    split_multi,
    subscription_for,
    webhook_should_retry,
)

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0


class TestRollingWindow:
    def test_admits_limit_then_refuses_within_interval(self) -> None:
        window = RollingWindow(limit=3, interval_s=10)
        assert [window.try_acquire(T0 + i) for i in range(4)] == [True, True, True, False]
        assert window.used(T0 + 3) == 3

    def test_slot_frees_when_oldest_leaves_the_window(self) -> None:
        window = RollingWindow(limit=2, interval_s=10)
        assert window.try_acquire(T0) and window.try_acquire(T0 + 4)
        assert window.retry_after(T0 + 5) == pytest.approx(5.0)
        assert not window.try_acquire(T0 + 9.99)
        assert window.try_acquire(T0 + 10.0)  # the first hit is exactly one interval old
        assert not window.try_acquire(T0 + 10.5)

    def test_refused_requests_do_not_extend_the_lockout(self) -> None:
        window = RollingWindow(limit=1, interval_s=10)
        assert window.try_acquire(T0)
        for i in range(1, 10):
            assert not window.try_acquire(T0 + i)
        assert window.try_acquire(T0 + 10)


class TestDailyQuota:
    def test_resets_at_utc_midnight(self) -> None:
        quota = DailyQuota(limit=2)
        midnight = (T0 // DAY_S + 1) * DAY_S
        assert quota.try_acquire(midnight - 2) and quota.try_acquire(midnight - 1)
        assert not quota.try_acquire(midnight - 0.5)
        assert quota.seconds_to_reset(midnight - 0.5) == pytest.approx(0.5)
        assert quota.try_acquire(midnight)
        assert quota.used(midnight) == 1


class TestRateLimiter:
    def test_window_exceeded_reports_policy_and_remaining(self) -> None:
        limiter = RateLimiter(RateLimitPolicy(max_requests=2, interval_ms=10_000, daily_limit=100))
        first = limiter.acquire(T0)
        assert first.allowed and first.window_remaining == 1 and first.daily_remaining == 99
        limiter.acquire(T0 + 1)
        refused = limiter.acquire(T0 + 2)
        assert not refused.allowed and refused.exceeded == "window"
        assert refused.window_remaining == 0 and refused.daily_remaining == 98
        assert refused.retry_after_s == pytest.approx(8.0)

    def test_daily_quota_wins_and_is_not_consumed_by_refusals(self) -> None:
        limiter = RateLimiter(RateLimitPolicy(max_requests=100, interval_ms=10_000, daily_limit=2))
        assert limiter.acquire(T0).allowed and limiter.acquire(T0 + 1).allowed
        refused = limiter.acquire(T0 + 2)
        assert refused.exceeded == "daily" and refused.daily_remaining == 0
        assert refused.retry_after_s > 0
        # The short window saw only the two accepted requests.
        assert refused.window_remaining == 98

    def test_reconfigure_keeps_what_was_counted(self) -> None:
        limiter = RateLimiter(RateLimitPolicy(max_requests=10, interval_ms=10_000, daily_limit=None))
        for i in range(5):
            limiter.acquire(T0 + i / 10)
        limiter.reconfigure(RateLimitPolicy(max_requests=5, interval_ms=10_000, daily_limit=None), T0 + 1)
        assert not limiter.acquire(T0 + 1).allowed

    def test_no_limits_means_always_allowed(self) -> None:
        limiter = RateLimiter(RateLimitPolicy(max_requests=None, daily_limit=None))
        decisions = [limiter.acquire(T0) for _ in range(1000)]
        assert all(d.allowed for d in decisions)
        assert decisions[-1].window_remaining is None and decisions[-1].daily_remaining is None


class TestFaults:
    def test_fail_next_is_consumed_in_order_before_rates(self) -> None:
        plan = FaultPlan(error_rates={500: 1.0})
        decision, rest = decide_fault(plan, (503, 429), roll=0.99)
        assert decision.status == 503 and rest == (429,)
        decision, rest = decide_fault(plan, rest, roll=0.99)
        assert decision.status == 429 and rest == ()
        decision, _ = decide_fault(plan, rest, roll=0.5)
        assert decision.status == 500

    def test_rates_are_cumulative_in_status_order(self) -> None:
        plan = FaultPlan(error_rates={503: 0.2, 429: 0.1})
        statuses = [decide_fault(plan, (), roll=r)[0].status for r in (0.05, 0.15, 0.29, 0.31)]
        assert statuses == [429, 503, 503, None]

    def test_latency_with_jitter(self) -> None:
        plan = FaultPlan(latency_ms=100, latency_jitter_ms=50)
        assert fault_delay(plan, jitter_roll=0.5) == pytest.approx(0.125)
        assert fault_delay(FaultPlan(), jitter_roll=0.9) == 0
        assert decide_fault(plan, (), roll=0.9)[0].status is None

    @pytest.mark.parametrize("rates", [{500: 0.7, 503: 0.4}, {500: -0.1}, {200: 0.1}])
    def test_invalid_plans_are_refused(self, rates: dict[int, float]) -> None:
        with pytest.raises(ValueError, match="error"):
            FaultPlan(error_rates=rates)


class TestRecords:
    def test_merge_overwrites_keeps_and_clears(self) -> None:
        merged, changes = merge_properties(
            {"firstname": "Jane", "lastname": "Doe", "phone": "1"},
            {"firstname": "Janet", "phone": "", "city": "Oslo", "lastname": "Doe"},
        )
        assert merged == {"firstname": "Janet", "lastname": "Doe", "city": "Oslo"}
        assert set(changes) == {
            PropertyChange("firstname", "Jane", "Janet"),
            PropertyChange("phone", "1", None),
            PropertyChange("city", None, "Oslo"),
        }

    def test_multi_select_values_replace_not_merge(self) -> None:
        merged, _ = merge_properties({"tags": "a;b"}, {"tags": "c"})
        assert split_multi(merged["tags"]) == ["c"]

    def test_split_and_join_multi(self) -> None:
        assert split_multi(" a ;b;;a; c") == ["a", "b", "c"]
        assert split_multi(None) == [] and split_multi("") == []
        assert join_multi(["vip", " new ", "vip", ""]) == "vip;new"

    @pytest.mark.parametrize(
        ("value", "valid"),
        [
            ("jane@example.com", True),
            ("Jane.Doe+x@sub.example.co.uk", True),
            ("no-at-sign", False),
            ("a@b", False),
            ("a@b.c", False),
            ("a b@example.com", False),
            ("a..b@example.com", False),
            ("@example.com", False),
        ],
    )
    def test_email_validation(self, value: str, valid: bool) -> None:
        assert is_valid_email(value) is valid

    def test_email_identity_is_lower_case(self) -> None:
        assert normalize_email("  Jane@Example.COM ") == "jane@example.com"

    def test_timestamps(self) -> None:
        assert iso_ms(1_700_000_000.123) == "2023-11-14T22:13:20.123Z"
        assert parse_timestamp(1_700_000_000_123) == pytest.approx(1_700_000_000.123)
        assert parse_timestamp("1700000000123") == pytest.approx(1_700_000_000.123)
        assert parse_timestamp("2023-11-14T22:13:20.123Z") == pytest.approx(1_700_000_000.123)
        assert parse_timestamp("yesterday") is None


class TestIdempotency:
    def test_fingerprint_ignores_key_order_and_whitespace(self) -> None:
        a = request_fingerprint("POST", "/api/v1/leads", b'{"email": "a@b.co", "x": 1}')
        b = request_fingerprint("post", "/api/v1/leads", b'{"x":1,"email":"a@b.co"}')
        assert a == b
        assert a != request_fingerprint("POST", "/api/v1/leads", b'{"x":2,"email":"a@b.co"}')
        assert a != request_fingerprint("POST", "/api/v1/other", b'{"x":1,"email":"a@b.co"}')

    def test_decision(self) -> None:
        assert decide_idempotency(None, "f1") is IdempotencyOutcome.APPLY
        assert decide_idempotency("f1", "f1") is IdempotencyOutcome.REPLAY
        assert decide_idempotency("f1", "f2") is IdempotencyOutcome.MISMATCH


class TestTokens:
    def test_expiry_revocation_and_system(self) -> None:
        registry = TokenRegistry()
        issued = registry.issue(System.SALESFORCE, "client", "user", T0, lifetime_s=60)
        assert registry.check(System.SALESFORCE, issued.token, T0 + 59) is TokenStatus.VALID
        assert registry.check(System.SALESFORCE, issued.token, T0 + 60) is TokenStatus.EXPIRED
        assert registry.check(System.GENERIC, issued.token, T0) is TokenStatus.UNKNOWN
        assert registry.check(System.SALESFORCE, "forged", T0) is TokenStatus.UNKNOWN
        registry.revoke_all()
        assert registry.check(System.SALESFORCE, issued.token, T0) is TokenStatus.REVOKED
        fresh = registry.issue(System.SALESFORCE, "client", "user", T0, lifetime_s=60)
        assert registry.check(System.SALESFORCE, fresh.token, T0) is TokenStatus.VALID

    def test_refresh_tokens_survive_revocation(self) -> None:
        registry = TokenRegistry()
        refresh = registry.issue_refresh(System.GENERIC, "client")
        registry.revoke_all()
        assert registry.refresh_owner(refresh) == (System.GENERIC, "client")
        assert registry.refresh_owner("rt_unknown") is None


class TestSalesforceIds:
    def test_case_safe_suffix_known_vector(self) -> None:
        # The example of Salesforce's documentation of 15- and 18-character ids.
        assert salesforce_id_suffix("001A0000006Vm9r") == "IAC"

    def test_generated_ids_are_valid_and_distinct(self) -> None:
        ids = {salesforce_id("00Q", n) for n in range(1, 500)}
        assert len(ids) == 499
        assert all(len(i) == 18 and i.startswith("00Q") and is_valid_salesforce_id(i) for i in ids)

    @pytest.mark.parametrize(
        ("value", "valid"),
        [
            ("001A0000006Vm9r", True),
            ("001A0000006Vm9rIAC", True),
            ("001A0000006Vm9rAAA", False),
            ("123", False),
        ],
    )
    def test_validity(self, value: str, valid: bool) -> None:
        assert is_valid_salesforce_id(value) is valid


class TestWebhookRules:
    def test_retry_on_failure_until_max_attempts(self) -> None:
        assert webhook_should_retry(500, 0, 3)
        assert webhook_should_retry(None, 1, 3)  # timeout or connection error
        assert webhook_should_retry(404, 0, 3)
        assert not webhook_should_retry(500, 2, 3)
        assert not webhook_should_retry(204, 0, 3)

    def test_backoff_grows_and_is_capped(self) -> None:
        delays = [retry_delay_s(n, initial_ms=100, max_ms=1000) for n in range(6)]
        assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]

    def test_subscription_matching(self) -> None:
        subs = [
            Subscription(1, "ticket.creation"),
            Subscription(2, "ticket.propertyChange", "hs_pipeline_stage"),
            Subscription(3, "contact.propertyChange", "lifecyclestage"),
        ]
        assert subscription_for(subs, "ticket", "creation") == subs[0]
        assert subscription_for(subs, "ticket", "propertyChange", "hs_pipeline_stage") == subs[1]
        assert subscription_for(subs, "ticket", "propertyChange", "subject") is None
        assert subscription_for(subs, "contact", "creation") is None
