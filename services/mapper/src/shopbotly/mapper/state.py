"""The latest order and ticket state, held in memory and rebuilt from the compacted orders/tickets topics.

The output topics are the state's durable copy: the mapper acknowledges a raw event only after the merged
state it produced is on the topic, so reading the topics back at start gives exactly the state the
committed offsets imply. The store also follows the topics while running (writes by other replicas), and
uses the offset each entry reflects to ignore records older than what it already has, including its own
writes coming back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from shopbotly.common.events import Order, Ticket

__all__ = ["StateKind", "StateStore"]

M = TypeVar("M", Order, Ticket)


class StateKind(StrEnum):
    ORDER = "order"
    TICKET = "ticket"


@dataclass
class _Entry(Generic[M]):
    value: M
    offset: int = -1  # offset of the topic record this value is (or is newer than)
    pending: int = 0  # local writes not yet acknowledged by the broker


class _Table(Generic[M]):
    def __init__(self) -> None:
        self.entries: dict[str, _Entry[M]] = {}

    def get(self, key: str) -> M | None:
        entry = self.entries.get(key)
        return entry.value if entry is not None else None

    def put_local(self, key: str, value: M) -> None:
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = _Entry(value, pending=1)
        else:
            entry.value = value
            entry.pending += 1

    def settle(self, key: str, offset: int | None) -> None:
        """A local write was acknowledged at `offset` (or given up: None)."""
        entry = self.entries.get(key)
        if entry is None:
            return
        entry.pending = max(0, entry.pending - 1)
        if offset is not None:
            entry.offset = max(entry.offset, offset)

    def apply_record(self, key: str, value: M | None, offset: int) -> bool:
        """A record read from the topic; applied unless what we hold is newer. Returns whether applied."""
        entry = self.entries.get(key)
        if entry is not None and (entry.pending or offset <= entry.offset):
            return False
        if value is None:
            self.entries.pop(key, None)  # tombstone
        elif entry is None:
            self.entries[key] = _Entry(value, offset)
        else:
            entry.value, entry.offset = value, offset
        return True


class StateStore:
    """Orders and tickets by message key (`tenant:id`); implements the domain's StateView."""

    def __init__(self) -> None:
        self._orders: _Table[Order] = _Table()
        self._tickets: _Table[Ticket] = _Table()

    def order(self, key: str) -> Order | None:
        return self._orders.get(key)

    def ticket(self, key: str) -> Ticket | None:
        return self._tickets.get(key)

    def __len__(self) -> int:
        return len(self._orders.entries) + len(self._tickets.entries)

    def size(self, kind: StateKind) -> int:
        return len(self._table(kind).entries)

    def _table(self, kind: StateKind) -> _Table[Order] | _Table[Ticket]:
        return self._orders if kind == StateKind.ORDER else self._tickets

    def put_order(self, key: str, value: Order) -> None:
        """A merged order about to be published; `settle` it with the offset once acknowledged."""
        self._orders.put_local(key, value)

    def put_ticket(self, key: str, value: Ticket) -> None:
        self._tickets.put_local(key, value)

    def settle(self, kind: StateKind, key: str, offset: int | None) -> None:
        self._table(kind).settle(key, offset)

    def apply_record(
        self,
        kind: StateKind,
        key: str,
        value: bytes | None,
        offset: int,
        *,
        on_invalid: Callable[[str], None],
    ) -> bool:
        """A record from the orders or tickets topic. An unreadable value is reported and skipped."""
        if kind == StateKind.ORDER:
            order = None
            if value is not None:
                try:
                    order = Order.from_json(value)
                except ValueError as exc:
                    on_invalid(f"{kind} {key}: {exc.__class__.__name__}")
                    return False
            return self._orders.apply_record(key, order, offset)
        ticket = None
        if value is not None:
            try:
                ticket = Ticket.from_json(value)
            except ValueError as exc:
                on_invalid(f"{kind} {key}: {exc.__class__.__name__}")
                return False
        return self._tickets.apply_record(key, ticket, offset)
