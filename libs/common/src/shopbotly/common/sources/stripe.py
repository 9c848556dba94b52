"""Stripe: `Stripe-Signature` (t=, v1=) over the timestamp and the body."""

from __future__ import annotations

from typing import Any

from shopbotly.common import signatures as sig
from shopbotly.common.sources._base import ExtractionDefaults, InboundRequest, SourceKeys, WebhookSource

__all__ = ["SOURCES"]


class Stripe(WebhookSource):
    kind = "stripe"
    preset = "stripe"
    defaults = ExtractionDefaults(
        "body.id",
        "body.type",
        "body.data.object.customer_email || body.data.object.receipt_email || body.data.object.email"
        " || body.data.object.billing_details.email || body.data.object.customer_details.email",
        "body.data.object.customer.id || body.data.object.customer",
    )

    def verify(self, keys: SourceKeys, request: InboundRequest, *, now: float) -> None:
        sig.verify_stripe(
            keys.secrets,
            header=request.headers.get("stripe-signature"),
            body=request.body,
            now=now,
            tolerance_s=keys.tolerance_s,
        )

    def sign(
        self, secret: str, body: bytes, *, now: float, msg_id: str, url: str, options: Any = None
    ) -> dict[str, str]:
        return {"Stripe-Signature": sig.sign_stripe(secret, int(now), body)}


SOURCES = (Stripe(),)
