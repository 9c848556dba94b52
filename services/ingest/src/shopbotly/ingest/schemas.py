"""The HTTP contract of ingest: the lead body, answers and problems (they make the OpenAPI document)."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

__all__ = [
    "Consent",
    "EventAccepted",
    "Lead",
    "SlackChallenge",
    "WebhookAccepted",
    "lead_event_id",
    "lead_fingerprint",
    "webhook_accepted_json",
]

# Practical address syntax (RFC 5321 lengths, one @, a dotted domain); deliverability is the CRM's job.
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


def _email(value: str) -> str:
    value = value.strip()
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValueError("not a valid e-mail address")
    return value


Email = Annotated[
    str, AfterValidator(_email), WithJsonSchema({"type": "string", "format": "email", "maxLength": 254})
]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
FieldName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9][0-9 ().-]{2,31}$")]
FieldValue = Annotated[str, StringConstraints(max_length=2000)] | int | float | bool | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Consent(_Strict):
    """What the person agreed to, and when, so the CRM can hold proof of consent."""

    marketing: bool | None = None
    sms: bool | None = None
    terms: bool | None = None
    text: Annotated[str, StringConstraints(max_length=2000)] | None = None
    captured_at: datetime | None = None
    source: Text | None = None


class Lead(_Strict):
    """A lead submitted by a direct integration (a form, a chat widget)."""

    email: Email
    first_name: Text | None = None
    last_name: Text | None = None
    name: Text | None = None
    phone: Phone | None = None
    tags: Annotated[list[Tag], Field(max_length=50)] = Field(default_factory=list)
    custom_fields: Annotated[dict[FieldName, FieldValue], Field(max_length=100)] = Field(default_factory=dict)
    consent: Consent | None = None

    def event_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def lead_fingerprint(data: dict[str, Any]) -> str:
    """Same lead, same fingerprint, whatever the key order or whitespace of the request."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def lead_event_id(tenant: str, idempotency_key: str | None, fingerprint: str) -> str:
    """Derived from tenant, Idempotency-Key and the body's fingerprint when there is a key: a retry of the
    same body through any replica yields the same event id (downstream absorbs a repeat), and another body
    never shares it, so no stage can take a different lead for a duplicate and drop it."""
    if idempotency_key is None:
        return f"lead_{uuid.uuid4().hex}"
    return (
        "lead_" + hashlib.sha256(f"{tenant}\x00{idempotency_key}\x00{fingerprint}".encode()).hexdigest()[:32]
    )


class EventAccepted(_Strict):
    event_id: str


class WebhookAccepted(_Strict):
    """202: stored; 200 with `duplicate`: every event was stored before and nothing new was published."""

    event_id: str | None = Field(description="The event's id; the first one for a batch.")
    event_ids: list[str] = Field(description="Every event of the delivery (HubSpot sends batches).")
    published: int = Field(description="Events written to Kafka by this request.")
    duplicate: bool = Field(description="True when every event had been stored before.")


def webhook_accepted_json(event_ids: list[str], published: int) -> bytes:
    """WebhookAccepted's JSON, written without building the model (the answer to every accepted webhook)."""
    return orjson.dumps(
        {
            "event_id": event_ids[0] if event_ids else None,
            "event_ids": event_ids,
            "published": published,
            "duplicate": bool(event_ids) and not published,
        }
    )


class SlackChallenge(_Strict):
    challenge: str
