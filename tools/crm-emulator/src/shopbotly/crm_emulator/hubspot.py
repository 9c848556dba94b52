"""HubSpot CRM routes: contacts (batch upsert, batch read, create, update, get), notes and tickets (create,
batch upsert by a unique property), default associations, and the Properties API (list, get, create).

Every route is served in both path families with the same behaviour and error shapes: the numbered one
(`/crm/v3/objects`, `/crm/v4/objects` for associations, `/crm/v3/properties`) and each date-based version
(`/crm/objects/{version}` for objects and associations, `/crm/properties/{version}`). A date the portal does
not serve answers 404. From 2026-09 on, writes that create a record must carry the properties the portal's
admin made required (`hubspot_required_properties`), as HubSpot enforces them from that version on.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from shopbotly.crm_emulator.deps import RuntimeDep, read_json
from shopbotly.crm_emulator.domain import StoredObject, System, iso_ms, normalize_email
from shopbotly.crm_emulator.hubspot_properties import OBJECT_TYPES
from shopbotly.crm_emulator.hubspot_rules import (
    NOTE_TO_CONTACT,
    TICKET_TO_CONTACT,
    ContactInput,
    RequestRejected,
    batch_response,
    missing_required,
    object_json,
    parse_batch_read,
    parse_batch_upsert,
    parse_contact_create,
    parse_engagement,
    parse_engagement_upsert,
    parse_ticket_update,
    record_error,
    require_properties,
)
from shopbotly.crm_emulator.runtime import Runtime
from shopbotly.crm_emulator.shapes import hubspot_error

__all__ = ["DATE_VERSIONS", "ENFORCES_REQUIRED_FROM", "associations_router", "properties_router", "router"]

# The date-based API versions HubSpot has released (served besides v3), and the first that enforces a
# portal's required properties on API writes.
DATE_VERSIONS = ("2026-03", "2026-09")
ENFORCES_REQUIRED_FROM = "2026-09"

_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Awaitable[JSONResponse]])


class _Family:
    """Routes served under a numbered prefix and, with the same endpoint, under the date-based one.

    Registered on one router with their full paths (not as nested routers), so that each request's route
    template names its family (`POST /crm/objects/{version}/contacts/batch/upsert`)."""

    def __init__(self, router: APIRouter, numbered: str, dated: str) -> None:
        self.router, self.numbered, self.dated = router, numbered, dated

    def _add(self, method: str, path: str, **kw: Any) -> Callable[[_Endpoint], _Endpoint]:
        def register(endpoint: _Endpoint) -> _Endpoint:
            self.router.add_api_route(self.numbered + path, endpoint, methods=[method], **kw)
            self.router.add_api_route(
                self.dated + path, endpoint, methods=[method], dependencies=[Depends(api_version)], **kw
            )
            return endpoint

        return register

    def get(self, path: str, **kw: Any) -> Callable[[_Endpoint], _Endpoint]:
        return self._add("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[_Endpoint], _Endpoint]:
        return self._add("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[_Endpoint], _Endpoint]:
        return self._add("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[_Endpoint], _Endpoint]:
        return self._add("PATCH", path, **kw)


router = APIRouter(tags=["hubspot"])
associations_router = APIRouter(tags=["hubspot"])
properties_router = APIRouter(tags=["hubspot"])
_objects = _Family(router, "/crm/v3/objects", "/crm/objects/{version}")
_associations = _Family(associations_router, "/crm/v4/objects", "/crm/objects/{version}")
_properties = _Family(properties_router, "/crm/v3/properties", "/crm/properties/{version}")


def api_version(request: Request) -> str:
    """The API version of the request's path: `v3` for the numbered family, else the served date."""
    version = request.path_params.get("version")
    if version is None:
        return "v3"
    if version not in DATE_VERSIONS:
        raise RequestRejected(404, hubspot_error("resource not found", "OBJECT_NOT_FOUND"))
    return str(version)


ApiVersion = Annotated[str, Depends(api_version)]


def _required(rt: Runtime, object_type: str, version: str) -> list[str]:
    """Properties a create must carry on this version (none before 2026-09: HubSpot ignored the rules)."""
    if version == "v3" or version < ENFORCES_REQUIRED_FROM:
        return []
    return rt.settings.hubspot_required_properties.get(object_type, [])


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


def _without_incomplete_creates(
    rt: Runtime, inputs: list[ContactInput], required: list[str]
) -> tuple[list[ContactInput], list[dict[str, Any]]]:
    """Inputs that would create a contact without a required property fail alone (updates pass)."""
    kept, refused = [], []
    for item in inputs:
        problems = missing_required(item.properties, required)
        if problems and not rt.store.by_identity(System.HUBSPOT, "contacts", item.id):
            refused.append(record_error(item.raw_id, problems, item.trace_id))
        else:
            kept.append(item)
    return kept, refused


@_objects.post("/contacts/batch/upsert")
async def batch_upsert_contacts(request: Request, rt: RuntimeDep, version: ApiVersion) -> JSONResponse:
    body = await _body(request)
    started = rt.clock()
    inputs, errors = parse_batch_upsert(body, rt.hubspot_schema, rt.settings.hubspot_batch_limit)
    if required := _required(rt, "contacts", version):
        inputs, refused = await run_in_threadpool(_without_incomplete_creates, rt, inputs, required)
        errors.extend(refused)
    outcomes = await run_in_threadpool(rt.store.hubspot_upsert, inputs, started)
    results = [object_json(o.object, new=o.created, trace_id=o.input.trace_id) for o in outcomes]
    for o in outcomes:
        rt.webhooks.emit("contact", o.object.object_id, created=o.created, changes=o.changes)
    status, payload = batch_response(results, errors, started, rt.clock())
    return JSONResponse(payload, status)


@_objects.post("/contacts/batch/read")
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


@_objects.get("/{object_type}/{object_id}")
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


@_objects.post("/contacts", status_code=201)
async def create_contact(request: Request, rt: RuntimeDep, version: ApiVersion) -> JSONResponse:
    properties = parse_contact_create(await _body(request), rt.hubspot_schema)
    require_properties(properties, _required(rt, "contacts", version))
    created, existing = await run_in_threadpool(rt.store.hubspot_create_contact, properties, rt.clock())
    if existing is not None:
        return JSONResponse(
            hubspot_error(f"Contact already exists. Existing ID: {existing.object_id}", "CONFLICT"), 409
        )
    assert created is not None
    rt.webhooks.emit("contact", created.object_id, created=True)
    return JSONResponse(object_json(created), 201)


@_objects.patch("/contacts/{object_id}")
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


@_objects.post("/{object_type}", status_code=201)
async def create_engagement(
    object_type: str, request: Request, rt: RuntimeDep, version: ApiVersion
) -> JSONResponse:
    # `contacts` never reaches here: POST /contacts is routed to create_contact, declared first.
    kind = _object_type(object_type)
    item = parse_engagement(kind, await _body(request), _custom(rt, kind))
    require_properties(item.properties, _required(rt, kind, version))
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


@_objects.post("/{object_type}/batch/create", status_code=201)
async def batch_create_engagements(
    object_type: str, request: Request, rt: RuntimeDep, version: ApiVersion
) -> JSONResponse:
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
    for item in items:
        require_properties(item.properties, _required(rt, kind, version))
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


@_objects.post("/{object_type}/batch/upsert")
async def batch_upsert_engagements(
    object_type: str, request: Request, rt: RuntimeDep, version: ApiVersion
) -> JSONResponse:
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
    for upsert in inputs:
        # As for what a create needs anyway, every input carries it (creates are told apart only later).
        require_properties(upsert.properties, _required(rt, kind, version))
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


@_associations.put("/{from_type}/{from_id}/associations/default/{to_type}/{to_id}")
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


@_properties.get("/{object_type}")
async def list_properties(object_type: str, rt: RuntimeDep, archived: bool = False) -> JSONResponse:
    kind = _property_object_type(object_type)
    return JSONResponse({"results": [] if archived else rt.hubspot_properties.list(kind)})


@_properties.get("/{object_type}/{property_name}")
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


@_properties.post("/{object_type}", status_code=201)
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


@_objects.patch("/tickets/{ticket_id}")
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
