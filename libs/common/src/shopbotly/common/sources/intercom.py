"""Intercom: `X-Hub-Signature`, sha1=<hex HMAC-SHA1 of the body> with the app's client secret."""

from __future__ import annotations

from typing import Any

from shopbotly.common import signatures as sig
from shopbotly.common.sources._base import ExtractionDefaults, InboundRequest, SourceKeys, WebhookSource

__all__ = ["SOURCES"]


class Intercom(WebhookSource):
    kind = "intercom"
    preset = "intercom"
    defaults = ExtractionDefaults(
        "body.id",
        "body.topic",
        "body.data.item.email || body.data.item.source.author.email || body.data.item.user.email"
        " || body.data.item.contacts.contacts[0].email",
        "body.data.item.contacts.contacts[0].id || body.data.item.user.id || body.data.item.id",
    )

    def verify(self, keys: SourceKeys, request: InboundRequest, *, now: float) -> None:
        sig.verify_intercom(keys.secrets, signature=request.headers.get("x-hub-signature"), body=request.body)

    def sign(
        self, secret: str, body: bytes, *, now: float, msg_id: str, url: str, options: Any = None
    ) -> dict[str, str]:
        return {"X-Hub-Signature": sig.sign_intercom(secret, body)}


SOURCES = (Intercom(),)
