"""Intercom: `X-Hub-Signature`, sha1=<hex HMAC-SHA1 of the body> with the app's client secret."""

from __future__ import annotations

from shopbotly.common import signatures as sig
from shopbotly.common.sources._base import BodySignature, ExtractionDefaults

__all__ = ["SOURCES"]


class Intercom(BodySignature):
    kind = "intercom"
    preset = "intercom"
    defaults = ExtractionDefaults(
        "body.id",
        "body.topic",
        "body.data.item.email || body.data.item.source.author.email || body.data.item.user.email"
        " || body.data.item.contacts.contacts[0].email",
        "body.data.item.contacts.contacts[0].id || body.data.item.user.id || body.data.item.id",
    )
    header = "X-Hub-Signature"
    verify_body = sig.verify_intercom
    sign_body = sig.sign_intercom


SOURCES = (Intercom(),)
