"""Standard Webhooks (https://www.standardwebhooks.com) and ShopBotly's own bot, which signs with it."""

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

_EMAIL = (
    "body.data.email || body.data.customer.email || body.data.contact.email || body.email"
    " || body.customer.email || body.contact.email"
)
_ID = (
    "body.data.contact_id || body.data.conversation_id || body.data.customer.id || body.data.contact.id"
    " || body.data.conversation.id || body.contact_id || body.conversation_id"
)


class StandardWebhooks(WebhookSource):
    kind = "standard_webhooks"
    scheme = (
        "Standard Webhooks (webhook-* or svix-* headers): HMAC-SHA256 of id, timestamp and body, within the "
        "tolerance"
    )
    # svix-id first, as the signature check reads it (Svix senders name the headers svix-*).
    defaults = ExtractionDefaults('headers."svix-id" || headers."webhook-id"', "body.type", _EMAIL, _ID)

    def check_secret(self, secret: str) -> None:
        super().check_secret(secret)
        sig.check_standard_webhooks_secret(secret)

    def verify(self, keys: SourceKeys, request: InboundRequest, *, now: float) -> None:
        h = request.headers.get
        # Senders that deliver through Svix name the same headers `svix-*`; like the svix library's own
        # verifier, each `svix-*` header is read first and its `webhook-*` twin otherwise.
        sig.verify_standard_webhooks(
            keys.secrets,
            msg_id=h("svix-id") or h("webhook-id"),
            timestamp=h("svix-timestamp") or h("webhook-timestamp"),
            signature=h("svix-signature") or h("webhook-signature"),
            body=request.body,
            now=now,
            tolerance_s=keys.tolerance_s,
        )

    def sign(self, d: Delivery) -> dict[str, str]:
        return sig.standard_webhooks_headers(d.secret, d.msg_id, int(d.now), d.body)


class ShopBotly(StandardWebhooks):
    """ShopBotly's own chatbot: Standard Webhooks, with the bot's mapping preset."""

    kind = "shopbotly"
    preset = "shopbotly"


SOURCES = (ShopBotly(), StandardWebhooks())
