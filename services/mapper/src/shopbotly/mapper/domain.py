"""The mapping itself, with no I/O: a raw event in, CRM commands and merged order/ticket state out.

The worker maps in two stages, so that each order and each ticket has exactly one merger
(docs/architecture.md, "One owner per order and ticket"):
- `route_event` (stage 1, per customer): the rules that touch no order or ticket, and for the others only
  which order/ticket they change (`StateRoute`); the event goes to the state-patches topic under that key.
- `merge_event` (stage 2, per order/ticket): those rules, with the merged state of the one key they change
  (commands built from merged state, such as bot notifications, come from here).
`map_event` does both in one go (the CLI, replay diffs, golden tests).

None of them raises for bad input: an event that cannot be mapped comes back as a dead-letter outcome
with the reason, and a failing rule does not stop the other rules of the same event (the event is
dead-lettered with the failed rules named; replaying it is safe because command ids are deterministic).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from shopbotly.common.config import ShopbotlyConfig, TenantConfig, crm_kind
from shopbotly.common.config._mapping import BOT_CONNECTION
from shopbotly.common.errors import ErrorClass
from shopbotly.common.events import (
    CommandOp,
    CommandOutcome,
    CommandResult,
    CrmCommand,
    Order,
    RawEvent,
    Ticket,
)
from shopbotly.common.ids import normalize_email, order_key, ticket_key
from shopbotly.mapper.presets import preset_rules
from shopbotly.mapper.rules import (
    CompiledRule,
    EventInfo,
    FieldLimits,
    compile_rule,
    is_empty,
)
from shopbotly.mapper.state import StateKind
from shopbotly.mapper.transforms import FieldError, to_text

__all__ = [
    "API_SOURCE",
    "Mappings",
    "Outcome",
    "StateRoute",
    "StateView",
    "Status",
    "TenantMapping",
    "map_event",
    "merge_event",
    "merge_order",
    "merge_ticket",
    "route_event",
    "seeded_ticket_id",
    "ticket_from_result",
]

# The Sync Lead API publishes under this source name without a configured source; its kind is "api".
API_SOURCE = "api"


class StateView(Protocol):
    """Read access to the latest known order and ticket state, by message key (`tenant:id`)."""

    def order(self, key: str) -> Order | None: ...

    def ticket(self, key: str) -> Ticket | None: ...


class Status(StrEnum):
    MAPPED = "mapped"
    NO_RULE = "no_rule"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class StateRoute:
    """The rules of one event that change one order or ticket, in rule order: merged by that key's owner."""

    kind: StateKind
    key: str  # `tenant:id`, the key of the state-patches record (and of the orders/tickets record)
    rules: tuple[str, ...]


@dataclass
class Outcome:
    """What one raw event became. Outputs may be present even when dead-lettered (the rules that worked)."""

    status: Status
    event: RawEvent | None = None
    commands: list[CrmCommand] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    tickets: list[Ticket] = field(default_factory=list)
    routes: list[StateRoute] = field(default_factory=list)
    rule_hits: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_class: ErrorClass = ErrorClass.PERMANENT

    @property
    def reason(self) -> str:
        return "; ".join(self.errors)

    @classmethod
    def rejected(cls, reason: str, event: RawEvent | None = None) -> Outcome:
        return cls(Status.DEAD_LETTERED, event=event, errors=[reason])


def _validation_summary(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{prefix}{loc}: {err['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


# --- order and ticket state -------------------------------------------------------------------------------

_ORDER_TEXT = (
    "order_number",
    "customer_email",
    "status",
    "financial_status",
    "fulfillment_status",
    "currency",
    "total",
    "tracking_url",
    "source",
)
_TICKET_TEXT = ("customer_email", "subject", "status", "priority", "pipeline_stage", "last_reply")


def _as_text(values: dict[str, Any], names: tuple[str, ...]) -> None:
    """Numbers become text where the model wants text (Shopify's numeric ids, Stripe's amounts)."""
    for name in names:
        value = values.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            values[name] = to_text(value)


def _order_lines(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise FieldError("order.lines: expected an array of objects with title, sku, quantity, price")
    lines = []
    for item in value:
        if not isinstance(item, dict):
            raise FieldError("order.lines: expected objects with title, sku, quantity, price")
        sku = item.get("sku")
        title = item.get("title")
        quantity = item.get("quantity")
        price = item.get("price")
        sku_text = to_text(sku).strip() if not is_empty(sku) else None
        if isinstance(quantity, str) and quantity.strip().isdigit():
            quantity = int(quantity)
        lines.append(
            {
                "title": to_text(title) if not is_empty(title) else (sku_text or "(untitled)"),
                "sku": sku_text or None,
                "quantity": quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else 1,
                "price": to_text(price) if not is_empty(price) else None,
            }
        )
    return lines


def _order_values(values: dict[str, Any]) -> dict[str, Any]:
    values = dict(values)
    _as_text(values, _ORDER_TEXT)
    if "lines" in values:
        values["lines"] = _order_lines(values["lines"])
    if "tracking_numbers" in values:
        found = values["tracking_numbers"]
        items = found if isinstance(found, list) else [found]
        values["tracking_numbers"] = list(dict.fromkeys(to_text(t) for t in items if not is_empty(t)))
    if isinstance(values.get("customer_email"), str):
        values["customer_email"] = normalize_email(values["customer_email"])
    return values


def merge_order(
    current: Order | None, values: Mapping[str, Any], *, tenant: str, order_id: str, event_id: str
) -> Order:
    """The known order with a partial update applied: fields present in the update win.

    An update older than the known state (its `updated_at` is earlier: webhooks can arrive out of order)
    only fills fields the known state lacks, so a late `orders/updated` cannot roll a status back.
    """
    update = _order_values(dict(values))
    try:
        incoming = Order.model_validate(
            {**update, "tenant": tenant, "order_id": order_id, "last_event_id": event_id}
        )
    except ValidationError as exc:
        raise FieldError(_validation_summary(exc, "order.")) from None
    if current is None:
        return incoming
    present = {name: getattr(incoming, name) for name in update}
    stale = (
        incoming.updated_at is not None
        and current.updated_at is not None
        and incoming.updated_at < current.updated_at
    )
    if stale:
        fill = {k: v for k, v in present.items() if is_empty(getattr(current, k))}
        return current.model_copy(update=fill) if fill else current
    return current.model_copy(update={**present, "last_event_id": event_id})


def merge_ticket(
    current: Ticket | None, values: Mapping[str, Any], *, tenant: str, ticket_id: str, event_id: str
) -> Ticket:
    """The known ticket with a partial update applied, in arrival order.

    CRM webhooks carry one property change each, so there is no whole-record version to compare; the
    latest `updated_at` is kept.
    """
    update = dict(values)
    _as_text(update, _TICKET_TEXT)
    if isinstance(update.get("customer_email"), str):
        update["customer_email"] = normalize_email(update["customer_email"])
    try:
        incoming = Ticket.model_validate(
            {**update, "tenant": tenant, "ticket_id": ticket_id, "last_event_id": event_id}
        )
    except ValidationError as exc:
        raise FieldError(_validation_summary(exc, "ticket.")) from None
    if current is None:
        return incoming
    present = {name: getattr(incoming, name) for name in update}
    if (
        incoming.updated_at is not None
        and current.updated_at is not None
        and incoming.updated_at < current.updated_at
    ):
        present["updated_at"] = current.updated_at
    return current.model_copy(update={**present, "last_event_id": event_id})


def seeded_ticket_id(result: CommandResult) -> str | None:
    """The CRM's ticket id when `result` is a created ticket that seeds ticket state, else None."""
    if result.op != CommandOp.CREATE_TICKET or result.outcome not in (
        CommandOutcome.APPLIED,
        CommandOutcome.DUPLICATE,
    ):
        return None
    ticket_id = result.crm_ids.get("ticket", "").strip()
    if not ticket_id or len(ticket_id) > 128:
        return None
    return ticket_id


def ticket_from_result(result: CommandResult, state: StateView, *, event_id: str) -> Ticket | None:
    """A ticket seeded from crm-writer's result of a create_ticket command: ticket id and customer e-mail.

    HubSpot's ticket webhooks carry neither the customer nor the conversation; the create_ticket command's
    identity is the customer's e-mail, and its result the CRM's ticket id.
    """
    ticket_id = seeded_ticket_id(result)
    if ticket_id is None:
        return None
    email = normalize_email(result.identity) if "@" in result.identity else None
    current = state.ticket(ticket_key(result.tenant, ticket_id).decode())
    if current is None:
        return Ticket(
            tenant=result.tenant,
            ticket_id=ticket_id,
            customer_email=email,
            status="open",
            created_at=result.finished_at,
            last_event_id=event_id,
        )
    if email is None or current.customer_email == email:
        return None  # nothing new: a repeated result must not republish the state
    return current.model_copy(update={"customer_email": email})


# --- tenants ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Overlay:
    """State touched by the event being mapped, ahead of the store (several rules may touch one order)."""

    base: StateView
    orders: dict[str, Order]
    tickets: dict[str, Ticket]

    def order(self, key: str) -> Order | None:
        return self.orders.get(key) or self.base.order(key)

    def ticket(self, key: str) -> Ticket | None:
        return self.tickets.get(key) or self.base.ticket(key)


@dataclass(frozen=True)
class TenantMapping:
    """One tenant's compiled rules (presets first, then its own), in evaluation order."""

    tenant: str
    version: str
    rules: tuple[CompiledRule, ...]
    source_kinds: Mapping[str, str]

    def kind_of(self, source: str) -> str | None:
        kind = self.source_kinds.get(source)
        if kind is None and source == API_SOURCE:
            return "api"
        return kind

    @cached_property
    def _by_id(self) -> dict[str, CompiledRule]:
        return {rule.id: rule for rule in self.rules}

    def _hits(
        self, event: RawEvent, context: dict[str, Any], kind: str, outcome: Outcome
    ) -> Iterator[CompiledRule]:
        """The rules the event triggers, in order; counted in `outcome.rule_hits` (a failing `when` is an
        error of the outcome)."""
        for rule in self.rules:
            if not rule.prefilter(kind, event.sourcename, event.type):
                continue
            try:
                if not rule.triggered(context):
                    continue
            except FieldError as exc:
                outcome.errors.append(f"rule {rule.id}: when: {exc}")
                continue
            outcome.rule_hits.append(rule.id)
            yield rule

    def map(
        self, event: RawEvent, context: dict[str, Any], kind: str, state: StateView, *, now: datetime
    ) -> Outcome:
        """Every rule at once against `state`: what stage 1 and stage 2 together make of the event."""
        info = _info(event)
        overlay = _Overlay(state, {}, {})
        outcome = Outcome(Status.NO_RULE, event=event)
        for rule in self._hits(event, context, kind, outcome):
            try:
                self._apply_rule(rule, context, info, overlay, outcome, now=now)
            except FieldError as exc:
                outcome.errors.append(f"rule {rule.id}: {exc}")
        return _finish(outcome, overlay)

    def route(self, event: RawEvent, context: dict[str, Any], kind: str, *, now: datetime) -> Outcome:
        """Stage 1: the commands of rules that touch no order or ticket, and a `StateRoute` per order or
        ticket the other rules change (their order/ticket fields are evaluated here too, so a rule that
        fails on them is dead-lettered at once, as in `map`)."""
        info = _info(event)
        overlay = _Overlay(_NO_STATE, {}, {})
        outcome = Outcome(Status.NO_RULE, event=event)
        routes: dict[tuple[StateKind, str], list[str]] = {}
        for rule in self._hits(event, context, kind, outcome):
            try:
                if rule.order is not None:
                    order_id, _ = rule.order.evaluate(context)
                    route = (StateKind.ORDER, order_key(info.tenant, order_id).decode())
                elif rule.ticket is not None:
                    ticket_id, _ = rule.ticket.evaluate(context)
                    route = (StateKind.TICKET, ticket_key(info.tenant, ticket_id).decode())
                else:
                    self._apply_rule(rule, context, info, overlay, outcome, now=now)
                    continue
                routes.setdefault(route, []).append(rule.id)
            except FieldError as exc:
                outcome.errors.append(f"rule {rule.id}: {exc}")
        outcome.routes = [StateRoute(k, key, tuple(rules)) for (k, key), rules in routes.items()]
        return _finish(outcome, overlay)

    def merge(
        self,
        event: RawEvent,
        context: dict[str, Any],
        rule_ids: Sequence[str],
        state: StateView,
        *,
        now: datetime,
    ) -> Outcome:
        """Stage 2: the rules of one `StateRoute` (they triggered in stage 1), merged into `state`."""
        info = _info(event)
        overlay = _Overlay(state, {}, {})
        outcome = Outcome(Status.NO_RULE, event=event)
        for rule_id in rule_ids:
            rule = self._by_id.get(rule_id)
            if rule is None:
                outcome.errors.append(f"rule {rule_id}: not in mapping {self.version} any more")
                continue
            outcome.rule_hits.append(rule.id)
            try:
                self._apply_rule(rule, context, info, overlay, outcome, now=now)
            except FieldError as exc:
                outcome.errors.append(f"rule {rule.id}: {exc}")
        return _finish(outcome, overlay)

    def _apply_rule(
        self,
        rule: CompiledRule,
        context: dict[str, Any],
        info: EventInfo,
        overlay: _Overlay,
        outcome: Outcome,
        *,
        now: datetime,
    ) -> None:
        """Everything a rule emits, or FieldError and nothing (a rule is all or nothing)."""
        rule_context = context
        new_order: tuple[str, Order] | None = None
        new_ticket: tuple[str, Ticket] | None = None
        if rule.order is not None:
            order_id, values = rule.order.evaluate(context)
            key = order_key(info.tenant, order_id).decode()
            merged = merge_order(
                overlay.order(key), values, tenant=info.tenant, order_id=order_id, event_id=info.id
            )
            new_order = (key, merged)
            rule_context = {**rule_context, "order": merged.model_dump(mode="json")}
        if rule.ticket is not None:
            ticket_id, values = rule.ticket.evaluate(context)
            key = ticket_key(info.tenant, ticket_id).decode()
            merged_ticket = merge_ticket(
                overlay.ticket(key), values, tenant=info.tenant, ticket_id=ticket_id, event_id=info.id
            )
            new_ticket = (key, merged_ticket)
            rule_context = {**rule_context, "ticket": merged_ticket.model_dump(mode="json")}
        commands = []
        for command in rule.commands:
            built = command.build(rule_context, info, rule_id=rule.id, mapping_version=self.version, now=now)
            if built is not None:
                commands.append(built)
        if new_order is not None:
            overlay.orders[new_order[0]] = new_order[1]
        if new_ticket is not None:
            overlay.tickets[new_ticket[0]] = new_ticket[1]
        outcome.commands.extend(commands)


class _NoState:
    """Stage 1 holds no order or ticket state: its rules do not read any."""

    def order(self, key: str) -> Order | None:
        return None

    def ticket(self, key: str) -> Ticket | None:
        return None


_NO_STATE = _NoState()


def _info(event: RawEvent) -> EventInfo:
    return EventInfo(
        id=event.id,
        tenant=event.tenant,
        type=event.type,
        trace_id=event.traceid,
        received_at=event.receivedat,
    )


def _finish(outcome: Outcome, overlay: _Overlay) -> Outcome:
    outcome.orders = list(overlay.orders.values())
    outcome.tickets = list(overlay.tickets.values())
    if outcome.errors:
        outcome.status = Status.DEAD_LETTERED
    elif outcome.rule_hits:
        outcome.status = Status.MAPPED
    return outcome


def _limits(tenant: TenantConfig) -> dict[str, FieldLimits]:
    """Text limits per connection: its CRM kind's (config/crm_kinds/<kind>.py)."""
    limits = {name: conn.field_limits for name, conn in tenant.connections.items()}
    limits.setdefault(BOT_CONNECTION, crm_kind("bot_webhook").field_limits)
    return limits


def compile_tenant(name: str, tenant: TenantConfig) -> TenantMapping:
    """A tenant's rules ready to run. ValueError names the tenant and what is wrong (e.g. a preset rule
    disabled that does not exist, or a rule id that collides with a preset's)."""
    mapping = tenant.mapping
    limits = _limits(tenant)
    # Only a fallback: loading the config already refuses a rule whose connection is not defined.
    default_limits = crm_kind("generic").field_limits
    include_bot = tenant.bot_webhook is not None
    compiled: list[CompiledRule] = []
    resolved: list[Any] = []
    seen: dict[str, str] = {}
    try:
        for preset in mapping.presets:
            for rule in preset_rules(preset.name, disable=preset.disable):
                seen[rule.id] = f"preset {preset.name}"
                resolved.append(rule.model_dump(mode="json"))
                done = compile_rule(
                    rule,
                    default_connection=preset.connection or mapping.default_connection,
                    limits_for=limits,
                    default_limits=default_limits,
                    include_bot=include_bot,
                )
                if done is not None:
                    compiled.append(done)
        for rule in mapping.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is already used by {seen[rule.id]}")
            resolved.append(rule.model_dump(mode="json"))
            done = compile_rule(
                rule,
                default_connection=mapping.default_connection,
                limits_for=limits,
                default_limits=default_limits,
                include_bot=include_bot,
            )
            if done is not None:
                compiled.append(done)
    except ValueError as exc:
        raise ValueError(f"tenants.{name}.mapping: {exc}") from None
    # The operator's version label plus a fingerprint of the rules actually in force (presets included),
    # so a command says exactly which mapping made it.
    digest = hashlib.sha256(
        orjson.dumps({"presets": [p.model_dump(mode="json") for p in mapping.presets], "rules": resolved})
    ).hexdigest()[:10]
    return TenantMapping(
        tenant=name,
        version=f"{mapping.version}+{digest}",
        rules=tuple(compiled),
        source_kinds={source: cfg.kind for source, cfg in tenant.sources.items()},
    )


@dataclass(frozen=True)
class Mappings:
    """Every tenant's compiled mapping."""

    tenants: Mapping[str, TenantMapping]

    @classmethod
    def from_config(cls, config: ShopbotlyConfig) -> Mappings:
        return cls({name: compile_tenant(name, tenant) for name, tenant in config.tenants.items()})


def _parse(
    value: bytes | None, mappings: Mappings
) -> tuple[RawEvent, TenantMapping, str, dict[str, Any]] | Outcome:
    """The envelope, its tenant's mapping, the source kind and the expression context; or why not."""
    if not value:
        return Outcome.rejected("schema: empty message value (expected a CloudEvents JSON envelope)")
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Outcome.rejected(f"schema: not JSON: {exc}")
    if not isinstance(document, dict):
        return Outcome.rejected(f"schema: expected a CloudEvents JSON object, got {type(document).__name__}")
    try:
        # `data` came out of a JSON parser, so it is valid JSON by construction: validating the envelope
        # without it skips a walk over the whole payload (the costliest part of validation).
        event = RawEvent.model_validate({**document, "data": None}).model_copy(
            update={"data": document.get("data")}
        )
    except ValidationError as exc:
        return Outcome.rejected(f"schema: invalid raw event: {_validation_summary(exc)}")
    tenant = mappings.tenants.get(event.tenant)
    if tenant is None:
        return Outcome.rejected(f"tenant {event.tenant!r} is not configured", event)
    kind = tenant.kind_of(event.sourcename)
    if kind is None:
        return Outcome.rejected(
            f"source {event.sourcename!r} is not configured for tenant {event.tenant!r}", event
        )
    # The expressions see the envelope as JSON, plus the source kind.
    document["kind"] = kind
    return event, tenant, kind, document


def map_event(value: bytes | None, mappings: Mappings, state: StateView, *, now: datetime) -> Outcome:
    """Map one raw-events message value, both stages at once against `state`. Bad input is a dead-letter
    outcome, never an exception."""
    parsed = _parse(value, mappings)
    if isinstance(parsed, Outcome):
        return parsed
    event, tenant, kind, document = parsed
    return tenant.map(event, document, kind, state, now=now)


def route_event(value: bytes | None, mappings: Mappings, *, now: datetime) -> Outcome:
    """Stage 1 of one raw-events message value (see the module docstring)."""
    parsed = _parse(value, mappings)
    if isinstance(parsed, Outcome):
        return parsed
    event, tenant, kind, document = parsed
    return tenant.route(event, document, kind, now=now)


def merge_event(
    value: bytes | None, mappings: Mappings, rule_ids: Sequence[str], state: StateView, *, now: datetime
) -> Outcome:
    """Stage 2: the rules `rule_ids` of a routed raw event, merged into `state`."""
    parsed = _parse(value, mappings)
    if isinstance(parsed, Outcome):
        return parsed
    event, tenant, _, document = parsed
    return tenant.merge(event, document, rule_ids, state, now=now)
