"""The message contract between services, as versioned pydantic models.

Every value on a ShopBotly topic is JSON of one of these models; every message carries the standard
headers (`event_id`, `tenant`, `trace_id`, `schema`). A breaking change gets a new schema version and a
new topic version (`.v2`); additive, optional fields keep the version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue

__all__ = [
    "ATTEMPTS_HEADER",
    "CommandOp",
    "CommandOutcome",
    "CommandResult",
    "CrmCommand",
    "Headers",
    "LedgerEntry",
    "Order",
    "OrderLine",
    "RawEvent",
    "Ticket",
    "decode_headers",
    "encode_headers",
    "message_headers",
    "utcnow",
]

Headers = list[tuple[str, bytes]]


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Contract(BaseModel):
    """Base of all wire models: strict about unknown fields at the edge, JSON via orjson."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    SCHEMA: ClassVar[str]

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True))

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        return cls.model_validate_json(data)


class RawEvent(_Contract):
    """CloudEvents 1.0 envelope (JSON format) for one inbound webhook or API call.

    Extension attributes (lowercase alphanumerics, as the spec requires): `tenant`, `sourcename`
    (the configured source), `traceid`, `receivedat` (when ingest accepted it; start of end-to-end latency).
    """

    SCHEMA: ClassVar[str] = "shopbotly.raw-event/1"

    specversion: Literal["1.0"] = "1.0"
    id: Annotated[str, Field(min_length=1, max_length=512)]
    source: Annotated[str, Field(min_length=1)]
    type: Annotated[str, Field(min_length=1, max_length=256)]
    subject: str | None = None
    time: datetime | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    data: JsonValue = None
    tenant: Annotated[str, Field(min_length=1, max_length=64)]
    sourcename: Annotated[str, Field(min_length=1, max_length=64)]
    traceid: str | None = None
    receivedat: datetime


class CommandOp(StrEnum):
    UPSERT_CONTACT = "upsert_contact"
    UPSERT_LEAD = "upsert_lead"
    ADD_TAGS = "add_tags"
    ADD_NOTE = "add_note"
    CREATE_TICKET = "create_ticket"
    ATTACH_ORDER = "attach_order"
    NOTIFY_BOT = "notify_bot"


class CrmCommand(_Contract):
    """One effect to apply to one CRM connection for one identity.

    `fields` are CRM property values (last write wins per field when coalesced); `tags` merge as a
    union; `body` is the text of a note, ticket or bot notification.
    """

    SCHEMA: ClassVar[str] = "shopbotly.crm-command/1"

    schema_version: Literal[1] = 1
    command_id: Annotated[str, Field(min_length=1, max_length=128)]
    tenant: str
    connection: str
    identity: Annotated[str, Field(min_length=1, max_length=512)]
    op: CommandOp
    fields: dict[str, JsonValue] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    body: str | None = None
    causation_event_id: str
    event_type: str | None = None
    rule_id: str
    mapping_version: str
    trace_id: str | None = None
    received_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)

    def key(self) -> bytes:
        return f"{self.tenant}:{self.connection}:{self.identity}".encode()


class CommandOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"


class CommandResult(_Contract):
    """What happened to a command: written to crm-results, keyed like the command."""

    SCHEMA: ClassVar[str] = "shopbotly.crm-result/1"

    command_id: str
    tenant: str
    connection: str
    identity: str
    op: CommandOp
    outcome: CommandOutcome
    crm_ids: dict[str, str] = Field(default_factory=dict)
    attempts: int = 1
    error_class: str | None = None
    error_message: str | None = None
    coalesced_with: list[str] = Field(default_factory=list)
    finished_at: datetime = Field(default_factory=utcnow)


class LedgerEntry(_Contract):
    """The applied marker for one command id on the compacted ledger topic."""

    SCHEMA: ClassVar[str] = "shopbotly.crm-ledger/1"

    command_id: str
    tenant: str
    connection: str
    applied_at: datetime = Field(default_factory=utcnow)
    crm_ids: dict[str, str] = Field(default_factory=dict)


class OrderLine(_Contract):
    sku: str | None = None
    title: str
    quantity: int = 1
    price: str | None = None


class Order(_Contract):
    """Latest known state of one order (compacted orders topic, key `tenant:order_id`)."""

    SCHEMA: ClassVar[str] = "shopbotly.order/1"

    tenant: str
    order_id: Annotated[str, Field(min_length=1, max_length=128)]
    order_number: str | None = None
    customer_email: str | None = None
    status: str = "open"
    financial_status: str | None = None
    fulfillment_status: str | None = None
    currency: str | None = None
    total: str | None = None
    lines: list[OrderLine] = Field(default_factory=list)
    tracking_numbers: list[str] = Field(default_factory=list)
    tracking_url: str | None = None
    source: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    cancelled_at: datetime | None = None
    last_event_id: str | None = None

    def merged_with(self, update: Mapping[str, Any]) -> Order:
        """A partial update applied on top: fields present (and not None) in `update` win."""
        data = self.model_dump(mode="json")
        data.update({k: v for k, v in update.items() if v is not None})
        return Order.model_validate(data)


class Ticket(_Contract):
    """Latest known state of one support ticket (compacted tickets topic, key `tenant:ticket_id`)."""

    SCHEMA: ClassVar[str] = "shopbotly.ticket/1"

    tenant: str
    ticket_id: Annotated[str, Field(min_length=1, max_length=128)]
    customer_email: str | None = None
    subject: str | None = None
    status: str = "open"
    is_open: bool = True
    priority: str | None = None
    pipeline_stage: str | None = None
    last_reply: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_event_id: str | None = None

    def merged_with(self, update: Mapping[str, Any]) -> Ticket:
        data = self.model_dump(mode="json")
        data.update({k: v for k, v in update.items() if v is not None})
        return Ticket.model_validate(data)


# The header of a crm-results record listing the tries of its write (time, latency, outcome, status, the
# CRM's answer), as JSON `{"tries": [...], "omitted": n}`. A header, not a field of CommandResult, so readers
# of crm-results that predate it keep parsing results strictly during a rolling upgrade.
ATTEMPTS_HEADER = "crm.attempts"


def message_headers(*, event_id: str, tenant: str, trace_id: str | None, schema: str) -> Headers:
    """The standard headers every ShopBotly message carries."""
    return [
        ("event_id", event_id.encode()),
        ("tenant", tenant.encode()),
        ("trace_id", (trace_id or "").encode()),
        ("schema", schema.encode()),
    ]


def encode_headers(headers: Mapping[str, str]) -> Headers:
    return [(k, v.encode()) for k, v in headers.items()]


def decode_headers(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """Headers as a dict of text; the last value wins for a repeated name."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in (headers or ())}
