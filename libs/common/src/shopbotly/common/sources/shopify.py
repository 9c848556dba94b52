"""Shopify: `X-Shopify-Hmac-Sha256`, base64 HMAC-SHA256 of the body."""

from __future__ import annotations

from shopbotly.common import signatures as sig
from shopbotly.common.sources._base import BodySignature, ExtractionDefaults

__all__ = ["SOURCES"]


class Shopify(BodySignature):
    kind = "shopify"
    preset = "shopify"
    defaults = ExtractionDefaults(
        'headers."x-shopify-webhook-id" || headers."x-shopify-event-id"',
        'headers."x-shopify-topic"',
        "body.email || body.contact_email || body.customer.email",
        "body.customer.id || body.id",
    )
    header = "X-Shopify-Hmac-Sha256"
    verify_body = sig.verify_shopify
    sign_body = sig.sign_shopify


SOURCES = (Shopify(),)
