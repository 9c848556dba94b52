"""Every CRM kind is complete on the writer's side: a registered connector taking the kind's typed options,
saying whether and how `connections check|setup` reads its schema, and (for a CRM, not the tenant's own bot)
an emulator serving it."""

from __future__ import annotations

from typing import Any, get_args

import httpx
import pytest

from shopbotly.common.config import CRM_KINDS, BotWebhookConfig, SecretRef, crm_kind, parse_connection
from shopbotly.common.errors import PermanentError
from shopbotly.common.events import CommandOp
from shopbotly.crm_writer.connectors import connector_class, connector_kinds, make_connector, schema_of
from shopbotly.crm_writer.connectors.base import Connector
from shopbotly.crm_writer.schema import CommandShape, CrmSchema, FieldInfo

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


# What each kind says about its schema: the kinds `connections check|setup` read, and those that have none (a
# REST API known only by its config; the tenant's own bot). A new kind must be added to one of the two.
SCHEMA_KINDS = {"hubspot", "salesforce"}
NO_SCHEMA_KINDS = {"generic", "bot_webhook"}


def test_every_kind_says_whether_it_has_a_schema() -> None:
    assert set(CRM_KINDS) == SCHEMA_KINDS | NO_SCHEMA_KINDS
    for kind in CRM_KINDS:
        # Declared by the kind's own connector (its class line), not inherited from the base.
        assert "schema" in vars(connector_class(kind)), kind


@pytest.mark.parametrize("kind", sorted(SCHEMA_KINDS))
def test_a_kinds_schema_takes_its_options_and_says_where_commands_land(kind: str) -> None:
    schema_class = connector_class(kind).schema
    assert schema_class is not None and issubclass(schema_class, CrmSchema)
    [base] = [
        b for b in getattr(schema_class, "__orig_bases__", ()) if getattr(b, "__origin__", None) is CrmSchema
    ]
    assert get_args(base) == (crm_kind(kind).options_model(),)
    conn = parse_connection({"kind": kind, "base_url": "https://crm.example/"})
    schema = schema_of(conn)
    assert type(schema) is schema_class and schema.options is conn.options
    # A contact upsert lands somewhere the CRM describes, and ShopBotly owns something there to create.
    written = schema.targets(
        CommandShape(op=CommandOp.UPSERT_CONTACT, fields=[FieldInfo("email")], tags=True)
    )
    assert written
    owned = schema.owned([(t.object_type, t.name) for t in written])
    assert owned, kind
    url, body = schema.create_request(schema.api_base(None), owned[0])
    assert url.startswith("https://crm.example/") and "//" not in url.removeprefix("https://") and body
    assert schema.describe_url(schema.api_base(None), written[0].object_type).startswith(
        "https://crm.example/"
    )
    assert schema.instruction(owned[0])


@pytest.mark.parametrize("kind", sorted(NO_SCHEMA_KINDS))
def test_a_kind_without_a_schema_says_so(kind: str) -> None:
    assert connector_class(kind).schema is None
    raw: dict[str, Any] = {"kind": kind}
    if crm_kind(kind).needs_base_url:
        raw["base_url"] = "https://crm.example"
    assert schema_of(parse_connection(raw)) is None


def test_a_connector_must_say_whether_its_kind_has_a_schema() -> None:
    from shopbotly.crm_writer.connectors import base

    registered = dict(base._CONNECTORS)
    del base._CONNECTORS["generic"]  # as if its module were being written
    try:
        with pytest.raises(TypeError, match="must say schema=<a CrmSchema subclass> or schema=None"):

            class Unsaid(Connector[Any], kind="generic"):  # no schema= in its class line
                pass

        with pytest.raises(TypeError, match="must say schema="):

            class Wrong(Connector[Any], kind="generic", schema=dict):
                pass
    finally:
        base._CONNECTORS.clear()
        base._CONNECTORS.update(registered)


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
