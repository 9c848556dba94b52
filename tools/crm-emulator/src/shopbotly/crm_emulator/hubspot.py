"""HubSpot CRM routes: contacts (batch upsert, batch read, create, update, get), notes and tickets (create,
batch upsert by a unique property), v4 default associations, and the Properties API (list, get, create)."""

from __future__ import annotations

import fnmatch
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from shopbotly.crm_emulator.deps import RuntimeDep, read_json
from shopbotly.crm_emulator.domain import StoredObject, System, iso_ms, normalize_email
from shopbotly.crm_emulator.hubspot_properties import OBJECT_TYPES
from shopbotly.crm_emulator.hubspot_rules import (
    NOTE_TO_CONTACT,
    TICKET_TO_CONTACT,
    RequestRejected,
    batch_response,
    object_json,
    parse_batch_read,
    parse_batch_upsert,
    parse_contact_create,
    parse_engagement,
    parse_engagement_upsert,
    parse_ticket_update,
)
from shopbotly.crm_emulator.runtime import Runtime
from shopbotly.crm_emulator.shapes import hubspot_error

__all__ = ["associations_router", "properties_router", "router"]

router = APIRouter(prefix="/crm/v3/objects", tags=["hubspot"])
associations_router = APIRouter(prefix="/crm/v4/objects", tags=["hubspot"])
properties_router = APIRouter(prefix="/crm/v3/properties", tags=["hubspot"])

_DEFAULT_CONTACT_PROPERTIES = ("email", "firstname", "lastname")
_ASSOCIATION_LABEL = {"tickets": "ticket_to_contact", "notes": "note_to_contact"}


async def _body(request: Request) -> Any:
    body, error = await read_json(request)
    if error is not None:
        raise RequestRejected(400, hubspot_error(f"Invalid input JSON: {error}", "VALIDATION_ERROR"))
    return body


def _object_type(name: str) -> str:
    if name not in ("contacts", "tickets", "notes"):
        raise RequestRejected(
            400, hubspot_error(f"Unable to infer object type from: {name}", "VALIDATION_ERROR")
        )
    return name


def _custom(rt: Runtime, object_type: str) -> list[str]:
    """Custom properties records of `object_type` accept besides the standard ones: those created, and the
    reply property where the portal is pre-provisioned (it matches `hubspot_custom_properties`)."""
    names = set(rt.hubspot_properties.custom_names(object_type))
    reply = rt.settings.hubspot_reply_property
    if object_type == "tickets" and any(
        fnmatch.fnmatchcase(reply, p) for p in rt.settings.hubspot_custom_properties
    ):
        names.add(reply)
    return sorted(names)


def _not_found() -> JSONResponse:
    return JSONResponse(hubspot_error("resource not found", "OBJECT_NOT_FOUND"), 404)


def _find(rt: Runtime, object_type: str, object_id: str, id_property: str | None) -> StoredObject | None:
    if object_type == "contacts" and id_property == "email":
        found = rt.store.by_identity(System.HUBSPOT, "contacts", normalize_email(object_id))
        return found[0] if found else None
    return rt.store.get(System.HUBSPOT, object_type, object_id)


@router.post("/contacts/batch/upsert")
async def batch_upsert_contacts(request: Request, rt: RuntimeDep) -> JSONResponse:
    body = await _body(request)
    started = rt.clock()
    inputs, errors = parse_batch_upsert(body, rt.hubspot_schema, rt.settings.hubspot_batch_limit)
    outcomes = await run_in_threadpool(rt.store.hubspot_upsert, inputs, started)
    results = [object_json(o.object, new=o.created, trace_id=o.input.trace_id) for o in outcomes]
    for o in outcomes:
        rt.webhooks.emit("contact", o.object.object_id, created=o.created, changes=o.changes)
    status, payload = batch_response(results, errors, started, rt.clock())
    return JSONResponse(payload, status)


@router.post("/contacts/batch/read")
async def batch_read_contacts(request: Request, rt: RuntimeDep) -> JSONResponse:
    body = await _body(request)
    started = rt.clock()
    id_property, ids, properties = parse_batch_read(body, rt.settings.hubspot_batch_limit)

    def read() -> tuple[list[StoredObject], list[str]]:
        found, missing = [], []
        for object_id in ids:
            obj = _find(rt, "contacts", object_id, id_property)
            if obj is None:
                missing.append(object_id)
            else:
                found.append(obj)
        return found, missing

    found, missing = await run_in_threadpool(read)
    results = [object_json(o, properties or _DEFAULT_CONTACT_PROPERTIES) for o in found]
    errors = []
    if missing:
        error = hubspot_error(
            "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid.",
            "OBJECT_NOT_FOUND",
            context={"ids": missing},
            errors=[],
        )
        del error["correlationId"]
        errors.append(error)
    status, payload = batch_response(results, errors, started, rt.clock())
    return JSONResponse(payload, status)


@router.get("/{object_type}/{object_id}")
async def get_object(
    object_type: str,
    object_id: str,
    rt: RuntimeDep,
    idProperty: str | None = None,
    properties: str | None = None,
    associations: str | None = None,
) -> JSONResponse:
    kind = _object_type(object_type)
    obj = await run_in_threadpool(_find, rt, kind, object_id, idProperty)
    if obj is None:
        return _not_found()
    requested = [p for p in properties.split(",") if p] if properties else None
    if requested is None and kind == "contacts":
        requested = list(_DEFAULT_CONTACT_PROPERTIES)
    out = object_json(obj, requested)
    if associations and "contacts" in associations.split(",") and kind in _ASSOCIATION_LABEL:
        label = _ASSOCIATION_LABEL[kind]
        out["associations"] = {"contacts": {"results": [{"id": i, "type": label} for i in obj.associations]}}
    return JSONResponse(out)


@router.post("/contacts", status_code=201)
async def create_contact(request: Request, rt: RuntimeDep) -> JSONResponse:
    properties = parse_contact_create(await _body(request), rt.hubspot_schema)
    created, existing = await run_in_threadpool(rt.store.hubspot_create_contact, properties, rt.clock())
    if existing is not None:
        return JSONResponse(
            hubspot_error(f"Contact already exists. Existing ID: {existing.object_id}", "CONFLICT"), 409
        )
    assert created is not None
    rt.webhooks.emit("contact", created.object_id, created=True)
    return JSONResponse(object_json(created), 201)


@router.patch("/contacts/{object_id}")
async def update_contact(
    object_id: str,
    request: Request,
    rt: RuntimeDep,
    idProperty: str | None = None,
) -> JSONResponse:
    incoming = parse_contact_create(await _body(request), rt.hubspot_schema)
    obj = await run_in_threadpool(_find, rt, "contacts", object_id, idProperty)
    if obj is None:
        return _not_found()
    if incoming.get("email") and incoming["email"] != obj.identity:
        raise RequestRejected(
            400,
            hubspot_error("Changing a contact's e-mail is not supported by the emulator", "VALIDATION_ERROR"),
        )
    result = await run_in_threadpool(
        rt.store.update_object, System.HUBSPOT, "contacts", obj.object_id, incoming, rt.clock()
    )
    if result is None:
        return _not_found()
    updated, changes = result
    rt.webhooks.emit("contact", updated.object_id, changes=changes)
    return JSONResponse(object_json(updated))


def _check_parents(missing: list[str]) -> None:
    if missing:
        raise RequestRejected(
            400,
            hubspot_error(
                f"Could not find CONTACT objects with ids {missing} to associate", "VALIDATION_ERROR"
            ),
        )


@router.post("/{object_type}", status_code=201)
async def create_engagement(object_type: str, request: Request, rt: RuntimeDep) -> JSONResponse:
    # `contacts` never reaches here: POST /contacts is routed to create_contact, declared first.
    kind = _object_type(object_type)
    item = parse_engagement(kind, await _body(request), _custom(rt, kind))
    created, missing = await run_in_threadpool(
        rt.store.create_engagements,
        System.HUBSPOT,
        kind,
        "contacts",
        [(item.properties, item.contact_ids)],
        rt.clock(),
    )
    _check_parents(missing)
    if kind == "tickets":
        rt.webhooks.emit("ticket", created[0].object_id, created=True)
    return JSONResponse(object_json(created[0]), 201)


@router.post("/{object_type}/batch/create", status_code=201)
async def batch_create_engagements(object_type: str, request: Request, rt: RuntimeDep) -> JSONResponse:
    kind = _object_type(object_type)
    if kind == "contacts":
        raise RequestRejected(
            400, hubspot_error("the emulator creates contacts by batch upsert only", "VALIDATION_ERROR")
        )
    body = await _body(request)
    started = rt.clock()
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list):
        raise RequestRejected(
            400, hubspot_error("Invalid input JSON: 'inputs' must be an array", "VALIDATION_ERROR")
        )
    limit = rt.settings.hubspot_batch_limit
    if len(inputs) > limit:
        raise RequestRejected(
            400,
            hubspot_error(
                f"The maximum number of inputs supported in a batch request is {limit}. "
                "Please reduce the number of items and try again",
                "VALIDATION_ERROR",
            ),
        )
    items = [parse_engagement(kind, i, _custom(rt, kind)) for i in inputs]
    created, missing = await run_in_threadpool(
        rt.store.create_engagements,
        System.HUBSPOT,
        kind,
        "contacts",
        [(i.properties, i.contact_ids) for i in items],
        started,
    )
    _check_parents(missing)
    if kind == "tickets":
        for obj in created:
            rt.webhooks.emit("ticket", obj.object_id, created=True)
    _, payload = batch_response([object_json(o) for o in created], [], started, rt.clock())
    return JSONResponse(payload, 201)


@router.post("/{object_type}/batch/upsert")
async def batch_upsert_engagements(object_type: str, request: Request, rt: RuntimeDep) -> JSONResponse:
    # `contacts` never reaches here: its batch upsert (by e-mail) is declared first.
    kind = _object_type(object_type)
    body = await _body(request)
    started = rt.clock()
    inputs = parse_engagement_upsert(
        kind,
        body,
        rt.hubspot_properties.unique_names(kind),
        rt.settings.hubspot_batch_limit,
        rt.settings.hubspot_portal_id,
        _custom(rt, kind),
    )
    outcomes = await run_in_threadpool(rt.store.hubspot_upsert_engagements, kind, inputs, started)
    if kind == "tickets":
        for obj, created, changes in outcomes:
            # As a create: a creation event only; an upsert that changed a ticket: its property changes.
            rt.webhooks.emit("ticket", obj.object_id, created=created, changes=() if created else changes)
    results = [
        object_json(obj, new=created, trace_id=item.trace_id)
        for item, (obj, created, _) in zip(inputs, outcomes, strict=True)
    ]
    status, payload = batch_response(results, [], started, rt.clock())
    return JSONResponse(payload, status)


_DEFAULT_ASSOCIATION = {("notes", "contacts"): NOTE_TO_CONTACT, ("tickets", "contacts"): TICKET_TO_CONTACT}


@associations_router.put("/{from_type}/{from_id}/associations/default/{to_type}/{to_id}")
async def associate_default(
    from_type: str, from_id: str, to_type: str, to_id: str, rt: RuntimeDep
) -> JSONResponse:
    """v4 default association: idempotent, a repeat of an existing association changes nothing."""
    type_id = _DEFAULT_ASSOCIATION.get((from_type, to_type))
    if type_id is None:
        raise RequestRejected(
            400,
            hubspot_error(
                f"The emulator associates notes and tickets to contacts only, not {from_type} to {to_type}",
                "VALIDATION_ERROR",
            ),
        )
    started = rt.clock()
    missing = await run_in_threadpool(rt.store.associate, System.HUBSPOT, from_type, from_id, to_type, to_id)
    if missing is not None:
        missing_id = from_id if missing == from_type else to_id
        return JSONResponse(
            hubspot_error(f"No {missing} object with id {missing_id}", "OBJECT_NOT_FOUND"), 404
        )
    result = {
        "from": {"id": from_id},
        "to": {"id": to_id},
        "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id},
    }
    status, payload = batch_response([result], [], started, rt.clock())
    return JSONResponse(payload, status)


def _property_object_type(name: str) -> str:
    """An object type name or id (`contacts` or `0-1`) as the name the emulator stores it under."""
    for type_name, type_id in OBJECT_TYPES.items():
        if name in (type_name, type_id):
            return type_name
    raise RequestRejected(400, hubspot_error(f"Unable to infer object type from: {name}", "VALIDATION_ERROR"))


@properties_router.get("/{object_type}")
async def list_properties(object_type: str, rt: RuntimeDep, archived: bool = False) -> JSONResponse:
    kind = _property_object_type(object_type)
    return JSONResponse({"results": [] if archived else rt.hubspot_properties.list(kind)})


@properties_router.get("/{object_type}/{property_name}")
async def get_property(object_type: str, property_name: str, rt: RuntimeDep) -> JSONResponse:
    kind = _property_object_type(object_type)
    prop = rt.hubspot_properties.get(kind, property_name)
    if prop is None:
        return JSONResponse(
            hubspot_error(
                f"Unable to find property {property_name} for object type {OBJECT_TYPES[kind]}",
                "OBJECT_NOT_FOUND",
            ),
            404,
        )
    return JSONResponse(prop)


@properties_router.post("/{object_type}", status_code=201)
async def create_property(object_type: str, request: Request, rt: RuntimeDep) -> JSONResponse:
    """A custom property; from then on records of the type accept it (and upsert by it when unique)."""
    kind = _property_object_type(object_type)
    body = await _body(request)
    if not isinstance(body, dict):
        raise RequestRejected(
            400, hubspot_error("Invalid input JSON: expected an object", "VALIDATION_ERROR")
        )
    name = body.get("name")
    if isinstance(name, str) and rt.hubspot_properties.exists(kind, name):
        return JSONResponse(
            hubspot_error(
                f"Property named '{name}' already exists.",
                "OBJECT_ALREADY_EXISTS",
                subCategory="PropertyValidationError.PROPERTY_EXISTS",
            ),
            409,
        )
    created = await run_in_threadpool(rt.hubspot_properties.create, kind, body, iso_ms(rt.clock()))
    if isinstance(created, str):
        raise RequestRejected(400, hubspot_error(created, "VALIDATION_ERROR"))
    return JSONResponse(created, 201)


@router.patch("/tickets/{ticket_id}")
async def update_ticket(ticket_id: str, request: Request, rt: RuntimeDep) -> JSONResponse:
    body = await _body(request)
    current = await run_in_threadpool(rt.store.get, System.HUBSPOT, "tickets", ticket_id)
    if current is None:
        return _not_found()
    incoming = parse_ticket_update(body, current.properties, _custom(rt, "tickets"))
    result = await run_in_threadpool(
        rt.store.update_object, System.HUBSPOT, "tickets", ticket_id, incoming, rt.clock()
    )
    if result is None:
        return _not_found()
    updated, changes = result
    rt.webhooks.emit("ticket", ticket_id, changes=changes)
    return JSONResponse(object_json(updated))
