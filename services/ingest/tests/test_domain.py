"""Pure intake logic: body limits, JSON errors, trace ids, event id/type/subject per kind, dedup memory."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jmespath
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopbotly.common.config import SourceConfig
from shopbotly.common.events import RawEvent
from shopbotly.common.expressions import compile_expression
from shopbotly.common.ids import content_event_id
from shopbotly.common.sources import SOURCES
from shopbotly.common.sources.hubspot import hubspot_elements, hubspot_subject
from shopbotly.ingest.domain import (
    BodyLimit,
    EventFields,
    ExtractionRules,
    Rejection,
    build_raw_event,
    extract_event,
    is_json_media_type,
    parse_json,
    trace_id_from,
)

pytestmark = pytest.mark.unit


def _rules(kind: str, **overrides: Any) -> ExtractionRules:
    return ExtractionRules.for_source(SourceConfig(kind=kind, secrets=[{"env": "X"}], **overrides))  # type: ignore[arg-type]


def _extract(kind: str, body: Any, headers: dict[str, str] | None = None, **overrides: Any) -> EventFields:
    raw = orjson.dumps(body)
    return extract_event(
        _rules(kind, **overrides), body, headers or {}, hash_source="/tenants/t/sources/s", raw=raw
    )


def _rejection(call: Any) -> Rejection:
    with pytest.raises(Rejection) as err:
        call()
    return err.value


# --- body limit ------------------------------------------------------------------------------------


def test_body_limit_refuses_a_declared_length_above_the_limit_before_reading() -> None:
    limit = BodyLimit(1024)
    limit.check_declared("1024")
    limit.check_declared(None)
    rejection = _rejection(lambda: limit.check_declared("1025"))
    assert (rejection.status, rejection.reason) == (413, "too_large")
    assert "1024 bytes" in rejection.detail
    assert _rejection(lambda: limit.check_declared("-5")).status == 400
    assert _rejection(lambda: limit.check_declared("12a")).status == 400


def test_body_limit_refuses_as_soon_as_the_running_total_passes() -> None:
    limit = BodyLimit(1000)
    limit.add(600)
    limit.add(400)  # exactly at the limit is fine
    assert limit.received == 1000
    assert _rejection(lambda: limit.add(1)).status == 413


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("application/cloudevents+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("", False),
        (None, False),
    ],
)
def test_json_media_types(content_type: str | None, ok: bool) -> None:
    assert is_json_media_type(content_type) is ok


def test_malformed_json_names_the_position() -> None:
    rejection = _rejection(lambda: parse_json(b'{"a": 1,\n "b": }'))
    assert (rejection.status, rejection.reason) == (400, "malformed_json")
    assert "line 2 column 7" in rejection.detail
    assert parse_json(b'[{"eventId": 1}]') == [{"eventId": 1}]


# --- trace ids -------------------------------------------------------------------------------------


def test_trace_id_comes_from_a_valid_traceparent_else_is_new() -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_id_from(tp) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_from(None, new=lambda: "new") == "new"
    assert trace_id_from("00-" + "0" * 32 + "-00f067aa0ba902b7-01", new=lambda: "new") == "new"
    assert trace_id_from("garbage", new=lambda: "new") == "new"
    assert trace_id_from("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", new=lambda: "n") == "n"
    assert len(trace_id_from(None)) == 32


# --- event id, type, subject per kind --------------------------------------------------------------


def test_shopbotly_uses_webhook_id_type_and_normalized_email() -> None:
    body = {"type": "conversation.started", "data": {"customer": {"email": " Jane.Doe@Example.COM "}}}
    fields = _extract("shopbotly", body, {"webhook-id": "msg_9"})
    assert fields == EventFields("msg_9", "conversation.started", "jane.doe@example.com")


def test_standard_webhooks_falls_back_to_the_contact_id_without_an_email() -> None:
    fields = _extract(
        "standard_webhooks", {"type": "chat.message", "data": {"conversation_id": 42}}, {"webhook-id": "m"}
    )
    assert fields.subject == "42"


def test_stripe_event_id_type_and_customer_email() -> None:
    body = {
        "id": "evt_1",
        "type": "checkout.session.completed",
        "data": {"object": {"customer_email": "A@B.io"}},
    }
    assert _extract("stripe", body) == EventFields("evt_1", "checkout.session.completed", "a@b.io")
    no_email = {"id": "evt_2", "type": "invoice.paid", "data": {"object": {"customer": "cus_123"}}}
    assert _extract("stripe", no_email).subject == "cus_123"


def test_shopify_takes_id_and_topic_from_headers() -> None:
    headers = {"x-shopify-webhook-id": "b54557e4", "x-shopify-topic": "orders/create"}
    body = {"id": 820982911946154508, "email": "jon@example.com", "customer": {"id": 115310627314723954}}
    assert _extract("shopify", body, headers) == EventFields("b54557e4", "orders/create", "jon@example.com")
    pos_order = {"id": 5, "customer": {"id": 77}}
    assert _extract("shopify", pos_order, headers).subject == "77"


def test_github_intercom_slack_defaults() -> None:
    gh = _extract(
        "github",
        {"sender": {"login": "octocat"}},
        {"x-github-delivery": "72d3162e", "x-github-event": "issues"},
    )
    assert gh == EventFields("72d3162e", "issues", "octocat")
    ic = _extract(
        "intercom",
        {
            "id": "notif_1",
            "topic": "conversation.user.created",
            "data": {"item": {"source": {"author": {"email": "X@Y.com"}}}},
        },
    )
    assert ic == EventFields("notif_1", "conversation.user.created", "x@y.com")
    sl = _extract("slack", {"event_id": "Ev01", "type": "event_callback", "event": {"user": "U123"}})
    assert sl == EventFields("Ev01", "event_callback", "U123")


def test_hubspot_subject_is_object_type_and_id() -> None:
    element = {"eventId": 100, "subscriptionType": "ticket.propertyChange", "objectId": 123}
    assert _extract("hubspot", element) == EventFields("100", "ticket.propertyChange", "ticket:123")
    assert hubspot_subject({"subscriptionType": "contact.creation", "objectId": 9}) == "contact:9"
    assert (
        hubspot_subject({"subscriptionType": "object.propertyChange", "objectTypeId": "0-5", "objectId": 7})
        == "ticket:7"
    )
    assert (
        hubspot_subject({"subscriptionType": "object.creation", "objectTypeId": "2-99", "objectId": 7})
        == "2-99:7"
    )
    assert hubspot_subject({"subscriptionType": "deal.creation"}) is None


def test_configured_expressions_override_the_kind_defaults() -> None:
    body = {"meta": {"uid": "e-1", "kind": "signup"}, "person": {"mail": "P@Q.de", "ref": "c-9"}}
    fields = _extract(
        "generic_hmac",
        body,
        event_id="body.meta.uid",
        event_type="body.meta.kind",
        subject="body.person.mail",
        subject_fallback="body.person.ref",
    )
    assert fields == EventFields("e-1", "signup", "p@q.de")
    from_header = _extract(
        "generic_hmac", {"type": "x"}, {"x-request-id": "r-7"}, event_id='headers."x-request-id"'
    )
    assert from_header.id == "r-7"


def test_event_id_falls_back_to_the_content_hash() -> None:
    body = {"type": "ping"}
    fields = _extract("generic_hmac", body)
    assert fields.id == content_event_id("/tenants/t/sources/s", orjson.dumps(body))
    assert fields.id == _extract("generic_hmac", {"type": "ping"}).id
    assert fields.id != _extract("generic_hmac", {"type": "pong"}).id
    assert fields.subject is None


def test_missing_or_oversized_type_is_a_422_naming_the_expression() -> None:
    rejection = _rejection(lambda: _extract("stripe", {"id": "evt_1"}))
    assert (rejection.status, rejection.reason) == (422, "invalid_event")
    assert "body.type" in rejection.errors[0].msg
    assert _rejection(lambda: _extract("stripe", {"id": "evt_1", "type": 5})).status == 422
    assert _rejection(lambda: _extract("stripe", {"id": "e", "type": "t" * 257})).errors[0].type == "too_long"
    assert _rejection(lambda: _extract("stripe", {"id": "e" * 513, "type": "t"})).errors[0].type == "too_long"


def test_non_scalar_or_oversized_subjects_are_skipped() -> None:
    body = {"type": "t", "email": {"not": "a string"}, "customer_id": "c-1"}
    assert _extract("generic_hmac", body).subject == "c-1"
    assert _extract("generic_hmac", {"type": "t", "email": "x" * 400}).subject is None
    assert _extract("generic_hmac", {"type": "t", "email": True}).subject is None


def test_hubspot_elements_must_be_an_array_of_objects() -> None:
    assert hubspot_elements([{"eventId": 1}, {"eventId": 2}]) == [{"eventId": 1}, {"eventId": 2}]
    assert _rejection(lambda: hubspot_elements({"eventId": 1})).errors[0].loc == "body"
    bad = _rejection(lambda: hubspot_elements([{"eventId": 1}, 5, "x"]))
    assert [e.loc for e in bad.errors] == ["body[1]", "body[2]"]


def test_raw_event_envelope_round_trips_through_the_contract_model() -> None:
    received = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    event = build_raw_event(
        tenant="acme",
        source="shop",
        fields=EventFields("evt_1", "orders/create", "jane@example.com"),
        data={"id": 1, "email": "Jane@example.com"},
        trace_id="abc",
        received_at=received,
    )
    parsed = RawEvent.from_json(event.to_json())
    assert parsed.source == "/tenants/acme/sources/shop"
    assert (parsed.id, parsed.type, parsed.subject, parsed.sourcename, parsed.traceid) == (
        "evt_1",
        "orders/create",
        "jane@example.com",
        "shop",
        "abc",
    )
    assert parsed.receivedat == received and parsed.specversion == "1.0"
    assert parsed.data == {"id": 1, "email": "Jane@example.com"}


# --- the fast JMESPath subset ----------------------------------------------------------------------

_KEYS = [
    "body",
    "headers",
    "data",
    "email",
    "customer",
    "id",
    "object",
    "contacts",
    "item",
    "type",
    "user",
    "x",
]
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "a@b.c", "id-1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5),
    max_leaves=25,
)
_EXPRESSIONS = sorted(
    {
        e
        for d in (s.defaults for s in SOURCES.values())
        for e in (d.event_id, d.event_type, d.subject, d.subject_fallback)
        if e
    }
    | {
        "body.contacts[0].id",
        "body.contacts[-1]",
        "body.x || `0`",
        "'fixed'",
        "@",
        "body.data || body.x || body.id",
    }
)


@settings(max_examples=400, deadline=None)
@given(
    expression=st.sampled_from(_EXPRESSIONS),
    doc=st.dictionaries(st.sampled_from(["body", "headers"]), _json, max_size=2),
)
def test_fast_expressions_agree_with_jmespath(expression: str, doc: dict[str, Any]) -> None:
    assert compile_expression(expression).search(doc) == jmespath.search(expression, doc)


def test_expressions_outside_the_fast_subset_still_work() -> None:
    doc = {"body": {"items": [{"email": "a@b.c"}, {"email": "d@e.f"}]}}
    assert compile_expression("body.items[*].email | [1]").search(doc) == "d@e.f"
    assert compile_expression("length(body.items)").search(doc) == 2
