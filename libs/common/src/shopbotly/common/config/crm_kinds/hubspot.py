"""HubSpot (CRM v3 objects API): a `hubspot` connection's options and limits."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from shopbotly.common.config._base import StrictModel
from shopbotly.common.config._connections import ConnectionConfig, FieldLimits

__all__ = ["HubSpotConnection", "HubSpotOptions"]


class HubSpotOptions(StrictModel):
    """Options of a `hubspot` connection (CRM v3 objects API)."""

    # Multi-select contact property that holds tags; values are `;`-separated, merged as a union.
    tags_property: str = "shopbotly_tags"
    # When the writer reads a contact (batched `batch/read`, once per identity while cached) before its
    # upsert: `when_tags` (the tag union needs the CRM's current tags), `always` (every upsert carries the
    # full property set, for CRMs that replace what is not sent), `never`.
    read_before_write: Literal["when_tags", "always", "never"] = "when_tags"
    # Contact properties read (and so carried forward) besides those a command writes.
    contact_properties: list[str] = Field(
        default_factory=lambda: ["email", "firstname", "lastname", "phone", "company", "lifecyclestage"]
    )
    # How long a contact read or written stays authoritative in the writer's cache.
    state_ttl_s: Annotated[float, Field(ge=0)] = 300.0
    # Not sent any more (notes and tickets get v4's default association, which is these); kept so configs
    # that set them still load.
    note_association_type_id: int = 202  # note → contact (HUBSPOT_DEFINED)
    ticket_association_type_id: int = 16  # ticket → contact (HUBSPOT_DEFINED)
    # Custom note and ticket property with unique values (`hasUniqueValue: true`) holding the command id:
    # notes and tickets are created by batch upsert on it, so a retry updates the record it created instead
    # of creating a second one. Create it once per portal (docs/services/crm-writer.md).
    command_id_property: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] = "shopbotly_command_id"
    ticket_pipeline: str = "0"
    ticket_stage: str = "1"
    # Command field → ticket property, for fields whose HubSpot name differs.
    ticket_field_map: dict[str, str] = Field(
        default_factory=lambda: {"priority": "hs_ticket_priority", "category": "hs_ticket_category"}
    )
    # Ticket properties that exist in the account. Other command fields are not sent as properties (HubSpot
    # would refuse the ticket); they are appended to the ticket's content as `name: value` lines instead.
    ticket_properties: list[str] = Field(
        default_factory=lambda: [
            "subject",
            "content",
            "hs_pipeline",
            "hs_pipeline_stage",
            "hs_ticket_priority",
            "hs_ticket_category",
            "hubspot_owner_id",
            "source_type",
        ]
    )
    # Concurrent HTTP requests on this connection (the rate limit still applies).
    max_concurrent_requests: Annotated[int, Field(ge=1, le=64)] = 4
    # A contact property the portal refuses (PROPERTY_DOESNT_EXIST, INVALID_OPTION, READ_ONLY_VALUE): `drop`
    # writes the record without it (counted, logged once, named in the result's `dropped_properties`);
    # `dead_letter` refuses the whole command. `shopbotly connections check` finds these before they happen.
    unknown_properties: Literal["drop", "dead_letter"] = "drop"


class HubSpotConnection(ConnectionConfig):
    """A HubSpot portal (`batch_size` at most 100)."""

    kind: Literal["hubspot"]
    options: HubSpotOptions = Field(default_factory=HubSpotOptions)

    title: ClassVar[str] = "HubSpot"
    max_batch_size: ClassVar[int] = 100  # batch create/update/upsert/read take at most 100 inputs
    # 65,536 characters for any text property.
    field_limits: ClassVar[FieldLimits] = FieldLimits(per_field={}, default=65_536, body=65_536)
