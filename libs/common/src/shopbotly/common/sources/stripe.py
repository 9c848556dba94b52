"""Stripe: `Stripe-Signature` (t=, v1=) over the timestamp and the body."""

from __future__ import annotations

from shopbotly.common import signatures as sig
from shopbotly.common.sources._base import (
    Delivery,
    ExtractionDefaults,
    InboundRequest,
    SourceKeys,
    WebhookSource,
)

__all__ = ["SOURCES"]


class Stripe(WebhookSource):
    kind = "stripe"
    scheme = "Stripe-Signature v1: HMAC-SHA256 of timestamp and body, within the tolerance"
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

    def sign(self, d: Delivery) -> dict[str, str]:
        return {"Stripe-Signature": sig.sign_stripe(d.secret, int(d.now), d.body)}


SOURCES = (Stripe(),)
