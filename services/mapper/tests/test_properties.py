"""Property tests: whatever a raw event carries, the pure mapping maps it or classifies it for the DLQ.

Nothing here catches exceptions: an exception out of `map_event` fails the property, which is the point
(the worker would otherwise dead-letter it as an "internal error").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shopbotly.common.events import CrmCommand, Order, Ticket
from shopbotly.mapper.domain import Mappings, Status, map_event
from shopbotly.mapper.presets import sample_events
from shopbotly.mapper.state import StateStore

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 2, 10, 15, 31, tzinfo=UTC)
SOURCES = [
    "shopbotly",
    "shopify",
    "stripe",
    "intercom",
    "hubspot",
]  # the source names of golden/shopbotly.yaml
TYPES = [
    "conversation.started",
    "message.received",
    "lead.qualified",
    "handoff.requested",
    "conversation.closed",
    "orders/create",
    "orders/updated",
    "orders/cancelled",
    "customers/create",
    "checkout.session.completed",
    "conversation.user.created",
    "conversation.admin.replied",
    "conversation.admin.closed",
    "ticket.creation",
    "ticket.propertyChange",
    "deal.propertyChange",
    "contact.propertyChange",
    "lead.submitted",
]

# orjson (ingest and this test) writes integers of up to 64 bits.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
# Keys the presets look for, so random data reaches deep into the rules instead of missing them all.
KEYS = [
    "data", "customer", "email", "name", "phone", "transcript", "role", "text", "tags", "intent_score",
    "id", "line_items", "title", "sku", "quantity", "price", "total_price", "currency", "fulfillments",
    "tracking_numbers", "object", "customer_details", "amount_total", "created", "item", "source", "author",
    "body", "conversation_parts", "objectId", "propertyName", "propertyValue", "occurredAt", "custom_fields",
    "first_name", "last_name", "updated_at", "cancelled_at", "timestamp", "reason", "priority", "consent",
]  # fmt: skip
shaped = st.recursive(
    scalars
    | st.sampled_from(
        ["jane@example.com", "+14155550134", "2026-03-02T10:00:00Z", "4", "shopbotly_last_reply"]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=6),
    max_leaves=40,
)


def envelope(event_type: str, source: str, data: Any) -> dict[str, Any]:
    return {
        "id": "evt-1",
        "source": f"/tenants/demo/sources/{source}",
        "type": event_type,
        "subject": "jane@example.com",
        "data": data,
        "tenant": "demo",
        "sourcename": source,
        "receivedat": "2026-03-02T10:15:30Z",
    }


def check(outcome: Any) -> None:
    event(f"outcome: {outcome.status}")  # `--hypothesis-show-statistics` shows the mix reached
    assert outcome.status in (Status.MAPPED, Status.NO_RULE, Status.DEAD_LETTERED)
    if outcome.status == Status.DEAD_LETTERED:
        assert outcome.reason  # a dead letter always says why
    else:
        assert not outcome.errors
    for command in outcome.commands:  # whatever is emitted is a valid contract message
        CrmCommand.from_json(command.to_json())
    for order in outcome.orders:
        Order.from_json(order.to_json())
    for ticket in outcome.tickets:
        Ticket.from_json(ticket.to_json())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    event_type=st.sampled_from(TYPES),
    source=st.sampled_from([*SOURCES, "api", "unknown"]),
    data=json_values | shaped,
)
def test_arbitrary_data_maps_or_dead_letters(
    mappings: Mappings, event_type: str, source: str, data: Any
) -> None:
    value = orjson.dumps(envelope(event_type, source, data))
    check(map_event(value, mappings, StateStore(), now=NOW))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | json_values.map(orjson.dumps))
def test_arbitrary_bytes_map_or_dead_letter(mappings: Mappings, value: bytes) -> None:
    check(map_event(value, mappings, StateStore(), now=NOW))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(
        [
            (preset, name)
            for preset in ("shopbotly", "shopify", "stripe", "intercom", "hubspot", "api")
            for name in sample_events(preset)
        ]
    ),
    path_choice=st.integers(min_value=0, max_value=10_000),
    replacement=json_values,
)
def test_samples_with_one_value_replaced_map_or_dead_letter(
    mappings: Mappings, sample: tuple[str, str], path_choice: int, replacement: Any
) -> None:
    """Realistic payloads with one value anywhere in `data` swapped for something unexpected."""
    document = sample_events(sample[0])[sample[1]]
    slots: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in node:
                slots.append((node, key))
                walk(node[key])
        elif isinstance(node, list):
            for index in range(len(node)):
                slots.append((node, index))
                walk(node[index])

    walk(document["data"])
    container, key = slots[path_choice % len(slots)]
    container[key] = replacement
    check(map_event(orjson.dumps(document), mappings, StateStore(), now=NOW))
