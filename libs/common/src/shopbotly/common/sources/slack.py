"""Slack's Events API: `X-Slack-Signature` v0 over the timestamp and the body; answers `url_verification`."""

from __future__ import annotations

from typing import Any

import orjson

from shopbotly.common import signatures as sig
from shopbotly.common.sources._base import (
    Answer,
    Delivery,
    ExtractionDefaults,
    FieldError,
    InboundRequest,
    Rejection,
    SourceKeys,
    WebhookSource,
)

__all__ = ["SOURCES"]


class Slack(WebhookSource):
    kind = "slack"
    scheme = "X-Slack-Signature v0: HMAC-SHA256 of timestamp and body, within the tolerance"
    defaults = ExtractionDefaults(
        "body.event_id",
        "body.type",
        "body.event.user.profile.email",
        "body.event.user.id || body.event.user || body.user_id",
    )

    def verify(self, keys: SourceKeys, request: InboundRequest, *, now: float) -> None:
        sig.verify_slack(
            keys.secrets,
            signature=request.headers.get("x-slack-signature"),
            timestamp=request.headers.get("x-slack-request-timestamp"),
            body=request.body,
            now=now,
            tolerance_s=keys.tolerance_s,
        )

    def sign(self, d: Delivery) -> dict[str, str]:
        ts = int(d.now)
        signature = sig.sign_slack(d.secret, ts, d.body)
        return {"X-Slack-Signature": signature, "X-Slack-Request-Timestamp": str(ts)}

    def challenge(self, parsed: Any) -> Answer | None:
        # Slack's endpoint check: answer the challenge, publish nothing.
        if not isinstance(parsed, dict) or parsed.get("type") != "url_verification":
            return None
        challenge = parsed.get("challenge")
        if not isinstance(challenge, str):
            raise Rejection(
                422,
                "invalid_event",
                "url_verification needs a string challenge",
                errors=[FieldError("body.challenge", "expected a string", "type")],
            )
        return Answer(200, "application/json", orjson.dumps({"challenge": challenge}), outcome="challenge")


SOURCES = (Slack(),)
