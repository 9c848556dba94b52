"""The source kind registry: every kind is complete, config knows exactly the registered kinds, and the
Salesforce kind reads outbound messages as Salesforce writes them."""

from __future__ import annotations

from typing import get_args

import orjson
import pytest

from shopbotly.common.config import ConfigError, SourceConfig, json_schema, parse_config
from shopbotly.common.config._mapping import PRESET_NAMES
from shopbotly.common.config._sources import SOURCE_MODELS
from shopbotly.common.registry import KindRegistry
from shopbotly.common.sources import SOURCE_KINDS, SOURCES, ExtractionDefaults, WebhookSource, source_kind
from shopbotly.common.sources.salesforce import Notification, outbound_message, parse_outbound_message

pytestmark = pytest.mark.unit

# What a kind must say for itself; the rest (parse, split, challenge, acknowledge, ...) has a JSON default.
_OWN = ("verify", "sign")


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_every_registered_kind_has_all_its_parts(kind: str) -> None:
    source = SOURCES[kind]
    assert isinstance(source, WebhookSource) and source.kind == kind
    assert isinstance(source.defaults, ExtractionDefaults) and source.defaults.event_type
    assert isinstance(getattr(source, "scheme", None), str) and source.scheme, f"{kind} lacks `scheme`"
    for part in _OWN:
        assert getattr(type(source), part) is not getattr(WebhookSource, part), f"{kind} lacks `{part}`"
    for part in ("check_config", "prepare", "check_secret", "parse", "verify_content", "challenge", "split"):
        assert callable(getattr(source, part))
    # Its config model: every source's fields plus exactly the kind's own; its preset is a known one.
    model = SOURCE_MODELS[kind]
    assert issubclass(model, SourceConfig) and get_args(model.model_fields["kind"].annotation) == (kind,)
    assert set(model.model_fields) == set(SourceConfig.model_fields) | source.options
    if source.preset is not None:
        assert source.preset in PRESET_NAMES


def test_the_kinds_are_the_modules_of_the_package() -> None:
    """Discovered as CRM kinds are (one registry style): every public module's SOURCES, in name order."""
    import importlib
    import pkgutil

    package = importlib.import_module("shopbotly.common.sources")
    modules = [m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")]
    listed = {
        s.kind for name in modules for s in importlib.import_module(f"{package.__name__}.{name}").SOURCES
    }
    assert list(SOURCE_KINDS) == sorted(listed) and len(listed) >= 10
    assert isinstance(SOURCES, KindRegistry) and SOURCES.family == "source"


def test_the_json_schema_lists_exactly_the_registered_kinds() -> None:
    schema = orjson.loads(json_schema())
    [sources] = schema["$defs"]["TenantConfig"]["properties"]["sources"]["patternProperties"].values()
    assert sorted(sources["discriminator"]["mapping"]) == list(SOURCE_KINDS)
    assert len(sources["oneOf"]) == len(SOURCE_KINDS)
    assert source_kind("salesforce").kind == "salesforce"


def _config(kind: str, **extra: object) -> dict[str, object]:
    return {"tenants": {"t": {"sources": {"s": {"kind": kind, **extra}}}}}


def test_an_unknown_kind_fails_config_load_naming_the_field_and_the_known_kinds() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_config("paypal", secrets=[{"env": "X"}]), origin="cfg.yaml")
    message = str(err.value)
    known = ", ".join(SOURCE_KINDS)
    assert f"tenants.t.sources.s: kind: unknown source kind 'paypal'; known kinds: {known}" in message
    assert message.startswith("cfg.yaml: ")


def test_a_source_is_loaded_once_as_its_kinds_model() -> None:
    config = parse_config(
        {
            "tenants": {
                "t": {
                    "sources": {
                        "sf": {"kind": "salesforce", "organization_ids": ["00D000000000001EAA"]},
                        "shop": {"kind": "shopify", "secrets": [{"env": "X"}]},
                    }
                }
            }
        }
    )
    sources = config.tenants["t"].sources
    assert (
        type(sources["sf"]) is SOURCE_MODELS["salesforce"]
        and type(sources["shop"]) is SOURCE_MODELS["shopify"]
    )
    assert "organization_ids" not in type(sources["shop"]).model_fields  # another kind's field is not there


def test_kind_specific_options_and_secrets_are_checked_by_the_kind() -> None:
    with pytest.raises(ConfigError, match="kind salesforce needs `organization_ids`"):
        parse_config(_config("salesforce"))
    with pytest.raises(ConfigError, match="`organization_ids` applies to kind salesforce only, not stripe"):
        parse_config(_config("stripe", secrets=[{"env": "X"}], organization_ids=["00D000000000001"]))
    with pytest.raises(ConfigError, match="kind stripe needs at least one entry in `secrets`"):
        parse_config(_config("stripe"))
    with pytest.raises(ConfigError, match=r"organization_ids\.0"):
        parse_config(_config("salesforce", organization_ids=["not-an-org"]))
    parse_config(_config("salesforce", organization_ids=["00D000000000001EAA"]))


# Salesforce's own sample (SOAP API guide, "Understanding the Outbound Messaging WSDL"), as it sends it:
# the notifications element in the default namespace, sObject fields prefixed sf:, a nil SessionId.
SAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D000000000001EAA</OrganizationId>
   <ActionId>04k000000000001AAA</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/62.0/00D000000000001</EnterpriseUrl>
   <PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/62.0/00D000000000001</PartnerUrl>
   <Notification>
    <Id>04l000000000001AAA</Id>
    <sObject xsi:type="sf:Case" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>500000000000001AAA</sf:Id>
     <sf:Status>Working</sf:Status>
     <sf:Subject>Broken armrest</sf:Subject>
     <sf:SuppliedEmail xsi:nil="true"/>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"""


def test_a_salesforce_message_parses_and_what_the_emulator_writes_reads_back_the_same() -> None:
    message = parse_outbound_message(SAMPLE)
    assert message.organization_id == "00D000000000001EAA"
    (note,) = message.notifications
    assert note == Notification(
        "04l000000000001AAA",
        "Case",
        {"Id": "500000000000001AAA", "Status": "Working", "Subject": "Broken armrest", "SuppliedEmail": None},
    )
    written = outbound_message(
        organization_id=message.organization_id,
        action_id=message.action_id,
        notifications=message.notifications,
        enterprise_url=message.enterprise_url or "",
        partner_url=message.partner_url or "",
    )
    assert parse_outbound_message(written) == message
    (item,) = SOURCES["salesforce"].split(message, SAMPLE)
    assert item.data["NotificationId"] == "04l000000000001AAA" and item.data["sObjectType"] == "Case"
    assert SOURCES["salesforce"].derived_subject(item.data) == "case:500000000000001AAA"
