"""Salesforce REST rules: sObject schemas, sObject Collections upsert validation and result shapes.

Whole-request problems raise `SalesforceRejected` (an HTTP status and the `[{message, errorCode}]` body);
per-record problems become `{success: false, errors: [{statusCode, message, fields}]}` items.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shopbotly.crm_emulator.domain import StoredObject, is_valid_email, is_valid_salesforce_id
from shopbotly.crm_emulator.shapes import salesforce_error, salesforce_item_error

__all__ = [
    "MIN_COLLECTIONS_VERSION",
    "ROLLED_BACK",
    "SOBJECTS",
    "SObjectSpec",
    "SalesforceRejected",
    "SfRecordInput",
    "canonical_fields",
    "external_id_field",
    "no_such_column",
    "parse_collection_upsert",
    "parse_version",
    "record_json",
    "required_missing",
    "sf_datetime",
    "upsert_failure",
    "upsert_success",
]

MIN_COLLECTIONS_VERSION = 46.0  # sObject Collections upsert exists from API v46.0
ROLLED_BACK = salesforce_item_error(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone header",
)


class SalesforceRejected(Exception):
    def __init__(self, status: int, body: list[dict[str, Any]]) -> None:
        super().__init__(body[0]["message"] if body else "")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class SObjectSpec:
    name: str
    key_prefix: str
    fields: frozenset[str]
    required_on_create: tuple[str, ...] = ()
    # Fields holding a record id of another object (validated as ids, used to link notes to people).
    references: tuple[str, ...] = ()
    # People (Lead, Contact) are what the admin state lists by identity; the rest hangs off them.
    person: bool = False

    def canonical(self, name: str, custom: Collection[str] = ()) -> str | None:
        """Names are case-insensitive; a custom field (`__c`) exists only if the org has it (`custom`)."""
        lowered = name.lower()
        for known in (*self.fields, *custom):
            if known.lower() == lowered:
                return known
        return None


_PERSON = frozenset(
    {
        "FirstName",
        "LastName",
        "Salutation",
        "Email",
        "Phone",
        "MobilePhone",
        "Title",
        "Description",
        "LeadSource",
        "HasOptedOutOfEmail",
        "OwnerId",
    }
)
SOBJECTS: Mapping[str, SObjectSpec] = {
    "Lead": SObjectSpec(
        "Lead",
        "00Q",
        _PERSON
        | {
            "Company",
            "Status",
            "Street",
            "City",
            "State",
            "PostalCode",
            "Country",
            "Website",
            "Industry",
            "Rating",
            "NumberOfEmployees",
        },
        required_on_create=("LastName", "Company"),
        person=True,
    ),
    "Contact": SObjectSpec(
        "Contact",
        "003",
        _PERSON
        | {
            "AccountId",
            "Department",
            "Birthdate",
            "MailingStreet",
            "MailingCity",
            "MailingState",
            "MailingPostalCode",
            "MailingCountry",
        },
        required_on_create=("LastName",),
        references=("AccountId",),
        person=True,
    ),
    "Note": SObjectSpec(
        "Note",
        "002",
        frozenset({"ParentId", "Title", "Body", "IsPrivate", "OwnerId"}),
        required_on_create=("ParentId", "Title"),
        references=("ParentId",),
    ),
    "Task": SObjectSpec(
        "Task",
        "00T",
        frozenset(
            {
                "WhoId",
                "WhatId",
                "Subject",
                "Description",
                "Status",
                "Priority",
                "ActivityDate",
                "Type",
                "OwnerId",
            }
        ),
        references=("WhoId", "WhatId"),
    ),
    "Case": SObjectSpec(
        "Case",
        "500",
        frozenset(
            {
                "Subject",
                "Description",
                "ContactId",
                "AccountId",
                "Origin",
                "Status",
                "Priority",
                "Reason",
                "Type",
                "SuppliedEmail",
                "SuppliedName",
                "OwnerId",
            }
        ),
        references=("ContactId", "AccountId"),
    ),
}


def references_of(spec: SObjectSpec, fields: Mapping[str, str | None]) -> list[str]:
    return [value for name in spec.references if (value := fields.get(name))]


def parse_version(segment: str) -> float | None:
    match = re.fullmatch(r"v(\d{2,3})\.(\d)", segment)
    return float(f"{match.group(1)}.{match.group(2)}") if match else None


def sf_datetime(ts: float) -> str:
    """Salesforce's datetime format: `2024-05-01T12:34:56.789+0000`."""
    return (
        datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}+0000"
    )


def external_id_field(spec: SObjectSpec, name: str, external_ids: Collection[str]) -> str:
    """The canonical external-id field (a custom field of the org marked External ID), or 404 as
    Salesforce answers for a field it cannot use. Standard fields (Email, Name, ...) cannot be one."""
    canonical = next((f for f in external_ids if f.lower() == name.lower()), None)
    if canonical is None:
        raise SalesforceRejected(
            404,
            salesforce_error(
                "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {name}"
            ),
        )
    return canonical


def _scalar(value: Any, field_name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise SalesforceRejected(
        400,
        salesforce_error(
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of string from START_OBJECT value for {field_name}",
        ),
    )


def no_such_column(spec: SObjectSpec, name: str) -> SalesforceRejected:
    return SalesforceRejected(
        400,
        salesforce_error("INVALID_FIELD", f"No such column '{name}' on sobject of type {spec.name}", []),
    )


def canonical_fields(
    spec: SObjectSpec, raw: Mapping[str, Any], custom: Collection[str] = ()
) -> dict[str, str | None]:
    """Field values keyed by canonical names. A field the sObject lacks (a custom field nobody created, a
    standard field of another object) fails the whole request, as the JSON is read before any record is:
    400 `INVALID_FIELD` "No such column 'X' on sobject of type Y"."""
    fields: dict[str, str | None] = {}
    for name, value in raw.items():
        if name == "attributes":
            continue
        if name == "Id":
            fields["Id"] = _scalar(value, name)
            continue
        canonical = spec.canonical(name, custom)
        if canonical is None:
            raise no_such_column(spec, name)
        fields[canonical] = _scalar(value, name)
    return fields


def _email_like(field_name: str) -> bool:
    return "email" in field_name.lower()


def field_problems(spec: SObjectSpec, fields: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """Per-record errors that do not depend on stored data: ids in the body, e-mail formats, references."""
    problems: list[dict[str, Any]] = []
    record_id = fields.get("Id")
    if record_id is not None:
        if not is_valid_salesforce_id(record_id):
            problems.append(
                salesforce_item_error("MALFORMED_ID", f"Id: id value of incorrect type: {record_id}", ["Id"])
            )
        else:
            problems.append(
                salesforce_item_error(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    "Unable to create/update fields: Id. Please check the security settings of this field "
                    "and "
                    "verify that it is read/write for your profile or permission set.",
                    ["Id"],
                )
            )
    for name, value in fields.items():
        if value and _email_like(name) and not is_valid_email(value):
            problems.append(
                salesforce_item_error(
                    "INVALID_EMAIL_ADDRESS", f"{name}: invalid email address: {value}", [name]
                )
            )
        if value and name in spec.references and not is_valid_salesforce_id(value):
            problems.append(
                salesforce_item_error("MALFORMED_ID", f"{name}: id value of incorrect type: {value}", [name])
            )
    return problems


def required_missing(spec: SObjectSpec, merged: Mapping[str, str]) -> dict[str, Any] | None:
    missing = [f for f in spec.required_on_create if not merged.get(f)]
    if not missing:
        return None
    return salesforce_item_error(
        "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing
    )


@dataclass(frozen=True)
class SfRecordInput:
    index: int
    ext_value: str
    identity: str
    fields: dict[str, str | None]


def parse_collection_upsert(
    body: Any, spec: SObjectSpec, ext_field: str, limit: int, custom: Collection[str] = ()
) -> tuple[bool, list[SfRecordInput], dict[int, list[dict[str, Any]]]]:
    """(allOrNone, records that may be applied, per-index errors of records that fail on their own)."""
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise SalesforceRejected(
            400, salesforce_error("JSON_PARSER_ERROR", "Expected an object with a 'records' array")
        )
    all_or_none = body.get("allOrNone", False)
    if not isinstance(all_or_none, bool):
        raise SalesforceRejected(
            400, salesforce_error("JSON_PARSER_ERROR", "allOrNone must be true or false")
        )
    records = body["records"]
    if len(records) > limit:
        raise SalesforceRejected(
            400,
            salesforce_error(
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {limit} records into this call",
            ),
        )
    parsed: list[SfRecordInput] = []
    errors: dict[int, list[dict[str, Any]]] = {}
    by_identity: dict[str, list[int]] = {}
    for index, raw in enumerate(records):
        attributes = raw.get("attributes") if isinstance(raw, dict) else None
        if not isinstance(attributes, dict) or not attributes.get("type"):
            raise SalesforceRejected(
                400, salesforce_error("INVALID_TYPE", "Must send a concrete entity type.")
            )
        if attributes["type"] != spec.name:
            raise SalesforceRejected(
                400,
                salesforce_error(
                    "INVALID_TYPE",
                    f"This request accepts records of type {spec.name} only, got {attributes['type']}",
                ),
            )
        assert isinstance(raw, dict)
        fields = canonical_fields(spec, raw, custom)
        problems = field_problems(spec, fields)
        ext_value = fields.get(ext_field)
        if not ext_value:
            problems.insert(
                0, salesforce_item_error("MISSING_ARGUMENT", f"{ext_field} not specified", [ext_field])
            )
        if problems:
            errors[index] = problems
            continue
        assert ext_value is not None
        identity = ext_value.strip().lower()
        by_identity.setdefault(identity, []).append(index)
        parsed.append(SfRecordInput(index, ext_value, identity, fields))
    duplicated = {identity for identity, indexes in by_identity.items() if len(indexes) > 1}
    if duplicated:
        kept = []
        for record in parsed:
            if record.identity in duplicated:
                errors[record.index] = [
                    salesforce_item_error(
                        "DUPLICATE_EXTERNAL_ID",
                        f"Duplicate external id specified: {record.ext_value}",
                        [ext_field],
                    )
                ]
            else:
                kept.append(record)
        parsed = kept
    return all_or_none, parsed, errors


def upsert_success(record_id: str, created: bool) -> dict[str, Any]:
    return {"id": record_id, "success": True, "errors": [], "created": created}


def upsert_failure(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"success": False, "errors": errors}


def record_json(obj: StoredObject, version: str) -> dict[str, Any]:
    return {
        "attributes": {
            "type": obj.object_type,
            "url": f"/services/data/{version}/sobjects/{obj.object_type}/{obj.object_id}",
        },
        "Id": obj.object_id,
        **obj.properties,
        "CreatedDate": sf_datetime(obj.created_at),
        "LastModifiedDate": sf_datetime(obj.updated_at),
    }
