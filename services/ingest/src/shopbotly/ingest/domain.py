"""Pure intake logic: body limits, JSON parsing, event id/type/subject extraction, dedup memory, envelopes.

No I/O here: the HTTP and Kafka edges call these functions, and most tests live against them.
"""

from __future__ import annotations

import random
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from shopbotly.common.config import SourceConfig
from shopbotly.common.events import RawEvent
from shopbotly.common.expressions import CompiledExpression as Expression
from shopbotly.common.expressions import compile_expression
from shopbotly.common.ids import content_event_id, normalize_email
from shopbotly.common.sources import (
    MAX_JSON_DEPTH,
    FieldError,
    Rejection,
    is_json_media_type,
    json_depth,
    parse_json,
    source_kind,
)

__all__ = [
    "MAX_JSON_DEPTH",
    "BodyLimit",
    "EventFields",
    "ExtractionRules",
    "FieldError",
    "Rejection",
    "TtlLru",
    "build_raw_event",
    "extract_event",
    "is_json_media_type",
    "json_depth",
    "parse_json",
    "source_uri",
    "trace_id_from",
]

MAX_EVENT_ID = 512
MAX_EVENT_TYPE = 256
MAX_SUBJECT = 320


# --- body size -------------------------------------------------------------------------------------


@dataclass
class BodyLimit:
    """Counts a request body while it streams in; refuses as soon as the running total passes `limit`."""

    limit: int
    received: int = 0

    def check_declared(self, content_length: str | None) -> None:
        """Refuse at once when Content-Length already says too much; a bad header is a 400."""
        if content_length is None:
            return
        text = content_length.strip()
        if not text.isdigit():
            raise Rejection(400, "bad_content_length", "Content-Length is not a non-negative integer")
        if int(text) > self.limit:
            raise self._too_large()

    def add(self, chunk_size: int) -> None:
        self.received += chunk_size
        if self.received > self.limit:
            raise self._too_large()

    def _too_large(self) -> Rejection:
        return Rejection(413, "too_large", f"request body is larger than the limit of {self.limit} bytes")


# --- tracing ---------------------------------------------------------------------------------------

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def _new_trace_id() -> str:
    # Random, as W3C asks, but not secret: the interpreter's generator, not os.urandom (uuid4), whose system
    # call was 6 % of the CPU of an accepted webhook on a busy machine.
    return f"{random.getrandbits(128):032x}"


def trace_id_from(traceparent: str | None, new: Callable[[], str] = _new_trace_id) -> str:
    """The W3C trace id of a `traceparent` header, else a new one (32 lowercase hex)."""
    if traceparent:
        match = _TRACEPARENT.match(traceparent.strip())
        # Version ff and the all-zero trace id are invalid by the spec.
        if match and not traceparent.startswith("ff") and match.group(1) != "0" * 32:
            return match.group(1)
    return new()


# --- event id, type and subject --------------------------------------------------------------------


def _compile(expr: str | None) -> Expression | None:
    return None if expr is None else compile_expression(expr)


@dataclass(frozen=True)
class ExtractionRules:
    """Compiled expressions of one source: configured ones, else the kind's defaults."""

    kind: str
    event_id: Expression | None
    event_type: Expression
    subject: Expression | None
    subject_fallback: Expression | None
    event_type_text: str

    @classmethod
    def for_source(cls, source: SourceConfig) -> ExtractionRules:
        defaults = source_kind(source.kind).defaults
        type_text = source.event_type or defaults.event_type
        event_type = compile_expression(type_text)
        return cls(
            kind=source.kind,
            event_id=_compile(source.event_id or defaults.event_id),
            event_type=event_type,
            subject=_compile(source.subject if source.subject is not None else defaults.subject),
            subject_fallback=_compile(
                source.subject_fallback if source.subject_fallback is not None else defaults.subject_fallback
            ),
            event_type_text=type_text,
        )


@dataclass(frozen=True)
class EventFields:
    id: str
    type: str
    subject: str | None


def _scalar_text(value: Any) -> str | None:
    """A usable id-like value: non-empty string or a number; anything else counts as not found."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        return text or None
    if isinstance(value, int | float):
        return str(value)
    return None


def extract_event(
    rules: ExtractionRules,
    body: Any,
    headers: Mapping[str, str],
    *,
    hash_source: str,
    raw: bytes,
    loc: str = "body",
) -> EventFields:
    """Event id (expression, else SHA-256 of source and body), type and subject of one event.

    Raises a 422 Rejection naming the field when the type is missing or a value is out of bounds.
    """
    doc = {"body": body, "headers": headers}
    event_id = _scalar_text(rules.event_id.search(doc)) if rules.event_id is not None else None
    if event_id is None:
        event_id = content_event_id(hash_source, raw)
    errors: list[FieldError] = []
    if len(event_id) > MAX_EVENT_ID:
        errors.append(FieldError(loc, f"event id is longer than {MAX_EVENT_ID} characters", "too_long"))
    event_type = rules.event_type.search(doc)
    if not isinstance(event_type, str) or not event_type.strip():
        errors.append(
            FieldError(
                loc,
                f"no event type found: `{rules.event_type_text}` gave no non-empty string",
                "missing",
            )
        )
        event_type = ""
    elif len(event_type) > MAX_EVENT_TYPE:
        errors.append(FieldError(loc, f"event type is longer than {MAX_EVENT_TYPE} characters", "too_long"))
    if errors:
        raise Rejection(422, "invalid_event", "the event cannot be identified", errors=errors)
    return EventFields(event_id, event_type.strip(), _subject(rules, body, doc))


def _subject(rules: ExtractionRules, body: Any, doc: Mapping[str, Any]) -> str | None:
    candidates: list[Any] = []
    if rules.subject is not None:
        candidates.append(rules.subject.search(doc))
    if rules.subject_fallback is not None:
        candidates.append(rules.subject_fallback.search(doc))
    else:
        candidates.append(source_kind(rules.kind).derived_subject(body))
    for value in candidates:
        text = _scalar_text(value)
        if text is None or len(text) > MAX_SUBJECT:
            continue
        return normalize_email(text) if "@" in text else text
    return None


# --- envelope --------------------------------------------------------------------------------------


def source_uri(tenant: str, source: str) -> str:
    return f"/tenants/{tenant}/sources/{source}"


def build_raw_event(
    *,
    tenant: str,
    source: str,
    fields: EventFields,
    data: Any,
    trace_id: str,
    received_at: datetime,
) -> RawEvent:
    # model_construct: every field was checked above and `data` came out of a JSON parser, so pydantic's
    # validation would only cost time on the hot path.
    return RawEvent.model_construct(
        id=fields.id,
        source=source_uri(tenant, source),
        type=fields.type,
        subject=fields.subject,
        data=data,
        tenant=tenant,
        sourcename=source,
        traceid=trace_id,
        receivedat=received_at,
    )


# --- dedup and idempotency memory ------------------------------------------------------------------

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class TtlLru(Generic[K, V]):
    """A bounded map whose entries expire: least recently used entries go first when it is full."""

    max_entries: int
    ttl_s: float
    _items: OrderedDict[K, tuple[float, V]] = field(default_factory=OrderedDict)

    def get(self, key: K, now: float) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= now:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V, now: float) -> None:
        self._items[key] = (now + self.ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
        # Drop a few expired entries from the old end on each write, so memory follows the TTL too.
        for _ in range(2):
            if not self._items:
                break
            oldest_key, (expires, _value) = next(iter(self._items.items()))
            if expires > now:
                break
            del self._items[oldest_key]

    def __len__(self) -> int:
        return len(self._items)
