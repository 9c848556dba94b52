"""Every CRM kind is one complete module, and the connections section is validated as their union."""

from __future__ import annotations

import importlib
from typing import Any, get_args

import pytest

from shopbotly.common.config import (
    CRM_KINDS,
    ConfigError,
    ConnectionConfig,
    FieldLimits,
    crm_kind,
    parse_config,
    parse_connection,
)
from shopbotly.common.config._base import StrictModel

pytestmark = pytest.mark.unit


def load_error(connection: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config({"tenants": {"demo": {"connections": {"crm": connection}}}}, origin="shopbotly.yaml")
    return str(err.value)


def test_the_kinds_are_the_modules_of_the_package() -> None:
    package = importlib.import_module("shopbotly.common.config.crm_kinds")
    assert set(CRM_KINDS) == {"bot_webhook", "generic", "hubspot", "salesforce"}
    for name, model in CRM_KINDS.items():
        assert model.__module__ == f"{package.__name__}.{name}"


@pytest.mark.parametrize("kind", sorted(CRM_KINDS))
def test_every_kind_has_all_its_parts(kind: str) -> None:
    model = crm_kind(kind)
    assert issubclass(model, ConnectionConfig)
    assert get_args(model.model_fields["kind"].annotation) == (kind,)
    # Options: a strict model whose defaults load (a connection may leave `options` out).
    options = model.options_model()
    assert issubclass(options, StrictModel) and options is not StrictModel
    assert isinstance(options.model_validate({}), options)
    # Limits: the batch bound the base field allows, and text limits the mapper applies.
    assert 1 <= model.max_batch_size <= 200
    assert isinstance(model.field_limits, FieldLimits)
    assert model.title
    # The smallest connection of the kind loads, with its typed options, as the union's member.
    minimal: dict[str, Any] = {"kind": kind}
    if model.needs_base_url:
        minimal["base_url"] = "https://crm.example"
    conn = parse_connection(minimal)
    assert type(conn) is model and type(conn.options) is options


def test_a_connection_is_loaded_once_with_typed_options() -> None:
    conn = (
        parse_config(
            {
                "tenants": {
                    "demo": {
                        "connections": {
                            "crm": {
                                "kind": "hubspot",
                                "base_url": "https://api.hubapi.com",
                                "options": {"tags_property": "labels"},
                            }
                        }
                    }
                }
            }
        )
        .tenants["demo"]
        .connections["crm"]
    )
    assert type(conn).__name__ == "HubSpotConnection"
    assert conn.options.model_dump()["tags_property"] == "labels"
    assert conn.field_limits.default == 65_536  # the mapper's limits come from the kind


def test_an_unknown_kind_fails_the_load_listing_the_known_kinds() -> None:
    msg = load_error({"kind": "pipedrive", "base_url": "https://api.pipedrive.com"})
    assert msg == (
        "shopbotly.yaml: tenants.demo.connections.crm: kind: unknown CRM kind 'pipedrive'; "
        "known kinds: bot_webhook, generic, hubspot, salesforce"
    )
    assert load_error({"base_url": "https://crm"}) == (
        "shopbotly.yaml: tenants.demo.connections.crm: kind: required, one of: "
        "bot_webhook, generic, hubspot, salesforce"
    )
    with pytest.raises(LookupError, match="known kinds: bot_webhook, generic, hubspot, salesforce"):
        crm_kind("pipedrive")


def test_error_paths_are_the_files_not_the_unions() -> None:
    # pydantic adds the union member (the kind) to the path; the message names the field as written.
    msg = load_error({"kind": "salesforce", "base_url": "https://org.my.salesforce.com", "timeout_s": 0})
    assert msg == (
        "shopbotly.yaml: tenants.demo.connections.crm.timeout_s: Input should be greater than 0 (got 0)"
    )
    msg = load_error({"kind": "salesforce", "base_url": "https://org", "options": {"api_version": "61"}})
    assert msg.startswith("shopbotly.yaml: tenants.demo.connections.crm: options.api_version: String should")
    assert "'contact_field_map'" in msg  # the kind's valid options are listed


def test_the_base_model_alone_is_not_a_connection() -> None:
    with pytest.raises(ValueError, match="use parse_connection"):
        ConnectionConfig.model_validate({"kind": "hubspot", "base_url": "https://a"})


def test_hubspot_api_version_defaults_to_2026_03_and_takes_only_served_versions() -> None:
    from shopbotly.common.config.crm_kinds.hubspot import HUBSPOT_API_VERSIONS, HubSpotOptions

    assert HubSpotOptions().api_version == "2026-03"
    assert HUBSPOT_API_VERSIONS == ("v3", "2026-03", "2026-09")
    for version in HUBSPOT_API_VERSIONS:
        conn = parse_connection(
            {"kind": "hubspot", "base_url": "https://api.hubapi.com", "options": {"api_version": version}}
        )
        assert conn.options.model_dump()["api_version"] == version
    for wrong in ("v4", "2026-06", "2027-03", "2026-03-beta", 3):
        msg = load_error(
            {"kind": "hubspot", "base_url": "https://api.hubapi.com", "options": {"api_version": wrong}}
        )
        assert msg.startswith(
            "shopbotly.yaml: tenants.demo.connections.crm: options.api_version: "
            "Input should be 'v3', '2026-03' or '2026-09'"
        ), msg


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (
            "v3",
            [
                "/crm/v3/objects/contacts",
                "/crm/v3/objects/contacts/123",
                "/crm/v3/objects/contacts/batch/upsert",
                "/crm/v3/objects/notes/batch/read",
                "/crm/v3/objects/contacts/search",
                "/crm/v4/objects/tickets/7/associations/contacts",
                "/crm/v4/objects/notes/7/associations/default/contacts/123",
                "/crm/v3/properties/tickets",
            ],
        ),
        (
            "2026-03",
            [
                "/crm/objects/2026-03/contacts",
                "/crm/objects/2026-03/contacts/123",
                "/crm/objects/2026-03/contacts/batch/upsert",
                "/crm/objects/2026-03/notes/batch/read",
                "/crm/objects/2026-03/contacts/search",
                "/crm/objects/2026-03/tickets/7/associations/contacts",
                "/crm/objects/2026-03/notes/7/associations/default/contacts/123",
                "/crm/properties/2026-03/tickets",
            ],
        ),
        (
            "2026-09",
            [
                "/crm/objects/2026-09/contacts",
                "/crm/objects/2026-09/contacts/123",
                "/crm/objects/2026-09/contacts/batch/upsert",
                "/crm/objects/2026-09/notes/batch/read",
                "/crm/objects/2026-09/contacts/search",
                "/crm/objects/2026-09/tickets/7/associations/contacts",
                "/crm/objects/2026-09/notes/7/associations/default/contacts/123",
                "/crm/properties/2026-09/tickets",
            ],
        ),
    ],
)
def test_hubspot_paths_follow_the_versions_family(version: Any, expected: list[str]) -> None:
    from shopbotly.common.config.crm_kinds.hubspot import HubSpotPaths

    paths = HubSpotPaths(version)
    assert [
        paths.objects("contacts"),
        paths.record("contacts", "123"),
        paths.batch("contacts", "upsert"),
        paths.batch("notes", "read"),
        paths.search("contacts"),
        paths.associations("tickets", "7", "contacts"),
        paths.default_association("notes", "7", "contacts", "123"),
        paths.properties("tickets"),
    ] == expected
