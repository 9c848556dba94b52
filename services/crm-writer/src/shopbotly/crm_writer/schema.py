"""What a CRM's schema is, what a connection writes into it, and whether the two fit.

- `CrmProperty` / `ObjectSchema`: one property (HubSpot Properties API) or field (Salesforce sObject describe)
  and an object type's set of them, parsed from the CRM's own answers.
- `targets(...)`: where a command's fields land for a connection (the same mapping the connectors apply).
- `problem(...)`: whether a property exists, is writable, fits the value's type and, for enumerations and
  picklists, whether the known values are among its options.
- `OWNED_HUBSPOT_PROPERTIES`: the custom properties ShopBotly creates (`shopbotly connections setup`).
- `fetch_schema(...)`: read a connection's schema over HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from shopbotly.common.config import ConnectionConfig
from shopbotly.common.config.crm_kinds.hubspot import HubSpotOptions, HubSpotPaths
from shopbotly.common.config.crm_kinds.salesforce import SalesforceOptions
from shopbotly.common.events import CommandOp

__all__ = [
    "OWNED_HUBSPOT_PROPERTIES",
    "CrmProperty",
    "ObjectSchema",
    "Target",
    "ValueKind",
    "fetch_schema",
    "hubspot_definition",
    "hubspot_object_types",
    "hubspot_paths",
    "owned_hubspot_properties",
    "owned_salesforce_fields",
    "parse_hubspot_properties",
    "parse_salesforce_describe",
    "problem",
    "salesforce_definition",
    "salesforce_setup_instruction",
    "targets",
]

# What ShopBotly knows of a value before it is sent: its kind and, when fixed by the mapping, its values.
ValueKind = Literal["text", "number", "bool", "datetime", "any"]


@dataclass(frozen=True)
class CrmProperty:
    name: str
    # HubSpot: string | number | date | datetime | enumeration | bool. Salesforce: the describe `type`
    # (string, email, phone, picklist, multipicklist, double, boolean, date, datetime, textarea, ...).
    type: str
    writable: bool = True
    # Allowed values of an enumeration/picklist; None: not fixed by the schema (or not an enumeration).
    options: frozenset[str] | None = None
    unique: bool = False
    multi: bool = False


ObjectSchema = Mapping[str, CrmProperty]


def parse_hubspot_properties(body: Any) -> dict[str, CrmProperty]:
    """The Properties API's list (`GET /crm/v3/properties/{objectType}`, or its date-version path) → property
    name → CrmProperty."""
    out: dict[str, CrmProperty] = {}
    for p in (body or {}).get("results", []) if isinstance(body, dict) else []:
        if not isinstance(p, dict) or not p.get("name"):
            continue
        meta = p.get("modificationMetadata") or {}
        type_ = str(p.get("type") or "string")
        options = None
        if type_ == "enumeration" and not p.get("externalOptions") and p.get("options"):
            options = frozenset(str(o.get("value")) for o in p["options"] if isinstance(o, dict))
        out[str(p["name"])] = CrmProperty(
            name=str(p["name"]),
            type=type_,
            writable=not meta.get("readOnlyValue", False) and not p.get("calculated", False),
            options=options,
            unique=bool(p.get("hasUniqueValue")),
            multi=p.get("fieldType") == "checkbox",
        )
    return out


def parse_salesforce_describe(body: Any) -> dict[str, CrmProperty]:
    """`GET /services/data/vXX.X/sobjects/{SObject}/describe` → field name → CrmProperty."""
    out: dict[str, CrmProperty] = {}
    for f in (body or {}).get("fields", []) if isinstance(body, dict) else []:
        if not isinstance(f, dict) or not f.get("name"):
            continue
        type_ = str(f.get("type") or "string")
        options = None
        if type_ in ("picklist", "multipicklist") and f.get("restrictedPicklist"):
            options = frozenset(
                str(v.get("value"))
                for v in f.get("picklistValues") or []
                if isinstance(v, dict) and v.get("active")
            )
        out[str(f["name"])] = CrmProperty(
            name=str(f["name"]),
            type=type_,
            # Upserts create and update: a field ShopBotly writes must be both.
            writable=bool(f.get("createable") and f.get("updateable")),
            options=options,
            unique=bool(f.get("unique") or f.get("externalId")),
            multi=type_ == "multipicklist",
        )
    return out


@dataclass(frozen=True)
class Target:
    """A property a command writes: on which object, fed by which command field, with which known values."""

    object_type: str
    name: str
    source: str  # the command field (or `tags`, or the connector's own bookkeeping)
    kind: ValueKind = "any"
    values: tuple[str, ...] = ()
    # Not sent as a property by the connector (e.g. appended to a ticket's text): nothing to check.
    not_sent: str | None = None


@dataclass(frozen=True)
class FieldInfo:
    """A command field as far as the mapping tells it before any event: its kind and fixed values."""

    name: str
    kind: ValueKind = "any"
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class CommandShape:
    op: CommandOp
    fields: Sequence[FieldInfo] = ()
    tags: bool = False
    body: bool = False
    extra_fields: bool = False


@dataclass(frozen=True)
class OwnedProperty:
    """A custom property ShopBotly creates where it is missing, with its HubSpot definition."""

    object_type: str
    name: str
    label: str
    type: str = "string"
    field_type: str = "text"
    unique: bool = False
    description: str = ""
    external_id: bool = False


OWNED_HUBSPOT_PROPERTIES: tuple[OwnedProperty, ...] = (
    # Written by the presets; names start with `shopbotly_` so they never clash with a portal's own.
    OwnedProperty(
        "contacts",
        "shopbotly_tags",
        "ShopBotly tags",
        "string",
        "textarea",
        description="Tags ShopBotly adds, ';'-separated (crm-writer merges them as a union).",
    ),
    OwnedProperty("contacts", "shopbotly_consent", "ShopBotly consent"),
    OwnedProperty("contacts", "shopbotly_conversation_id", "ShopBotly conversation id"),
    OwnedProperty("contacts", "shopbotly_last_message_at", "ShopBotly last message at", "datetime", "date"),
    OwnedProperty("contacts", "shopbotly_intent_score", "ShopBotly intent score", "number", "number"),
    OwnedProperty("contacts", "shopbotly_shopify_customer_id", "Shopify customer id"),
    OwnedProperty("contacts", "shopbotly_marketing_consent", "Shopify e-mail marketing consent"),
    OwnedProperty("contacts", "shopbotly_stripe_customer_id", "Stripe customer id"),
    OwnedProperty("contacts", "shopbotly_intercom_conversation_id", "Intercom conversation id"),
    OwnedProperty(
        "tickets",
        "shopbotly_last_reply",
        "ShopBotly last reply",
        "string",
        "textarea",
        description="The agent's last reply; its changes notify the chatbot.",
    ),
)
_COMMAND_ID_LABEL = "ShopBotly command id"


def owned_hubspot_properties(
    options: HubSpotOptions, wanted: Iterable[tuple[str, str]] = ()
) -> list[OwnedProperty]:
    """What `connections setup` creates on a HubSpot connection: the command-id property on notes and
    tickets (unique), the tags property, the owned properties above, and any other `shopbotly_*` property
    the mapping writes (`wanted`: (object type, name); created as text)."""
    out: dict[tuple[str, str], OwnedProperty] = {}
    for object_type in ("notes", "tickets"):
        out[(object_type, options.command_id_property)] = OwnedProperty(
            object_type,
            options.command_id_property,
            _COMMAND_ID_LABEL,
            unique=True,
            description="The id of the ShopBotly command that wrote this record (idempotent retries).",
        )
    for p in OWNED_HUBSPOT_PROPERTIES:
        if p.name == "shopbotly_tags":
            p = OwnedProperty(
                p.object_type, options.tags_property, p.label, p.type, p.field_type, description=p.description
            )
        out.setdefault((p.object_type, p.name), p)
    for object_type, name in wanted:
        if name.startswith("shopbotly_"):
            out.setdefault((object_type, name), OwnedProperty(object_type, name, name.replace("_", " ")))
    return list(out.values())


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


def hubspot_definition(prop: OwnedProperty) -> dict[str, Any]:
    """The Properties API's create body (`POST` to `HubSpotPaths.properties`) of an owned property."""
    body: dict[str, Any] = {
        "name": prop.name,
        "label": prop.label,
        "type": prop.type,
        "fieldType": prop.field_type,
        "groupName": _GROUPS[prop.object_type],
        "description": prop.description,
        "formField": False,
    }
    if prop.unique:
        body["hasUniqueValue"] = True
    return body


_GROUPS = {"contacts": "contactinformation", "tickets": "ticketinformation", "notes": "engagement"}


def hubspot_paths(connection: ConnectionConfig) -> HubSpotPaths:
    """The paths of the HubSpot API version a `hubspot` connection speaks (its `api_version` option)."""
    if not isinstance(connection.options, HubSpotOptions):
        raise TypeError(f"a {connection.kind} connection has no HubSpot API version")
    return HubSpotPaths(connection.options.api_version)


def hubspot_object_types() -> tuple[str, ...]:
    return ("contacts", "notes", "tickets")


def targets(connection: ConnectionConfig, command: CommandShape) -> list[Target]:
    """The properties a command writes through `connection`, as its connector sends them."""
    if isinstance(connection.options, HubSpotOptions):
        return _hubspot_targets(connection.options, command)
    if isinstance(connection.options, SalesforceOptions):
        return _salesforce_targets(connection.options, command)
    return []


def _hubspot_targets(o: HubSpotOptions, c: CommandShape) -> list[Target]:
    out: list[Target] = []
    if c.op in (CommandOp.UPSERT_CONTACT, CommandOp.UPSERT_LEAD, CommandOp.ADD_TAGS):
        out += [Target("contacts", f.name, f.name, f.kind, f.values) for f in c.fields]
        if c.tags:
            out.append(Target("contacts", o.tags_property, "tags", "text"))
    elif c.op in (CommandOp.ADD_NOTE, CommandOp.ATTACH_ORDER):
        out += [
            Target("notes", "hs_note_body", "body", "text"),
            Target("notes", "hs_timestamp", "(command time)", "datetime"),
            Target("notes", o.command_id_property, "(command id)", "text"),
        ]
    elif c.op is CommandOp.CREATE_TICKET:
        allowed = set(o.ticket_properties)
        out += [
            Target("tickets", "subject", "subject", "text"),
            Target("tickets", "content", "body", "text"),
            Target("tickets", "hs_pipeline", "(ticket_pipeline option)", "text", (o.ticket_pipeline,)),
            Target("tickets", "hs_pipeline_stage", "(ticket_stage option)", "text", (o.ticket_stage,)),
            Target("tickets", o.command_id_property, "(command id)", "text"),
        ]
        for f in c.fields:
            name = o.ticket_field_map.get(f.name, f.name)
            if name in ("subject", "content"):
                continue
            not_sent = (
                None if name in allowed else "not in ticket_properties: appended to the ticket's content"
            )
            out.append(Target("tickets", name, f.name, f.kind, f.values, not_sent))
        if c.tags:
            out.append(Target("contacts", o.tags_property, "tags", "text"))
    return out


def _salesforce_targets(o: SalesforceOptions, c: CommandShape) -> list[Target]:
    out: list[Target] = []

    def mapped(sobject: str, field_map: Mapping[str, str]) -> None:
        for f in c.fields:
            name = field_map.get(f.name) or (f.name if f.name.endswith("__c") else None)
            if name is None:
                out.append(Target(sobject, f.name, f.name, f.kind, f.values, "no field map entry: not sent"))
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
            dropped = f"no tags_field option: tags are dropped (unknown_properties: {o.unknown_properties})"
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


_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")
_KIND_FITS: Mapping[str, frozenset[str]] = {
    # CRM type → value kinds that fit it (`any` always fits: nothing is known before the event).
    "number": frozenset({"number", "any"}),
    "double": frozenset({"number", "any"}),
    "int": frozenset({"number", "any"}),
    "currency": frozenset({"number", "any"}),
    "percent": frozenset({"number", "any"}),
    "date": frozenset({"datetime", "any"}),
    "datetime": frozenset({"datetime", "number", "any"}),
    "bool": frozenset({"bool", "any"}),
    "boolean": frozenset({"bool", "any"}),
}


def problem(target: Target, prop: CrmProperty | None, *, object_known: bool = True) -> tuple[str, str] | None:
    """(status, detail) of a target against the CRM's property, or None when it fits."""
    if not object_known:
        return ("missing", f"the CRM has no object type {target.object_type!r}")
    if prop is None:
        return ("missing", f"{target.object_type} has no property {target.name!r}")
    if not prop.writable:
        return ("read-only", f"{target.name!r} is read-only in the CRM")
    fits = _KIND_FITS.get(prop.type)
    if fits is not None and target.kind not in fits:
        return ("type", f"{target.name!r} is {prop.type}, the mapping writes {target.kind}")
    for value in target.values:
        if prop.type in ("number", "double", "int", "currency", "percent") and not _NUMERIC.match(value):
            return ("type", f"{value!r} is not a number ({target.name!r} is {prop.type})")
        if prop.options is not None:
            values = value.split(";") if prop.multi else [value]
            bad = [v for v in values if v not in prop.options]
            if bad:
                return ("option", f"{bad[0]!r} is not an option of {target.name!r}: {sorted(prop.options)}")
    return None


# -- reading a connection's schema --------------------------------------------------------------------


@dataclass
class FetchedSchema:
    objects: dict[str, dict[str, CrmProperty]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


async def fetch_schema(
    connection: ConnectionConfig,
    client: httpx.AsyncClient,
    headers: Mapping[str, str],
    object_types: Iterable[str],
    *,
    base_url: str | None = None,
) -> FetchedSchema:
    """Each object type's properties; an object type the CRM could not describe is in `errors`."""
    base = (base_url or connection.base_url or "").rstrip("/")
    result = FetchedSchema()
    parse: Callable[[Any], dict[str, CrmProperty]]
    for object_type in sorted(set(object_types)):
        if isinstance(connection.options, SalesforceOptions):
            version = connection.options.api_version
            url = f"{base}/services/data/{version}/sobjects/{object_type}/describe"
            parse = parse_salesforce_describe
        else:
            url, parse = base + hubspot_paths(connection).properties(object_type), parse_hubspot_properties
        try:
            response = await client.get(url, headers=dict(headers), timeout=connection.timeout_s)
        except httpx.HTTPError as exc:
            result.errors[object_type] = f"{type(exc).__name__}: {exc}"
            continue
        if response.status_code != 200:
            result.errors[object_type] = f"HTTP {response.status_code}: {response.text[:300]}"
            continue
        result.objects[object_type] = parse(response.json())
    return result
