"""Salesforce sObject describe: a fresh org's standard fields of Lead, Contact, Task, Case and Note, plus the
custom fields the org has (configured: an admin created them in Setup; a fresh org has none).

Bodies have the shape of `GET /services/data/vXX.X/sobjects/{SObject}/describe` (DescribeSObjectResult:
`fields[]`: name, type, soapType, createable, updateable, nillable, picklistValues, externalId, unique...),
so clients such as simple-salesforce read the emulator's schema as they read a real org's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = ["CustomFieldRegistry", "custom_field", "describe_sobject", "field", "standard_fields"]

_SOAP_TYPES: Mapping[str, str] = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "int": "xsd:int",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
    "address": "urn:address",
}
_LENGTHS: Mapping[str, int] = {"email": 80, "phone": 40, "url": 255, "textarea": 32000, "picklist": 255}


def _picklist(values: Iterable[str], default: str | None = None) -> list[dict[str, Any]]:
    return [
        {"active": True, "defaultValue": v == default, "label": v, "validFor": None, "value": v}
        for v in values
    ]


def field(
    name: str,
    type_: str = "string",
    label: str | None = None,
    *,
    length: int | None = None,
    createable: bool = True,
    updateable: bool = True,
    read_only: bool = False,
    nillable: bool = True,
    picklist: Sequence[str] = (),
    default: str | None = None,
    restricted: bool = False,
    reference_to: Sequence[str] = (),
    external_id: bool = False,
    unique: bool = False,
    custom: bool = False,
    name_field: bool = False,
    defaulted_on_create: bool = False,
) -> dict[str, Any]:
    """One field as `describe` returns it (every key a real describe has, in its type)."""
    if read_only:
        createable = updateable = False
    if length is None:
        length = 255 if type_ in ("string", "combobox", "multipicklist") else _LENGTHS.get(type_, 0)
    if type_ in ("id", "reference"):
        length = 18
    text = type_ not in ("boolean", "int", "double", "currency", "percent", "date", "datetime")
    return {
        "aggregatable": type_ not in ("textarea", "multipicklist", "address", "boolean"),
        "aiPredictionField": False,
        "autoNumber": False,
        "byteLength": length * 3 if text else 0,
        "calculated": False,
        "calculatedFormula": None,
        "cascadeDelete": False,
        "caseSensitive": False,
        "compoundFieldName": None,
        "controllerName": None,
        "createable": createable,
        "custom": custom,
        "defaultValue": default == "true" if type_ == "boolean" else None,
        "defaultValueFormula": None,
        "defaultedOnCreate": defaulted_on_create or type_ == "boolean",
        "dependentPicklist": False,
        "deprecatedAndHidden": False,
        "digits": 9 if type_ == "int" else 0,
        "displayLocationInDecimal": False,
        "encrypted": False,
        "externalId": external_id,
        "extraTypeInfo": None,
        "filterable": type_ not in ("textarea", "address"),
        "filteredLookupInfo": None,
        "formulaTreatNullNumberAsZero": False,
        "groupable": type_ not in ("textarea", "multipicklist", "address", "double", "datetime"),
        "highScaleNumber": False,
        "htmlFormatted": False,
        "idLookup": type_ == "id" or external_id or type_ == "email",
        "inlineHelpText": None,
        "label": label or name.removesuffix("__c").replace("_", " "),
        "length": length if text else 0,
        "mask": None,
        "maskType": None,
        "name": name,
        "nameField": name_field,
        "namePointing": len(reference_to) > 1,
        "nillable": nillable and type_ != "boolean",
        "permissionable": nillable and createable and not name_field,
        "picklistValues": _picklist(picklist, default),
        "polymorphicForeignKey": len(reference_to) > 1,
        "precision": 18 if type_ in ("double", "currency", "percent") else 0,
        "queryByDistance": False,
        "referenceTargetField": None,
        "referenceTo": list(reference_to),
        "relationshipName": name.removesuffix("Id") if reference_to else None,
        "relationshipOrder": None,
        "restrictedDelete": False,
        "restrictedPicklist": restricted,
        "scale": 0,
        "searchPrefilterable": type_ == "reference",
        "soapType": _SOAP_TYPES.get(type_, "xsd:string"),
        "sortable": type_ not in ("textarea", "multipicklist"),
        "type": type_,
        "unique": unique,
        "updateable": updateable,
        "writeRequiresMasterRead": False,
    }


def _system(owner_to: Sequence[str]) -> list[dict[str, Any]]:
    return [
        field("Id", "id", "Record ID", nillable=False, read_only=True),
        field("IsDeleted", "boolean", "Deleted", read_only=True),
        field(
            "OwnerId",
            "reference",
            "Owner ID",
            reference_to=owner_to,
            nillable=False,
            defaulted_on_create=True,
        ),
        field("CreatedDate", "datetime", "Created Date", nillable=False, read_only=True),
        field(
            "CreatedById", "reference", "Created By ID", reference_to=["User"], nillable=False, read_only=True
        ),
        field("LastModifiedDate", "datetime", "Last Modified Date", nillable=False, read_only=True),
        field(
            "LastModifiedById",
            "reference",
            "Last Modified By ID",
            reference_to=["User"],
            nillable=False,
            read_only=True,
        ),
        field("SystemModstamp", "datetime", "System Modstamp", nillable=False, read_only=True),
    ]


_SALUTATIONS = ("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.", "Mx.")
_LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")
_INDUSTRIES = (
    "Agriculture", "Apparel", "Banking", "Biotechnology", "Chemicals", "Communications", "Construction",
    "Consulting", "Education", "Electronics", "Energy", "Engineering", "Entertainment", "Environmental",
    "Finance", "Food & Beverage", "Government", "Healthcare", "Hospitality", "Insurance", "Machinery",
    "Manufacturing", "Media", "Not For Profit", "Recreation", "Retail", "Shipping", "Technology",
    "Telecommunications", "Transportation", "Utilities", "Other",
)  # fmt: skip


def _person() -> list[dict[str, Any]]:
    return [
        field("LastName", label="Last Name", length=80, nillable=False),
        field("FirstName", label="First Name", length=40),
        field("Salutation", "picklist", picklist=_SALUTATIONS),
        field("Name", label="Full Name", length=121, name_field=True, nillable=False, read_only=True),
        field("Title", length=128),
        field("Email", "email"),
        field("Phone", "phone", label="Business Phone"),
        field("MobilePhone", "phone", label="Mobile Phone"),
        field("Description", "textarea"),
        field("LeadSource", "picklist", label="Lead Source", picklist=_LEAD_SOURCES),
        field("HasOptedOutOfEmail", "boolean", label="Email Opt Out", default="false"),
    ]


def standard_fields() -> dict[str, list[dict[str, Any]]]:
    """A fresh org's standard fields per sObject the emulator stores."""
    lead = [
        *_system(["Group", "User"]),
        *_person(),
        field("Company", length=255, nillable=False),
        field("Street", "textarea", length=255),
        field("City", length=40),
        field("State", label="State/Province", length=80),
        field("PostalCode", label="Zip/Postal Code", length=20),
        field("Country", length=80),
        field("Address", "address", read_only=True),
        field("Website", "url"),
        field(
            "Status",
            "picklist",
            label="Lead Status",
            picklist=(
                "Open - Not Contacted",
                "Working - Contacted",
                "Closed - Converted",
                "Closed - Not Converted",
            ),
            default="Open - Not Contacted",
            nillable=False,
            defaulted_on_create=True,
        ),
        field("Industry", "picklist", picklist=_INDUSTRIES),
        field("Rating", "picklist", picklist=("Hot", "Warm", "Cold")),
        field("NumberOfEmployees", "int", label="Employees"),
        field("IsConverted", "boolean", label="Converted", updateable=False),
        field("ConvertedDate", "date", label="Converted Date", read_only=True),
        field(
            "ConvertedContactId",
            "reference",
            label="Converted Contact ID",
            reference_to=["Contact"],
            read_only=True,
        ),
    ]
    contact = [
        *_system(["User"]),
        *_person(),
        field("AccountId", "reference", label="Account ID", reference_to=["Account"]),
        field("Department", length=80),
        field("Birthdate", "date"),
        field("MailingStreet", "textarea", label="Mailing Street", length=255),
        field("MailingCity", label="Mailing City", length=40),
        field("MailingState", label="Mailing State/Province", length=80),
        field("MailingPostalCode", label="Mailing Zip/Postal Code", length=20),
        field("MailingCountry", label="Mailing Country", length=80),
        field("MailingAddress", "address", label="Mailing Address", read_only=True),
    ]
    task = [
        *_system(["Group", "User"]),
        field("WhoId", "reference", label="Name ID", reference_to=["Contact", "Lead"]),
        field("WhatId", "reference", label="Related To ID", reference_to=["Account", "Case", "Opportunity"]),
        field("Subject", "combobox", picklist=("Call", "Send Letter", "Send Quote", "Other")),
        field("ActivityDate", "date", label="Due Date Only"),
        field(
            "Status",
            "picklist",
            picklist=("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"),
            default="Not Started",
            nillable=False,
            defaulted_on_create=True,
        ),
        field(
            "Priority",
            "picklist",
            picklist=("High", "Normal", "Low"),
            default="Normal",
            nillable=False,
            defaulted_on_create=True,
        ),
        field("Type", "picklist", picklist=("Call", "Email", "Meeting", "Other")),
        field("Description", "textarea"),
        field("IsClosed", "boolean", label="Closed", read_only=True),
        field(
            "TaskSubtype",
            "picklist",
            label="Task Subtype",
            picklist=("Task", "Email", "Call"),
            updateable=False,
        ),
    ]
    case = [
        *_system(["Group", "User"]),
        field("CaseNumber", label="Case Number", length=30, nillable=False, name_field=True, read_only=True),
        field("ContactId", "reference", label="Contact ID", reference_to=["Contact"]),
        field("AccountId", "reference", label="Account ID", reference_to=["Account"]),
        field("SuppliedName", label="Web Name", length=80),
        field("SuppliedEmail", "email", label="Web Email"),
        field("SuppliedPhone", label="Web Phone", length=40),
        field("Type", "picklist", picklist=("Mechanical", "Electrical", "Electronic", "Structural", "Other")),
        field(
            "Status",
            "picklist",
            picklist=("New", "Working", "Escalated", "Closed"),
            default="New",
            defaulted_on_create=True,
        ),
        field(
            "Reason",
            "picklist",
            label="Case Reason",
            picklist=(
                "Installation",
                "Equipment Complexity",
                "Performance",
                "Breakdown",
                "Equipment Design",
                "Feedback",
                "Other",
            ),
        ),
        field("Origin", "picklist", label="Case Origin", picklist=("Phone", "Email", "Web")),
        field("Subject", length=255),
        field(
            "Priority",
            "picklist",
            picklist=("High", "Medium", "Low"),
            default="Medium",
            defaulted_on_create=True,
        ),
        field("Description", "textarea"),
        field("IsClosed", "boolean", label="Closed", read_only=True),
        field("IsEscalated", "boolean", label="Escalated", default="false"),
    ]
    note = [
        *_system(["User"]),
        field(
            "ParentId",
            "reference",
            label="Parent ID",
            reference_to=["Account", "Contact", "Lead", "Case"],
            nillable=False,
            updateable=False,
        ),
        field("Title", length=255, nillable=False, name_field=True),
        field("Body", "textarea"),
        field("IsPrivate", "boolean", label="Private", default="false"),
    ]
    return {"Lead": lead, "Contact": contact, "Task": task, "Case": case, "Note": note}


def custom_field(
    name: str,
    type_: str = "string",
    *,
    external_id: bool = False,
    unique: bool = False,
    picklist: Sequence[str] = (),
) -> dict[str, Any]:
    """A custom field an admin created (Setup > Object Manager > Fields & Relationships)."""
    return field(
        name,
        type_,
        external_id=external_id,
        unique=unique,
        picklist=picklist,
        custom=True,
        length=4099 if type_ == "multipicklist" else None,
    )


def describe_sobject(
    name: str, key_prefix: str, custom: Iterable[dict[str, Any]], version: str
) -> dict[str, Any]:
    """The `describe` body of one sObject: its standard fields, then the org's custom ones."""
    fields = [*standard_fields()[name], *custom]
    base = f"/services/data/{version}/sobjects/{name}"
    return {
        "actionOverrides": [],
        "activateable": False,
        "associateEntityType": None,
        "associateParentEntity": None,
        "childRelationships": [],
        "compactLayoutable": True,
        "createable": True,
        "custom": False,
        "customSetting": False,
        "deepCloneable": False,
        "defaultImplementation": None,
        "deletable": True,
        "deprecatedAndHidden": False,
        "extendedBy": None,
        "extendsInterfaces": None,
        "feedEnabled": name != "Note",
        "fields": fields,
        "hasSubtypes": False,
        "implementedBy": None,
        "implementsInterfaces": None,
        "isInterface": False,
        "isSubtype": False,
        "keyPrefix": key_prefix,
        "label": name,
        "labelPlural": name + "s",
        "layoutable": True,
        "listviewable": None,
        "lookupLayoutable": None,
        "mergeable": name in ("Lead", "Contact", "Case"),
        "mruEnabled": True,
        "name": name,
        "namedLayoutInfos": [],
        "networkScopeFieldName": None,
        "queryable": True,
        "recordTypeInfos": [],
        "replicateable": True,
        "retrieveable": True,
        "searchLayoutable": True,
        "searchable": True,
        "sobjectDescribeOptions": {},
        "supportedScopes": [{"label": "All", "name": "everything"}, {"label": "My", "name": "mine"}],
        "triggerable": True,
        "undeletable": True,
        "updateable": True,
        "urls": {
            "compactLayouts": f"{base}/describe/compactLayouts",
            "rowTemplate": f"{base}/{{ID}}",
            "approvalLayouts": f"{base}/describe/approvalLayouts",
            "describe": f"{base}/describe",
            "quickActions": f"{base}/quickActions",
            "layouts": f"{base}/describe/layouts",
            "sobject": base,
        },
    }


class CustomFieldRegistry:
    """The org's custom fields per sObject, as `describe` lists them: those an admin created before start
    (settings) and those created through the Tooling API since (`on_create` persists each; `add` brings them
    back after a restart). Names are case-insensitive, as in Salesforce."""

    def __init__(self, on_create: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._by_sobject: dict[str, dict[str, dict[str, Any]]] = {}
        self.on_create = on_create

    def add(self, sobject: str, described: Mapping[str, Any]) -> None:
        with self._lock:
            self._by_sobject.setdefault(sobject, {})[str(described["name"]).lower()] = dict(described)

    def create(self, sobject: str, described: dict[str, Any]) -> None:
        if self.on_create is not None:
            self.on_create(sobject, described)
        self.add(sobject, described)

    def fields(self, sobject: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._by_sobject.get(sobject, {}).values())

    def get(self, sobject: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._by_sobject.get(sobject, {}).get(name.lower())

    def names(self, sobject: str) -> frozenset[str]:
        return frozenset(str(f["name"]) for f in self.fields(sobject))

    def external_ids(self, sobject: str) -> frozenset[str]:
        return frozenset(str(f["name"]) for f in self.fields(sobject) if f["externalId"])

    def unique(self, sobject: str) -> frozenset[str]:
        return frozenset(str(f["name"]) for f in self.fields(sobject) if f["unique"])

    def count(self) -> int:
        with self._lock:
            return sum(len(fields) for fields in self._by_sobject.values())
