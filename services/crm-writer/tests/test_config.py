"""The `connections` section of the tenants file and the service settings."""

from __future__ import annotations

from typing import Any

import pytest

from shopbotly.common.config import ConfigError, parse_config, parse_connection
from shopbotly.common.config.crm_kinds.bot_webhook import BotWebhookOptions
from shopbotly.common.config.crm_kinds.salesforce import SalesforceOptions
from shopbotly.crm_writer.settings import Settings

pytestmark = pytest.mark.unit


def tenant_with(connection: dict[str, Any]) -> dict[str, Any]:
    return {"tenants": {"demo": {"connections": {"crm": connection}}}}


def error_for(connection: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(tenant_with(connection), origin="shopbotly.yaml")
    return str(err.value)


def test_a_complete_connection_loads_with_typed_options() -> None:
    cfg = parse_config(
        tenant_with(
            {
                "kind": "salesforce",
                "base_url": "https://org.my.salesforce.com",
                "batch_size": 200,
                "auth": {
                    "kind": "jwt_bearer",
                    "token_url": "https://login.salesforce.com/services/oauth2/token",
                    "client_id": "key",
                    "username": "u@org",
                    "private_key": {"file": "/secrets/sf.pem"},
                },
                "options": {"tags_field": "Tags__c"},
            }
        )
    )
    conn = cfg.tenants["demo"].connections["crm"]
    assert isinstance(conn.options, SalesforceOptions)
    assert conn.options.tags_field == "Tags__c"
    assert conn.options.external_id_field == "ShopBotly_Email__c"
    assert conn.rate_limit.effective_burst() == 5


def test_errors_name_the_field_and_what_is_expected() -> None:
    msg = error_for(
        {"kind": "hubspot", "base_url": "https://api.hubapi.com", "options": {"tag_property": "x"}}
    )
    assert msg.startswith("shopbotly.yaml: tenants.demo.connections.crm: options.tag_property: Extra inputs")
    assert "'tags_property'" in msg  # the valid names are listed, so the typo is obvious
    assert "auth kind 'oauth2_client_credentials' needs client_id, client_secret" in error_for(
        {
            "kind": "generic",
            "base_url": "https://crm",
            "auth": {"kind": "oauth2_client_credentials", "token_url": "https://i/t"},
        }
    )
    assert "at most 100 inputs" in error_for(
        {"kind": "hubspot", "base_url": "https://api.hubapi.com", "batch_size": 150}
    )
    assert "base_url: required" in error_for({"kind": "generic"})
    assert "unknown op(s) ['upsert']" in error_for(
        {"kind": "generic", "base_url": "https://crm", "options": {"operations": {"upsert": {}}}}
    )
    assert "burst (100) must be below requests (100)" in error_for(
        {"kind": "generic", "base_url": "https://crm", "rate_limit": {"requests": 100, "burst": 100}}
    )
    assert "secrets are references" in error_for(
        {"kind": "hubspot", "base_url": "https://a", "auth": {"token": "inline!"}}
    )


def test_bot_connection_needs_no_url() -> None:
    conn = parse_connection({"kind": "bot_webhook", "rate_limit": {"requests": 20, "per_seconds": 1}})
    assert isinstance(conn.options, BotWebhookOptions)
    assert conn.base_url is None and conn.options.default_type == "crm.notification"


def test_settings_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().port == 9102
    monkeypatch.setenv("SHOPBOTLY_PORT", "19102")
    monkeypatch.setenv("SHOPBOTLY_MAX_IN_FLIGHT_PER_PARTITION", "8")
    s = Settings()
    assert (s.port, s.max_in_flight_per_partition) == (19102, 8)
    monkeypatch.setenv("SHOPBOTLY_CIRCUIT_MAX_OPEN_S", "0.5")
    with pytest.raises(ValueError, match="SHOPBOTLY_CIRCUIT_MAX_OPEN_S"):
        Settings()
