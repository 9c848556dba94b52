"""Pure intake logic: body limits, JSON parsing, event id/type/subject extraction, dedup memory, envelopes.

No I/O here: the HTTP and Kafka edges call these functions, and most tests live against them.
"""

from __future__ import annotations

import re
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson

from shopbotly.common.config import SourceConfig
from shopbotly.common.events import RawEvent
from shopbotly.common.expressions import CompiledExpression as Expression
from shopbotly.common.expressions import compile_expression
from shopbotly.common.ids import content_event_id, normalize_email

__all__ = [
    "KIND_DEFAULTS",
    "MAX_JSON_DEPTH",
    "BodyLimit",
    "EventFields",
    "ExtractionRules",
    "FieldError",
    "Rejection",
    "TtlLru",
    "build_raw_event",
    "extract_event",
    "hubspot_elements",
    "hubspot_subject",
    "is_json_media_type",
    "json_depth",
    "parse_json",
    "source_uri",
    "trace_id_from",
]

MAX_EVENT_ID = 512
MAX_EVENT_TYPE = 256
MAX_SUBJECT = 320
# Deepest nesting of arrays and objects a body may have. The RawEvent envelope adds one level, and every
# reader of raw-events parses it with pydantic, whose JSON parser stops at 200 levels (orjson writes at most
# 254, and parses at most 1,024): a deeper body that ingest accepted would fail downstream, and one past
# 254 failed to serialize here (a 500). 128 leaves room for the wrappers after ingest.
MAX_JSON_DEPTH = 128


# --- rejections ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    loc: str
    msg: str
    type: str


class Rejection(Exception):
    """A request refused with a 4xx/5xx. `reason` is a bounded metric label and is logged; `code` (default:
    the reason) and `detail` go to the client, so a reason the client must not learn stays out of both."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        *,
        code: str | None = None,
        note: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.code = code or reason
        self.note = note  # for the operator's log only
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}


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


def is_json_media_type(content_type: str | None) -> bool:
    """application/json or application/<anything>+json, with any parameters (charset)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def parse_json(body: bytes) -> Any:
    """The parsed body; a 400 naming where the JSON breaks, or saying it is nested too deep."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if exc.msg == "depth limit exceeded":
            raise _too_deep() from None
        raise Rejection(
            400,
            "malformed_json",
            f"malformed JSON at line {exc.lineno} column {exc.colno} (byte {exc.pos}): {exc.msg}",
        ) from None
    # Counting brackets (in C) rules out deep nesting for nearly every body without walking it.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and json_depth(value) > MAX_JSON_DEPTH:
        raise _too_deep()
    return value


def _too_deep() -> Rejection:
    return Rejection(
        400, "too_deep", f"JSON nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects"
    )


def json_depth(value: Any) -> int:
    """Levels of arrays and objects (`1` is 0, `[]` 1, `[{}]` 2), counted without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


# --- tracing ---------------------------------------------------------------------------------------

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_id_from(traceparent: str | None, new: Callable[[], str] = lambda: uuid.uuid4().hex) -> str:
    """The W3C trace id of a `traceparent` header, else a new one (32 lowercase hex)."""
    if traceparent:
        match = _TRACEPARENT.match(traceparent.strip())
        # Version ff and the all-zero trace id are invalid by the spec.
        if match and not traceparent.startswith("ff") and match.group(1) != "0" * 32:
            return match.group(1)
    return new()


# --- event id, type and subject --------------------------------------------------------------------


@dataclass(frozen=True)
class KindDefaults:
    event_id: str | None
    event_type: str
    subject: str | None
    subject_fallback: str | None


_SW_EMAIL = (
    "body.data.email || body.data.customer.email || body.data.contact.email || body.email"
    " || body.customer.email || body.contact.email"
)
_SW_ID = (
    "body.data.contact_id || body.data.conversation_id || body.data.customer.id || body.data.contact.id"
    " || body.data.conversation.id || body.contact_id || body.conversation_id"
)

KIND_DEFAULTS: dict[str, KindDefaults] = {
    # svix-id first, as the signature check reads it (Svix senders name the headers svix-*).
    "shopbotly": KindDefaults('headers."svix-id" || headers."webhook-id"', "body.type", _SW_EMAIL, _SW_ID),
    "standard_webhooks": KindDefaults(
        'headers."svix-id" || headers."webhook-id"', "body.type", _SW_EMAIL, _SW_ID
    ),
    "stripe": KindDefaults(
        "body.id",
        "body.type",
        "body.data.object.customer_email || body.data.object.receipt_email || body.data.object.email"
        " || body.data.object.billing_details.email || body.data.object.customer_details.email",
        "body.data.object.customer.id || body.data.object.customer",
    ),
    "shopify": KindDefaults(
        'headers."x-shopify-webhook-id" || headers."x-shopify-event-id"',
        'headers."x-shopify-topic"',
        "body.email || body.contact_email || body.customer.email",
        "body.customer.id || body.id",
    ),
    "github": KindDefaults(
        'headers."x-github-delivery"',
        'headers."x-github-event"',
        "body.pusher.email || body.sender.email",
        "body.sender.login",
    ),
    "slack": KindDefaults(
        "body.event_id",
        "body.type",
        "body.event.user.profile.email",
        "body.event.user.id || body.event.user || body.user_id",
    ),
    "intercom": KindDefaults(
        "body.id",
        "body.topic",
        "body.data.item.email || body.data.item.source.author.email || body.data.item.user.email"
        " || body.data.item.contacts.contacts[0].email",
        "body.data.item.contacts.contacts[0].id || body.data.item.user.id || body.data.item.id",
    ),
    # HubSpot elements carry no e-mail: the subject is "{objectType}:{objectId}" (hubspot_subject), so
    # every change of one CRM object stays in order on one partition.
    "hubspot": KindDefaults("body.eventId", "body.subscriptionType", None, None),
    "generic_hmac": KindDefaults(
        "body.id || body.event_id",
        "body.type",
        "body.email || body.data.email || body.customer.email || body.contact.email",
        "body.customer_id || body.contact_id || body.customer.id || body.contact.id",
    ),
}


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
        defaults = KIND_DEFAULTS[source.kind]
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


_OBJECT_TYPE_IDS = {"0-1": "contact", "0-2": "company", "0-3": "deal", "0-5": "ticket"}


def hubspot_subject(element: Mapping[str, Any]) -> str | None:
    """`{objectType}:{objectId}` from the subscription type prefix (`ticket.propertyChange` → `ticket`);
    generic `object.*` subscriptions name the type by `objectTypeId` (0-5 is ticket)."""
    object_id = _scalar_text(element.get("objectId"))
    subscription = element.get("subscriptionType")
    if object_id is None or not isinstance(subscription, str) or "." not in subscription:
        return None
    object_type = subscription.split(".", 1)[0]
    if object_type == "object":
        type_id = _scalar_text(element.get("objectTypeId"))
        if type_id is None:
            return None
        object_type = _OBJECT_TYPE_IDS.get(type_id, type_id)
    return f"{object_type}:{object_id}"


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
    elif rules.kind == "hubspot" and isinstance(body, Mapping):
        candidates.append(hubspot_subject(body))
    for value in candidates:
        text = _scalar_text(value)
        if text is None or len(text) > MAX_SUBJECT:
            continue
        return normalize_email(text) if "@" in text else text
    return None


def hubspot_elements(body: Any) -> list[dict[str, Any]]:
    """The events of a HubSpot delivery (a JSON array of objects); 422 naming each bad element."""
    if not isinstance(body, list):
        raise Rejection(
            422,
            "invalid_event",
            "a HubSpot delivery is a JSON array of events",
            errors=[FieldError("body", "expected an array", "type")],
        )
    errors = [
        FieldError(f"body[{i}]", "expected an object", "type")
        for i, e in enumerate(body)
        if not isinstance(e, dict)
    ]
    if errors:
        raise Rejection(
            422, "invalid_event", "every element of a HubSpot delivery is an object", errors=errors
        )
    return body


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
