"""Rules compiled from config: JMESPath expressions, field specs and command templates ready to evaluate.

Compiling once at start keeps per-event work to dictionary lookups and compiled expressions
(shopbotly.common.expressions).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jmespath.exceptions import JMESPathError, JMESPathTypeError

from shopbotly.common.config import (
    CommandTemplate,
    FieldLimits,
    FieldSpec,
    OrderTemplate,
    RuleConfig,
    TicketTemplate,
)
from shopbotly.common.config._mapping import BOT_CONNECTION, template_parts
from shopbotly.common.events import CommandOp, CrmCommand
from shopbotly.common.expressions import compile_expression, truthy
from shopbotly.common.ids import command_id
from shopbotly.mapper.transforms import FieldError, Transform, compile_transform, to_text

__all__ = [
    "CompiledCommand",
    "CompiledField",
    "CompiledRule",
    "CompiledState",
    "EventInfo",
    "Expr",
    "FieldLimits",
    "compile_rule",
    "is_empty",
]


_JSON_TYPES = {
    "int": "number",
    "float": "number",
    "str": "string",
    "bool": "boolean",
    "list": "array",
    "dict": "object",
    "NoneType": "null",
}


class Expr:
    """A compiled JMESPath expression; runtime failures become FieldError naming the expression."""

    __slots__ = ("_run", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._run = compile_expression(source).search

    def search(self, context: Mapping[str, Any]) -> Any:
        try:
            return self._run(context)
        except JMESPathTypeError as exc:
            # Not str(exc): it quotes the offending value, which may be personal data.
            actual = _JSON_TYPES.get(str(exc.actual_type), str(exc.actual_type))
            raise FieldError(
                f"expression {self.source!r} failed: {exc.function_name}() got {actual}, "
                f"expected {' or '.join(map(str, exc.expected_types))}"
            ) from None
        except JMESPathError as exc:
            raise FieldError(f"expression {self.source!r} failed: {type(exc).__name__}") from None
        except (TypeError, ValueError) as exc:
            # The jmespath package lets a few of these through (e.g. sort() of mixed types).
            raise FieldError(f"expression {self.source!r} failed: {type(exc).__name__}") from None


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


class CompiledField:
    """A FieldSpec ready to evaluate: source, transforms, fallback, default, required."""

    __slots__ = ("_default", "_expr", "_fallback", "_parts", "_required", "_transforms", "_value", "label")

    def __init__(self, spec: FieldSpec, label: str) -> None:
        self.label = label
        self._expr = Expr(spec.expr) if spec.expr is not None else None
        self._parts = (
            [(Expr(text) if is_expr else text) for text, is_expr in template_parts(spec.template)]
            if spec.template is not None
            else None
        )
        self._value = spec.value
        self._transforms: list[tuple[str, Transform]] = [
            (t.name, compile_transform(t)) for t in spec.transforms
        ]
        self._fallback = CompiledField(spec.fallback, label) if spec.fallback is not None else None
        self._default = spec.default
        self._required = spec.required

    def _source(self, context: Mapping[str, Any]) -> Any:
        if self._expr is not None:
            return self._expr.search(context)
        if self._parts is not None:
            return "".join(
                part if isinstance(part, str) else to_text(part.search(context)) for part in self._parts
            )
        return self._value

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """The value, or None when it is empty and not required."""
        try:
            value = self._source(context)
            for name, transform in self._transforms:
                try:
                    value = transform(value)
                except FieldError as exc:
                    raise FieldError(f"{name}: {exc}") from None
        except FieldError as exc:
            raise FieldError(f"{self.label}: {exc}") from None
        if is_empty(value) and self._fallback is not None:
            value = self._fallback.evaluate(context)
        if is_empty(value) and self._default is not None:
            value = self._default
        if is_empty(value):
            if self._required:
                raise FieldError(f"{self.label}: required but empty")
            return None
        return value


_TRUNCATED = "\n…[truncated]"


@dataclass(frozen=True)
class EventInfo:
    """What a command records about the event that caused it."""

    id: str
    tenant: str
    type: str
    trace_id: str | None
    received_at: datetime


_FIELD_KEY = re.compile(r"[^a-z0-9_]+")


def _field_key(name: str) -> str | None:
    key = _FIELD_KEY.sub("_", name.strip().lower()).strip("_")
    if not key:
        return None
    return key if key[0].isalpha() else f"f_{key}"


class CompiledCommand:
    """A CommandTemplate ready to build CrmCommands."""

    def __init__(
        self,
        template: CommandTemplate,
        *,
        index: int,
        label: str,
        connection: str,
        identity: FieldSpec,
        limits: FieldLimits,
    ) -> None:
        # The rule as configured, for tools that read what a mapping writes (`shopbotly connections check`).
        self.template = template
        self.index = index
        self.op = template.op
        self.label = f"{label} ({template.op.value})"
        self.connection = connection
        self.limits = limits
        self.when = Expr(template.when) if template.when else None
        self.identity = CompiledField(identity, "identity")
        self.fields = [
            (name, CompiledField(spec, f"fields.{name}")) for name, spec in template.fields.items()
        ]
        self.extra_fields = Expr(template.extra_fields) if template.extra_fields else None
        self.tags = tuple(template.tags)
        self.tags_from = CompiledField(template.tags_from, "tags_from") if template.tags_from else None
        self.body = CompiledField(template.body, "body") if template.body else None

    def _identity(self, context: Mapping[str, Any]) -> str:
        value = self.identity.evaluate(context)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = to_text(value)
        if not isinstance(value, str):
            raise FieldError("identity: expected text" if value is not None else "identity: empty")
        value = value.strip()
        if "@" in value:
            value = value.lower()  # e-mail identities are normalized so keys and CRM lookups agree
        if not value:
            raise FieldError("identity: empty")
        if len(value) > 512:
            raise FieldError("identity: longer than 512 characters")
        return value

    def _text_limit(self, name: str, value: Any) -> Any:
        limit = self.limits.for_field(name)
        if limit is None or not isinstance(value, str) or len(value) <= limit:
            return value
        if name == "email":
            # A cut e-mail address is another person's address: refuse rather than truncate.
            raise FieldError(f"fields.email: longer than the CRM's limit of {limit} characters")
        return value[:limit]

    def _fields(self, context: Mapping[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.extra_fields is not None:
            extra = self.extra_fields.search(context)
            if isinstance(extra, dict):
                for raw_name, value in extra.items():
                    key = _field_key(str(raw_name))
                    if key is not None and not is_empty(value):
                        fields[key] = self._text_limit(key, value)
            elif extra is not None:
                raise FieldError(f"extra_fields: expected an object, got {type(extra).__name__}")
        for name, spec in self.fields:
            value = spec.evaluate(context)
            if value is not None:
                fields[name] = self._text_limit(name, value)
        return fields

    def _tags(self, context: Mapping[str, Any]) -> list[str]:
        tags = list(self.tags)
        if self.tags_from is not None:
            found = self.tags_from.evaluate(context)
            items = [found] if isinstance(found, str) else found if isinstance(found, list) else None
            if found is not None and items is None:
                raise FieldError(f"tags_from: expected text or an array, got {type(found).__name__}")
            for item in items or ():
                if item is None:
                    continue
                text = to_text(item).strip()
                if text:
                    tags.append(text[:100])
        return list(dict.fromkeys(tags))

    def _body(self, context: Mapping[str, Any]) -> str | None:
        if self.body is None:
            return None
        value = self.body.evaluate(context)
        if value is None:
            return None
        if isinstance(value, dict | list):
            raise FieldError("body: expected text, got an array or object (use join or a template)")
        text = to_text(value)
        limit = self.limits.body
        if limit is not None and len(text) > limit:
            text = text[: limit - len(_TRUNCATED)] + _TRUNCATED
        return text

    def build(
        self,
        context: Mapping[str, Any],
        event: EventInfo,
        *,
        rule_id: str,
        mapping_version: str,
        now: datetime,
    ) -> CrmCommand | None:
        """The command, None when its `when` is false; FieldError says what could not be built."""
        try:
            if self.when is not None and not truthy(self.when.search(context)):
                return None
            identity = self._identity(context)
            fields = self._fields(context)
            tags = self._tags(context)
            body = self._body(context)
        except FieldError as exc:
            raise FieldError(f"{self.label}: {exc}") from None
        if self.op == CommandOp.ADD_TAGS and not tags:
            return None  # nothing to add: not an error, the source simply had no tags
        if self.op == CommandOp.ADD_NOTE and body is None:
            raise FieldError(f"{self.label}: body: empty")
        event_type = event.type
        if self.op == CommandOp.NOTIFY_BOT:
            # crm-writer sends a notification's event_type as the Standard Webhooks `type` the bot sees,
            # so it is the notification's own type (ticket.updated), not the CRM event that caused it.
            if not isinstance(fields.get("type"), str):
                raise FieldError(f"{self.label}: fields.type: a notification needs a text type")
            event_type = fields["type"]
        return CrmCommand(
            command_id=command_id(event.id, rule_id, self.index),
            tenant=event.tenant,
            connection=self.connection,
            identity=identity,
            op=self.op,
            fields=fields,
            tags=tags,
            body=body,
            causation_event_id=event.id,
            event_type=event_type,
            rule_id=rule_id,
            mapping_version=mapping_version,
            trace_id=event.trace_id,
            received_at=event.received_at,
            created_at=now,
        )


class CompiledState:
    """An order or ticket template: the id field plus the fields to merge."""

    def __init__(self, template: OrderTemplate | TicketTemplate, *, id_field: str, label: str) -> None:
        self.id_field = id_field
        self.fields = [
            (name, CompiledField(spec, f"{label}.{name}"))
            for name in type(template).model_fields
            if (spec := getattr(template, name)) is not None
        ]

    def evaluate(self, context: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """(id, the non-empty values by field name); FieldError when the id is empty."""
        values: dict[str, Any] = {}
        for name, spec in self.fields:
            value = spec.evaluate(context)
            if value is not None:
                values[name] = value
        raw_id = values.pop(self.id_field, None)
        if raw_id is None or isinstance(raw_id, dict | list | bool):
            raise FieldError(f"{self.id_field}: empty or not a scalar")
        ident = to_text(raw_id).strip()
        if not ident or len(ident) > 128:
            raise FieldError(f"{self.id_field}: empty or longer than 128 characters")
        return ident, values


@dataclass(frozen=True)
class CompiledRule:
    id: str
    kinds: frozenset[str] | None
    sources: frozenset[str] | None
    types: frozenset[str] | None
    when: Expr | None
    commands: tuple[CompiledCommand, ...]
    order: CompiledState | None
    ticket: CompiledState | None

    def prefilter(self, kind: str, source: str, event_type: str) -> bool:
        """The cheap exact-match filters, checked before any expression runs."""
        return (
            (self.types is None or event_type in self.types)
            and (self.kinds is None or kind in self.kinds)
            and (self.sources is None or source in self.sources)
        )

    def triggered(self, context: Mapping[str, Any]) -> bool:
        return self.when is None or truthy(self.when.search(context))


def compile_rule(
    rule: RuleConfig,
    *,
    default_connection: str | None,
    limits_for: Mapping[str, FieldLimits],
    default_limits: FieldLimits,
    include_bot: bool,
) -> CompiledRule | None:
    """A rule ready to run; notify_bot commands are left out when the tenant has no bot webhook.

    Returns None when nothing is left to emit.
    """
    default_identity = FieldSpec(expr="subject", transforms=[])  # type: ignore[arg-type]
    commands: list[CompiledCommand] = []
    for index, template in enumerate(rule.commands):
        if template.op == CommandOp.NOTIFY_BOT:
            if not include_bot:
                continue
            connection = BOT_CONNECTION
        else:
            chosen = template.connection or rule.connection or default_connection
            if chosen is None:
                raise ValueError(f"rule {rule.id} command {index}: no connection")
            connection = chosen
        commands.append(
            CompiledCommand(
                template,
                index=index,
                label=f"command {index}",
                connection=connection,
                identity=template.identity or rule.identity or default_identity,
                limits=limits_for.get(connection, default_limits),
            )
        )
    if not commands and rule.order is None and rule.ticket is None:
        return None
    if rule.order is not None and rule.ticket is not None:
        # An order's merge and a ticket's merge have different owners (partitions of the state-patches
        # topic, docs/architecture.md): one rule cannot see both merged states.
        raise ValueError(f"rule {rule.id}: sets both an order and a ticket; split it into two rules")
    return CompiledRule(
        id=rule.id,
        kinds=frozenset(rule.kinds) or None,
        sources=frozenset(rule.sources) or None,
        types=frozenset(rule.types) or None,
        when=Expr(rule.when) if rule.when else None,
        commands=tuple(commands),
        order=CompiledState(rule.order, id_field="order_id", label="order") if rule.order else None,
        ticket=CompiledState(rule.ticket, id_field="ticket_id", label="ticket") if rule.ticket else None,
    )
