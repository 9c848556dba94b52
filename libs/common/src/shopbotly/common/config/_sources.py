"""Webhook sources of a tenant: how ingest verifies them and finds event id, type and subject.

Owned by the ingest service.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shopbotly.common.config._base import SecretRef, StrictModel

__all__ = ["GenericHmac", "SourceConfig", "SourceKind"]

SourceKind = Literal[
    "shopbotly",
    "standard_webhooks",
    "stripe",
    "shopify",
    "github",
    "slack",
    "intercom",
    "hubspot",
    "generic_hmac",
]


class GenericHmac(StrictModel):
    """Generic HMAC-SHA256: where the signature is and how it is written."""

    header: str = "X-Signature"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    timestamp_header: str | None = None
    # What is signed: "{body}" or e.g. "{timestamp}.{body}" when a timestamp header is used.
    signed_payload: str = "{body}"


class SourceConfig(StrictModel):
    kind: SourceKind
    secrets: Annotated[list[SecretRef], Field(min_length=1)]
    tolerance_s: Annotated[int, Field(ge=1, le=86_400)] = 300
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 512 * 1024
    # JMESPath expressions on the parsed body; defaults depend on the kind.
    event_id: str | None = None
    event_type: str | None = None
    subject: str | None = None
    generic: GenericHmac | None = None
