"""What a webhook source kind is: the parts every kind module provides, and the errors they raise.

A kind module says everything about one sender (how it signs, which secrets work, where event id, type
and subject are, how a delivery splits into events, how a challenge or an acknowledgement is answered);
ingest and config validation look kinds up in the registry (`shopbotly.common.sources`) and never branch on
a kind's name. Pure: no I/O, the clock is an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from shopbotly.common.signatures import DEFAULT_TOLERANCE_S

if TYPE_CHECKING:
    from shopbotly.common.config._sources import SourceConfig

__all__ = [
    "MAX_JSON_DEPTH",
    "Answer",
    "BodySignature",
    "Delivery",
    "ExtractionDefaults",
    "FieldError",
    "InboundRequest",
    "Item",
    "Rejection",
    "SourceKeys",
    "WebhookSource",
    "is_json_media_type",
    "json_depth",
    "parse_json",
]

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


# --- JSON bodies -----------------------------------------------------------------------------------


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


# --- the parts of a kind ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractionDefaults:
    """JMESPath expressions over `{"body": ..., "headers": {...}}` used when a source sets none."""

    event_id: str | None
    event_type: str
    subject: str | None
    subject_fallback: str | None


@dataclass(slots=True)  # built per request: not frozen, which costs a setattr call per field
class InboundRequest:
    """A delivery as the sender made it. `headers` has lowercase names; `url` is the full public URL."""

    headers: Mapping[str, str]
    body: bytes
    method: str = "POST"
    url: str = ""
    path_qs: str = ""  # raw path and query, for rebuilding a public URL behind a proxy


@dataclass(frozen=True)
class Delivery:
    """What a sender of a kind signs (emulators and tests): `body` sent at `now` with `secret`, as message
    `msg_id` to the full public `url`, with the kind's prepared `options` (generic_hmac: an HmacScheme)."""

    secret: str
    body: bytes
    now: float
    msg_id: str = "msg_0"
    url: str = ""
    options: Any = None


@dataclass(frozen=True)
class SourceKeys:
    """What verifying a source needs: its resolved secrets (several during a rotation), the clock
    tolerance, and the kind's own options (`WebhookSource.prepare`)."""

    secrets: Sequence[str]
    tolerance_s: float = DEFAULT_TOLERANCE_S
    options: Any = None


@dataclass(slots=True)  # built per request: not frozen, which costs a setattr call per field
class Item:
    """One event of a delivery: its data, the bytes its content id is hashed from, where it was."""

    data: Any
    raw: bytes
    loc: str = "body"


@dataclass(frozen=True)
class Answer:
    """A body the sender expects instead of ShopBotly's JSON answer (a challenge, an acknowledgement)."""

    status: int
    media_type: str
    body: bytes
    outcome: str | None = None  # the metric outcome; None: accepted or duplicate, as usual
    headers: dict[str, str] = field(default_factory=dict)


class WebhookSource:
    """One webhook source kind. Subclasses set the class attributes and override what differs."""

    kind: ClassVar[str]
    # How a delivery of this kind is authenticated, for people (the console's timeline, docs).
    scheme: ClassVar[str]
    defaults: ClassVar[ExtractionDefaults]
    # Kind-specific SourceConfig fields this kind reads; config load refuses them on any other kind.
    options: ClassVar[frozenset[str]] = frozenset()
    # False: the kind authenticates otherwise (Salesforce: org id), secrets are optional.
    needs_secret: ClassVar[bool] = True
    # True: `sign` puts a signature over the body in headers (what a sender of this kind attaches).
    signs_body: ClassVar[bool] = True
    # The mapping preset shipped for this kind (services/mapper/.../presets/<name>.yaml), if any.
    preset: ClassVar[str | None] = None
    # What the request body is; its Content-Type is checked before the body is read.
    media_description: ClassVar[str] = "application/json"

    # --- configuration ---------------------------------------------------------------------------

    def check_config(self, config: SourceConfig) -> None:
        """Raise ValueError when a source of this kind is configured in a way that cannot work."""

    def prepare(self, config: SourceConfig) -> Any:
        """The kind's options, built once at start from the source's configuration (SourceKeys.options)."""
        return None

    def check_secret(self, secret: str) -> None:
        """Raise ValueError when a resolved secret cannot work (the message never holds the value)."""
        if not secret:
            raise ValueError("the secret is empty")

    # --- verification ----------------------------------------------------------------------------

    def verify(self, keys: SourceKeys, request: InboundRequest, *, now: float) -> None:
        """Check what the sender attached to the request; raises SignatureError."""
        raise NotImplementedError

    def sign(self, d: Delivery) -> dict[str, str]:
        """The headers a sender of this kind attaches to a delivery (emulators and tests)."""
        raise NotImplementedError

    # --- the body --------------------------------------------------------------------------------

    def accepts(self, content_type: str | None) -> bool:
        return is_json_media_type(content_type)

    def parse(self, body: bytes) -> Any:
        """The parsed body; a 400 Rejection when it is malformed."""
        return parse_json(body)

    def verify_content(self, keys: SourceKeys, parsed: Any) -> None:
        """Checks that need the parsed body (an org id inside it); raises SignatureError."""

    def challenge(self, parsed: Any) -> Answer | None:
        """The answer to an endpoint check the sender makes instead of a delivery, if this is one."""
        return None

    def split(self, parsed: Any, raw: bytes) -> list[Item]:
        """The events of one delivery; a 422 Rejection naming each bad element."""
        return [Item(parsed, raw)]

    def derived_subject(self, data: Any) -> str | None:
        """A subject computed from an event when no expression found one (e.g. `ticket:123`)."""
        return None

    def acknowledge(self, event_ids: Sequence[str], *, duplicate: bool) -> Answer | None:
        """The body the sender needs to stop re-sending; None: ShopBotly's JSON answer."""
        return None


class BodySignature(WebhookSource):
    """A kind whose one header holds a signature over the body alone (no timestamp): Shopify, GitHub,
    Intercom. Subclasses name the header and the scheme's functions from `shopbotly.common.signatures`."""

    header: ClassVar[str]
    verify_body: ClassVar[Callable[..., None]]
    sign_body: ClassVar[Callable[[str, bytes], str]]

    def verify(self, keys: SourceKeys, request: InboundRequest, *, now: float) -> None:
        type(self).verify_body(
            keys.secrets, signature=request.headers.get(self.header.lower()), body=request.body
        )

    def sign(self, d: Delivery) -> dict[str, str]:
        return {self.header: type(self).sign_body(d.secret, d.body)}
