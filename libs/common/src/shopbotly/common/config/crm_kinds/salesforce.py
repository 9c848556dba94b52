"""Salesforce (REST API, sObject Collections): a `salesforce` connection's options and limits."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from shopbotly.common.config._base import StrictModel
from shopbotly.common.config._connections import ConnectionConfig, FieldLimits

__all__ = ["SalesforceConnection", "SalesforceOptions"]


class SalesforceOptions(StrictModel):
    """Options of a `salesforce` connection (REST API, sObject Collections)."""

    api_version: Annotated[str, Field(pattern=r"^v\d+\.\d$")] = "v61.0"
    contact_sobject: str = "Contact"
    lead_sobject: str = "Lead"
    # External-id field holding the identity (normalized e-mail) on both sObjects. Standard fields such as
    # Email cannot be marked External ID in Salesforce, hence a custom field.
    external_id_field: str = "ShopBotly_Email__c"
    # Command field → Salesforce field, per sObject. Custom fields (`…__c`) are sent under their own name;
    # other fields a map does not name are not sent (the sObject has no such column).
    contact_field_map: dict[str, str] = Field(
        default_factory=lambda: {
            "email": "Email",
            "firstname": "FirstName",
            "lastname": "LastName",
            "phone": "Phone",
        }
    )
    lead_field_map: dict[str, str] = Field(
        default_factory=lambda: {
            "email": "Email",
            "firstname": "FirstName",
            "lastname": "LastName",
            "phone": "Phone",
            "company": "Company",
        }
    )
    # Multi-select picklist on the contact sObject that holds tags (union, read-modify-write); None: tags
    # are refused as a permanent error rather than silently dropped.
    tags_field: str | None = None
    note_sobject: str = "Task"
    ticket_sobject: str = "Case"
    ticket_field_map: dict[str, str] = Field(
        default_factory=lambda: {"priority": "Priority", "subject": "Subject"}
    )
    # External-id field on the ticket sObject that receives the command id: ticket creation becomes an
    # upsert, so a replay can never create a second case.
    ticket_external_id_field: str | None = None
    # Use the `instance_url` returned by the token endpoint instead of `base_url` for API calls.
    use_instance_url: bool = False
    state_ttl_s: Annotated[float, Field(ge=0)] = 300.0
    max_concurrent_requests: Annotated[int, Field(ge=1, le=64)] = 4
    # A field the org refuses (no such column, not writable, not a value of its restricted picklist), or
    # tags without `tags_field`: `drop` writes the record without it (counted, logged once, named in the
    # result's `dropped_properties`); `dead_letter` refuses the whole command. As for HubSpot.
    unknown_properties: Literal["drop", "dead_letter"] = "drop"


class SalesforceConnection(ConnectionConfig):
    """A Salesforce org (`batch_size` at most 200)."""

    kind: Literal["salesforce"]
    options: SalesforceOptions = Field(default_factory=SalesforceOptions)

    title: ClassVar[str] = "Salesforce"
    max_batch_size: ClassVar[int] = 200  # sObject Collections take at most 200 records
    # The standard Contact/Lead/Case fields below; custom long text areas go up to 131,072; a Case
    # description or note body up to 32,000.
    field_limits: ClassVar[FieldLimits] = FieldLimits(
        per_field={
            "firstname": 40,
            "lastname": 80,
            "email": 80,
            "phone": 40,
            "company": 255,
            "subject": 255,
            "order_number": 255,
        },
        default=131_072,
        body=32_000,
    )
