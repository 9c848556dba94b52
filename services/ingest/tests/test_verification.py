"""Each source kind as ingest configures it: valid, tampered, stale and rotated-secret requests; config
problems at start; the lead body."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from shopbotly.common.config import ConfigError, parse_config
from shopbotly.common.sources import sign_webhook
from shopbotly.ingest.domain import Rejection
from shopbotly.ingest.intake import Source, WebhookRequest, resolve_sources, verify_request
from shopbotly.ingest.lead_routes import validate_lead
from shopbotly.ingest.schemas import lead_event_id, lead_fingerprint
from shopbotly.ingest.settings import Settings
from shopbotly.testkit.ingest import (
    GENERIC_SCHEME,
    HUBSPOT_PUBLIC_BASE,
    OLD_SECRETS,
    SECRETS,
    demo_config,
    set_secret_env,
)

pytestmark = pytest.mark.unit

NOW = time.time()
BODY = orjson.dumps({"id": "evt_1", "type": "contact.created", "data": {"email": "a@b.co"}})
LOCAL_URL = "http://ingest.internal:8080/v1/webhooks/acme/hubspot?portal=1"
PATH_QS = "/v1/webhooks/acme/hubspot?portal=1"
KINDS = list(SECRETS)


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], Source]:
    env: dict[str, str] = {}
    set_secret_env(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return resolve_sources(demo_config(), Settings(), origin="test.yaml")


def _request(
    kind: str, *, secret: str, body: bytes = BODY, now: float = NOW, url: str = LOCAL_URL
) -> WebhookRequest:
    headers = sign_webhook(
        kind,
        secret,
        body,
        now=now,
        msg_id="msg_1",
        url=url,
        options=GENERIC_SCHEME if kind == "generic_hmac" else None,
    )
    return WebhookRequest(
        headers={k.lower(): v for k, v in headers.items()},
        body=body,
        method="POST",
        url=LOCAL_URL,
        path_qs=PATH_QS,
        trace_id="t",
        received_at=datetime.now(UTC),
    )


def _reason(source: Source, request: WebhookRequest) -> str:
    with pytest.raises(Rejection) as err:
        verify_request(source, request, now=NOW)
    assert err.value.status == 401
    assert err.value.detail == "missing or invalid signature, or a timestamp outside the allowed window"
    return err.value.reason


@pytest.mark.parametrize("kind", KINDS)
def test_valid_and_rotated_secrets_pass(sources: dict[tuple[str, str], Source], kind: str) -> None:
    source = sources[("acme", kind)]
    verify_request(source, _request(kind, secret=SECRETS[kind]), now=NOW)
    # The previous secret is still listed during a rotation: senders still on it pass.
    verify_request(source, _request(kind, secret=OLD_SECRETS[kind]), now=NOW)


@pytest.mark.parametrize("kind", KINDS)
def test_retired_secret_fails(sources: dict[tuple[str, str], Source], kind: str) -> None:
    retired = SECRETS["shopbotly"][:-4] + "AAA=" if kind in ("shopbotly", "standard_webhooks") else "retired"
    assert _reason(sources[("acme", kind)], _request(kind, secret=retired)) == "signature_mismatch"


@pytest.mark.parametrize("kind", KINDS)
def test_tampered_body_fails(sources: dict[tuple[str, str], Source], kind: str) -> None:
    request = _request(kind, secret=SECRETS[kind])
    tampered = dataclasses.replace(request, body=BODY.replace(b"a@b.co", b"x@b.co"))
    assert _reason(sources[("acme", kind)], tampered) == "signature_mismatch"


@pytest.mark.parametrize(
    "kind", ["shopbotly", "standard_webhooks", "stripe", "slack", "hubspot", "generic_hmac"]
)
def test_stale_timestamp_fails(sources: dict[tuple[str, str], Source], kind: str) -> None:
    old = _request(kind, secret=SECRETS[kind], now=NOW - 301)
    assert _reason(sources[("acme", kind)], old) == "signature_stale"
    almost = _request(kind, secret=SECRETS[kind], now=NOW - 290)
    verify_request(sources[("acme", kind)], almost, now=NOW)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_signature_fails(sources: dict[tuple[str, str], Source], kind: str) -> None:
    request = _request(kind, secret=SECRETS[kind])
    bare = dataclasses.replace(request, headers={"content-type": "application/json"})
    assert _reason(sources[("acme", kind)], bare) == "signature_missing"


def test_hubspot_wrong_uri_fails(sources: dict[tuple[str, str], Source]) -> None:
    signed_for_other = _request("hubspot", secret=SECRETS["hubspot"], url=LOCAL_URL.replace("acme", "evil"))
    assert _reason(sources[("acme", "hubspot")], signed_for_other) == "signature_mismatch"


def test_hubspot_behind_a_proxy_verifies_against_the_public_url(
    sources: dict[tuple[str, str], Source],
) -> None:
    public = HUBSPOT_PUBLIC_BASE + PATH_QS
    signed_public = _request("hubspot", secret=SECRETS["hubspot"], url=public)
    verify_request(sources[("acme", "hubspot_proxy")], signed_public, now=NOW)
    # Without signature_base_url the same request is checked against the local URL and fails.
    assert _reason(sources[("acme", "hubspot")], signed_public) == "signature_mismatch"


# --- config problems at start ----------------------------------------------------------------------


def test_missing_and_unusable_secrets_stop_the_start_naming_path_and_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("INGEST_MISSING", raising=False)
    monkeypatch.setenv("INGEST_BAD_WHSEC", "whsec_%%%not-base64")
    config = parse_config(
        {
            "tenants": {
                "t": {
                    "sources": {
                        "a": {"kind": "stripe", "secrets": [{"env": "INGEST_MISSING"}]},
                        "b": {"kind": "shopbotly", "secrets": [{"env": "INGEST_BAD_WHSEC"}]},
                    }
                }
            }
        }
    )
    with pytest.raises(ConfigError) as err:
        resolve_sources(config, Settings(), origin="cfg.yaml")
    text = str(err.value)
    assert "cfg.yaml: tenants.t.sources.a.secrets.0: secret env:INGEST_MISSING is not set" in text
    assert "cfg.yaml: tenants.t.sources.b.secrets.0:" in text and "base64" in text
    assert "not-base64" not in text


def _one_source(**fields: object) -> None:
    parse_config({"tenants": {"t": {"sources": {"s": {"secrets": [{"env": "X"}], **fields}}}}})


def test_source_config_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"tenants\.t\.sources\.s\.event_type: .*JMESPath"):
        _one_source(kind="stripe", event_type="a[[")
    with pytest.raises(ConfigError, match="signature_base_url"):
        _one_source(kind="stripe", signature_base_url="https://x")
    with pytest.raises(ConfigError, match="max_body_bytes"):
        _one_source(kind="stripe", max_body_bytes=4 << 20)
    with pytest.raises(ConfigError, match=r"\{body\}"):
        _one_source(kind="generic_hmac", generic={"signed_payload": "x"})
    with pytest.raises(ConfigError, match="generic_hmac only"):
        _one_source(kind="stripe", generic={})


def test_source_body_limit_defaults_to_the_service_setting(sources: dict[tuple[str, str], Source]) -> None:
    assert sources[("acme", "stripe")].max_body_bytes == Settings().max_body_bytes == 512 * 1024
    assert sources[("acme", "small")].max_body_bytes == 2048


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOPBOTLY_PORT", "9999")
    monkeypatch.setenv("SHOPBOTLY_MAX_BODY_BYTES", "65536")
    monkeypatch.setenv("SHOPBOTLY_CONFIG", str(tmp_path / "x.yaml"))
    settings = Settings()
    assert (settings.port, settings.max_body_bytes, settings.config) == (9999, 65536, tmp_path / "x.yaml")
    assert Settings.model_fields["port"].default == 8080


# --- the lead body ---------------------------------------------------------------------------------


def test_lead_validation_names_each_field_without_echoing_values() -> None:
    with pytest.raises(Rejection) as err:
        validate_lead({"email": "not-an-email", "phone": "call me", "tags": ["ok", ""], "surprise": 1})
    rejection = err.value
    assert (rejection.status, rejection.reason) == (422, "invalid_lead")
    locs = {e.loc for e in rejection.errors}
    assert {"body.email", "body.phone", "body.tags[1]", "body.surprise"} <= locs
    assert "not-an-email" not in str([e.msg for e in rejection.errors])
    with pytest.raises(Rejection) as missing:
        validate_lead({"name": "Jane"})
    assert [e.loc for e in missing.value.errors] == ["body.email"]
    with pytest.raises(Rejection):
        validate_lead([1, 2])


def test_a_valid_lead_keeps_its_fields() -> None:
    lead = validate_lead(
        {
            "email": " Jane@Example.com ",
            "first_name": "Jane",
            "phone": "+49 30 1234567",
            "tags": ["vip"],
            "custom_fields": {"plan": "pro", "seats": 5},
            "consent": {"marketing": True, "captured_at": "2026-01-01T00:00:00Z"},
        }
    )
    data = lead.event_data()
    assert data["email"] == "Jane@Example.com"
    assert data["consent"] == {"marketing": True, "captured_at": "2026-01-01T00:00:00Z"}
    assert lead_fingerprint(data) == lead_fingerprint(dict(reversed(list(data.items()))))


def test_lead_event_id_is_derived_from_tenant_idempotency_key_and_body() -> None:
    fp, other_fp = lead_fingerprint({"email": "a@b.co"}), lead_fingerprint({"email": "c@d.co"})
    assert lead_event_id("acme", "k1", fp) == lead_event_id("acme", "k1", fp)
    assert lead_event_id("acme", "k1", fp) != lead_event_id("other", "k1", fp)
    # Another body under the same key never shares the id, so downstream cannot take it for a repeat.
    assert lead_event_id("acme", "k1", fp) != lead_event_id("acme", "k1", other_fp)
    assert lead_event_id("acme", None, fp) != lead_event_id("acme", None, fp)
