"""The SQLite store: atomic data + offsets, history order and pagination, identity checks."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shopbotly.order_reader.domain import Change, Delete, Kind, Upsert, decode_record
from shopbotly.order_reader.store import Store
from shopbotly.testkit.order_reader import T0, minutes, order, ticket

pytestmark = pytest.mark.component

TOPICS = {Kind.ORDER: "p.orders.v1", Kind.TICKET: "p.tickets.v1"}


# Lookups read the file through a memory map by default (the service's setting); without one, with reads.
@pytest.fixture(params=[0, 64], ids=["read", "mmap"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    s = Store(tmp_path / "s.sqlite3", topics=TOPICS, mmap_mb=request.param)
    assert s.open() is None
    yield s
    s.close()


def _rec(kind: Kind, model: object, offset: int, partition: int = 0) -> Change:
    ident = getattr(model, "order_id", None) or getattr(model, "ticket_id")  # noqa: B009
    tenant = getattr(model, "tenant")  # noqa: B009
    return decode_record(kind, partition, offset, f"{tenant}:{ident}".encode(), model.to_json())  # type: ignore[attr-defined]


def test_upserts_overwrite_and_deletes_remove_with_counts(store: Store) -> None:
    store.apply([_rec(Kind.ORDER, order(order_id="1"), 0), _rec(Kind.ORDER, order(order_id="2"), 1)], {})
    store.apply([_rec(Kind.ORDER, order(order_id="1", status="cancelled"), 2)], {})
    got = store.get(Kind.ORDER, "acme", "1")
    assert got is not None and orjson.loads(got[2])["status"] == "cancelled" and got[:2] == (0, 2)
    result = store.apply(
        [Delete(Kind.ORDER, "acme", "2", 0, 3), Delete(Kind.ORDER, "acme", "nope", 0, 4)], {}
    )
    assert store.get(Kind.ORDER, "acme", "2") is None
    assert result.counts == {Kind.ORDER: 1, Kind.TICKET: 0}


def test_tables_and_tenants_are_separate(store: Store) -> None:
    store.apply([_rec(Kind.ORDER, order(order_id="X"), 0), _rec(Kind.TICKET, ticket(ticket_id="X"), 0)], {})
    assert store.get(Kind.ORDER, "globex", "X") is None
    o, t = store.get(Kind.ORDER, "acme", "X"), store.get(Kind.TICKET, "acme", "X")
    assert o is not None and t is not None and o[2] != t[2]


def test_offsets_are_written_with_the_data_or_not_at_all(store: Store) -> None:
    store.apply([_rec(Kind.ORDER, order(order_id="1"), 0)], {("p.orders.v1", 0): 1})
    # None violates NOT NULL on the offsets row, which is written after the data rows.
    bad_offsets: dict[tuple[str, int], Any] = {("p.orders.v1", 0): None}
    with pytest.raises(sqlite3.IntegrityError):
        store.apply([_rec(Kind.ORDER, order(order_id="1", status="closed"), 1)], bad_offsets)
    got = store.get(Kind.ORDER, "acme", "1")
    assert got is not None and orjson.loads(got[2])["status"] == "open"
    assert store.offsets() == {("p.orders.v1", 0): 1}


def test_data_and_offsets_survive_a_reopen(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.sqlite3", topics=TOPICS)
    s.open()
    s.apply([_rec(Kind.ORDER, order(), 0)], {("p.orders.v1", 0): 1, ("p.orders.v1", 1): 0})
    s.close()
    again = Store(tmp_path / "s.sqlite3", topics=TOPICS)
    assert again.open() is None
    assert again.offsets() == {("p.orders.v1", 0): 1, ("p.orders.v1", 1): 0}
    assert again.get(Kind.ORDER, "acme", "1001") is not None
    again.close()


def test_a_store_of_other_topics_is_emptied_on_open(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.sqlite3", topics=TOPICS)
    s.open()
    s.apply([_rec(Kind.ORDER, order(), 0)], {("p.orders.v1", 0): 1})
    s.close()
    other = Store(tmp_path / "s.sqlite3", topics={Kind.ORDER: "q.orders.v1", Kind.TICKET: "q.tickets.v1"})
    reason = other.open()
    assert reason is not None and "topics" in reason
    assert other.offsets() == {} and other.get(Kind.ORDER, "acme", "1001") is None
    assert other.counts() == {Kind.ORDER: 0, Kind.TICKET: 0}
    other.close()


def test_order_history_is_newest_first_with_stable_ties_and_keyset_pages(store: Store) -> None:
    created = [T0 + minutes(m) for m in (5, 1, 9, 5, 3, 7)]
    changes = [_rec(Kind.ORDER, order(order_id=f"o{i}", created=c), i) for i, c in enumerate(created)]
    changes.append(_rec(Kind.ORDER, order(order_id="other", email="someone@else.com"), 99))
    store.apply(changes, {})
    every = store.history(Kind.ORDER, "acme", "jane@example.com", limit=100)
    assert [r.id for r in every] == ["o2", "o5", "o3", "o0", "o4", "o1"]  # o3 and o0 tie: id descending
    seen: list[str] = []
    after = None
    while True:
        page = store.history(Kind.ORDER, "acme", "jane@example.com", limit=2, after=after)
        seen += [r.id for r in page]
        if len(page) < 2:
            break
        after = page[-1].cursor_key()
    assert seen == [r.id for r in every]


def test_an_order_whose_email_changes_moves_to_the_new_customer(store: Store) -> None:
    store.apply([_rec(Kind.ORDER, order(), 0)], {})
    store.apply([_rec(Kind.ORDER, order(email="new@example.com"), 1)], {})
    assert store.history(Kind.ORDER, "acme", "jane@example.com", limit=10) == []
    assert [r.id for r in store.history(Kind.ORDER, "acme", "new@example.com", limit=10)] == ["1001"]


def test_tickets_are_open_first_then_newest(store: Store) -> None:
    rows = [("closed-new", False, 9), ("open-old", True, 1), ("open-new", True, 8), ("closed-old", False, 2)]
    store.apply(
        [
            _rec(Kind.TICKET, ticket(ticket_id=t, is_open=o, created=T0 + minutes(m)), i)
            for i, (t, o, m) in enumerate(rows)
        ],
        {},
    )
    got = store.history(Kind.TICKET, "acme", "jane@example.com", limit=10)
    assert [r.id for r in got] == ["open-new", "open-old", "closed-new", "closed-old"]
    first = store.history(Kind.TICKET, "acme", "jane@example.com", limit=2)
    rest = store.history(Kind.TICKET, "acme", "jane@example.com", limit=10, after=first[-1].cursor_key())
    assert [r.id for r in rest] == ["closed-new", "closed-old"]


@pytest.mark.parametrize("kind", list(Kind))
def test_history_pages_walk_the_index_without_sorting(store: Store, kind: Kind) -> None:
    plan = store.explain_history(kind)
    assert "_by_customer" in plan and "TEMP B-TREE" not in plan


def test_upserts_need_the_store_open() -> None:
    s = Store(Path("/nonexistent/never-opened.sqlite3"), topics=TOPICS)
    with pytest.raises(RuntimeError, match="not open"):
        s.apply([Upsert(Kind.ORDER, "acme", "1", None, 0, False, 0, 0, b"{}")], {})
