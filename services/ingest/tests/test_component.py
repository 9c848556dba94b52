"""The app in-process (httpx + ASGITransport) on its refusal paths, which never reach Kafka: here the
producer is not even started, so any request that got past the checks would answer 503."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from shopbotly.ingest import edge
from shopbotly.ingest.settings import Settings
from shopbotly.testkit.ingest import API_KEY, READ_ONLY_KEY, Running, running_app, signed_headers

pytestmark = pytest.mark.component

EVENT = orjson.dumps({"type": "contact.created", "data": {"email": "jane@example.com"}})
AUTH = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}


@pytest.fixture
async def ingest(offline_settings: Settings) -> AsyncIterator[Running]:
    async with running_app(offline_settings, lifespan=False) as running:
        yield running


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _rejections(tenant: str, source: str, reason: str) -> float:
    return _count("shopbotly_ingest_rejections_total", tenant=tenant, source=source, reason=reason)


async def test_unknown_tenant_or_source_is_404_counted_without_the_url_as_label(ingest: Running) -> None:
    before = _rejections("_unknown", "_unknown", "unknown_source")
    for path in ("/v1/webhooks/nobody/shopbotly", "/v1/webhooks/acme/nothing"):
        resp = await ingest.client.post(path, content=EVENT, headers=signed_headers("shopbotly", EVENT))
        assert resp.status_code == 404
        assert resp.json()["code"] == "unknown_source"
    assert _rejections("_unknown", "_unknown", "unknown_source") == before + 2
    assert (
        REGISTRY.get_sample_value(
            "shopbotly_ingest_rejections_total",
            {"tenant": "nobody", "source": "shopbotly", "reason": "unknown_source"},
        )
        is None
    )


async def test_wrong_content_type_is_415(ingest: Running) -> None:
    headers = {**signed_headers("shopbotly", EVENT), "content-type": "application/x-www-form-urlencoded"}
    resp = await ingest.client.post("/v1/webhooks/acme/shopbotly", content=EVENT, headers=headers)
    assert resp.status_code == 415 and resp.json()["code"] == "unsupported_media_type"


async def test_declared_length_over_the_limit_is_refused_before_any_byte_is_read(ingest: Running) -> None:
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(4):
            pulled += 1
            yield b"x" * 1024

    headers = {"content-type": "application/json", "content-length": "4096"}
    resp = await ingest.client.post("/v1/webhooks/acme/small", content=body(), headers=headers)
    assert resp.status_code == 413
    assert "2048 bytes" in resp.json()["detail"]
    assert pulled == 0


async def test_streamed_body_is_refused_as_soon_as_it_passes_the_limit(ingest: Running) -> None:
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(100):
            pulled += 1
            yield b" " * 1000

    before = _rejections("acme", "small", "too_large")
    # No Content-Length (chunked): only the running total can catch it.
    resp = await ingest.client.post(
        "/v1/webhooks/acme/small", content=body(), headers={"content-type": "application/json"}
    )
    assert resp.status_code == 413
    assert pulled == 3  # 3000 bytes > 2048: the fourth chunk is never asked for
    assert _rejections("acme", "small", "too_large") == before + 1


async def test_default_limit_applies_to_sources_without_their_own(offline_settings: Settings) -> None:
    small = Settings(**{**offline_settings.model_dump(), "max_body_bytes": 4096})
    async with running_app(small, lifespan=False) as running:
        big = orjson.dumps({"type": "t", "pad": "x" * 5000})
        resp = await running.client.post(
            "/v1/webhooks/acme/shopbotly", content=big, headers=signed_headers("shopbotly", big)
        )
        assert resp.status_code == 413


GENERIC_401 = {
    "type": "about:blank",
    "title": "Unauthorized",
    "status": 401,
    "detail": "missing or invalid signature, or a timestamp outside the allowed window",
    "code": "invalid_signature",
    "errors": [],
}


@pytest.mark.parametrize(
    "kind", ["shopbotly", "stripe", "shopify", "github", "slack", "intercom", "hubspot", "generic_hmac"]
)
async def test_bad_signature_is_401_without_detail_that_helps_forging(ingest: Running, kind: str) -> None:
    headers = signed_headers(
        kind, EVENT, secret="whsec_" + "QUFBQUFBQUFBQUFBQUFBQQ==" if kind == "shopbotly" else "nope"
    )
    before = _rejections("acme", kind, "signature_mismatch")
    resp = await ingest.client.post(f"/v1/webhooks/acme/{kind}", content=EVENT, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json() == GENERIC_401
    assert _rejections("acme", kind, "signature_mismatch") == before + 1


class _LogRecorder:
    """Stands in for a module's structlog logger: keeps (event, fields) of every line. Reading stdout
    instead depends on which earlier test configured logging (and bound its stream)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def _record(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    warning = info = error = debug = _record


async def test_every_signature_failure_gets_the_same_answer_and_only_the_log_says_which(
    ingest: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing, malformed, stale and mismatched signatures: byte-identical bodies and headers; the reason
    is in the metrics and the log line only."""
    url = "/v1/webhooks/acme/stripe"
    good = signed_headers("stripe", EVENT)
    cases = {
        "signature_missing": {"content-type": "application/json"},
        "signature_malformed": {**good, "stripe-signature": "garbage"},
        "signature_stale": signed_headers("stripe", EVENT, now=time.time() - 3600),
        "signature_mismatch": signed_headers("stripe", EVENT, secret="whsec_wrong"),
    }
    answers = []
    recorder = _LogRecorder()
    monkeypatch.setattr(edge, "log", recorder)
    for reason, headers in cases.items():
        before = _rejections("acme", "stripe", reason)
        recorder.lines.clear()
        resp = await ingest.client.post(url, content=EVENT, headers=headers)
        assert _rejections("acme", "stripe", reason) == before + 1, reason
        refused = [f for e, f in recorder.lines if e == "request refused"]
        assert [f["reason"] for f in refused] == [reason]  # the operator's log names it
        answers.append((resp.status_code, resp.content, sorted(resp.headers.items())))
    assert all(a == answers[0] for a in answers), answers
    assert answers[0][0] == 401 and orjson.loads(answers[0][1]) == GENERIC_401
    for reason in cases:
        assert reason.encode() not in answers[0][1]


async def test_a_tenant_cannot_use_another_tenants_source(ingest: Running) -> None:
    # "other" has a source "bot" with the same secret; acme has no "bot", and other has no "shopbotly".
    resp = await ingest.client.post(
        "/v1/webhooks/other/shopbotly", content=EVENT, headers=signed_headers("shopbotly", EVENT)
    )
    assert resp.status_code == 404


async def test_malformed_json_is_400_with_its_position(ingest: Running) -> None:
    bad = b'{"type": "x",, }'
    resp = await ingest.client.post(
        "/v1/webhooks/acme/shopbotly", content=bad, headers=signed_headers("shopbotly", bad)
    )
    assert resp.status_code == 400
    assert resp.json()["code"] == "malformed_json"
    assert "line 1 column 14" in resp.json()["detail"]


async def test_event_without_type_is_422_naming_the_field(ingest: Running) -> None:
    body = orjson.dumps({"id": "evt_1"})
    resp = await ingest.client.post(
        "/v1/webhooks/acme/stripe", content=body, headers=signed_headers("stripe", body)
    )
    assert resp.status_code == 422
    problem = resp.json()
    assert problem["code"] == "invalid_event"
    assert problem["errors"][0]["loc"] == "body" and "body.type" in problem["errors"][0]["msg"]


async def test_hubspot_delivery_that_is_not_an_array_of_objects_is_422(ingest: Running) -> None:
    url = "http://ingest.test/v1/webhooks/acme/hubspot"
    body = orjson.dumps([{"eventId": 1, "subscriptionType": "contact.creation", "objectId": 1}, 7])
    resp = await ingest.client.post(url, content=body, headers=signed_headers("hubspot", body, url=url))
    assert resp.status_code == 422
    assert [e["loc"] for e in resp.json()["errors"]] == ["body[1]"]
    body = orjson.dumps([{"eventId": 1, "objectId": 1}])
    resp = await ingest.client.post(url, content=body, headers=signed_headers("hubspot", body, url=url))
    assert resp.status_code == 422 and resp.json()["errors"][0]["loc"] == "body[0]"


async def test_valid_event_while_kafka_is_unavailable_is_503_with_retry_after(ingest: Running) -> None:
    before = _count(
        "shopbotly_ingest_requests_total", tenant="acme", source="shopbotly", outcome="unavailable"
    )
    resp = await ingest.client.post(
        "/v1/webhooks/acme/shopbotly", content=EVENT, headers=signed_headers("shopbotly", EVENT)
    )
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == str(ingest.runtime.settings.retry_after_s)
    assert (
        _count("shopbotly_ingest_requests_total", tenant="acme", source="shopbotly", outcome="unavailable")
        == before + 1
    )
    # Not remembered as seen: the retry is published once Kafka is back.
    resp = await ingest.client.post(
        "/v1/webhooks/acme/shopbotly", content=EVENT, headers=signed_headers("shopbotly", EVENT)
    )
    assert resp.status_code == 503


async def test_slack_url_verification_is_answered_without_publishing(ingest: Running) -> None:
    body = orjson.dumps(
        {
            "type": "url_verification",
            "token": "x",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        }
    )
    resp = await ingest.client.post(
        "/v1/webhooks/acme/slack", content=body, headers=signed_headers("slack", body)
    )
    assert resp.status_code == 200
    assert resp.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    unsigned = await ingest.client.post(
        "/v1/webhooks/acme/slack", content=body, headers={"content-type": "application/json"}
    )
    assert unsigned.status_code == 401


# --- leads -----------------------------------------------------------------------------------------


async def test_lead_api_needs_a_valid_key_with_the_leads_scope(ingest: Running) -> None:
    lead = {"email": "jane@example.com"}
    resp = await ingest.client.post("/api/v1/leads", json=lead)
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    resp = await ingest.client.post("/api/v1/leads", json=lead, headers={"authorization": "Bearer sbk_wrong"})
    assert resp.status_code == 401
    resp = await ingest.client.post(
        "/api/v1/leads", json=lead, headers={"authorization": f"Bearer {READ_ONLY_KEY}"}
    )
    assert resp.status_code == 403 and resp.json()["code"] == "forbidden"


async def test_lead_api_refuses_bad_bodies_with_field_paths(ingest: Running) -> None:
    resp = await ingest.client.post("/api/v1/leads", content=b"{", headers=AUTH)
    assert resp.status_code == 400 and "line 1" in resp.json()["detail"]
    resp = await ingest.client.post(
        "/api/v1/leads", content=b"{}", headers={**AUTH, "content-type": "text/plain"}
    )
    assert resp.status_code == 415
    resp = await ingest.client.post("/api/v1/leads", json={"email": "x", "tags": "vip"}, headers=AUTH)
    assert resp.status_code == 422
    assert {e["loc"] for e in resp.json()["errors"]} == {"body.email", "body.tags"}
    big = orjson.dumps({"email": "a@b.co", "name": "x" * (600 * 1024)})
    resp = await ingest.client.post("/api/v1/leads", content=big, headers=AUTH)
    assert resp.status_code == 413
    resp = await ingest.client.post(
        "/api/v1/leads", json={"email": "a@b.co"}, headers={**AUTH, "idempotency-key": "bad key"}
    )
    assert resp.status_code == 400 and resp.json()["code"] == "invalid_idempotency_key"


async def test_a_keyed_lead_before_the_idempotency_records_are_read_is_503_and_not_ready(
    ingest: Running,
) -> None:
    """A replica that has not read the shared Idempotency-Key records yet could miss a binding: it refuses
    keyed leads with 503 (retry: the load balancer sends it elsewhere) and is not ready."""
    resp = await ingest.client.post(
        "/api/v1/leads", json={"email": "a@b.co"}, headers={**AUTH, "idempotency-key": "form-1"}
    )
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == str(ingest.runtime.settings.retry_after_s)
    assert "Idempotency-Key records" in resp.json()["detail"]
    ready = await ingest.client.get("/readyz")
    assert ready.json()["problems"]["idempotency-records"] == "reading Idempotency-Key records"


# --- probes and docs -------------------------------------------------------------------------------


async def test_probes_docs_and_metrics(ingest: Running) -> None:
    assert (await ingest.client.get("/healthz")).status_code == 200
    ready = await ingest.client.get("/readyz")
    assert ready.status_code == 503 and "kafka" in ready.json()["problems"]
    spec = (await ingest.client.get("/openapi.json")).json()
    assert {"/v1/webhooks/{tenant}/{source}", "/api/v1/leads"} <= set(spec["paths"])
    assert spec["paths"]["/api/v1/leads"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Lead"
    }
    assert "Consent" in spec["components"]["schemas"]
    assert (await ingest.client.get("/docs")).status_code == 200
    text = (await ingest.client.get("/metrics")).text
    for name in (
        "shopbotly_ingest_requests_total",
        "shopbotly_ingest_rejections_total",
        "shopbotly_ingest_request_duration_seconds",
        "shopbotly_ingest_publish_duration_seconds",
        "shopbotly_ingest_broker_up",
    ):
        assert name in text


async def test_the_webhook_route_is_documented_though_a_plain_route_serves_it(ingest: Running) -> None:
    # Served by a Starlette route (no FastAPI dependency solving on the hot path); the schema must not notice.
    spec = (await ingest.client.get("/openapi.json")).json()
    post = spec["paths"]["/v1/webhooks/{tenant}/{source}"]["post"]
    assert post["summary"] == "Receive a signed platform webhook"
    assert {"202", "200", "401", "503"} <= set(post["responses"])
    assert [p["name"] for p in post["parameters"]] == ["tenant", "source"]
    assert list(spec["paths"]["/v1/webhooks/{tenant}/{source}"]) == ["post"]
    wrong = await ingest.client.get("/v1/webhooks/acme/shop")
    assert wrong.status_code == 405


# --- the docs' examples ----------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[3] / "docs"


def _doc_examples(text: str) -> list[tuple[str, str, dict[str, str], bytes, dict[str, object]]]:
    """(method, path, headers, body, expected problem) of each ```http block and the ```json after it."""
    blocks = re.findall(r"```(http|json)\n(.*?)```", text, re.DOTALL)
    examples = []
    for (kind, request), (next_kind, answer) in itertools.pairwise(blocks):
        if kind != "http" or next_kind != "json":
            continue
        head, _, body = request.partition("\n\n")
        request_line, *header_lines = head.splitlines()
        method, path, _ = request_line.split(" ")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        examples.append((method, path, headers, body.strip().encode(), orjson.loads(answer)))
    return examples


async def test_http_errors_doc_examples(ingest: Running) -> None:
    examples = _doc_examples((DOCS / "http-errors.md").read_text())
    assert len(examples) == 2
    for method, path, headers, body, expected in examples:
        resp = await ingest.client.request(method, path, headers=headers, content=body)
        assert resp.headers["content-type"] == "application/problem+json"
        assert (resp.status_code, resp.json()) == (expected["status"], expected), path
