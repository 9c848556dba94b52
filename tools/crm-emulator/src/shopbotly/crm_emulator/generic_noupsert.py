"""The generic CRM's second flavour: a self-hosted CRM with a plain REST API and no upsert (`/api/`).

Django REST framework style, as such CRMs are built: `POST /api/leads/` creates (one lead per e-mail:
a second is refused with a 400), `PATCH /api/leads/{id}/` updates by record id, `GET /api/leads/?email=`
searches, notes hang off the lead's id, tags are records of their own referenced by id. Validation
errors are `{"error": true, "errors": {field: [messages]}}`, a bad token is a 403, `Idempotency-Key` is
ignored. It shares the generic CRM's store, tokens, rate limit and faults (`systems: ["generic"]`).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from shopbotly.crm_emulator.deps import RuntimeDep, read_json
from shopbotly.crm_emulator.domain import (
    StoredObject,
    System,
    is_valid_email,
    iso_ms,
    join_multi,
    normalize_email,
    split_multi,
)

__all__ = ["PREFIX", "forbidden", "router"]

PREFIX = "/api/"
router = APIRouter(prefix="/api", tags=["generic without upsert"])

_CHAR_FIELDS = ("first_name", "last_name", "phone", "company", "status", "source", "description", "city")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{5,19}$")
_MAX_CHARS = 255
_NOT_FOUND = {"detail": "Not found."}


def forbidden(presented: bool) -> dict[str, str]:
    """DRF's answer to a missing or bad token (403: its token authentication sends no challenge)."""
    return {"detail": "Invalid token." if presented else "Authentication credentials were not provided."}


def _refused(errors: dict[str, list[str]]) -> JSONResponse:
    return JSONResponse({"error": True, "errors": errors}, 400)


def _number(object_id: str) -> int:
    return int(object_id.rsplit("_", 1)[1])


def _record_id(kind: str, number: str) -> str | None:
    return f"{kind}_{int(number):06d}" if number.isdigit() else None


def _tag_json(tag: StoredObject) -> dict[str, Any]:
    return {"id": _number(tag.object_id), "name": tag.properties["name"]}


def _lead_json(lead: StoredObject, tags: list[StoredObject]) -> dict[str, Any]:
    names = set(split_multi(lead.properties.get("tags")))
    return {
        "id": _number(lead.object_id),
        "email": lead.identity,
        **{name: lead.properties.get(name, "") for name in _CHAR_FIELDS},
        "tags": [_tag_json(t) for t in tags if t.properties["name"] in names],
        "created_at": iso_ms(lead.created_at),
        "updated_at": iso_ms(lead.updated_at),
    }


async def _body(request: Request) -> tuple[Any, JSONResponse | None]:
    body, error = await read_json(request)
    if error is not None:
        return None, JSONResponse({"detail": f"JSON parse error - {error}"}, 400)
    if not isinstance(body, dict):
        return None, JSONResponse(
            {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {type(body).__name__}."]},
            400,
        )
    return body, None


def _lead_input(
    body: dict[str, Any], tags: list[StoredObject], *, partial: bool
) -> tuple[str | None, dict[str, str | None], dict[str, list[str]]]:
    """(normalized e-mail, fields to write, errors by field). Unknown keys are ignored, as DRF does."""
    errors: dict[str, list[str]] = {}
    fields: dict[str, str | None] = {}
    identity: str | None = None
    email = body.get("email")
    if email is None and not partial:
        errors["email"] = ["This field is required."]
    elif email is not None:
        if not isinstance(email, str) or not is_valid_email(email):
            errors["email"] = ["Enter a valid email address."]
        else:
            identity = normalize_email(email)
    for name in _CHAR_FIELDS:
        if name not in body:
            continue
        value = body[name]
        if value is None or value == "":
            fields[name] = None
        elif not isinstance(value, str | int | float) or isinstance(value, bool):
            errors[name] = ["Not a valid string."]
        elif len(str(value)) > _MAX_CHARS:
            errors[name] = [f"Ensure this field has no more than {_MAX_CHARS} characters."]
        elif name == "phone" and not _PHONE.match(str(value)):
            errors[name] = ["Enter a valid phone number"]
        else:
            fields[name] = str(value)
    if "tags" in body:
        value = body["tags"]
        by_number = {_number(t.object_id): t.properties["name"] for t in tags}
        if not isinstance(value, list):
            errors["tags"] = [f'Expected a list of items but got type "{type(value).__name__}".']
        else:
            unknown = [v for v in value if not isinstance(v, int) or v not in by_number]
            if unknown:
                errors["tags"] = [f'Invalid pk "{unknown[0]}" - object does not exist.']
            else:
                fields["tags"] = join_multi(sorted({by_number[v] for v in value})) if value else None
    return identity, fields, errors


@router.get("/leads/")
async def search_leads(rt: RuntimeDep, email: str | None = None) -> JSONResponse:
    found: list[StoredObject] = []
    if email:
        found = await run_in_threadpool(rt.store.by_identity, System.GENERIC, "leads", normalize_email(email))
    tags = await run_in_threadpool(rt.store.generic_tags)
    results = [_lead_json(lead, tags) for lead in found]
    return JSONResponse({"count": len(results), "next": None, "previous": None, "results": results})


@router.post("/leads/")
async def create_lead(request: Request, rt: RuntimeDep) -> JSONResponse:
    body, problem = await _body(request)
    if problem is not None:
        return problem
    tags = await run_in_threadpool(rt.store.generic_tags)
    identity, fields, errors = _lead_input(body, tags, partial=False)
    if errors:
        return _refused(errors)
    assert identity is not None
    lead = await run_in_threadpool(rt.store.generic_create_lead, identity, fields, rt.clock())
    if lead is None:
        return _refused({"email": ["lead with this email already exists."]})
    return JSONResponse(_lead_json(lead, tags), 201)


@router.get("/leads/{number}/")
async def get_lead(number: str, rt: RuntimeDep) -> JSONResponse:
    object_id = _record_id("lead", number)
    lead = await run_in_threadpool(rt.store.get, System.GENERIC, "leads", object_id) if object_id else None
    if lead is None:
        return JSONResponse(_NOT_FOUND, 404)
    return JSONResponse(_lead_json(lead, await run_in_threadpool(rt.store.generic_tags)))


@router.patch("/leads/{number}/")
async def update_lead(number: str, request: Request, rt: RuntimeDep) -> JSONResponse:
    object_id = _record_id("lead", number)
    if object_id is None:
        return JSONResponse(_NOT_FOUND, 404)
    body, problem = await _body(request)
    if problem is not None:
        return problem
    tags = await run_in_threadpool(rt.store.generic_tags)
    identity, fields, errors = _lead_input(body, tags, partial=True)
    if errors:
        return _refused(errors)
    outcome = await run_in_threadpool(rt.store.generic_update_lead, object_id, fields, identity, rt.clock())
    if outcome == "not_found":
        return JSONResponse(_NOT_FOUND, 404)
    if outcome == "taken":
        return _refused({"email": ["lead with this email already exists."]})
    assert isinstance(outcome, StoredObject)
    return JSONResponse(_lead_json(outcome, tags))


@router.post("/leads/{number}/notes/")
async def add_note(number: str, request: Request, rt: RuntimeDep) -> JSONResponse:
    object_id = _record_id("lead", number)
    if object_id is None:
        return JSONResponse(_NOT_FOUND, 404)
    body, problem = await _body(request)
    if problem is not None:
        return problem
    text = body.get("body")
    if not isinstance(text, str) or not text.strip():
        return _refused(
            {"body": ["This field is required." if text is None else "This field may not be blank."]}
        )
    note = await run_in_threadpool(rt.store.generic_note_on, object_id, text, rt.clock())
    if note is None:
        return JSONResponse(_NOT_FOUND, 404)
    return JSONResponse(
        {
            "id": _number(note.object_id),
            "lead": int(number),
            "body": text,
            "created_at": iso_ms(note.created_at),
        },
        201,
    )


@router.get("/tags/")
async def list_tags(rt: RuntimeDep) -> JSONResponse:
    tags = await run_in_threadpool(rt.store.generic_tags)
    return JSONResponse(
        {"count": len(tags), "next": None, "previous": None, "results": [_tag_json(t) for t in tags]}
    )


@router.post("/tags/")
async def create_tag(request: Request, rt: RuntimeDep) -> JSONResponse:
    body, problem = await _body(request)
    if problem is not None:
        return problem
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        return _refused({"name": ["This field is required."]})
    tag = await run_in_threadpool(rt.store.generic_create_tag, name.strip(), rt.clock())
    if tag is None:
        return _refused({"name": ["tag with this name already exists."]})
    return JSONResponse(_tag_json(tag), 201)
