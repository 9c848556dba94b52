"""Every CRM kind is complete on the writer's side: a registered connector taking the kind's typed options,
and (for a CRM, not the tenant's own bot) an emulator serving it."""

from __future__ import annotations

from typing import Any, get_args

import httpx
import pytest

from shopbotly.common.config import CRM_KINDS, BotWebhookConfig, SecretRef, crm_kind, parse_connection
from shopbotly.common.errors import PermanentError
from shopbotly.crm_writer.connectors import connector_class, connector_kinds, make_connector
from shopbotly.crm_writer.connectors.base import Connector

pytestmark = pytest.mark.unit

# Kinds whose far end is not a CRM the emulator stands in for (tests use testkit's bot receiver instead).
NOT_EMULATED = {"bot_webhook"}


def test_every_crm_kind_has_a_connector_and_nothing_else_does() -> None:
    assert connector_kinds() == sorted(CRM_KINDS)


@pytest.mark.parametrize("kind", sorted(CRM_KINDS))
def test_a_kinds_connector_takes_its_options_as_loaded(kind: str, make_runtime: Any) -> None:
    cls = connector_class(kind)
    assert cls.kind == kind
    # The class declares the options type it reads; it is the one the kind's config model loads.
    [base] = [b for b in getattr(cls, "__orig_bases__", ()) if getattr(b, "__origin__", None) is Connector]
    assert get_args(base) == (crm_kind(kind).options_model(),)
    raw: dict[str, Any] = {"kind": kind}
    if crm_kind(kind).needs_base_url:
        raw["base_url"] = "https://crm.example"
    runtime = make_runtime(raw, httpx.MockTransport(lambda r: httpx.Response(500)))
    hook = BotWebhookConfig(url="https://bot.example/hook", secret=SecretRef(env="BOT_SECRET"))
    connector = make_connector(runtime, bot_webhook=hook)
    assert type(connector) is cls
    assert connector.options is runtime.config.options  # handed over, not parsed again


def test_a_connector_refuses_another_kinds_connection(make_runtime: Any) -> None:
    runtime = make_runtime(
        {"kind": "generic", "base_url": "https://crm.example"},
        httpx.MockTransport(lambda r: httpx.Response(500)),
    )
    with pytest.raises(PermanentError, match="is of kind 'generic'; HubSpotConnector applies 'hubspot'"):
        connector_class("hubspot")(runtime)
    with pytest.raises(PermanentError, match="no connector implements CRM kind 'pipedrive'; known kinds: "):
        connector_class("pipedrive")


def test_a_bot_connection_needs_the_tenants_bot_webhook(make_runtime: Any) -> None:
    runtime = make_runtime({"kind": "bot_webhook"}, httpx.MockTransport(lambda r: httpx.Response(500)))
    with pytest.raises(PermanentError, match="is a bot webhook but its tenant has none"):
        make_connector(runtime)


@pytest.mark.parametrize("kind", sorted(set(CRM_KINDS) - NOT_EMULATED))
def test_the_emulator_serves_every_crm_kind(kind: str) -> None:
    from shopbotly.crm_emulator.app import create_app
    from shopbotly.crm_emulator.settings import EmulatorSettings

    spec = create_app(EmulatorSettings(seed=7)).openapi()
    served = [path for path, ops in spec["paths"].items() if any(kind in op["tags"] for op in ops.values())]
    assert served, f"the CRM emulator has no routes tagged {kind!r} (tools/crm-emulator/.../{kind}.py)"


def test_a_connection_loads_as_its_kinds_model() -> None:
    conn = parse_connection({"kind": "salesforce", "base_url": "https://org.my.salesforce.com"})
    assert type(conn) is crm_kind("salesforce")
