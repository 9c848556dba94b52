"""HubSpot's schema (Properties API): what `connections check|setup` reads and creates on a portal."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from shopbotly.common.config.crm_kinds.hubspot import HubSpotOptions, HubSpotPaths
from shopbotly.common.events import CommandOp
from shopbotly.crm_writer.schema import CrmProperty, CrmSchema, OwnedProperty, Target, parse_described

if TYPE_CHECKING:
    from shopbotly.crm_writer.schema import CommandShape

__all__ = [
    "OWNED_HUBSPOT_PROPERTIES",
    "HubSpotSchema",
    "hubspot_definition",
    "owned_hubspot_properties",
]


def _property(p: dict[str, Any]) -> CrmProperty:
    meta = p.get("modificationMetadata") or {}
    type_ = str(p.get("type") or "string")
    options = None
    if type_ == "enumeration" and not p.get("externalOptions") and p.get("options"):
        options = frozenset(str(o.get("value")) for o in p["options"] if isinstance(o, dict))
    return CrmProperty(
        name=str(p["name"]),
        type=type_,
        writable=not meta.get("readOnlyValue", False) and not p.get("calculated", False),
        options=options,
        unique=bool(p.get("hasUniqueValue")),
        multi=p.get("fieldType") == "checkbox",
    )


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


class HubSpotSchema(CrmSchema[HubSpotOptions]):
    """A portal's properties: the Properties API of the connection's `api_version` (`GET` lists, `POST`
    creates)."""

    record_object: ClassVar[str] = "contacts"

    def targets(self, command: CommandShape) -> list[Target]:
        o, c = self.options, command
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

    def owned(self, wanted: Iterable[tuple[str, str]] = ()) -> list[OwnedProperty]:
        return owned_hubspot_properties(self.options, wanted)

    def describe_url(self, base: str, object_type: str) -> str:
        return base + HubSpotPaths(self.options.api_version).properties(object_type)

    @staticmethod
    def parse(body: Any) -> dict[str, CrmProperty]:
        """The Properties API's list (`GET /crm/v3/properties/{objectType}`, or its date-version path) →
        property name → CrmProperty."""
        return parse_described(body, "results", _property)

    def create_request(self, base: str, prop: OwnedProperty) -> tuple[str, dict[str, Any]]:
        return base + HubSpotPaths(self.options.api_version).properties(prop.object_type), hubspot_definition(
            prop
        )
