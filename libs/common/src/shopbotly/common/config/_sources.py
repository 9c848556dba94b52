"""Webhook sources of a tenant: how ingest verifies them and finds event id, type and subject.

A tenant's `sources` are validated once, at load, as a union keyed on `kind`: one model per registered kind
(`shopbotly.common.sources`), each `SourceConfig` with the fields every source has plus the kind's own
(`WebhookSource.options`: `generic`, `signature_base_url`, `organization_ids`), so a field of another kind is
refused at load. Owned by the ingest service; reference: docs/services/ingest.md.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import (
    AfterValidator,
    Field,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from shopbotly.common.config._base import SecretRef, StrictModel, union_by_kind
from shopbotly.common.sources import SOURCE_KINDS, SOURCES, source_kind

__all__ = ["MAX_BODY_BYTES_LIMIT", "SOURCE_MODELS", "AnySource", "GenericHmac", "SourceConfig", "SourceKind"]


def _known_kind(value: str) -> str:
    source_kind(value)  # ValueError naming the known kinds
    return value


# The registered kinds (shopbotly.common.sources); the JSON Schema lists them as an enum.
SourceKind = Annotated[
    str, AfterValidator(_known_kind), WithJsonSchema({"type": "string", "enum": list(SOURCE_KINDS)})
]
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


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("expected an http(s) URL without query or fragment, e.g. https://hooks.example.com")
    return value.rstrip("/")


# The fields a kind may have of its own (named in its `WebhookSource.options`), as (type, default).
_KIND_FIELDS: dict[str, tuple[Any, Any]] = {
    # hubspot: HubSpot signs the full public URL. Behind a proxy that changes scheme, host or path prefix,
    # the public URL that maps to this service's root, e.g. https://hooks.example.com/ingest.
    "signature_base_url": (Annotated[str, AfterValidator(_base_url)] | None, None),
    # generic_hmac: where the signature is and what is signed.
    "generic": (GenericHmac | None, None),
    # salesforce: the orgs whose outbound messages this source accepts (15- or 18-character ids).
    "organization_ids": (
        Annotated[list[Annotated[str, Field(pattern=_ORG_ID)]], Field(max_length=20)] | None,
        None,
    ),
}


class SourceConfig(StrictModel):
    """One webhook source: `POST /v1/webhooks/{tenant}/{source}`; a kind's model adds the kind's fields.

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

    @model_validator(mode="after")
    def _kind_specific(self) -> SourceConfig:
        source = SOURCES[self.kind]
        if source.needs_secret and not self.secrets:
            raise ValueError(f"kind {self.kind} needs at least one entry in `secrets`")
        source.check_config(self)
        return self


def _kind_model(kind: str) -> type[SourceConfig]:
    source = SOURCES[kind]
    unknown = source.options - set(_KIND_FIELDS)
    if unknown:
        raise ImportError(f"source kind {kind!r} names options no config field defines: {sorted(unknown)}")
    fields: dict[str, Any] = {name: _KIND_FIELDS[name] for name in sorted(source.options)}
    title = "".join(part.title() for part in kind.split("_"))
    fields["kind"] = (Literal[kind], ...)
    model: type[SourceConfig] = create_model(
        f"{title}Source", __base__=SourceConfig, __module__=__name__, **fields
    )
    return model


# kind → its source model (the union's members), in the registry's order.
SOURCE_MODELS: dict[str, type[SourceConfig]] = {kind: _kind_model(kind) for kind in SOURCES}


def _fields_of_kind(kind: str, data: dict[str, Any]) -> None:
    # The kind's model would call another kind's field an extra input; this says whose it is.
    for option in sorted(set(data) & set(_KIND_FIELDS) - SOURCES[kind].options):
        if data[option] is not None:
            takers = [k for k, s in SOURCES.items() if option in s.options]
            raise ValueError(f"`{option}` applies to kind {' or '.join(takers)} only, not {kind}")


if TYPE_CHECKING:
    # Statically a source is its base class; the kind's own fields are read by the kind's module.
    AnySource = SourceConfig
else:
    AnySource = union_by_kind("source", SOURCE_MODELS, _fields_of_kind)
