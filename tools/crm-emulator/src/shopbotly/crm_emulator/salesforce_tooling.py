"""Salesforce Tooling API, the part that creates custom fields: `POST /services/data/vXX.X/tooling/sobjects/
CustomField` with `{"FullName": "Lead.Foo__c", "Metadata": {"label", "type", "length", "externalId", ...}}`.

A field created here is in the sObject's `describe` and accepted by writes from then on (the emulator does
not model field-level security: in a real org a new field is visible to a user only once a permission set
or profile grants it). Answers: 201 `{"id": "00N...", "success": true, "errors": [], "warnings": [],
"infos": []}`; refusals 400 in Salesforce's `[{message, errorCode, fields}]` shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from shopbotly.crm_emulator import salesforce_rules as sf
from shopbotly.crm_emulator.deps import RuntimeDep, read_json
from shopbotly.crm_emulator.domain import salesforce_id
from shopbotly.crm_emulator.salesforce_describe import custom_field
from shopbotly.crm_emulator.shapes import salesforce_error

__all__ = ["METADATA_TYPES", "field_from_metadata", "router"]

router = APIRouter(tags=["salesforce"])

# CustomField metadata `type` → the describe `type` of the field it makes.
METADATA_TYPES: Mapping[str, str] = {
    "Text": "string",
    "TextArea": "textarea",
    "LongTextArea": "textarea",
    "Email": "email",
    "Phone": "phone",
    "Url": "url",
    "Number": "double",
    "Checkbox": "boolean",
    "Date": "date",
    "DateTime": "datetime",
    "Picklist": "picklist",
    "MultiselectPicklist": "multipicklist",
}
_FULL_NAME = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\.([A-Za-z](?:[A-Za-z0-9]|_(?!_))*)__c$")


def _refused(code: str, message: str, fields: list[str] | None = None) -> sf.SalesforceRejected:
    return sf.SalesforceRejected(400, salesforce_error(code, message, fields or []))


def _picklist_values(metadata: Mapping[str, Any]) -> list[str]:
    value_set = metadata.get("valueSet")
    definition = value_set.get("valueSetDefinition") if isinstance(value_set, dict) else None
    values = definition.get("value") if isinstance(definition, dict) else None
    if not isinstance(values, list):
        return []
    return [str(v["fullName"]) for v in values if isinstance(v, dict) and v.get("fullName")]


def field_from_metadata(body: Any) -> tuple[str, dict[str, Any]]:
    """(sObject, describe field) of a CustomField create body, or SalesforceRejected saying what is wrong."""
    if not isinstance(body, dict):
        raise _refused("JSON_PARSER_ERROR", "Expected an object with FullName and Metadata")
    full_name = body.get("FullName")
    metadata = body.get("Metadata")
    if not isinstance(full_name, str) or not full_name:
        raise _refused("REQUIRED_FIELD_MISSING", "Required fields are missing: [FullName]", ["FullName"])
    if not isinstance(metadata, dict):
        raise _refused("REQUIRED_FIELD_MISSING", "Required fields are missing: [Metadata]", ["Metadata"])
    match = _FULL_NAME.match(full_name)
    if match is None:
        raise _refused(
            "FIELD_INTEGRITY_EXCEPTION",
            f"Invalid FullName {full_name!r}: use <SObject>.<Name>__c (letters, digits and single "
            "underscores, starting with a letter)",
            ["FullName"],
        )
    sobject, name = match.group(1), f"{match.group(2)}__c"
    if sobject not in sf.SOBJECTS:
        raise _refused("INVALID_TYPE", f"sObject type '{sobject}' is not supported.", ["FullName"])
    label = metadata.get("label")
    if not isinstance(label, str) or not label.strip():
        raise _refused("FIELD_INTEGRITY_EXCEPTION", "Field label: You must enter a value", ["label"])
    metadata_type = metadata.get("type")
    type_ = METADATA_TYPES.get(str(metadata_type))
    if type_ is None:
        raise _refused(
            "FIELD_INTEGRITY_EXCEPTION",
            f"Field type: bad value for restricted picklist field: {metadata_type}",
            ["type"],
        )
    length = metadata.get("length")
    if metadata_type in ("Text", "LongTextArea") and not (
        isinstance(length, int) and 1 <= length <= (255 if metadata_type == "Text" else 131_072)
    ):
        raise _refused(
            "FIELD_INTEGRITY_EXCEPTION",
            f"Length: must be between 1 and {255 if metadata_type == 'Text' else 131072}",
            ["length"],
        )
    picklist = _picklist_values(metadata)
    if type_ in ("picklist", "multipicklist") and not picklist:
        raise _refused(
            "FIELD_INTEGRITY_EXCEPTION", "Picklist values: You must enter at least one value", ["valueSet"]
        )
    external_id = metadata.get("externalId") is True
    if external_id and type_ not in ("string", "email", "double"):
        raise _refused(
            "FIELD_INTEGRITY_EXCEPTION",
            "External ID: only text, number and e-mail fields can be external ids",
            ["externalId"],
        )
    return sobject, custom_field(
        name, type_, external_id=external_id, unique=metadata.get("unique") is True, picklist=picklist
    ) | {"label": label.strip()}


@router.post("/services/data/{version}/tooling/sobjects/CustomField", status_code=201)
async def create_custom_field(version: str, request: Request, rt: RuntimeDep) -> JSONResponse:
    if sf.parse_version(version) is None:
        raise sf.SalesforceRejected(
            404, salesforce_error("NOT_FOUND", "The requested resource does not exist")
        )
    body, error = await read_json(request)
    if error is not None:
        raise _refused("JSON_PARSER_ERROR", error)
    sobject, described = field_from_metadata(body)
    name = str(described["name"])
    if rt.salesforce_fields.get(sobject, name) is not None:
        raise _refused(
            "DUPLICATE_DEVELOPER_NAME",
            f"There is already a field named {name.removesuffix('__c')} on {sobject}.",
            ["FullName"],
        )
    await run_in_threadpool(rt.salesforce_fields.create, sobject, described)
    field_id = salesforce_id("00N", rt.salesforce_fields.count())
    return JSONResponse({"id": field_id, "success": True, "errors": [], "warnings": [], "infos": []}, 201)
