"""What each CRM's answers mean for delivery (pure: status, headers, body)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from shopbotly.common.config.crm_kinds.generic import GenericResponses
from shopbotly.common.errors import AuthError, OutageError, PermanentError, RetryableError
from shopbotly.crm_writer.connectors.generic import classify_generic, render
from shopbotly.crm_writer.connectors.hubspot import classify_hubspot, record_error
from shopbotly.crm_writer.connectors.salesforce import classify_salesforce, item_error, sforce_quota
from shopbotly.crm_writer.verdict import ThrottledError, VerdictKind, parse_retry_after

pytestmark = pytest.mark.unit


def resp(status: int, body: Any = None, **headers: str) -> httpx.Response:
    content = orjson.dumps(body) if body is not None else b""
    return httpx.Response(
        status, content=content, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )


RATE = {
    "X_HubSpot_RateLimit_Max": "100",
    "X_HubSpot_RateLimit_Remaining": "42",
    "X_HubSpot_RateLimit_Interval_Milliseconds": "10000",
    "X_HubSpot_RateLimit_Daily_Remaining": "249000",
}


def test_hubspot_success_carries_the_quota() -> None:
    v = classify_hubspot(resp(207, {"results": []}, **RATE))
    assert v.ok and v.quota is not None
    assert (v.quota.max_requests, v.quota.remaining, v.quota.interval_s, v.quota.daily_remaining) == (
        100,
        42,
        10.0,
        249000,
    )


def test_hubspot_429_ten_secondly_throttles_and_daily_is_an_outage() -> None:
    body = {"status": "error", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"}
    v = classify_hubspot(resp(429, body, Retry_After="3"))
    assert (v.kind, v.retry_after, v.policy) == (VerdictKind.THROTTLED, 3.0, "TEN_SECONDLY_ROLLING")
    assert isinstance(v.error(), ThrottledError) and v.crm_answered
    no_header = classify_hubspot(resp(429, body, **RATE))
    assert no_header.retry_after == pytest.approx(0.1)  # one request's share of the window
    daily = classify_hubspot(resp(429, {**body, "policyName": "DAILY"}))
    assert daily.kind is VerdictKind.OUTAGE and isinstance(daily.error(), OutageError)
    assert not daily.crm_answered


@pytest.mark.parametrize(
    ("status", "kind", "error"),
    [
        (401, VerdictKind.AUTH, AuthError),
        (403, VerdictKind.PERMANENT, PermanentError),
        (400, VerdictKind.PERMANENT, PermanentError),
        (409, VerdictKind.RETRY, RetryableError),
        (502, VerdictKind.RETRY, RetryableError),
    ],
)
def test_hubspot_status_classes(status: int, kind: VerdictKind, error: type[Exception]) -> None:
    v = classify_hubspot(
        resp(status, {"status": "error", "category": "VALIDATION_ERROR", "message": "bad thing"})
    )
    assert v.kind is kind and isinstance(v.error(), error)
    if status == 400:
        assert "VALIDATION_ERROR: bad thing" in v.message


def test_hubspot_record_errors_by_category() -> None:
    assert isinstance(
        record_error({"category": "VALIDATION_ERROR", "message": "Email invalid"}), PermanentError
    )
    assert isinstance(record_error({"category": "RATE_LIMITS"}), ThrottledError)
    assert isinstance(record_error({"category": "CONFLICT"}), RetryableError)


def test_salesforce_answers() -> None:
    limit = [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]
    assert classify_salesforce(resp(403, limit)).kind is VerdictKind.OUTAGE
    assert classify_salesforce(resp(503, limit)).kind is VerdictKind.OUTAGE
    several = classify_salesforce(resp(300, ["/services/data/v61.0/sobjects/Contact/003A", "/003B"]))
    assert several.kind is VerdictKind.PERMANENT and "several records" in several.message
    session = classify_salesforce(
        resp(401, [{"errorCode": "INVALID_SESSION_ID", "message": "Session expired"}])
    )
    assert session.kind is VerdictKind.AUTH
    assert (
        classify_salesforce(resp(400, [{"errorCode": "INVALID_FIELD", "message": "No such column"}])).kind
        is VerdictKind.PERMANENT
    )
    assert classify_salesforce(resp(500, [{"errorCode": "UNKNOWN_EXCEPTION"}])).kind is VerdictKind.RETRY
    ok = classify_salesforce(resp(200, [], Sforce_Limit_Info="api-usage=25/5000"))
    assert ok.ok and ok.quota is not None and ok.quota.daily_remaining == 4975


def test_salesforce_item_errors() -> None:
    assert isinstance(item_error([{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "locked"}]), RetryableError)
    assert isinstance(item_error([{"statusCode": "REQUEST_LIMIT_EXCEEDED"}]), OutageError)
    err = item_error(
        [{"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [LastName]"}]
    )
    assert isinstance(err, PermanentError) and "LastName" in err.message
    assert sforce_quota(httpx.Headers({"Sforce-Limit-Info": "per-app-api-usage=1/10(appName=x)"})) is None


def test_generic_success_codes_and_throttling() -> None:
    codes = frozenset({201})
    assert classify_generic(resp(201, {"id": 1}, RateLimit_Remaining="7"), codes).quota.remaining == 7  # type: ignore[union-attr]
    assert classify_generic(resp(202), codes).kind is VerdictKind.PERMANENT  # 2xx but not what the op expects
    t = classify_generic(resp(429, Retry_After="5"), codes)
    assert (t.kind, t.retry_after) == (VerdictKind.THROTTLED, 5.0)
    assert classify_generic(resp(409), codes).kind is VerdictKind.RETRY
    assert classify_generic(resp(422, {"message": "email required"}), codes).message.endswith(
        "email required"
    )
    assert classify_generic(resp(401), codes).kind is VerdictKind.AUTH


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        ({"count": 0}, VerdictKind.DUPLICATE),  # JMESPath: 0 is true (Python would say false)
        ({"count": 2}, VerdictKind.DUPLICATE),
        ({"count": False}, VerdictKind.PERMANENT),
        ({"count": ""}, VerdictKind.PERMANENT),
        ({"count": []}, VerdictKind.PERMANENT),
        ({"count": {}}, VerdictKind.PERMANENT),
        ({}, VerdictKind.PERMANENT),
    ],
)
def test_generic_response_rule_when_uses_jmespath_truthiness(body: Any, outcome: VerdictKind) -> None:
    rules = GenericResponses.model_validate(
        {"rules": [{"status": [400], "when": "count", "outcome": "duplicate"}]}
    )
    assert classify_generic(resp(400, body), frozenset({201}), rules).kind is outcome


def test_retry_after_as_http_date() -> None:
    headers = httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert parse_retry_after(headers, now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"})) is None


def test_generic_templates_keep_types_and_fill_text() -> None:
    ctx = {
        "identity": "a@x.io",
        "fields": {"n": 3, "email": "a@x.io"},
        "tags": ["a"],
        "body": None,
        "op": "upsert_contact",
    }
    tpl = {
        "who": "{identity}",
        "n": "{fields.n}",
        "tags": "{tags}",
        "text": "Lead {fields.email} ({op})",
        "none": "{body}",
        "k": 1,
    }
    assert render(tpl, ctx) == {
        "who": "a@x.io",
        "n": 3,
        "tags": ["a"],
        "text": "Lead a@x.io (upsert_contact)",
        "k": 1,
    }  # "none": a placeholder that gives null leaves its key out
    assert render("/contacts/{identity}", ctx, url=True) == "/contacts/a%40x.io"
    assert render("{missing.deep}", ctx) is None
