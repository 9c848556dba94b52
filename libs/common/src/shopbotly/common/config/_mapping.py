"""Mapping and trigger rules of a tenant: which events become which CRM commands, order and ticket state.

Owned by the mapper service; the reference with every transform is docs/services/mapper.md. Expressions are
JMESPath and are checked when the file loads (syntax, function names and argument counts), so a typo is a
config error naming the field, not a dead letter per event at run time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.functions import Functions
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from shopbotly.common.config._base import Name, StrictModel
from shopbotly.common.events import CommandOp
from shopbotly.common.sources import SOURCE_KINDS, SOURCES

__all__ = [
    "BOT_CONNECTION",
    "PRESET_NAMES",
    "TRANSFORM_NAMES",
    "CommandTemplate",
    "Expression",
    "FieldSpec",
    "MappingConfig",
    "OrderTemplate",
    "PresetName",
    "PresetRef",
    "RuleConfig",
    "TicketTemplate",
    "TransformSpec",
    "mapping_problems",
    "template_parts",
]

# notify_bot commands go to this reserved connection: crm-writer delivers them to the tenant's bot_webhook.
BOT_CONNECTION = "bot"

# The presets shipped with the mapper: one per source kind that names one, plus "api" (the Sync Lead API).
PRESET_NAMES: tuple[str, ...] = (*(s.preset for s in SOURCES.values() if s.preset is not None), "api")
# Source kinds a rule may filter on: the registered kinds plus "api", the Sync Lead API's built-in source.
RULE_KINDS: tuple[str, ...] = (*SOURCE_KINDS, "api")


def _one_of(known: tuple[str, ...], what: str) -> Any:
    def check(value: str) -> str:
        if value not in known:
            raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(map(repr, known))}")
        return value

    return check


PresetName = Annotated[
    str,
    AfterValidator(_one_of(PRESET_NAMES, "preset")),
    WithJsonSchema({"type": "string", "enum": list(PRESET_NAMES)}),
]
RuleKind = Annotated[
    str,
    AfterValidator(_one_of(RULE_KINDS, "source kind")),
    WithJsonSchema({"type": "string", "enum": list(RULE_KINDS)}),
]

_FUNCTIONS = Functions().FUNCTION_TABLE


def _function_calls(node: Any) -> Iterator[tuple[str, int]]:
    if isinstance(node, dict):
        if node.get("type") == "function_expression":
            yield node["value"], len(node.get("children", []))
        for child in node.get("children", []):
            yield from _function_calls(child)


def _check_expression(expr: str) -> str:
    try:
        parsed = jmespath.compile(expr)
    except JMESPathError as exc:
        raise ValueError(f"invalid JMESPath expression {expr!r}: {exc}") from None
    for name, argc in _function_calls(parsed.parsed):
        spec = _FUNCTIONS.get(name)
        if spec is None:
            raise ValueError(f"JMESPath expression {expr!r} calls unknown function {name}()")
        signature = spec["signature"]
        variadic = bool(signature) and signature[-1].get("variadic", False)
        if argc < len(signature) or (not variadic and argc > len(signature)):
            wanted = f"at least {len(signature)}" if variadic else str(len(signature))
            raise ValueError(f"JMESPath expression {expr!r}: {name}() takes {wanted} argument(s), got {argc}")
    return expr


Expression = Annotated[str, StringConstraints(min_length=1), AfterValidator(_check_expression)]


def template_parts(template: str) -> list[tuple[str, bool]]:
    """Split `"Order {data.name} paid"` into (text, False) and (expression, True) parts.

    `{{` and `}}` are literal braces; braces inside a placeholder nest (JMESPath multiselect hashes).
    """
    parts: list[tuple[str, bool]] = []
    text: list[str] = []
    i = 0
    while i < len(template):
        ch = template[i]
        if ch in "{}" and template[i : i + 2] in ("{{", "}}"):
            text.append(ch)
            i += 2
            continue
        if ch == "}":
            raise ValueError(f"template {template!r}: unmatched '}}' at column {i + 1} (write '}}}}')")
        if ch == "{":
            depth, j = 1, i + 1
            while j < len(template) and depth:
                depth += {"{": 1, "}": -1}.get(template[j], 0)
                j += 1
            if depth:
                raise ValueError(f"template {template!r}: unclosed '{{' at column {i + 1}")
            if text:
                parts.append(("".join(text), False))
                text = []
            parts.append((template[i + 1 : j - 1].strip(), True))
            i = j
            continue
        text.append(ch)
        i += 1
    if text:
        parts.append(("".join(text), False))
    return parts


def _check_template(template: str) -> str:
    for part, is_expr in template_parts(template):
        if is_expr:
            if not part:
                raise ValueError(f"template {template!r}: empty placeholder {{}}")
            _check_expression(part)
    return template


Template = Annotated[str, AfterValidator(_check_template)]

# --- transforms -------------------------------------------------------------------------------------------

_NO_ARGS = ("trim", "lowercase", "uppercase", "first_name", "last_name", "strip_html", "string")
# name -> (allowed argument keys, the key a scalar shorthand such as `{truncate: 80}` fills)
_WITH_ARGS: dict[str, tuple[frozenset[str], str | None]] = {
    "email": (frozenset({"on_invalid"}), None),
    "e164": (frozenset({"region", "on_invalid"}), "region"),
    "iso_date": (frozenset({"format", "unit", "on_invalid"}), "format"),
    "truncate": (frozenset({"length"}), "length"),
    "split": (frozenset({"separator"}), "separator"),
    "join": (frozenset({"separator"}), "separator"),
    "map": (frozenset({"values", "fallback"}), None),
    "minor_units": (frozenset({"exponent"}), "exponent"),
}
TRANSFORM_NAMES: tuple[str, ...] = (*_NO_ARGS, *_WITH_ARGS)
_NEEDS_ARGS = {"truncate": "length", "map": "values"}

_TRANSFORM_SCHEMA: dict[str, Any] = {
    "description": "A transform: a name (`trim`) or a one-key mapping with arguments (`{truncate: 80}`, "
    "`{e164: {region: US, on_invalid: keep}}`). See docs/services/mapper.md.",
    "anyOf": [
        {"enum": [n for n in TRANSFORM_NAMES if n not in _NEEDS_ARGS]},
        *[
            {
                "type": "object",
                "additionalProperties": False,
                "required": [name],
                "properties": {name: {}},
            }
            for name in (*_WITH_ARGS,)
        ],
    ],
}


class TransformSpec(StrictModel):
    """One step of a field's transform chain, normalized from the YAML shorthand."""

    name: str
    region: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None
    on_invalid: Literal["error", "drop", "keep"] = "error"
    format: Literal["datetime", "date"] = "datetime"
    unit: Literal["auto", "s", "ms"] = "auto"
    length: Annotated[int, Field(ge=1)] | None = None
    separator: str | None = None
    values: dict[str, JsonValue] | None = None
    fallback: Literal["keep", "drop", "error"] = "keep"
    exponent: Annotated[int, Field(ge=0, le=8)] = 2

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        args: dict[str, Any]
        if isinstance(value, str):
            name, args = value, {}
        elif isinstance(value, dict) and len(value) == 1:
            name, raw = next(iter(value.items()))
            if name in _NO_ARGS:
                raise ValueError(f"transform {name!r} takes no arguments; write it as `- {name}`")
            if name not in _WITH_ARGS:
                args = {}
            elif isinstance(raw, dict):
                args = raw
            elif raw is None:
                args = {}
            else:
                shorthand = _WITH_ARGS[name][1]
                if shorthand is None:
                    raise ValueError(f"transform {name!r} takes a mapping of arguments, got {raw!r}")
                args = {shorthand: raw}
        elif isinstance(value, dict) and "name" in value:
            return value  # already normalized (model_dump round trip)
        else:
            raise ValueError(
                f"a transform is a name (`trim`) or a one-key mapping (`{{truncate: 80}}`), got {value!r}"
            )
        if name not in TRANSFORM_NAMES:
            raise ValueError(f"unknown transform {name!r}; known: {', '.join(TRANSFORM_NAMES)}")
        allowed = _WITH_ARGS[name][0] if name in _WITH_ARGS else frozenset()
        unknown = sorted(set(args) - allowed)
        if unknown:
            raise ValueError(
                f"transform {name!r} has no argument(s) {unknown}; allowed: {sorted(allowed) or 'none'}"
            )
        needed = _NEEDS_ARGS.get(name)
        if needed and args.get(needed) is None:
            raise ValueError(f"transform {name!r} needs `{needed}`")
        return {"name": name, **args}


Transform = Annotated[TransformSpec, WithJsonSchema(_TRANSFORM_SCHEMA)]


def _or_string(description: str) -> Any:
    """JSON Schema hook: the model also accepts its YAML shorthand, a plain string."""

    def extend(schema: dict[str, Any]) -> None:
        as_object = dict(schema)
        schema.clear()
        schema["anyOf"] = [{"type": "string", "description": description}, as_object]

    return extend


class FieldSpec(StrictModel):
    """Where a value comes from (exactly one of expr, value, template) and how it is cleaned.

    In YAML a plain string is short for `{expr: <string>}`. When the result is null or "", `fallback` is
    tried, then `default`; a value that still ends up empty is left out of the command (it never blanks a
    CRM field), unless `required`, which makes the rule fail instead.
    """

    model_config = ConfigDict(
        **StrictModel.model_config, json_schema_extra=_or_string("a JMESPath expression: {expr: ...}")
    )

    expr: Expression | None = None
    value: JsonValue = None
    template: Template | None = None
    transforms: list[Transform] = Field(default_factory=list)
    # Evaluated when this one yields nothing (e.g. `first_name`, else the first word of `name`).
    fallback: FieldSpec | None = None
    default: JsonValue = None
    required: bool = False

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"expr": value}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        given = [n for n in ("expr", "template") if getattr(self, n) is not None]
        if "value" in self.model_fields_set:
            given.append("value")
        if len(given) != 1:
            raise ValueError(
                f"a field takes exactly one of `expr`, `value`, `template` (got {given or 'none'})"
            )
        return self


FieldName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,99}$")]


class CommandTemplate(StrictModel):
    """One CRM command a rule emits. Field names are canonical lowercase CRM property names."""

    op: CommandOp
    when: Expression | None = None
    connection: Name | None = None
    identity: FieldSpec | None = None
    fields: dict[FieldName, FieldSpec] = Field(default_factory=dict)
    # An expression yielding an object whose entries are added to `fields` (explicit fields win).
    extra_fields: Expression | None = None
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = Field(default_factory=list)
    tags_from: FieldSpec | None = None
    body: FieldSpec | None = None

    @model_validator(mode="after")
    def _op_needs(self) -> CommandTemplate:
        problem = None
        if self.op == CommandOp.ADD_TAGS and not (self.tags or self.tags_from):
            problem = "add_tags needs `tags` or `tags_from`"
        elif self.op == CommandOp.ADD_NOTE and self.body is None:
            problem = "add_note needs `body`"
        elif self.op == CommandOp.CREATE_TICKET and "subject" not in self.fields:
            problem = "create_ticket needs `fields.subject` (and `body` for the description)"
        elif self.op == CommandOp.ATTACH_ORDER and "order_id" not in self.fields:
            problem = "attach_order needs `fields.order_id`"
        elif self.op == CommandOp.NOTIFY_BOT:
            if "type" not in self.fields:
                problem = "notify_bot needs `fields.type` (e.g. ticket.updated)"
            elif self.connection not in (None, BOT_CONNECTION):
                problem = f"notify_bot always goes to the reserved connection {BOT_CONNECTION!r}"
        if problem:
            raise ValueError(problem)
        return self


class OrderTemplate(StrictModel):
    """Order state a rule derives from the event; merged into the known state on the orders topic."""

    order_id: FieldSpec
    order_number: FieldSpec | None = None
    customer_email: FieldSpec | None = None
    status: FieldSpec | None = None
    financial_status: FieldSpec | None = None
    fulfillment_status: FieldSpec | None = None
    currency: FieldSpec | None = None
    total: FieldSpec | None = None
    # A list of objects with title, sku, quantity, price (a JMESPath multiselect hash builds them).
    lines: FieldSpec | None = None
    tracking_numbers: FieldSpec | None = None
    tracking_url: FieldSpec | None = None
    source: FieldSpec | None = None
    created_at: FieldSpec | None = None
    updated_at: FieldSpec | None = None
    cancelled_at: FieldSpec | None = None


class TicketTemplate(StrictModel):
    """Support-ticket state a rule derives from the event; merged into the known state (tickets topic)."""

    ticket_id: FieldSpec
    customer_email: FieldSpec | None = None
    subject: FieldSpec | None = None
    status: FieldSpec | None = None
    is_open: FieldSpec | None = None
    priority: FieldSpec | None = None
    pipeline_stage: FieldSpec | None = None
    last_reply: FieldSpec | None = None
    created_at: FieldSpec | None = None
    updated_at: FieldSpec | None = None


class RuleConfig(StrictModel):
    """A trigger (`kinds`, `sources`, `types` prefilters and the `when` expression) and what it emits."""

    id: Name
    description: str | None = None
    kinds: list[RuleKind] = Field(default_factory=list)
    sources: list[Name] = Field(default_factory=list)
    types: list[Annotated[str, StringConstraints(min_length=1)]] = Field(default_factory=list)
    when: Expression | None = None
    connection: Name | None = None
    identity: FieldSpec | None = None
    commands: list[CommandTemplate] = Field(default_factory=list)
    order: OrderTemplate | None = None
    ticket: TicketTemplate | None = None

    @model_validator(mode="after")
    def _emits_something(self) -> RuleConfig:
        if not (self.commands or self.order or self.ticket):
            raise ValueError("a rule emits at least one of `commands`, `order`, `ticket`")
        return self


class PresetRef(StrictModel):
    """A preset: `shopify`, or `{name: shopify, connection: crm2, disable: [shopify-order-state]}`."""

    model_config = ConfigDict(**StrictModel.model_config, json_schema_extra=_or_string("a preset name"))

    name: PresetName
    connection: Name | None = None
    disable: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        return value


_VERSION = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")


class MappingConfig(StrictModel):
    """A tenant's mapping: presets first, then its own rules; every matching rule fires."""

    version: Annotated[str, StringConstraints(pattern=_VERSION.pattern)] = "1"
    presets: list[PresetRef] = Field(default_factory=list)
    default_connection: Name | None = None
    rules: list[RuleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _presets_once(self) -> MappingConfig:
        names = [p.name for p in self.presets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"presets: each preset is listed once, repeated: {dupes}")
        return self


def mapping_problems(mapping: MappingConfig, *, connections: set[str], has_bot_webhook: bool) -> list[str]:
    """Cross-section checks of a tenant's mapping, as `path: problem` lines (empty when fine)."""
    problems: list[str] = []

    def check_connection(path: str, name: str | None) -> None:
        if name is not None and name not in connections:
            problems.append(
                f"{path}: connection {name!r} is not defined (defined: {sorted(connections) or 'none'})"
            )

    check_connection("mapping.default_connection", mapping.default_connection)
    for i, preset in enumerate(mapping.presets):
        check_connection(f"mapping.presets.{i}.connection", preset.connection)
        if preset.connection is None and mapping.default_connection is None:
            problems.append(
                f"mapping.presets.{i}: preset {preset.name!r} needs a connection: set "
                "mapping.default_connection or presets[].connection"
            )
    for i, rule in enumerate(mapping.rules):
        check_connection(f"mapping.rules.{i}.connection", rule.connection)
        for j, cmd in enumerate(rule.commands):
            path = f"mapping.rules.{i}.commands.{j}"
            if cmd.op == CommandOp.NOTIFY_BOT:
                if not has_bot_webhook:
                    problems.append(f"{path}: notify_bot needs the tenant's `bot_webhook` to be configured")
                continue
            check_connection(f"{path}.connection", cmd.connection)
            if (cmd.connection or rule.connection or mapping.default_connection) is None:
                problems.append(
                    f"{path}: no connection: set commands[].connection, the rule's connection or "
                    "mapping.default_connection"
                )
    ids = [r.id for r in mapping.rules]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        problems.append(f"mapping.rules: rule ids must be unique, repeated: {dupes}")
    return problems
