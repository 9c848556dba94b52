"""The `mapping` section of the tenants file: mistakes are load-time errors naming the field and the fix."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from shopbotly.common.config import ConfigError, parse_config
from shopbotly.mapper.domain import Mappings

pytestmark = pytest.mark.unit

BASE = """
tenants:
  demo:
    sources:
      shop: {kind: shopify, secrets: [{env: SHOP_SECRET}]}
    connections:
      hubspot: {kind: hubspot, base_url: http://127.0.0.1:8090}
    mapping:
      default_connection: hubspot
"""


def config_with(mapping: dict[str, Any], *, bot_webhook: bool = False) -> dict[str, Any]:
    data = yaml.safe_load(BASE)
    data["tenants"]["demo"]["mapping"].update(mapping)
    if bot_webhook:
        data["tenants"]["demo"]["bot_webhook"] = {
            "url": "http://bot.example",
            "secret": {"env": "BOT_SECRET"},
        }
    return data


def rule(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "r1",
        "when": "type == 'orders/create'",
        "commands": [{"op": "upsert_contact", "identity": "data.email", "fields": {"email": "data.email"}}],
    }
    base.update(overrides)
    return base


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data, origin="t.yaml")
    return str(err.value)


def test_a_valid_mapping_loads_and_compiles() -> None:
    cfg = parse_config(config_with({"rules": [rule()], "presets": ["shopify", "api"]}))
    mapping = Mappings.from_config(cfg).tenants["demo"]
    assert [r.id for r in mapping.rules][-1] == "r1"
    assert mapping.version.startswith("1+")


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("type == ", "invalid JMESPath expression"),
        ("lenght(data.items)", "unknown function lenght()"),
        ("join(', ')", "join() takes 2 argument(s), got 1"),
        ("not_null()", "not_null() takes at least 1 argument(s), got 0"),
    ],
)
def test_bad_expressions_fail_at_load_with_the_field_path(expr: str, expected: str) -> None:
    message = error_of(config_with({"rules": [rule(when=expr)]}))
    assert "t.yaml: tenants.demo.mapping.rules.0.when" in message
    assert expected in message


def test_bad_template_placeholder_is_reported() -> None:
    bad = rule(
        commands=[{"op": "add_note", "identity": "data.email", "body": {"template": "Order {data.id"}}]
    )
    assert "unclosed '{'" in error_of(config_with({"rules": [bad]}))


@pytest.mark.parametrize(
    ("transforms", "expected"),
    [
        (["lowercas"], "unknown transform 'lowercas'"),
        ([{"trim": 3}], "transform 'trim' takes no arguments"),
        ([{"e164": {"country": "US"}}], "has no argument(s) ['country']"),
        (["truncate"], "transform 'truncate' needs `length`"),
        ([{"e164": {"region": "usa"}}], "region"),
        ([{"map": "x"}], "takes a mapping of arguments"),
    ],
)
def test_bad_transforms_are_named(transforms: list[Any], expected: str) -> None:
    bad = rule(
        commands=[
            {
                "op": "upsert_contact",
                "identity": "data.email",
                "fields": {"phone": {"expr": "data.phone", "transforms": transforms}},
            }
        ]
    )
    message = error_of(config_with({"rules": [bad]}))
    assert "mapping.rules.0.commands.0.fields.phone.transforms.0" in message
    assert expected in message


def test_transform_shorthands_normalize() -> None:
    good = rule(
        commands=[
            {
                "op": "upsert_contact",
                "identity": "data.email",
                "fields": {
                    "phone": {"expr": "data.phone", "transforms": [{"e164": "DE"}, {"truncate": 20}, "trim"]}
                },
            }
        ]
    )
    cfg = parse_config(config_with({"rules": [good]}))
    spec = cfg.tenants["demo"].mapping.rules[0].commands[0].fields["phone"]
    assert [(t.name, t.region, t.length) for t in spec.transforms] == [
        ("e164", "DE", None),
        ("truncate", None, 20),
        ("trim", None, None),
    ]


def test_field_takes_exactly_one_source() -> None:
    bad = rule(
        commands=[
            {
                "op": "upsert_contact",
                "identity": "data.email",
                "fields": {"x": {"expr": "data.a", "value": 1}},
            }
        ]
    )
    assert "exactly one of `expr`, `value`, `template`" in error_of(config_with({"rules": [bad]}))


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ({"op": "add_tags"}, "add_tags needs `tags` or `tags_from`"),
        ({"op": "add_note"}, "add_note needs `body`"),
        ({"op": "create_ticket", "body": "data.x"}, "create_ticket needs `fields.subject`"),
        ({"op": "attach_order", "fields": {"total": "data.t"}}, "attach_order needs `fields.order_id`"),
        ({"op": "notify_bot", "fields": {"x": "data.t"}}, "notify_bot needs `fields.type`"),
        ({"op": "upsert_contact", "fields": {"Email": "data.e"}}, "fields.Email"),
    ],
)
def test_ops_say_what_they_need(command: dict[str, Any], expected: str) -> None:
    assert expected in error_of(config_with({"rules": [rule(commands=[command])]}))


def test_notify_bot_needs_the_tenants_bot_webhook() -> None:
    notify = {"op": "notify_bot", "fields": {"type": {"value": "ticket.updated"}}}
    message = error_of(config_with({"rules": [rule(commands=[notify])]}))
    assert "notify_bot needs the tenant's `bot_webhook`" in message
    parse_config(config_with({"rules": [rule(commands=[notify])]}, bot_webhook=True))


def test_presets_need_a_connection() -> None:
    data = config_with({"presets": ["shopify"]})
    del data["tenants"]["demo"]["mapping"]["default_connection"]
    assert "preset 'shopify' needs a connection" in error_of(data)


def test_unknown_preset_and_repeated_preset() -> None:
    assert "presets.0.name" in error_of(config_with({"presets": ["magento"]}))
    assert "each preset is listed once" in error_of(config_with({"presets": ["shopify", "shopify"]}))


def test_unknown_connection_in_a_command() -> None:
    cmd = {
        "op": "upsert_contact",
        "connection": "sf",
        "identity": "data.email",
        "fields": {"email": "data.e"},
    }
    assert "commands.0.connection: connection 'sf' is not defined" in error_of(
        config_with({"rules": [rule(commands=[cmd])]})
    )


def test_rule_id_colliding_with_a_preset_rule_is_refused_at_compile() -> None:
    cfg = parse_config(config_with({"presets": ["shopify"], "rules": [rule(id="shopify-order-state")]}))
    with pytest.raises(ValueError, match="'shopify-order-state' is already used by preset shopify"):
        Mappings.from_config(cfg)


def test_disabling_an_unknown_preset_rule_is_refused() -> None:
    cfg = parse_config(config_with({"presets": [{"name": "shopify", "disable": ["shopify-nope"]}]}))
    with pytest.raises(ValueError, match=r"cannot disable unknown rule\(s\) \['shopify-nope'\]"):
        Mappings.from_config(cfg)


def test_a_rule_must_emit_something() -> None:
    assert "emits at least one of" in error_of(config_with({"rules": [rule(commands=[])]}))


def test_json_schema_accepts_every_preset_rule_as_written() -> None:
    """Editors validate with the exported schema: it must accept the YAML shorthands the loader accepts."""
    import json
    from importlib import resources

    import jsonschema

    from shopbotly.common.config import json_schema
    from shopbotly.common.config._mapping import PRESET_NAMES

    schema = json.loads(json_schema())
    rules = []
    for name in PRESET_NAMES:
        text = resources.files("shopbotly.mapper").joinpath("presets", f"{name}.yaml").read_text()
        rules += [{**r, "id": f"copy-{r['id']}"} for r in yaml.safe_load(text)["rules"]]
    data = config_with({"rules": rules}, bot_webhook=True)
    jsonschema.validate(data, schema)
    parse_config(data)  # and the loader agrees
    bad = config_with({"rules": [rule(when=3)]})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
