"""HubSpot property definitions: a fresh portal's standard properties, plus those created through the API.

Definitions have the shape of `GET /crm/v3/properties/{objectType}` results (name, label, type, fieldType,
groupName, options, hasUniqueValue, modificationMetadata, ...), so clients read the emulator's schema as they
read a real portal's. Custom properties exist only once created (`POST /crm/v3/properties/{objectType}`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "FIELD_TYPES",
    "OBJECT_TYPES",
    "PropertyRegistry",
    "definition",
    "standard_definitions",
]

# Object type names and ids the emulator serves (HubSpot accepts either in the path).
OBJECT_TYPES: Mapping[str, str] = {"contacts": "0-1", "tickets": "0-5", "notes": "0-46"}
# Valid fieldType per type (HubSpot refuses other combinations).
FIELD_TYPES: Mapping[str, frozenset[str]] = {
    "string": frozenset({"text", "textarea", "html", "phonenumber", "file"}),
    "number": frozenset({"number", "calculation_equation"}),
    "date": frozenset({"date"}),
    "datetime": frozenset({"date"}),
    "enumeration": frozenset({"select", "radio", "checkbox", "booleancheckbox", "calculation_equation"}),
    "bool": frozenset({"booleancheckbox"}),
}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
_CREATED = "2019-08-06T02:41:08.000Z"


def _options(values: Iterable[str], labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    return [
        {
            "label": (labels or {}).get(v, v.replace("_", " ").title()),
            "value": v,
            "displayOrder": i,
            "hidden": False,
        }
        for i, v in enumerate(values)
    ]


def definition(
    name: str,
    type_: str = "string",
    field_type: str = "text",
    *,
    label: str | None = None,
    group: str = "contactinformation",
    options: list[dict[str, Any]] | None = None,
    read_only: bool = False,
    unique: bool = False,
    hubspot_defined: bool = True,
    external_options: bool = False,
) -> dict[str, Any]:
    """One property as the Properties API returns it."""
    return {
        "updatedAt": _CREATED,
        "createdAt": _CREATED,
        "name": name,
        "label": label or name.replace("_", " ").title(),
        "type": type_,
        "fieldType": field_type,
        "description": "",
        "groupName": group,
        "options": options or [],
        "displayOrder": -1,
        "calculated": False,
        "externalOptions": external_options,
        "hasUniqueValue": unique,
        "hidden": False,
        "hubspotDefined": hubspot_defined,
        "modificationMetadata": {
            "archivable": not hubspot_defined,
            "readOnlyDefinition": hubspot_defined,
            "readOnlyValue": read_only,
        },
        "formField": not read_only,
        "dataSensitivity": "non_sensitive",
    }


_LIFECYCLE = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)
_LEAD_STATUS = (
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "ATTEMPTED_TO_CONTACT",
    "CONNECTED",
    "BAD_TIMING",
)


def _common(group: str) -> list[dict[str, Any]]:
    return [
        definition("hs_object_id", "number", "number", label="Record ID", group=group, read_only=True),
        definition("createdate", "datetime", "date", label="Create Date", group=group, read_only=True),
        definition("lastmodifieddate", "datetime", "date", group=group, read_only=True),
        definition("hs_lastmodifieddate", "datetime", "date", group=group, read_only=True),
        definition("hs_createdate", "datetime", "date", group=group, read_only=True),
        definition(
            "hubspot_owner_id", "enumeration", "select", label="Owner", group=group, external_options=True
        ),
    ]


def standard_definitions() -> dict[str, dict[str, dict[str, Any]]]:
    """A fresh portal's properties of contacts, tickets and notes (the ones the emulator stores)."""
    contacts = [
        *_common("contactinformation"),
        definition("email", label="Email"),
        definition("firstname", label="First Name"),
        definition("lastname", label="Last Name"),
        definition("phone", "string", "phonenumber", label="Phone Number"),
        definition("mobilephone", "string", "phonenumber", label="Mobile Phone Number"),
        definition("fax", "string", "phonenumber", label="Fax Number"),
        definition("company", label="Company Name"),
        definition("website", label="Website URL"),
        definition("jobtitle", label="Job Title"),
        definition("industry"),
        definition("address", label="Street Address"),
        definition("city"),
        definition("state", label="State/Region"),
        definition("zip", label="Postal Code"),
        definition("country", label="Country/Region"),
        definition(
            "lifecyclestage",
            "enumeration",
            "radio",
            label="Lifecycle Stage",
            options=_options(_LIFECYCLE),
        ),
        definition(
            "hs_lead_status", "enumeration", "radio", label="Lead Status", options=_options(_LEAD_STATUS)
        ),
        definition("message", "string", "textarea"),
        definition("salutation"),
        definition("date_of_birth", label="Date of birth"),
        definition("hs_language", "enumeration", "select", label="Preferred language", external_options=True),
        definition("annualrevenue", label="Annual Revenue"),
        definition(
            "numemployees", "enumeration", "select", label="Number of Employees", external_options=True
        ),
        definition("twitterhandle", label="Twitter Username"),
        definition("hs_whatsapp_phone_number", "string", "phonenumber", label="WhatsApp Phone Number"),
        definition("hs_timezone", "enumeration", "select", label="Time Zone", external_options=True),
    ]
    tickets = [
        *_common("ticketinformation"),
        definition("subject", label="Ticket name", group="ticketinformation"),
        definition("content", "string", "textarea", label="Ticket description", group="ticketinformation"),
        definition(
            "hs_pipeline",
            "enumeration",
            "select",
            label="Pipeline",
            group="ticketinformation",
            options=_options(["0"], {"0": "Support Pipeline"}),
        ),
        definition(
            "hs_pipeline_stage",
            "enumeration",
            "select",
            label="Ticket status",
            group="ticketinformation",
            options=_options(
                ["1", "2", "3", "4"],
                {"1": "New", "2": "Waiting on contact", "3": "Waiting on us", "4": "Closed"},
            ),
        ),
        definition(
            "hs_ticket_priority",
            "enumeration",
            "select",
            label="Priority",
            group="ticketinformation",
            options=_options(["LOW", "MEDIUM", "HIGH", "URGENT"]),
        ),
        definition(
            "hs_ticket_category",
            "enumeration",
            "checkbox",
            label="Category",
            group="ticketinformation",
            options=_options(["PRODUCT_ISSUE", "BILLING_ISSUE", "FEATURE_REQUEST", "GENERAL_INQUIRY"]),
        ),
        definition(
            "source_type",
            "enumeration",
            "select",
            label="Source",
            group="ticketinformation",
            options=_options(["CHAT", "EMAIL", "FORM", "PHONE"]),
        ),
        definition("closed_date", "datetime", "date", label="Close date", group="ticketinformation"),
        definition("last_reply_date", "datetime", "date", label="Last reply date", group="ticketinformation"),
        definition(
            "hs_resolution",
            "enumeration",
            "select",
            label="Resolution",
            group="ticketinformation",
            options=_options(["ISSUE_FIXED", "DUPLICATE", "NO_ACTION_NEEDED", "OTHER"]),
        ),
    ]
    notes = [
        *_common("engagement"),
        definition("hs_timestamp", "datetime", "date", label="Activity date", group="engagement"),
        definition("hs_note_body", "string", "html", label="Note body", group="engagement"),
        definition("hs_attachment_ids", "enumeration", "checkbox", group="engagement", external_options=True),
    ]
    return {
        "contacts": {d["name"]: d for d in contacts},
        "tickets": {d["name"]: d for d in tickets},
        "notes": {d["name"]: d for d in notes},
    }


class PropertyRegistry:
    """Every property of the portal per object type: the standard ones and those created through the API
    (`on_create` persists each, `restore` brings them back after a restart)."""

    def __init__(self, on_create: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._by_type = standard_definitions()
        self.on_create = on_create

    def restore(self, object_type: str, created: Mapping[str, Any]) -> None:
        """A property created before (read back from the store)."""
        with self._lock:
            self._by_type.setdefault(object_type, {})[str(created["name"])] = dict(created)

    def list(self, object_type: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._by_type.get(object_type, {}).values())

    def get(self, object_type: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._by_type.get(object_type, {}).get(name)

    def exists(self, object_type: str, name: str) -> bool:
        return self.get(object_type, name) is not None

    def custom_names(self, object_type: str) -> frozenset[str]:
        with self._lock:
            return frozenset(
                n for n, d in self._by_type.get(object_type, {}).items() if not d["hubspotDefined"]
            )

    def unique_names(self, object_type: str) -> frozenset[str]:
        with self._lock:
            return frozenset(n for n, d in self._by_type.get(object_type, {}).items() if d["hasUniqueValue"])

    def create(self, object_type: str, body: Mapping[str, Any], now_iso: str) -> dict[str, Any] | str:
        """The created definition, or why the body is refused (a VALIDATION_ERROR message). A name
        that exists already is the caller's 409."""
        problem = _create_problem(body)
        if problem is not None:
            return problem
        created = definition(
            str(body["name"]),
            str(body["type"]),
            str(body["fieldType"]),
            label=str(body["label"]),
            group=str(body["groupName"]),
            options=[
                {**o, "displayOrder": o.get("displayOrder", i), "hidden": bool(o.get("hidden", False))}
                for i, o in enumerate(body.get("options") or [])
            ],
            unique=body.get("hasUniqueValue") is True,
            hubspot_defined=False,
        )
        created["description"] = str(body.get("description") or "")
        created["formField"] = bool(body.get("formField", False))
        created["createdAt"] = created["updatedAt"] = now_iso
        if self.on_create is not None:
            self.on_create(object_type, created)
        with self._lock:
            self._by_type.setdefault(object_type, {})[created["name"]] = created
        return created

    def value_problem(self, object_type: str, name: str, value: str | None) -> dict[str, Any] | None:
        """An INVALID_OPTION problem for an enumeration value that is not one of its options."""
        prop = self.get(object_type, name)
        if prop is None or value in (None, "") or prop["type"] != "enumeration" or prop["externalOptions"]:
            return None
        allowed = [str(o["value"]) for o in prop["options"]]
        values = value.split(";") if prop["fieldType"] == "checkbox" else [value]
        bad = [v for v in values if v not in allowed]
        if not bad:
            return None
        message = f"{bad[0]} was not one of the allowed options: [{', '.join(allowed)}]"
        return {
            "isValid": False,
            "message": message,
            "error": "INVALID_OPTION",
            "name": name,
            "localizedErrorMessage": message,
        }


def _create_problem(body: Mapping[str, Any]) -> str | None:
    missing = [k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)]
    if missing:
        return f"Some required fields were not set: [{', '.join(missing)}]"
    name = str(body["name"])
    if not _NAME.match(name):
        return (
            f"Property name '{name}' is invalid: use lowercase letters, digits and underscores, "
            "starting with a letter"
        )
    type_, field_type = str(body["type"]), str(body["fieldType"])
    if type_ not in FIELD_TYPES:
        return f"Invalid property type '{type_}'; valid types: {sorted(FIELD_TYPES)}"
    if field_type not in FIELD_TYPES[type_]:
        return f"fieldType '{field_type}' is not valid for type '{type_}': {sorted(FIELD_TYPES[type_])}"
    options = body.get("options")
    if type_ == "enumeration" and not options:
        return "Enumeration properties must have at least one option"
    if options is not None and (
        not isinstance(options, list)
        or not all(isinstance(o, dict) and o.get("label") and o.get("value") is not None for o in options)
    ):
        return "Invalid input JSON: each option needs a label and a value"
    return None
