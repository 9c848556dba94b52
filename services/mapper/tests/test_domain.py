"""The pure mapping: outcomes for bad input, partial rule failures, state merging, bot notifications."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import yaml

from shopbotly.common.config import parse_config
from shopbotly.common.events import CommandOp, CommandOutcome, CommandResult, Order
from shopbotly.common.ids import command_id
from shopbotly.mapper.domain import (
    Mappings,
    Outcome,
    Status,
    map_event,
    merge_event,
    merge_order,
    route_event,
    seeded_ticket_id,
    ticket_from_result,
)
from shopbotly.mapper.presets import sample_events
from shopbotly.mapper.state import StateKind, StateStore

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 2, 10, 15, 31, tzinfo=UTC)

TENANT = """
tenants:
  acme:
    sources:
      shop: {kind: shopify, secrets: [{env: S}]}
      bot: {kind: shopbotly, secrets: [{env: S}]}
      crm: {kind: hubspot, secrets: [{env: S}]}
    connections:
      hubspot: {kind: hubspot, base_url: https://h}
      sf: {kind: salesforce, base_url: https://s}
    mapping:
      default_connection: hubspot
"""


def mappings_for(mapping: dict[str, Any], *, bot_webhook: bool = False) -> Mappings:
    data = yaml.safe_load(TENANT)
    data["tenants"]["acme"]["mapping"].update(mapping)
    if bot_webhook:
        data["tenants"]["acme"]["bot_webhook"] = {"url": "http://bot", "secret": {"env": "B"}}
    return Mappings.from_config(parse_config(data))


def event(
    event_type: str, data: Any, *, source: str = "shop", tenant: str = "acme", event_id: str = "e1"
) -> bytes:
    return orjson.dumps(
        {
            "id": event_id,
            "source": f"/tenants/{tenant}/sources/{source}",
            "type": event_type,
            "subject": "jane@example.com",
            "data": data,
            "tenant": tenant,
            "sourcename": source,
            "traceid": "t1",
            "receivedat": "2026-03-02T10:15:30Z",
        }
    )


SHOPIFY = mappings_for({"presets": ["shopify"]})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "schema: empty message value"),
        (b"{nope", "schema: not JSON"),
        (b"[1, 2]", "schema: expected a CloudEvents JSON object, got list"),
        (b'{"id": "x"}', "schema: invalid raw event: source: Field required"),
        (event("orders/create", {}, tenant="ghost"), "tenant 'ghost' is not configured"),
        (event("orders/create", {}, source="pos"), "source 'pos' is not configured for tenant 'acme'"),
    ],
)
def test_bad_input_is_a_dead_letter_outcome(value: bytes, reason: str) -> None:
    outcome = map_event(value, SHOPIFY, StateStore(), now=NOW)
    assert outcome.status == Status.DEAD_LETTERED
    assert outcome.reason.startswith(reason), outcome.reason
    assert not outcome.commands


def test_no_rule_for_an_unmapped_type() -> None:
    outcome = map_event(event("products/update", {"id": 1}), SHOPIFY, StateStore(), now=NOW)
    assert outcome.status == Status.NO_RULE and outcome.rule_hits == [] and not outcome.errors


def test_a_failing_rule_does_not_stop_the_others() -> None:
    mappings = mappings_for(
        {
            "rules": [
                {
                    "id": "contact",
                    "types": ["lead"],
                    "identity": "data.email",
                    "commands": [{"op": "upsert_contact", "fields": {"email": "data.email"}}],
                },
                {
                    "id": "note",
                    "types": ["lead"],
                    "identity": "data.email",
                    "commands": [
                        {"op": "add_tags", "tags": ["x"]},
                        {"op": "add_note", "body": {"expr": "join(', ', data.notes)"}},
                    ],
                },
            ]
        }
    )
    outcome = map_event(
        event("lead", {"email": "Jane@Example.com", "notes": ["ok", 5]}), mappings, StateStore(), now=NOW
    )
    assert outcome.status == Status.DEAD_LETTERED
    assert outcome.rule_hits == ["contact", "note"]
    # The good rule's command is kept; the failing rule emits nothing at all (not even its add_tags).
    assert [(c.rule_id, c.op) for c in outcome.commands] == [("contact", CommandOp.UPSERT_CONTACT)]
    assert outcome.commands[0].identity == "jane@example.com"
    assert outcome.reason == (
        "rule note: command 1 (add_note): body: expression \"join(', ', data.notes)\" failed: "
        "join() got number, expected array-string"
    )


def test_command_ids_are_deterministic_per_event_rule_and_index() -> None:
    sample = {**sample_events("shopify")["orders.create"], "tenant": "acme", "sourcename": "shop"}
    first = map_event(orjson.dumps(sample), SHOPIFY, StateStore(), now=NOW)
    again = map_event(orjson.dumps(sample), SHOPIFY, StateStore(), now=datetime(2030, 1, 1, tzinfo=UTC))
    assert [c.command_id for c in first.commands] == [c.command_id for c in again.commands]
    assert first.commands[0].command_id == command_id(sample["id"], "shopify-order-customer", 0)
    assert len({c.command_id for c in first.commands}) == len(first.commands)


def test_mapping_version_fingerprints_the_rules() -> None:
    one = mappings_for({"version": "7", "presets": ["shopify"]}).tenants["acme"].version
    same = mappings_for({"version": "7", "presets": ["shopify"]}).tenants["acme"].version
    other = mappings_for(
        {"version": "7", "presets": [{"name": "shopify", "disable": ["shopify-order-cancelled"]}]}
    )
    assert one == same and one.startswith("7+")
    assert other.tenants["acme"].version != one


def test_prefilters_and_when() -> None:
    mappings = mappings_for(
        {
            "rules": [
                {
                    "id": "only-bot",
                    "sources": ["bot"],
                    "identity": "subject",
                    "commands": [{"op": "add_tags", "tags": ["from-bot"]}],
                },
                {
                    "id": "zero-is-true",
                    "kinds": ["shopify"],
                    "when": "data.count",
                    "identity": "subject",
                    "commands": [{"op": "add_tags", "tags": ["counted"]}],
                },
            ]
        }
    )
    from_shop = map_event(event("x", {"count": 0}), mappings, StateStore(), now=NOW)
    assert from_shop.rule_hits == ["zero-is-true"]  # JMESPath truthiness: 0 is true
    empty = map_event(event("x", {"count": ""}), mappings, StateStore(), now=NOW)
    assert empty.status == Status.NO_RULE
    from_bot = map_event(event("x", {}, source="bot"), mappings, StateStore(), now=NOW)
    assert from_bot.rule_hits == ["only-bot"]


def test_lead_api_source_needs_no_configuration_and_spreads_custom_fields() -> None:
    mappings = mappings_for({"presets": ["api"]})
    data = {
        "email": "li@example.cn",
        "first_name": "Li",
        "tags": [],
        "custom_fields": {"Company Size": "50", "2fa": True, "firstname": "Overridden?", "": "x"},
    }
    outcome = map_event(event("lead.submitted", data, source="api"), mappings, StateStore(), now=NOW)
    assert outcome.status == Status.MAPPED
    [lead] = outcome.commands  # no tags: add_tags is skipped, not an error
    assert lead.op == CommandOp.UPSERT_LEAD
    assert lead.fields["company_size"] == "50" and lead.fields["f_2fa"] is True
    assert lead.fields["firstname"] == "Li"  # explicit fields win over custom ones


def test_missing_required_identity_dead_letters() -> None:
    mappings = mappings_for({"presets": ["api"]})
    outcome = map_event(event("lead.submitted", {"name": "x"}, source="api"), mappings, StateStore(), now=NOW)
    assert outcome.status == Status.DEAD_LETTERED
    assert outcome.reason == "rule api-lead-submitted: command 0 (upsert_lead): identity: required but empty"


def test_field_limits_follow_the_connection_kind() -> None:
    long_name = "A" * 60
    mappings = mappings_for(
        {
            "rules": [
                {
                    "id": "sf",
                    "connection": "sf",
                    "identity": "data.email",
                    "commands": [
                        {"op": "upsert_contact", "fields": {"firstname": "data.name", "email": "data.email"}},
                        {"op": "add_note", "body": "data.text"},
                    ],
                }
            ]
        }
    )
    ok = map_event(
        event("x", {"email": "a@b.co", "name": long_name, "text": "x" * 40_000}),
        mappings,
        StateStore(),
        now=NOW,
    )
    contact, note = ok.commands
    assert contact.fields["firstname"] == "A" * 40
    assert note.body is not None and len(note.body) == 32_000 and note.body.endswith("…[truncated]")
    too_long = "a" * 80 + "@b.co"
    bad = map_event(event("x", {"email": too_long, "name": "x"}), mappings, StateStore(), now=NOW)
    assert "fields.email: longer than the CRM's limit of 80 characters" in bad.reason


def order_event(event_type: str, data: dict[str, Any], event_id: str) -> bytes:
    return event(event_type, {"id": 1001, "email": "jane@example.com", **data}, event_id=event_id)


def publish(store: StateStore, outcome: Any) -> None:
    """What the pipeline does after the broker acknowledged the outputs."""
    for order in outcome.orders:
        store.put_order(f"{order.tenant}:{order.order_id}", order)
        store.settle(StateKind.ORDER, f"{order.tenant}:{order.order_id}", 1)


def test_partial_order_updates_merge_into_the_known_state() -> None:
    store = StateStore()
    created = map_event(
        order_event(
            "orders/create",
            {
                "name": "#1001",
                "total_price": "10.00",
                "currency": "usd",
                "financial_status": "paid",
                "updated_at": "2026-03-02T10:00:00Z",
                "line_items": [{"title": "Mug", "sku": "M1", "quantity": "2", "price": 5}],
            },
            "e1",
        ),
        SHOPIFY,
        store,
        now=NOW,
    )
    publish(store, created)
    fulfilled = map_event(
        order_event(
            "orders/updated",
            {
                "updated_at": "2026-03-02T12:00:00Z",
                "fulfillment_status": "fulfilled",
                "fulfillments": [{"tracking_numbers": ["1Z9"], "tracking_url": "https://t/1Z9"}],
            },
            "e2",
        ),
        SHOPIFY,
        store,
        now=NOW,
    )
    [order] = fulfilled.orders
    assert (order.order_number, order.total, order.currency) == ("#1001", "10.00", "USD")
    assert [(line.title, line.quantity, line.price) for line in order.lines] == [("Mug", 2, "5")]
    assert order.status == "fulfilled" and order.tracking_numbers == ["1Z9"] and order.last_event_id == "e2"
    # attach_order reads the merged state, so the partial event still carries the total.
    attach = next(c for c in fulfilled.commands if c.op == CommandOp.ATTACH_ORDER)
    assert attach.fields["total"] == "10.00" and attach.fields["status"] == "fulfilled"
    publish(store, fulfilled)
    # A late, older update (out-of-order delivery) cannot roll the status back; it only fills gaps.
    late = map_event(
        order_event(
            "orders/updated",
            {"updated_at": "2026-03-02T11:00:00Z", "financial_status": "pending", "phone": "+1"},
            "e0",
        ),
        SHOPIFY,
        store,
        now=NOW,
    )
    [kept] = late.orders
    assert kept.status == "fulfilled" and kept.financial_status == "paid" and kept.last_event_id == "e2"


def test_merge_order_rejects_values_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"order\.lines"):
        merge_order(None, {"lines": "not a list"}, tenant="t", order_id="1", event_id="e")
    with pytest.raises(ValueError, match=r"order\.created_at"):
        merge_order(None, {"created_at": "yesterday"}, tenant="t", order_id="1", event_id="e")


def test_merge_order_keeps_unrelated_fields() -> None:
    known = Order(tenant="t", order_id="1", total="5.00", status="paid")
    merged = merge_order(known, {"status": "cancelled"}, tenant="t", order_id="1", event_id="e9")
    assert (merged.total, merged.status, merged.last_event_id) == ("5.00", "cancelled", "e9")


HUBSPOT_BOT = mappings_for({"presets": ["hubspot"]}, bot_webhook=True)


def hubspot_event(name: str) -> bytes:
    sample = sample_events("hubspot")[name]
    sample = {**sample, "tenant": "acme", "sourcename": "crm", "source": "/tenants/acme/sources/crm"}
    return orjson.dumps(sample)


def result(**overrides: Any) -> CommandResult:
    base: dict[str, Any] = {
        "command_id": "cmd_1",
        "tenant": "acme",
        "connection": "hubspot",
        "identity": "Jane@Example.com",
        "op": CommandOp.CREATE_TICKET,
        "outcome": CommandOutcome.APPLIED,
        "crm_ids": {"ticket": "9876543"},
    }
    return CommandResult.model_validate({**base, **overrides})


def test_ticket_seeded_from_crm_results_gives_the_bot_notification_its_customer() -> None:
    store = StateStore()
    seeded = ticket_from_result(result(), store, event_id="ev1")
    assert seeded is not None and (seeded.ticket_id, seeded.customer_email, seeded.status) == (
        "9876543",
        "jane@example.com",
        "open",
    )
    store.put_ticket("acme:9876543", seeded)
    assert ticket_from_result(result(), store, event_id="ev1") is None  # a repeated result changes nothing
    closed = map_event(hubspot_event("ticket.propertyChange.stage"), HUBSPOT_BOT, store, now=NOW)
    [notify] = closed.commands
    assert notify.op == CommandOp.NOTIFY_BOT and notify.connection == "bot"
    assert notify.key() == b"acme:bot:jane@example.com"
    assert notify.fields["type"] == "ticket.updated" and notify.fields["status"] == "closed"
    assert notify.fields["is_open"] is False
    [ticket] = closed.tickets
    assert ticket.customer_email == "jane@example.com" and not ticket.is_open


@pytest.mark.parametrize(
    "overrides",
    [
        {"op": CommandOp.ADD_NOTE},
        {"outcome": CommandOutcome.DEAD_LETTERED},
        {"crm_ids": {}},
    ],
)
def test_other_results_seed_nothing(overrides: dict[str, Any]) -> None:
    assert ticket_from_result(result(**overrides), StateStore(), event_id="e") is None


def test_without_a_bot_webhook_there_are_no_notifications_but_tickets_still_update() -> None:
    quiet = mappings_for({"presets": ["hubspot"]})
    stage = map_event(hubspot_event("ticket.propertyChange.stage"), quiet, StateStore(), now=NOW)
    assert stage.status == Status.MAPPED and stage.commands == [] and len(stage.tickets) == 1
    deal = map_event(hubspot_event("deal.propertyChange"), quiet, StateStore(), now=NOW)
    assert deal.status == Status.NO_RULE  # the deal rule only notified the bot: it is left out entirely


# --- two stages: route per customer, merge per order/ticket ----------------------------------------------

EVERY_PRESET = mappings_for({"presets": ["shopify", "hubspot"]}, bot_webhook=True)


def in_two_stages(value: bytes, mappings: Mappings, store: StateStore) -> Outcome:
    """What the worker makes of an event: stage 1, then stage 2 for each route against the owned state."""
    routed = route_event(value, mappings, now=NOW)
    assert routed.orders == [] and routed.tickets == []  # stage 1 merges nothing
    for route in routed.routes:
        merged = merge_event(value, mappings, route.rules, store, now=NOW)
        routed.commands += merged.commands
        routed.orders += merged.orders
        routed.tickets += merged.tickets
        routed.errors += merged.errors
    return routed


@pytest.mark.parametrize(
    ("preset", "name"),
    [(preset, name) for preset in ("shopify", "hubspot") for name in sample_events(preset)],
)
def test_the_two_stages_make_what_one_pass_makes(preset: str, name: str) -> None:
    sample = sample_events(preset)[name]
    source = {"shopify": "shop", "hubspot": "crm"}[preset]
    value = orjson.dumps(
        {**sample, "tenant": "acme", "sourcename": source, "source": f"/tenants/acme/sources/{source}"}
    )
    seeded = StateStore()  # a ticket known with its customer, as crm-results leave it
    [ticket] = [t for t in [ticket_from_result(result(), seeded, event_id="r")] if t is not None]
    seeded.put_ticket("acme:9876543", ticket)
    one_pass = map_event(value, EVERY_PRESET, seeded, now=NOW)
    two = in_two_stages(value, EVERY_PRESET, seeded)
    assert one_pass.status != Status.DEAD_LETTERED and two.errors == []
    assert sorted(c.command_id for c in two.commands) == sorted(c.command_id for c in one_pass.commands)
    assert [c.to_json() for c in sorted(two.commands, key=lambda c: c.command_id)] == [
        c.to_json() for c in sorted(one_pass.commands, key=lambda c: c.command_id)
    ]
    assert (two.orders, two.tickets) == (one_pass.orders, one_pass.tickets)
    assert two.rule_hits == one_pass.rule_hits  # counted once, in stage 1


def test_stage_one_routes_state_rules_by_order_and_keeps_the_others() -> None:
    created = sample_events("shopify")["orders.create"]
    value = orjson.dumps(
        {**created, "tenant": "acme", "sourcename": "shop", "source": "/tenants/acme/sources/shop"}
    )
    routed = route_event(value, SHOPIFY, now=NOW)
    # upsert_contact needs no state: stage 1 makes it. attach_order is built from the merged order: the
    # order's owner makes it.
    assert [c.op for c in routed.commands] == [CommandOp.UPSERT_CONTACT]
    [route] = routed.routes
    assert (route.kind, route.key, route.rules) == (
        StateKind.ORDER,
        "acme:820982911946154508",
        ("shopify-order-state",),
    )
    merged = merge_event(value, SHOPIFY, route.rules, StateStore(), now=NOW)
    assert [c.op for c in merged.commands] == [CommandOp.ATTACH_ORDER]
    assert [o.order_id for o in merged.orders] == ["820982911946154508"]


def test_one_owner_merges_an_orders_events_from_different_customers_into_one_state() -> None:
    """Two customers' events of one order, each with fields the other lacks: merged one after the other by
    the owner, the state has both; merged each onto the state both saw (two replicas), one is lost."""
    paid = event("orders/updated", {"id": 7, "email": "a@example.com", "financial_status": "paid"})
    shipped = event(
        "orders/updated",
        {"id": 7, "fulfillments": [{"tracking_numbers": ["1Z"], "tracking_url": "https://t/1Z"}]},
        event_id="e2",
    )
    owner = StateStore()
    for value in (paid, shipped):
        [route] = route_event(value, SHOPIFY, now=NOW).routes
        [order] = merge_event(value, SHOPIFY, route.rules, owner, now=NOW).orders
        owner.put_order(route.key, order)
    final = owner.order("acme:7")
    assert final is not None
    assert (final.financial_status, final.tracking_numbers, final.last_event_id) == ("paid", ["1Z"], "e2")
    # The old flow: each replica merged onto the state it had seen, and the later write won.
    [lost] = map_event(shipped, SHOPIFY, StateStore(), now=NOW).orders
    assert lost.financial_status is None


def test_a_crm_result_routes_to_the_ticket_it_created() -> None:
    assert seeded_ticket_id(result()) == "9876543"
    assert seeded_ticket_id(result(op=CommandOp.ADD_NOTE)) is None
    assert seeded_ticket_id(result(crm_ids={"ticket": " "})) is None


def test_a_routed_rule_gone_from_the_mapping_dead_letters_the_event() -> None:
    value = event("orders/updated", {"id": 7, "financial_status": "paid"})
    outcome = merge_event(value, SHOPIFY, ("renamed-rule",), StateStore(), now=NOW)
    assert outcome.status == Status.DEAD_LETTERED and outcome.orders == []
    assert outcome.reason.startswith("rule renamed-rule: not in mapping ")


def test_a_rule_may_not_set_both_an_order_and_a_ticket() -> None:
    rule = {
        "id": "both",
        "types": ["x"],
        "order": {"order_id": "data.id"},
        "ticket": {"ticket_id": "data.id"},
    }
    with pytest.raises(ValueError, match="rule both: sets both an order and a ticket; split it"):
        mappings_for({"rules": [rule]})
