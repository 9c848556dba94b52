"""GitHub: `X-Hub-Signature-256`, sha256=<hex HMAC-SHA256 of the body>."""

from __future__ import annotations

from shopbotly.common import signatures as sig
from shopbotly.common.sources._base import BodySignature, ExtractionDefaults

__all__ = ["SOURCES"]


class GitHub(BodySignature):
    kind = "github"
    defaults = ExtractionDefaults(
        'headers."x-github-delivery"',
        'headers."x-github-event"',
        "body.pusher.email || body.sender.email",
        "body.sender.login",
    )
    header = "X-Hub-Signature-256"
    verify_body = sig.verify_github
    sign_body = sig.sign_github


SOURCES = (GitHub(),)
