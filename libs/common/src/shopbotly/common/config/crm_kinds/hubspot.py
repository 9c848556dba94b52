"""HubSpot (CRM objects, associations and properties APIs): a `hubspot` connection's options, limits and
the URL paths of the API version it speaks.

HubSpot versions its APIs by date since March 2026 (`/crm/objects/2026-03/contacts/...`); the numbered
paths (`/crm/v3/...`, `/crm/v4/...` for associations) are supported until September 2027. `HubSpotPaths`
is the one place that turns an `api_version` into paths: every HubSpot URL ShopBotly calls is built there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal, get_args

from pydantic import Field

from shopbotly.common.config._base import StrictModel
from shopbotly.common.config._connections import ConnectionConfig, FieldLimits

__all__ = [
    "HUBSPOT_API_VERSIONS",
    "HubSpotApiVersion",
    "HubSpotConnection",
    "HubSpotOptions",
    "HubSpotPaths",
]

# `v3`: the numbered paths (objects and properties v3, associations v4). The dates are HubSpot's released
# date-based versions: 2026-03 has the v3/v4 features at new paths; from 2026-09 on HubSpot also enforces a
# portal's admin-configured rules on API writes (required properties on record creation, conditionally
# required properties, association permissions), which answers 400 VALIDATION_ERROR where 2026-03 wrote.
HubSpotApiVersion = Literal["v3", "2026-03", "2026-09"]
HUBSPOT_API_VERSIONS: tuple[str, ...] = get_args(HubSpotApiVersion)


@dataclass(frozen=True)
class HubSpotPaths:
    """The URL paths (no host) of one HubSpot API version, for every endpoint ShopBotly calls.

    v3: `/crm/v3/objects/{type}/...`, `/crm/v4/objects/{type}/{id}/associations/...`,
    `/crm/v3/properties/{type}`. A date version `D`: `/crm/objects/D/{type}/...` (associations under the
    same objects root), `/crm/properties/D/{type}`.
    """

    version: HubSpotApiVersion = "v3"

    @property
    def dated(self) -> bool:
        return self.version != "v3"

    def objects(self, object_type: str) -> str:
        """The collection: `POST` creates one record."""
        if self.dated:
            return f"/crm/objects/{self.version}/{object_type}"
        return f"/crm/v3/objects/{object_type}"

    def record(self, object_type: str, object_id: str) -> str:
        return f"{self.objects(object_type)}/{object_id}"

    def batch(self, object_type: str, action: Literal["create", "read", "update", "upsert"]) -> str:
        return f"{self.objects(object_type)}/batch/{action}"

    def search(self, object_type: str) -> str:
        return f"{self.objects(object_type)}/search"

    def associations(self, from_type: str, from_id: str, to_type: str) -> str:
        """A record's associations to one object type (v4's reads; `/{to_id}` appended: labelled creates)."""
        return f"{self._association_root(from_type)}/{from_id}/associations/{to_type}"

    def default_association(self, from_type: str, from_id: str, to_type: str, to_id: str) -> str:
        """`PUT`: the default (HUBSPOT_DEFINED) association of two records; idempotent."""
        return f"{self._association_root(from_type)}/{from_id}/associations/default/{to_type}/{to_id}"

    def _association_root(self, from_type: str) -> str:
        # Date versions serve associations under the objects root; the numbered family under v4.
        return self.objects(from_type) if self.dated else f"/crm/v4/objects/{from_type}"

    def properties(self, object_type: str) -> str:
        """The Properties API of an object type: `GET` lists, `POST` creates."""
        if self.dated:
            return f"/crm/properties/{self.version}/{object_type}"
        return f"/crm/v3/properties/{object_type}"


class HubSpotOptions(StrictModel):
    """Options of a `hubspot` connection (CRM objects, associations and properties APIs)."""

    # Which HubSpot API version the connection speaks (the path family of every URL, see `HubSpotPaths`).
    # 2026-03 behaves as v3 at the date-based paths; 2026-09 also enforces the portal's required-property
    # rules on writes (check them before switching).
    api_version: HubSpotApiVersion = "2026-03"
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
