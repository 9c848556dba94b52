"""Pure logic of the read side, no I/O: record decoding, sort order, cursors, ETags, start plan, catch-up.

Everything here is a function of its arguments, so the hard parts are tested without a broker or a disk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import orjson
from pydantic import ValidationError

from shopbotly.common.events import Order, Ticket
from shopbotly.common.ids import normalize_email

__all__ = [
    "EMAIL_PATTERN",
    "ID_PATTERN",
    "Answer",
    "CatchUp",
    "Change",
    "CursorError",
    "CursorKey",
    "Delete",
    "Kind",
    "RecordError",
    "StartPlan",
    "TopicPartition",
    "Upsert",
    "decode_cursor",
    "decode_record",
    "encode_cursor",
    "entity_tag",
    "history_body",
    "history_tag",
    "if_none_match_hits",
    "latest_per_key",
    "plan_start",
    "readthrough_tag",
    "sort_timestamp",
    "split_key",
]

# An id is what a platform gives as an order or ticket id: 1-128 characters, no slash (it is one path
# segment), no space and no control characters (C0, DEL, C1), which no platform uses in ids. Explicit
# ranges rather than `\s`: regex engines disagree on what `\s` covers, and this pattern is published in
# the OpenAPI for clients to check against.
ID_PATTERN = r"^[^/\x00-\x20\x7f-\x9f]{1,128}$"
# Deliberately loose: local@domain with the same characters. The store holds what the platforms sent;
# a stricter check here would make some stored customers unreachable.
EMAIL_PATTERN = r"^[^@/\x00-\x20\x7f-\x9f]{1,64}@[^@/\x00-\x20\x7f-\x9f]{1,255}$"
_ID = re.compile(ID_PATTERN)
_EMAIL = re.compile(EMAIL_PATTERN)

# Bumped when the JSON we answer with changes shape, so clients do not keep a stale representation.
REPRESENTATION = "1"

TopicPartition = tuple[str, int]


class Kind(StrEnum):
    """The two materialized tables."""

    ORDER = "order"
    TICKET = "ticket"


class RecordError(ValueError):
    """A record on the orders or tickets topic that cannot be applied; the message says why."""


class CursorError(ValueError):
    """A pagination cursor that this service did not issue."""


def valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def valid_email(value: str) -> bool:
    return len(value) <= 320 and _EMAIL.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Upsert:
    """The new state of one order or ticket, encoded as we answer it."""

    kind: Kind
    tenant: str
    id: str
    email: str | None
    sort_ts: int
    is_open: bool
    partition: int
    offset: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    """A tombstone: the order or ticket is gone."""

    kind: Kind
    tenant: str
    id: str
    partition: int
    offset: int


Change = Upsert | Delete


def split_key(key: bytes | None) -> tuple[str, str]:
    """`tenant:id` → (tenant, id). Tenant names cannot contain `:`, ids can."""
    if key is None:
        raise RecordError("record has no key (expected tenant:id)")
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError("record key is not UTF-8") from None
    tenant, sep, ident = text.partition(":")
    if not sep or not tenant or not ident:
        raise RecordError("record key is not of the form tenant:id")
    return tenant, ident


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _epoch_us(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # the contract's timestamps are UTC; naive ones are read as UTC
    # Integer arithmetic: a float timestamp cannot hold today's microseconds exactly.
    return (value - _EPOCH) // _MICROSECOND


def sort_timestamp(created_at: datetime | None, updated_at: datetime | None) -> int:
    """Microseconds since the epoch used for "newest first": created, else updated, else 0 (last)."""
    for value in (created_at, updated_at):
        us = _epoch_us(value)
        if us is not None:
            return us
    return 0


def _email_of(value: str | None) -> str | None:
    if value is None:
        return None
    normalized = normalize_email(value)
    return normalized or None


def decode_record(kind: Kind, partition: int, offset: int, key: bytes | None, value: bytes | None) -> Change:
    """One consumed record → the change it makes. Raises RecordError for a record we cannot apply."""
    tenant, ident = split_key(key)
    if value is None:
        return Delete(kind, tenant, ident, partition, offset)
    model: Order | Ticket
    try:
        # orjson then validation of the dict: measured faster than pydantic's own JSON parsing here.
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"{kind} value is not valid JSON: {exc}") from None
    try:
        model = Order.model_validate(data) if kind is Kind.ORDER else Ticket.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(value)"
        raise RecordError(f"{kind} value is invalid at {where}: {first['msg']}") from None
    model_id = model.order_id if isinstance(model, Order) else model.ticket_id
    if model.tenant != tenant or model_id != ident:
        raise RecordError(f"{kind} value names {model.tenant}:{model_id}, the key says {tenant}:{ident}")
    # Only tickets sort open-first; orders sort by time alone.
    is_open = model.is_open if isinstance(model, Ticket) else False
    # Re-encoded rather than stored as received: lax parsing may have coerced a field, and the answer
    # must match the schema we publish.
    return Upsert(
        kind=kind,
        tenant=tenant,
        id=ident,
        email=_email_of(model.customer_email),
        sort_ts=sort_timestamp(model.created_at, model.updated_at),
        is_open=is_open,
        partition=partition,
        offset=offset,
        # Same JSON as the contract's to_json (by alias, None left out), produced by pydantic-core.
        body=model.model_dump_json(by_alias=True, exclude_none=True).encode(),
    )


def latest_per_key(changes: Iterable[Change]) -> list[Change]:
    """The last change of each key, in first-seen order: a batch applies as if record by record."""
    latest: dict[tuple[Kind, str, str], Change] = {}
    for change in changes:
        latest[(change.kind, change.tenant, change.id)] = change
    return list(latest.values())


# --- cursors -----------------------------------------------------------------------------------------

CursorKey = tuple[int, int, str]  # (is_open, sort_ts, id); is_open is 0 for orders


def encode_cursor(kind: Kind, key: CursorKey) -> str:
    raw = orjson.dumps([kind.value[0], *key])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(kind: Kind, cursor: str) -> CursorKey:
    """The position a cursor stands for. Raises CursorError for anything we did not issue for `kind`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise CursorError("cursor is not one this API returned (use next_cursor as given)") from None
    if (
        not isinstance(data, list)
        or len(data) != 4
        or data[0] != kind.value[0]
        or not isinstance(data[1], int)
        or isinstance(data[1], bool)
        or data[1] not in (0, 1)
        or not isinstance(data[2], int)
        or isinstance(data[2], bool)
        or not isinstance(data[3], str)
        or not valid_id(data[3])
    ):
        raise CursorError(f"cursor is not a {kind} history cursor this API returned")
    return (data[1], data[2], data[3])


# --- representations and ETags -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """An encoded lookup answer: the body we send and its ETag."""

    body: bytes
    etag: str


def entity_tag(kind: Kind, partition: int, offset: int) -> str:
    """Strong ETag from the record version: the body is a pure function of the record at that offset,
    and every replica reads the same offsets, so all replicas give the same tag."""
    return f'"{kind.value[0]}{REPRESENTATION}.{partition}.{offset}"'


def readthrough_tag(body: bytes) -> str:
    """Read-through answers have no offset; their tag is a digest of the body."""
    return f'"r{REPRESENTATION}.{hashlib.sha256(body).hexdigest()[:24]}"'


def history_tag(item_tags: Sequence[str], next_cursor: str | None) -> str:
    """Weak tag of one history page: changes when any item on it changes or the page boundary moves."""
    digest = hashlib.sha256("\n".join([*item_tags, next_cursor or ""]).encode()).hexdigest()[:24]
    return f'W/"h{REPRESENTATION}.{digest}"'


def history_body(bodies: Sequence[bytes], next_cursor: str | None) -> bytes:
    """`{"items": [...], "next_cursor": ...}` built from the stored encodings without re-parsing them."""
    return b'{"items":[' + b",".join(bodies) + b'],"next_cursor":' + orjson.dumps(next_cursor) + b"}"


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def if_none_match_hits(header: str | None, etag: str) -> bool:
    """True when `If-None-Match` names the current representation (weak comparison, RFC 9110 13.1.2)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    wanted = _opaque(etag)
    return any(_opaque(part.strip()) == wanted for part in header.split(","))


# --- start plan and catch-up ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StartPlan:
    """Where each partition starts, and why the store must be emptied first (None: warm restart)."""

    offsets: dict[TopicPartition, int]
    rebuild_reason: str | None
    new_partitions: tuple[TopicPartition, ...] = ()


def plan_start(
    stored: Mapping[TopicPartition, int],
    beginning: Mapping[TopicPartition, int],
    end: Mapping[TopicPartition, int],
) -> StartPlan:
    """Resume from stored offsets when they still describe these topics; otherwise rebuild from the start.

    Stored offsets past the end mean the topic was deleted and recreated; offsets before the log start
    mean records we never saw were removed. Either way the local copy cannot be trusted, so it is rebuilt.
    """
    from_start = {tp: beginning.get(tp, 0) for tp in end}
    if not stored:
        return StartPlan(from_start, "empty store")
    gone = sorted(set(stored) - set(end))
    if gone:
        return StartPlan(from_start, f"stored partitions no longer exist: {gone}")
    offsets: dict[TopicPartition, int] = {}
    new: list[TopicPartition] = []
    for tp in sorted(end):
        if tp not in stored:
            # A partition added to an existing topic: read it from the start, keep the rest.
            new.append(tp)
            offsets[tp] = beginning.get(tp, 0)
            continue
        position = stored[tp]
        if position > end[tp]:
            return StartPlan(
                from_start, f"{tp[0]}[{tp[1]}] stored offset {position} is past the end {end[tp]}"
            )
        if position < beginning.get(tp, 0):
            return StartPlan(
                from_start,
                f"{tp[0]}[{tp[1]}] stored offset {position} is before the log start {beginning[tp]}",
            )
        offsets[tp] = position
    return StartPlan(offsets, None, tuple(new))


@dataclass
class CatchUp:
    """Progress towards the high watermarks captured at start; readiness latches once they are reached.

    Latching is deliberate: after start, lag is a metric and an alert, not a reason for every replica to
    leave the load balancer at once during a burst.
    """

    targets: dict[TopicPartition, int]
    start: dict[TopicPartition, int]
    max_lag: int = 0
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    latched: bool = False

    def __post_init__(self) -> None:
        for tp, offset in self.start.items():
            self.positions.setdefault(tp, offset)

    def advance(self, tp: TopicPartition, position: int) -> None:
        if position > self.positions.get(tp, -1):
            self.positions[tp] = position

    def remaining(self) -> int:
        return sum(max(0, target - self.positions.get(tp, 0)) for tp, target in self.targets.items())

    def total(self) -> int:
        return sum(max(0, target - self.start.get(tp, 0)) for tp, target in self.targets.items())

    def progress(self) -> float:
        """Share of the catch-up done, 0..1 (1 when there was nothing to read)."""
        total = self.total()
        return 1.0 if total == 0 else min(1.0, 1.0 - self.remaining() / total)

    def caught_up(self) -> bool:
        if not self.latched:
            self.latched = all(
                self.positions.get(tp, 0) >= target - self.max_lag for tp, target in self.targets.items()
            )
        return self.latched
