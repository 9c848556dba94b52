"""GitHub: `X-Hub-Signature-256`, sha256=<hex HMAC-SHA256 of the body>."""

from __future__ import annotations

from typing import Any

from shopbotly.common import signatures as sig
from shopbotly.common.sources._base import ExtractionDefaults, InboundRequest, SourceKeys, WebhookSource

__all__ = ["SOURCES"]


class GitHub(WebhookSource):
    kind = "github"
    defaults = ExtractionDefaults(
        'headers."x-github-delivery"',
        'headers."x-github-event"',
        "body.pusher.email || body.sender.email",
        "body.sender.login",
    )

    def verify(self, keys: SourceKeys, request: InboundRequest, *, now: float) -> None:
        sig.verify_github(
            keys.secrets, signature=request.headers.get("x-hub-signature-256"), body=request.body
        )

    def sign(
        self, secret: str, body: bytes, *, now: float, msg_id: str, url: str, options: Any = None
    ) -> dict[str, str]:
        return {"X-Hub-Signature-256": sig.sign_github(secret, body)}


SOURCES = (GitHub(),)
