"""Pure logic: record decoding, batching, cursors, ETags, start plan, catch-up."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shopbotly.order_reader.domain import (
    CatchUp,
    Change,
    CursorError,
    Delete,
    Kind,
    RecordError,
    Upsert,
    decode_cursor,
    decode_record,
    encode_cursor,
    entity_tag,
    history_body,
    history_tag,
    if_none_match_hits,
    latest_per_key,
    plan_start,
    sort_timestamp,
    split_key,
    valid_email,
    valid_id,
)
from shopbotly.testkit.order_reader import T0, minutes, order, ticket

pytestmark = pytest.mark.unit


def test_split_key_takes_the_tenant_before_the_first_colon() -> None:
    assert split_key(b"acme:gid:shop/Order:9") == ("acme", "gid:shop/Order:9")


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (None, "no key"),
        (b"acme", "tenant:id"),
        (b":1001", "tenant:id"),
        (b"acme:", "tenant:id"),
        (b"\xff:1", "UTF-8"),
    ],
)
def test_split_key_rejects_keys_that_name_no_tenant_and_id(key: bytes | None, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        split_key(key)


def test_an_order_record_becomes_an_upsert_with_normalized_email_and_created_time() -> None:
    o = order(email="  Jane@Example.COM ", updated_at=T0 + minutes(5))
    change = decode_record(Kind.ORDER, 2, 17, b"acme:1001", o.to_json())
    assert isinstance(change, Upsert)
    assert (change.tenant, change.id, change.partition, change.offset) == ("acme", "1001", 2, 17)
    assert change.email == "jane@example.com"
    assert change.sort_ts == int(T0.timestamp() * 1_000_000)
    assert orjson.loads(change.body) == orjson.loads(o.to_json())


def test_sort_time_falls_back_to_updated_then_to_zero() -> None:
    assert sort_timestamp(None, T0) == int(T0.timestamp() * 1_000_000)
    assert sort_timestamp(None, None) == 0
    # Naive timestamps are read as UTC, like the aware ones the contract writes.
    assert sort_timestamp(datetime(2025, 3, 1, 12, 0), None) == sort_timestamp(T0, None)


def test_the_stored_body_is_re_encoded_so_it_matches_the_published_schema() -> None:
    raw = orjson.dumps({"tenant": "acme", "order_id": "7", "lines": [{"title": "Mug", "quantity": "2"}]})
    change = decode_record(Kind.ORDER, 0, 0, b"acme:7", raw)
    assert isinstance(change, Upsert)
    assert orjson.loads(change.body)["lines"][0]["quantity"] == 2


def test_a_tombstone_becomes_a_delete() -> None:
    assert decode_record(Kind.TICKET, 1, 5, b"acme:T-1", None) == Delete(Kind.TICKET, "acme", "T-1", 1, 5)


def test_a_ticket_record_carries_its_open_state() -> None:
    closed = decode_record(Kind.TICKET, 0, 0, b"acme:T-1", ticket(is_open=False).to_json())
    assert isinstance(closed, Upsert) and closed.is_open is False
    opened = decode_record(Kind.TICKET, 0, 1, b"acme:T-1", ticket().to_json())
    assert isinstance(opened, Upsert) and opened.is_open is True


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"acme:1001", b"{not json", "not valid JSON"),
        (b"acme:1001", b'{"tenant": "acme"}', "order_id"),
        (b"acme:1001", b'{"tenant": "acme", "order_id": "1001", "surprise": 1}', "surprise"),
        (b"acme:1001", order(tenant="globex").to_json(), "the key says acme:1001"),
        (b"acme:1001", order(order_id="1002").to_json(), "the key says acme:1001"),
    ],
)
def test_records_that_cannot_be_applied_say_why(key: bytes, value: bytes, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        decode_record(Kind.ORDER, 0, 0, key, value)


def _up(ident: str, offset: int) -> Upsert:
    return Upsert(Kind.ORDER, "acme", ident, None, 0, False, 0, offset, b"{}")


def _del(ident: str, offset: int) -> Delete:
    return Delete(Kind.ORDER, "acme", ident, 0, offset)


def test_latest_per_key_keeps_the_last_change_of_each_key() -> None:
    changes: list[Change] = [_up("a", 0), _up("b", 1), _del("a", 2), _up("b", 3), _up("c", 4), _del("c", 5)]
    assert latest_per_key(changes) == [_del("a", 2), _up("b", 3), _del("c", 5)]
    assert latest_per_key([_del("a", 0), _up("a", 1)]) == [_up("a", 1)]


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.booleans()), max_size=40))
def test_applying_the_latest_per_key_equals_applying_every_record(ops: list[tuple[str, bool]]) -> None:
    changes: list[Change] = [_up(k, i) if keep else _del(k, i) for i, (k, keep) in enumerate(ops)]
    one_by_one: dict[str, int] = {}
    for c in changes:
        if isinstance(c, Upsert):
            one_by_one[c.id] = c.offset
        else:
            one_by_one.pop(c.id, None)
    batched: dict[str, int] = {}
    for c in latest_per_key(changes):
        if isinstance(c, Upsert):
            batched[c.id] = c.offset
        else:
            batched.pop(c.id, None)
    assert batched == one_by_one


@given(
    st.booleans(),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.from_regex(r"\A[A-Za-z0-9#:_.-]{1,128}\Z"),
)
def test_cursors_round_trip(is_open: bool, ts: int, ident: str) -> None:
    key = (int(is_open), ts, ident)
    assert decode_cursor(Kind.TICKET, encode_cursor(Kind.TICKET, key)) == key


@pytest.mark.parametrize(
    "cursor",
    ["", "not-base64!", "e30", encode_cursor(Kind.TICKET, (1, 5, "T-1")), "WyJvIix0cnVlLDEsIngiXQ"],
)
def test_cursors_not_issued_for_orders_are_refused(cursor: str) -> None:
    # The last one is ["o", true, 1, "x"]: booleans are not the integers we issue.
    with pytest.raises(CursorError):
        decode_cursor(Kind.ORDER, cursor)


def test_entity_tags_follow_the_record_version() -> None:
    assert entity_tag(Kind.ORDER, 2, 40) == entity_tag(Kind.ORDER, 2, 40)
    assert entity_tag(Kind.ORDER, 2, 40) != entity_tag(Kind.ORDER, 2, 41)
    assert entity_tag(Kind.ORDER, 2, 40) != entity_tag(Kind.TICKET, 2, 40)


@pytest.mark.parametrize(
    ("header", "hit"),
    [
        (None, False),
        ("", False),
        ('"o1.2.40"', True),
        ('W/"o1.2.40"', True),
        ('"x", "o1.2.40"', True),
        ("*", True),
        ('"o1.2.41"', False),
        ("o1.2.40", False),
    ],
)
def test_if_none_match_uses_weak_comparison(header: str | None, hit: bool) -> None:
    assert if_none_match_hits(header, '"o1.2.40"') is hit


def test_history_tags_change_with_any_item_or_the_page_boundary() -> None:
    base = history_tag(['"o1.0.1"', '"o1.0.2"'], None)
    assert base.startswith('W/"')
    assert history_tag(['"o1.0.1"', '"o1.0.3"'], None) != base
    assert history_tag(['"o1.0.1"', '"o1.0.2"'], "c") != base
    assert history_tag(['"o1.0.1"', '"o1.0.2"'], None) == base


def test_history_body_is_json_built_from_stored_encodings() -> None:
    body = history_body([b'{"a":1}', b'{"b":2}'], "next")
    assert orjson.loads(body) == {"items": [{"a": 1}, {"b": 2}], "next_cursor": "next"}
    assert orjson.loads(history_body([], None)) == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("1001", True),
        ("#1001", True),
        ("gid:shop:Order:1", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("", False),
        ("a b", False),
        ("a/b", False),
        ("a\tb", False),
        ("a\x00", False),
        ("a\x85b", False),
        ("ñ\u00e9", True),
    ],
)
def test_ids_are_visible_characters_without_slash(value: str, ok: bool) -> None:
    assert valid_id(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("jane@example.com", True),
        ("Jane+Tag@Example.com", True),
        ("jane", False),
        ("a@b@c", False),
        ("jane doe@example.com", False),
        ("@example.com", False),
        ("x" * 65 + "@e.com", False),
    ],
)
def test_emails_are_local_at_domain(value: str, ok: bool) -> None:
    assert valid_email(value) is ok


O0, O1, T = ("o", 0), ("o", 1), ("t", 0)


def test_an_empty_store_rebuilds_from_the_log_start() -> None:
    plan = plan_start({}, {O0: 3, O1: 0}, {O0: 10, O1: 4})
    assert plan.rebuild_reason == "empty store"
    assert plan.offsets == {O0: 3, O1: 0}


def test_a_warm_store_resumes_from_its_offsets() -> None:
    plan = plan_start({O0: 7, O1: 4}, {O0: 0, O1: 0}, {O0: 10, O1: 4})
    assert plan.rebuild_reason is None
    assert plan.offsets == {O0: 7, O1: 4}


def test_offsets_past_the_end_mean_a_recreated_topic_and_a_rebuild() -> None:
    plan = plan_start({O0: 70}, {O0: 0}, {O0: 10})
    assert plan.rebuild_reason is not None and "past the end" in plan.rebuild_reason
    assert plan.offsets == {O0: 0}


def test_offsets_before_the_log_start_mean_lost_records_and_a_rebuild() -> None:
    plan = plan_start({O0: 2}, {O0: 5}, {O0: 10})
    assert plan.rebuild_reason is not None and "log start" in plan.rebuild_reason


def test_a_stored_partition_that_is_gone_means_a_rebuild() -> None:
    plan = plan_start({O0: 2, ("old", 0): 9}, {O0: 0}, {O0: 10})
    assert plan.rebuild_reason is not None and "no longer exist" in plan.rebuild_reason


def test_a_new_partition_is_read_from_its_start_without_a_rebuild() -> None:
    plan = plan_start({O0: 7}, {O0: 0, T: 0}, {O0: 10, T: 3})
    assert plan.rebuild_reason is None
    assert plan.offsets == {O0: 7, T: 0}
    assert plan.new_partitions == (T,)


def test_catch_up_is_reached_at_the_start_high_watermarks_and_latches() -> None:
    c = CatchUp(targets={O0: 10, O1: 4}, start={O0: 0, O1: 0})
    assert not c.caught_up()
    assert (c.total(), c.remaining(), c.progress()) == (14, 14, 0.0)
    c.advance(O0, 10)
    assert c.remaining() == 4 and c.progress() == pytest.approx(10 / 14)
    assert not c.caught_up()
    c.advance(O1, 4)
    assert c.caught_up() and c.progress() == 1.0
    c.advance(O1, 3)  # positions never go back
    assert c.remaining() == 0 and c.caught_up()


def test_catch_up_allows_the_configured_lag() -> None:
    c = CatchUp(targets={O0: 100}, start={O0: 0}, max_lag=5)
    c.advance(O0, 94)
    assert not c.caught_up()
    c.advance(O0, 95)
    assert c.caught_up()


def test_nothing_to_read_is_caught_up_at_once() -> None:
    c = CatchUp(targets={O0: 0, O1: 7}, start={O0: 0, O1: 7})
    assert c.caught_up() and c.progress() == 1.0
