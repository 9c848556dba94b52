"""Webhook sources of a tenant: how ingest verifies them and finds event id, type and subject.

Owned by the ingest service; reference: docs/services/ingest.md.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import AfterValidator, Field, WithJsonSchema, field_validator, model_validator

from shopbotly.common.config._base import SecretRef, StrictModel
from shopbotly.common.sources import SOURCE_KINDS, SOURCES, source_kind

__all__ = ["MAX_BODY_BYTES_LIMIT", "GenericHmac", "SourceConfig", "SourceKind"]


def _known_kind(value: str) -> str:
    source_kind(value)  # ValueError naming the known kinds
    return value


# The registered kinds (shopbotly.common.sources); the JSON Schema lists them as an enum.
SourceKind = Annotated[
    str, AfterValidator(_known_kind), WithJsonSchema({"type": "string", "enum": list(SOURCE_KINDS)})
]
# Kind-specific fields of SourceConfig: only the kinds that name them in `WebhookSource.options` take them.
_KIND_OPTIONS = tuple(sorted({option for source in SOURCES.values() for option in source.options}))
_ORG_ID = r"^00D[A-Za-z0-9]{12}([A-Za-z0-9]{3})?$"

# The body becomes one Kafka record; brokers refuse records above ~1 MiB by default (message.max.bytes).
MAX_BODY_BYTES_LIMIT = 1024 * 1024

_HEADER = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$"


class GenericHmac(StrictModel):
    """Generic HMAC: where the signature is, how it is written, and what is signed."""

    header: Annotated[str, Field(pattern=_HEADER)] = "X-Signature"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: Annotated[str, Field(max_length=32)] = ""
    algorithm: Literal["sha256", "sha512", "sha1"] = "sha256"
    timestamp_header: Annotated[str, Field(pattern=_HEADER)] | None = None
    timestamp_unit: Literal["s", "ms"] = "s"
    # What is signed: "{body}", or e.g. "{timestamp}.{body}" when a timestamp header is used.
    signed_payload: str = "{body}"

    @model_validator(mode="after")
    def _payload_template(self) -> GenericHmac:
        names = set(re.findall(r"\{([^}]*)\}", self.signed_payload))
        if "body" not in names:
            raise ValueError("signed_payload must contain {body}")
        if names - {"body", "timestamp"}:
            raise ValueError(f"signed_payload may use only {{body}} and {{timestamp}}, found {sorted(names)}")
        if "timestamp" in names and self.timestamp_header is None:
            raise ValueError("signed_payload uses {timestamp}, so timestamp_header must be set")
        return self


class SourceConfig(StrictModel):
    """One webhook source: `POST /v1/webhooks/{tenant}/{source}`.

    `event_id`, `event_type`, `subject` and `subject_fallback` are JMESPath expressions over
    `{"body": <parsed JSON>, "headers": {<lowercase name>: <value>}}`; unset means the kind's default.
    `subject` finds the customer's e-mail; `subject_fallback` the platform's contact/conversation id,
    used when no e-mail is found.
    """

    kind: SourceKind
    # Several secrets are active at once during a rotation; a request passes with any of them. Kinds that
    # authenticate otherwise (salesforce: the org id) take none or use one as a URL token.
    secrets: Annotated[list[SecretRef], Field(max_length=8)] = Field(default_factory=list)
    tolerance_s: Annotated[int, Field(ge=1, le=86_400)] = 300
    # None: the service's SHOPBOTLY_MAX_BODY_BYTES (512 KiB by default).
    max_body_bytes: Annotated[int, Field(ge=1024, le=MAX_BODY_BYTES_LIMIT)] | None = None
    event_id: str | None = None
    event_type: str | None = None
    subject: str | None = None
    subject_fallback: str | None = None
    # HubSpot signs the full public URL. Behind a proxy that changes scheme, host or path prefix, set the
    # public URL that maps to this service's root, e.g. https://hooks.example.com/ingest.
    signature_base_url: str | None = None
    generic: GenericHmac | None = None
    # salesforce: the orgs whose outbound messages this source accepts (15- or 18-character ids).
    organization_ids: Annotated[list[Annotated[str, Field(pattern=_ORG_ID)]], Field(max_length=20)] | None = (
        None
    )

    @field_validator("event_id", "event_type", "subject", "subject_fallback")
    @classmethod
    def _jmespath(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            jmespath.compile(value)
        except JMESPathError as exc:
            raise ValueError(f"not a valid JMESPath expression: {exc}") from None
        return value

    @field_validator("signature_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(
                "expected an http(s) URL without query or fragment, e.g. https://hooks.example.com"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _kind_specific(self) -> SourceConfig:
        source = SOURCES[self.kind]
        for option in _KIND_OPTIONS:
            if getattr(self, option) is not None and option not in source.options:
                takers = [k for k, s in SOURCES.items() if option in s.options]
                raise ValueError(f"`{option}` applies to kind {' or '.join(takers)} only, not {self.kind}")
        if source.needs_secret and not self.secrets:
            raise ValueError(f"kind {self.kind} needs at least one entry in `secrets`")
        source.check_config(self)
        return self
