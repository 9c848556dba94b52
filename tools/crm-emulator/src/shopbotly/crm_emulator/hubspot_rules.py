"""HubSpot CRM request rules (every API version): what a batch or object request must look like, and
what comes back.

Whole-request problems raise `RequestRejected` (HTTP 400, VALIDATION_ERROR); per-record problems become
entries of the multi-status `errors` list while the other records are applied.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shopbotly.crm_emulator.domain import (
    StoredObject,
    is_valid_email,
    iso_ms,
    normalize_email,
    parse_timestamp,
    split_multi,
)
from shopbotly.crm_emulator.hubspot_properties import PropertyRegistry
from shopbotly.crm_emulator.shapes import hubspot_error

__all__ = [
    "CONTACT_PROPERTIES",
    "NOTE_TO_CONTACT",
    "PIPELINES",
    "TICKET_TO_CONTACT",
    "ContactInput",
    "EngagementInput",
    "EngagementUpsertInput",
    "PropertySchema",
    "RequestRejected",
    "batch_response",
    "missing_required",
    "object_json",
    "parse_batch_read",
    "parse_batch_upsert",
    "parse_contact_create",
    "parse_engagement",
    "parse_engagement_upsert",
    "parse_ticket_update",
    "record_error",
    "require_properties",
]

# HubSpot-defined association type ids (note → contact, ticket → contact).
NOTE_TO_CONTACT = 202
TICKET_TO_CONTACT = 16
# HubSpot's object type ids, as its error messages name the object.
OBJECT_TYPE_IDS: Mapping[str, str] = {"contacts": "0-1", "tickets": "0-5", "notes": "0-46"}

CONTACT_PROPERTIES = frozenset(
    {
        "email",
        "firstname",
        "lastname",
        "phone",
        "mobilephone",
        "fax",
        "company",
        "website",
        "jobtitle",
        "industry",
        "address",
        "city",
        "state",
        "zip",
        "country",
        "lifecyclestage",
        "hs_lead_status",
        "hubspot_owner_id",
        "message",
        "salutation",
        "date_of_birth",
        "hs_language",
        "annualrevenue",
        "numemployees",
        "twitterhandle",
        "hs_whatsapp_phone_number",
        "hs_timezone",
    }
)
TICKET_PROPERTIES = frozenset(
    {
        "subject",
        "content",
        "hs_pipeline",
        "hs_pipeline_stage",
        "hs_ticket_priority",
        "hs_ticket_category",
        "hubspot_owner_id",
        "source_type",
        "closed_date",
        "last_reply_date",
        "hs_resolution",
    }
)
NOTE_PROPERTIES = frozenset({"hs_timestamp", "hs_note_body", "hubspot_owner_id", "hs_attachment_ids"})
READ_ONLY = frozenset(
    {"hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate", "hs_createdate"}
)
# The default support pipeline of a HubSpot account: pipeline "0", stages "1".."4".
PIPELINES: Mapping[str, Mapping[str, str]] = {
    "0": {"1": "New", "2": "Waiting on contact", "3": "Waiting on us", "4": "Closed"}
}
CLOSED_STAGES = frozenset({("0", "4")})
PRIORITIES = frozenset({"LOW", "MEDIUM", "HIGH", "URGENT"})


class RequestRejected(Exception):
    """The whole request is refused; `body` is the HubSpot error object."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body


def _invalid(message: str, **extra: Any) -> RequestRejected:
    return RequestRejected(400, hubspot_error(message, "VALIDATION_ERROR", **extra))


@dataclass(frozen=True)
class PropertySchema:
    """Which contact properties exist: `known`, those of the registry (standard and created through the
    Properties API), and names matching `custom_patterns` (a portal pre-provisioned without definitions).
    Unknown ones fail the record (PROPERTY_DOESNT_EXIST) when strict."""

    known: frozenset[str]
    custom_patterns: tuple[str, ...] = ("shopbotly_*",)
    strict: bool = True
    registry: PropertyRegistry | None = None

    def exists(self, name: str) -> bool:
        if not self.strict or name in self.known:
            return True
        if self.registry is not None and self.registry.exists("contacts", name):
            return True
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.custom_patterns)

    def value_problem(self, name: str, value: str | None) -> dict[str, Any] | None:
        return self.registry.value_problem("contacts", name, value) if self.registry is not None else None


def _coerce(name: str, value: Any, where: str) -> str | None:
    """HubSpot stores every property as a string; objects and arrays fail JSON deserialization."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    raise _invalid(
        f"Invalid input JSON on {where}: Cannot deserialize value of type `java.lang.String` from "
        f"{type(value).__name__} value for property '{name}'"
    )


def _properties(raw: Any, where: str) -> dict[str, str | None]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _invalid(f"Invalid input JSON on {where}: 'properties' must be an object")
    return {str(k): _coerce(str(k), v, where) for k, v in raw.items()}


def _property_problems(properties: Mapping[str, str | None], schema: PropertySchema) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    for name in properties:
        if name in READ_ONLY:
            problems.append(
                {
                    "isValid": False,
                    "message": f'"{name}" is a read only property; its value cannot be set.',
                    "error": "READ_ONLY_VALUE",
                    "name": name,
                }
            )
        elif not schema.exists(name):
            problems.append(
                {
                    "isValid": False,
                    "message": f'Property "{name}" does not exist',
                    "error": "PROPERTY_DOESNT_EXIST",
                    "name": name,
                }
            )
        elif (invalid := schema.value_problem(name, properties[name])) is not None:
            problems.append(invalid)
    return problems


def record_error(raw_id: str, problems: Sequence[dict[str, Any]], trace_id: str | None) -> dict[str, Any]:
    body = hubspot_error(
        "Property values were not valid: " + json.dumps(list(problems), separators=(",", ":")),
        "VALIDATION_ERROR",
        context={"ids": [raw_id]},
        errors=[{"message": p["message"], "code": p["error"], "in": p["name"]} for p in problems],
    )
    del body["correlationId"]  # per-record errors carry no correlation id of their own
    if trace_id is not None:
        body["objectWriteTraceId"] = trace_id
    return body


@dataclass(frozen=True)
class ContactInput:
    """One valid input of a batch upsert: `id` is the normalized e-mail, the record's identity."""

    index: int
    id: str
    raw_id: str
    properties: dict[str, str | None]
    trace_id: str | None


def _check_batch_size(inputs: Any, limit: int) -> list[Any]:
    if not isinstance(inputs, list):
        raise _invalid("Invalid input JSON: 'inputs' must be an array")
    if len(inputs) > limit:
        raise _invalid(
            f"The maximum number of inputs supported in a batch request is {limit}. "
            "Please reduce the number of items and try again"
        )
    return inputs


def parse_batch_upsert(
    body: Any, schema: PropertySchema, limit: int
) -> tuple[list[ContactInput], list[dict[str, Any]]]:
    """Valid inputs to apply, and the multi-status errors of the records that fail on their own."""
    if not isinstance(body, dict):
        raise _invalid("Invalid input JSON: expected an object with 'inputs'")
    inputs = _check_batch_size(body.get("inputs"), limit)
    valid: list[ContactInput] = []
    errors: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    duplicates: list[str] = []
    for index, item in enumerate(inputs):
        where = f"inputs[{index}]"
        if not isinstance(item, dict):
            raise _invalid(f"Invalid input JSON on {where}: expected an object")
        id_property = item.get("idProperty")
        if id_property != "email":
            # Contacts are unique by e-mail only (and by record id, which upsert does not accept).
            raise _invalid(
                f"Unable to perform update/upsert by non-unique 0-1 property: {id_property!r}; "
                "use idProperty 'email'"
            )
        raw_id = item.get("id")
        if not isinstance(raw_id, str) or not raw_id.strip():
            raise _invalid(f"Invalid input JSON on {where}: 'id' must be a non-empty string")
        properties = _properties(item.get("properties"), where)
        trace = item.get("objectWriteTraceId")
        trace_id = str(trace) if trace is not None else None
        identity = normalize_email(raw_id)
        if identity in seen:
            duplicates.append(raw_id)
        seen[identity] = raw_id
        problems = _property_problems(properties, schema)
        if not is_valid_email(raw_id):
            problems.insert(
                0,
                {
                    "isValid": False,
                    "message": f"Email address {raw_id} is invalid",
                    "error": "INVALID_EMAIL",
                    "name": "email",
                },
            )
        email = properties.get("email")
        if email is not None and normalize_email(email) != identity:
            problems.append(
                {
                    "isValid": False,
                    "message": "The email property must equal the id when idProperty is email",
                    "error": "INVALID_EMAIL",
                    "name": "email",
                }
            )
        if problems:
            errors.append(record_error(raw_id, problems, trace_id))
            continue
        properties["email"] = identity
        valid.append(ContactInput(index, identity, raw_id, properties, trace_id))
    if duplicates:
        raise _invalid(f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique")
    return valid, errors


def parse_batch_read(body: Any, limit: int) -> tuple[str, list[str], list[str] | None]:
    """(idProperty, ids, properties to return or None for the defaults)."""
    if not isinstance(body, dict):
        raise _invalid("Invalid input JSON: expected an object with 'inputs'")
    inputs = _check_batch_size(body.get("inputs"), limit)
    id_property = body.get("idProperty") or "hs_object_id"
    if id_property not in ("email", "hs_object_id"):
        raise _invalid(f"Unable to perform read by non-unique 0-1 property: {id_property!r}")
    ids = []
    for index, item in enumerate(inputs):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str | int):
            raise _invalid(f"Invalid input JSON on inputs[{index}]: 'id' is required")
        ids.append(str(item["id"]))
    props = body.get("properties")
    if props is not None and (not isinstance(props, list) or not all(isinstance(p, str) for p in props)):
        raise _invalid("Invalid input JSON: 'properties' must be an array of property names")
    return id_property, ids, props


def parse_contact_create(body: Any, schema: PropertySchema) -> dict[str, str | None]:
    if not isinstance(body, dict):
        raise _invalid("Invalid input JSON: expected an object with 'properties'")
    properties = _properties(body.get("properties"), "properties")
    problems = _property_problems(properties, schema)
    email = properties.get("email")
    if email is not None and not is_valid_email(email):
        problems.insert(
            0,
            {
                "isValid": False,
                "message": f"Email address {email} is invalid",
                "error": "INVALID_EMAIL",
                "name": "email",
            },
        )
    if problems:
        raise _invalid("Property values were not valid: " + json.dumps(problems, separators=(",", ":")))
    if email is not None:
        properties["email"] = normalize_email(email)
    return properties


@dataclass(frozen=True)
class EngagementInput:
    """A note or ticket to create, with the contact record ids it is associated to."""

    properties: dict[str, str]
    contact_ids: list[str]


def _associations(raw: Any, type_id: int, object_type: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid("Invalid input JSON: 'associations' must be an array")
    ids: list[str] = []
    for index, assoc in enumerate(raw):
        to = assoc.get("to") if isinstance(assoc, dict) else None
        types = assoc.get("types") if isinstance(assoc, dict) else None
        if not isinstance(to, dict) or not isinstance(to.get("id"), str | int) or not isinstance(types, list):
            raise _invalid(
                f"Invalid input JSON on associations[{index}]: expected {{to: {{id}}, types: [...]}}"
            )
        for spec in types:
            if (
                not isinstance(spec, dict)
                or spec.get("associationCategory") != "HUBSPOT_DEFINED"
                or (spec.get("associationTypeId") != type_id)
            ):
                raise _invalid(
                    f"associations[{index}]: {object_type} to contact uses associationCategory "
                    "HUBSPOT_DEFINED "
                    f"and associationTypeId {type_id}, got {spec!r}"
                )
        ids.append(str(to["id"]))
    return ids


def missing_required(properties: Mapping[str, str | None], names: Iterable[str]) -> list[dict[str, Any]]:
    """REQUIRED_FIELD problems of the `names` a record's properties leave out (or empty)."""
    return [
        {"isValid": False, "message": f"{n} is required", "error": "REQUIRED_FIELD", "name": n}
        for n in names
        if not properties.get(n)
    ]


def require_properties(properties: Mapping[str, str | None], names: Iterable[str]) -> None:
    """The whole request refused (400) when the record lacks one of `names`."""
    problems = missing_required(properties, names)
    if problems:
        raise _invalid("Property values were not valid: " + json.dumps(problems, separators=(",", ":")))


def _check_ticket_values(
    properties: Mapping[str, str | None], current: Mapping[str, str] | None = None
) -> None:
    pipeline = properties.get("hs_pipeline") or (current or {}).get("hs_pipeline")
    stage = properties.get("hs_pipeline_stage")
    if pipeline is not None and pipeline not in PIPELINES:
        raise _invalid(f"{pipeline} is not a valid pipeline ID. Valid pipelines: {sorted(PIPELINES)}")
    if stage is not None and pipeline is not None and stage not in PIPELINES[pipeline]:
        raise _invalid(
            f"{stage} is not a valid pipeline stage ID for pipeline {pipeline}: {sorted(PIPELINES[pipeline])}"
        )
    priority = properties.get("hs_ticket_priority")
    if priority and priority not in PRIORITIES:
        raise _invalid(f"{priority} was not one of the allowed options: {sorted(PRIORITIES)}")


def parse_engagement(
    object_type: str, body: Any, extra_ticket_properties: Iterable[str] = ()
) -> EngagementInput:
    """A note (`hs_timestamp` required) or a ticket (subject, pipeline and stage required)."""
    if not isinstance(body, dict):
        raise _invalid("Invalid input JSON: expected an object with 'properties'")
    raw = _properties(body.get("properties"), "properties")
    if object_type == "notes":
        known, type_id = NOTE_PROPERTIES, NOTE_TO_CONTACT
        require_properties(raw, ["hs_timestamp"])
        ts = parse_timestamp(raw["hs_timestamp"] or "")
        if ts is None:
            raise _invalid(
                f"hs_timestamp must be epoch milliseconds or ISO 8601, got {raw['hs_timestamp']!r}"
            )
        raw["hs_timestamp"] = iso_ms(ts)
    else:
        known, type_id = TICKET_PROPERTIES | frozenset(extra_ticket_properties), TICKET_TO_CONTACT
        require_properties(raw, ["subject", "hs_pipeline", "hs_pipeline_stage"])
        _check_ticket_values(raw)
    unknown = sorted(n for n in raw if n not in known)
    if unknown or any(n in READ_ONLY for n in raw):
        problems = [
            {
                "isValid": False,
                "message": f'Property "{n}" does not exist',
                "error": "PROPERTY_DOESNT_EXIST",
                "name": n,
            }
            for n in unknown
        ]
        raise _invalid("Property values were not valid: " + json.dumps(problems, separators=(",", ":")))
    contact_ids = _associations(body.get("associations"), type_id, object_type.rstrip("s"))
    return EngagementInput({k: v for k, v in raw.items() if v is not None}, contact_ids)


@dataclass(frozen=True)
class EngagementUpsertInput:
    """One input of a note/ticket batch upsert: `id` is the value of the unique `id_property`."""

    index: int
    id_property: str
    id: str
    properties: dict[str, str]
    trace_id: str | None


def parse_engagement_upsert(
    object_type: str,
    body: Any,
    unique: Iterable[str],
    limit: int,
    portal_id: int,
    extra_ticket_properties: Iterable[str] = (),
) -> list[EngagementUpsertInput]:
    """The inputs of `POST /crm/v3/objects/{notes|tickets}/batch/upsert`, keyed by a unique property.

    HubSpot refuses the whole request when `idProperty` is not a unique-valued property of the object (also
    when it does not exist at all). Upsert inputs carry no associations (associate afterwards, v4). Each input
    must carry what a create needs (the emulator does not tell creates from updates before the lookup).
    """
    if not isinstance(body, dict):
        raise _invalid("Invalid input JSON: expected an object with 'inputs'")
    inputs = _check_batch_size(body.get("inputs"), limit)
    unique_names = frozenset(unique)
    parsed: list[EngagementUpsertInput] = []
    seen: set[tuple[str, str]] = set()
    duplicates: list[str] = []
    for index, item in enumerate(inputs):
        where = f"inputs[{index}]"
        if not isinstance(item, dict):
            raise _invalid(f"Invalid input JSON on {where}: expected an object")
        id_property = item.get("idProperty")
        if not isinstance(id_property, str) or id_property not in unique_names:
            raise _invalid(
                f"Unable to perform update/upsert by non-unique {OBJECT_TYPE_IDS[object_type]} property "
                f"{id_property} in portal ID {portal_id}"
            )
        if "associations" in item:
            raise _invalid(
                f'Invalid input JSON on {where}: Unrecognized field "associations" (upsert inputs cannot '
                "carry associations)"
            )
        raw_id = item.get("id")
        if not isinstance(raw_id, str) or not raw_id.strip():
            raise _invalid(f"Invalid input JSON on {where}: 'id' must be a non-empty string")
        properties = _properties(item.get("properties"), where)
        own = properties.pop(id_property, None)
        if own is not None and own != raw_id:
            raise _invalid(f"{where}: property {id_property} must equal the id when it is the idProperty")
        engagement = parse_engagement(object_type, {"properties": properties}, extra_ticket_properties)
        if (id_property, raw_id) in seen:
            duplicates.append(raw_id)
        seen.add((id_property, raw_id))
        trace = item.get("objectWriteTraceId")
        parsed.append(
            EngagementUpsertInput(
                index,
                id_property,
                raw_id,
                {**engagement.properties, id_property: raw_id},
                str(trace) if trace is not None else None,
            )
        )
    if duplicates:
        raise _invalid(f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique")
    return parsed


def parse_ticket_update(
    body: Any, current: Mapping[str, str], extra_ticket_properties: Iterable[str] = ()
) -> dict[str, str | None]:
    if not isinstance(body, dict):
        raise _invalid("Invalid input JSON: expected an object with 'properties'")
    raw = _properties(body.get("properties"), "properties")
    known = TICKET_PROPERTIES | frozenset(extra_ticket_properties)
    unknown = sorted(n for n in raw if n not in known)
    if unknown:
        problems = [
            {
                "isValid": False,
                "message": f'Property "{n}" does not exist',
                "error": "PROPERTY_DOESNT_EXIST",
                "name": n,
            }
            for n in unknown
        ]
        raise _invalid("Property values were not valid: " + json.dumps(problems, separators=(",", ":")))
    _check_ticket_values(raw, current)
    return raw


def is_closed(properties: Mapping[str, str]) -> bool:
    return (properties.get("hs_pipeline", ""), properties.get("hs_pipeline_stage", "")) in CLOSED_STAGES


def object_json(
    obj: StoredObject,
    requested: Sequence[str] | None = None,
    *,
    new: bool | None = None,
    trace_id: str | None = None,
) -> dict[str, Any]:
    """A record as HubSpot returns it: string properties plus hs_object_id, createdate, lastmodifieddate."""
    props: dict[str, str | None] = {
        **obj.properties,
        "hs_object_id": obj.object_id,
        "createdate": iso_ms(obj.created_at),
        "lastmodifieddate": iso_ms(obj.updated_at),
    }
    if requested is not None:
        always = ("hs_object_id", "createdate", "lastmodifieddate")
        props = {name: props.get(name) for name in (*requested, *always)}
    out: dict[str, Any] = {
        "id": obj.object_id,
        "properties": props,
        "createdAt": iso_ms(obj.created_at),
        "updatedAt": iso_ms(obj.updated_at),
        "archived": False,
    }
    if new is not None:
        out["new"] = new
    if trace_id is not None:
        out["objectWriteTraceId"] = trace_id
    return out


def batch_response(
    results: list[dict[str, Any]], errors: list[dict[str, Any]], started: float, completed: float
) -> tuple[int, dict[str, Any]]:
    """200 when every record succeeded, else 207 multi-status with `errors` and `numErrors`."""
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": iso_ms(started),
        "completedAt": iso_ms(completed),
    }
    if not errors:
        return 200, body
    body["numErrors"] = len(errors)
    body["errors"] = errors
    return 207, body


def tags_of(properties: Mapping[str, str], tag_property: str) -> list[str]:
    return sorted(split_multi(properties.get(tag_property)))
