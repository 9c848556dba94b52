"""HubSpot CRM webhooks: v3 signature over method, full URL, body and timestamp; a delivery is a JSON array
of events, one raw event each, whose subject is the changed object (`ticket:123`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from shopbotly.common import signatures as sig
from shopbotly.common.sources._base import (
    Delivery,
    ExtractionDefaults,
    FieldError,
    InboundRequest,
    Item,
    Rejection,
    SourceKeys,
    WebhookSource,
)

if TYPE_CHECKING:
    from shopbotly.common.config._sources import SourceConfig

__all__ = ["SOURCES", "hubspot_elements", "hubspot_subject"]

_OBJECT_TYPE_IDS = {"0-1": "contact", "0-2": "company", "0-3": "deal", "0-5": "ticket"}


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float):
        return str(value)
    return None


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


class HubSpot(WebhookSource):
    kind = "hubspot"
    scheme = "X-HubSpot-Signature-v3: HMAC-SHA256 of method, URL, body and timestamp, within the tolerance"
    preset = "hubspot"
    options = frozenset({"signature_base_url"})
    # HubSpot elements carry no e-mail: the subject is "{objectType}:{objectId}" (derived_subject), so
    # every change of one CRM object stays in order on one partition.
    defaults = ExtractionDefaults("body.eventId", "body.subscriptionType", None, None)

    def prepare(self, config: SourceConfig) -> Any:
        # HubSpot signs the full public URL; behind a proxy, the configured base replaces scheme and host.
        return getattr(config, "signature_base_url", None)  # the kind's own field (config._sources)

    def verify(self, keys: SourceKeys, request: InboundRequest, *, now: float) -> None:
        sig.verify_hubspot_v3(
            keys.secrets,
            signature=request.headers.get("x-hubspot-signature-v3"),
            timestamp=request.headers.get("x-hubspot-request-timestamp"),
            method=request.method,
            uri=keys.options + request.path_qs if isinstance(keys.options, str) else request.url,
            body=request.body,
            now=now,
            tolerance_s=keys.tolerance_s,
        )

    def sign(self, d: Delivery) -> dict[str, str]:
        ms = int(d.now * 1000)
        return sig.hubspot_v3_headers(d.secret, method="POST", uri=d.url, body=d.body, timestamp_ms=ms)

    def split(self, parsed: Any, raw: bytes) -> list[Item]:
        return [
            Item(e, orjson.dumps(e, option=orjson.OPT_SORT_KEYS), f"body[{i}]")
            for i, e in enumerate(hubspot_elements(parsed))
        ]

    def derived_subject(self, data: Any) -> str | None:
        return hubspot_subject(data) if isinstance(data, Mapping) else None


SOURCES = (HubSpot(),)
