"""Webhook source kinds, one module each, registered by kind.

Each module under this package says everything about one sender (see `WebhookSource`); the list of kinds
that config validation, ingest and the JSON Schema know comes from `SOURCES` here and nowhere else.
Modules are discovered (`shopbotly.common.registry`, as CRM kinds are): each public module's `SOURCES` tuple
holds its kinds, so adding a kind is writing its module (docs/architecture.md, "Adding an integration").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shopbotly.common.registry import KindRegistry, discover
from shopbotly.common.signatures import DEFAULT_TOLERANCE_S
from shopbotly.common.sources._base import (
    MAX_JSON_DEPTH,
    Answer,
    Delivery,
    ExtractionDefaults,
    FieldError,
    InboundRequest,
    Item,
    Rejection,
    SourceKeys,
    WebhookSource,
    is_json_media_type,
    json_depth,
    parse_json,
)

__all__ = [
    "LEAD_SOURCE",
    "MAX_JSON_DEPTH",
    "SIGNATURE_KINDS",
    "SOURCES",
    "SOURCE_KINDS",
    "Answer",
    "Delivery",
    "ExtractionDefaults",
    "FieldError",
    "InboundRequest",
    "Item",
    "Rejection",
    "SourceKeys",
    "WebhookSource",
    "check_secret",
    "is_json_media_type",
    "json_depth",
    "parse_json",
    "sign_webhook",
    "source_kind",
    "verify_webhook",
]

# The source name of events that come through the Sync Lead API (authenticated by the tenant's API key, not
# by a webhook source kind): ingest stamps it, the console names it.
LEAD_SOURCE = "api"
# kind → its source, in name order: the kinds every public module of this package lists in its `SOURCES`.
SOURCES: KindRegistry[WebhookSource] = discover(
    "source", __name__, __path__, lambda module: ((s.kind, s) for s in module.SOURCES)
)
SOURCE_KINDS: tuple[str, ...] = tuple(SOURCES)
# Kinds whose sender signs the body into headers (every kind but those authenticated otherwise).
SIGNATURE_KINDS: tuple[str, ...] = tuple(k for k, s in SOURCES.items() if s.signs_body)


def source_kind(kind: str) -> WebhookSource:
    """The registered kind; UnknownKindError (a ValueError) naming the known ones otherwise."""
    return SOURCES.lookup(kind)


def check_secret(kind: str, secret: str) -> None:
    """Raise ValueError when a resolved secret cannot work for `kind` (the message never holds the value)."""
    source_kind(kind).check_secret(secret)


def verify_webhook(
    kind: str,
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    method: str = "POST",
    url: str = "",
    options: Any = None,
) -> None:
    """Verify a request of a source kind. `headers` has lowercase names; `url` is the full public URL
    (HubSpot signs it); `options` the kind's prepared options (generic_hmac: an HmacScheme). Raises
    SignatureError."""
    source_kind(kind).verify(
        SourceKeys(secrets, tolerance_s, options), InboundRequest(headers, body, method, url), now=now
    )


def sign_webhook(
    kind: str,
    secret: str,
    body: bytes,
    *,
    now: float,
    msg_id: str = "msg_0",
    url: str = "",
    options: Any = None,
) -> dict[str, str]:
    """The headers a sender of `kind` attaches to `body` at time `now` (for emulators and tests)."""
    return source_kind(kind).sign(Delivery(secret, body, now, msg_id, url, options))
