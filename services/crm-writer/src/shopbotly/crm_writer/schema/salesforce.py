"""Salesforce's schema (sObject describe, Tooling API): what `connections check|setup` reads and creates in
an org."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from shopbotly.common.config.crm_kinds.salesforce import SalesforceOptions
from shopbotly.common.events import CommandOp
from shopbotly.crm_writer.schema import CrmProperty, CrmSchema, OwnedProperty, Target, parse_described

if TYPE_CHECKING:
    from shopbotly.crm_writer.schema import CommandShape

__all__ = [
    "SalesforceSchema",
    "owned_salesforce_fields",
    "salesforce_definition",
    "salesforce_setup_instruction",
]


def _field(f: dict[str, Any]) -> CrmProperty:
    type_ = str(f.get("type") or "string")
    options = None
    if type_ in ("picklist", "multipicklist") and f.get("restrictedPicklist"):
        options = frozenset(
            str(v.get("value"))
            for v in f.get("picklistValues") or []
            if isinstance(v, dict) and v.get("active")
        )
    return CrmProperty(
        name=str(f["name"]),
        type=type_,
        # Upserts create and update: a field ShopBotly writes must be both.
        writable=bool(f.get("createable") and f.get("updateable")),
        options=options,
        unique=bool(f.get("unique") or f.get("externalId")),
        multi=type_ == "multipicklist",
    )


def owned_salesforce_fields(
    options: SalesforceOptions, wanted: Iterable[tuple[str, str]] = ()
) -> list[OwnedProperty]:
    """The custom fields a Salesforce connection needs that ShopBotly owns, among those the mapping writes
    (`wanted`: (sObject, field)): the identity's external-id field, the tags field, the ticket external-id
    field and any other `ShopBotly_*__c`. `connections setup --apply` creates them through the Tooling API
    (`salesforce_definition`); `salesforce_setup_instruction` says how an admin does it in Setup instead."""
    out: list[OwnedProperty] = []
    identity = options.external_id_field.lower()
    command_id = (options.ticket_external_id_field or "").lower()
    for sobject, name in wanted:
        lowered = name.lower()
        if lowered in (identity, command_id):
            label = "ShopBotly identity" if lowered == identity else "ShopBotly command id"
            out.append(
                OwnedProperty(sobject, name, label, "string", "Text(255)", unique=True, external_id=True)
            )
        elif options.tags_field and lowered == options.tags_field.lower():
            out.append(
                OwnedProperty(sobject, name, "ShopBotly tags", "multipicklist", "Picklist (Multi-Select)")
            )
        elif lowered.startswith("shopbotly_") and lowered.endswith("__c"):
            label = name.removesuffix("__c").replace("_", " ")
            out.append(OwnedProperty(sobject, name, label, "string", "Text(255)"))
    return out


def salesforce_setup_instruction(prop: OwnedProperty) -> str:
    """Where and how an admin creates a field in Salesforce Setup."""
    attributes = [prop.field_type or "Text(255)", f"Field Name {prop.name.removesuffix('__c')}"]
    if prop.external_id:
        attributes.append("External ID")
    if prop.unique:
        attributes.append("Unique")
    return f"Setup > Object Manager > {prop.object_type} > Fields & Relationships > New: " + ", ".join(
        attributes
    )


def salesforce_definition(prop: OwnedProperty) -> dict[str, Any]:
    """The Tooling API `POST /services/data/vXX.X/tooling/sobjects/CustomField` body of an owned field.
    Tags are an unrestricted multi-select picklist: the API accepts values it does not list yet."""
    metadata: dict[str, Any] = {"label": prop.label, "description": prop.description}
    if prop.type == "multipicklist":
        metadata |= {
            "type": "MultiselectPicklist",
            "visibleLines": 4,
            "valueSet": {
                "restricted": False,
                "valueSetDefinition": {
                    "sorted": False,
                    "value": [{"fullName": "shopbotly", "label": "shopbotly", "default": False}],
                },
            },
        }
    else:
        metadata |= {"type": "Text", "length": 255, "externalId": prop.external_id, "unique": prop.unique}
    return {"FullName": f"{prop.object_type}.{prop.name}", "Metadata": metadata}


class SalesforceSchema(CrmSchema[SalesforceOptions]):
    """An org's fields: `GET .../sobjects/{SObject}/describe`; custom fields created through the Tooling API
    (`POST .../tooling/sobjects/CustomField`), or by an admin in Setup as the dry run says."""

    created_note: ClassVar[str | None] = (
        "Tooling API; in a real org grant it to the integration user (a permission set's field-level "
        "security), then `shopbotly connections check`"
    )
    exists_note: ClassVar[str] = (
        "the org says so; if `check` lists it missing, grant the integration user field-level security"
    )

    def targets(self, command: CommandShape) -> list[Target]:
        o, c = self.options, command
        out: list[Target] = []

        def mapped(sobject: str, field_map: Mapping[str, str]) -> None:
            for f in c.fields:
                name = field_map.get(f.name) or (f.name if f.name.endswith("__c") else None)
                if name is None:
                    unmapped = "no field map entry: not sent"
                    out.append(Target(sobject, f.name, f.name, f.kind, f.values, unmapped))
                elif name != o.external_id_field:
                    out.append(Target(sobject, name, f.name, f.kind, f.values))

        if c.op in (CommandOp.UPSERT_CONTACT, CommandOp.ADD_TAGS, CommandOp.UPSERT_LEAD):
            is_lead = c.op is CommandOp.UPSERT_LEAD
            sobject = o.lead_sobject if is_lead else o.contact_sobject
            out.append(Target(sobject, o.external_id_field, "(identity)", "text"))
            mapped(sobject, o.lead_field_map if is_lead else o.contact_field_map)
            if c.tags and o.tags_field:
                out.append(Target(sobject, o.tags_field, "tags", "text"))
            elif c.tags:
                dropped = (
                    f"no tags_field option: tags are dropped (unknown_properties: {o.unknown_properties})"
                )
                out.append(Target(sobject, "(tags)", "tags", "text", (), dropped))
        elif c.op in (CommandOp.ADD_NOTE, CommandOp.ATTACH_ORDER):
            out += [
                Target(o.note_sobject, n, "(connector)", "text")
                for n in ("Subject", "Description", "WhoId", "Status")
            ]
        elif c.op is CommandOp.CREATE_TICKET:
            out += [
                Target(o.ticket_sobject, n, "(connector)", "text")
                for n in ("Subject", "Description", "ContactId", "Origin")
            ]
            if o.ticket_external_id_field:
                out.append(Target(o.ticket_sobject, o.ticket_external_id_field, "(command id)", "text"))
            mapped(o.ticket_sobject, o.ticket_field_map)
        return out

    def owned(self, wanted: Iterable[tuple[str, str]] = ()) -> list[OwnedProperty]:
        return owned_salesforce_fields(self.options, wanted)

    def describe_url(self, base: str, object_type: str) -> str:
        return f"{base}/services/data/{self.options.api_version}/sobjects/{object_type}/describe"

    @staticmethod
    def parse(body: Any) -> dict[str, CrmProperty]:
        """`GET /services/data/vXX.X/sobjects/{SObject}/describe` → field name → CrmProperty."""
        return parse_described(body, "fields", _field)

    def create_request(self, base: str, prop: OwnedProperty) -> tuple[str, dict[str, Any]]:
        # Custom fields are metadata: the Tooling API's CustomField object creates one.
        url = f"{base}/services/data/{self.options.api_version}/tooling/sobjects/CustomField"
        return url, salesforce_definition(prop)

    def instruction(self, prop: OwnedProperty) -> str:
        return salesforce_setup_instruction(prop)

    def api_base(self, instance_url: str | None) -> str:
        base = super().api_base(instance_url)
        return (instance_url or base).rstrip("/") if self.options.use_instance_url else base

    def already_exists(self, response: httpx.Response) -> bool:
        # Created meanwhile, or hidden from the integration user by field-level security.
        return super().already_exists(response) or "DUPLICATE_DEVELOPER_NAME" in response.text
