"""The state store: topic records never overwrite newer local writes, including our own coming back."""

from __future__ import annotations

import pytest

from shopbotly.common.events import Order
from shopbotly.mapper.state import StateKind, StateStore

pytestmark = pytest.mark.unit


def order(status: str) -> Order:
    return Order(tenant="t", order_id="1", status=status)


def record(status: str) -> bytes:
    return order(status).to_json()


def no_invalid(what: str) -> None:
    raise AssertionError(f"unexpected invalid record: {what}")


def test_loading_keeps_the_last_record_per_key() -> None:
    store = StateStore()
    for offset, status in enumerate(["open", "paid", "fulfilled"]):
        store.apply_record(StateKind.ORDER, "t:1", record(status), offset, on_invalid=no_invalid)
    assert store.order("t:1") == order("fulfilled")
    store.apply_record(StateKind.ORDER, "t:1", None, 3, on_invalid=no_invalid)
    assert store.order("t:1") is None  # a tombstone deletes


def test_a_pending_local_write_wins_over_records_read_meanwhile() -> None:
    store = StateStore()
    store.apply_record(StateKind.ORDER, "t:1", record("open"), 5, on_invalid=no_invalid)
    store.put_order("t:1", order("paid"))
    # Another replica's older write (or anything) arriving before our write is acknowledged: ignored.
    assert not store.apply_record(StateKind.ORDER, "t:1", record("open"), 6, on_invalid=no_invalid)
    store.settle(StateKind.ORDER, "t:1", 7)
    # Our own write read back (offset 7) changes nothing; a later record (8) applies.
    assert not store.apply_record(StateKind.ORDER, "t:1", record("paid"), 7, on_invalid=no_invalid)
    assert store.order("t:1") == order("paid")
    assert store.apply_record(StateKind.ORDER, "t:1", record("fulfilled"), 8, on_invalid=no_invalid)
    assert store.order("t:1") == order("fulfilled")


def test_an_unreadable_record_is_reported_and_skipped() -> None:
    store = StateStore()
    seen: list[str] = []
    assert not store.apply_record(StateKind.TICKET, "t:9", b"{broken", 0, on_invalid=seen.append)
    assert store.ticket("t:9") is None and seen == ["ticket t:9: ValidationError"]
    assert store.size(StateKind.TICKET) == 0 and len(store) == 0
