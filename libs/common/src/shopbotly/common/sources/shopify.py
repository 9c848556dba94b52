"""Shopify: `X-Shopify-Hmac-Sha256`, base64 HMAC-SHA256 of the body."""

from __future__ import annotations

from typing import Any

from shopbotly.common import signatures as sig
from shopbotly.common.sources._base import ExtractionDefaults, InboundRequest, SourceKeys, WebhookSource

__all__ = ["SOURCES"]


class Shopify(WebhookSource):
    kind = "shopify"
    preset = "shopify"
    defaults = ExtractionDefaults(
        'headers."x-shopify-webhook-id" || headers."x-shopify-event-id"',
        'headers."x-shopify-topic"',
        "body.email || body.contact_email || body.customer.email",
        "body.customer.id || body.id",
    )

    def verify(self, keys: SourceKeys, request: InboundRequest, *, now: float) -> None:
        sig.verify_shopify(
            keys.secrets, signature=request.headers.get("x-shopify-hmac-sha256"), body=request.body
        )

    def sign(
        self, secret: str, body: bytes, *, now: float, msg_id: str, url: str, options: Any = None
    ) -> dict[str, str]:
        return {"X-Shopify-Hmac-Sha256": sig.sign_shopify(secret, body)}


SOURCES = (Shopify(),)
