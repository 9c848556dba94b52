"""The generic REST CRM (the self-hosted `POST /api/v1/leads` style): request checks and answer shapes.

Leads are upserted by e-mail; provided fields overwrite, absent ones are kept, `null` clears; `tags`
(an array) replaces the lead's tags, like a multi-select property. Fields may be sent at the top level
or in a `fields` object (top level wins), so a templated client can pass a field map through whole.
"""

from __future__ import annotations

import re
from typing import Any

from shopbotly.crm_emulator.domain import (
    StoredObject,
    is_valid_email,
    iso_ms,
    join_multi,
    normalize_email,
    split_multi,
)
from shopbotly.crm_emulator.shapes import generic_error

__all__ = ["GenericRejected", "lead_json", "note_json", "parse_lead", "parse_note"]

_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_RESERVED = frozenset({"id", "created", "created_at", "updated_at"})
_MAX_NOTE = 65_536


class GenericRejected(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body


def _invalid(message: str, field: str) -> GenericRejected:
    return GenericRejected(422, generic_error("validation_error", message, fields={field: message}))


def parse_lead(body: Any) -> tuple[str, dict[str, str | None]]:
    """(identity, fields to write); 422 naming the field when something is wrong."""
    if not isinstance(body, dict):
        raise GenericRejected(400, generic_error("invalid_json", "The body must be a JSON object."))
    email = body.get("email")
    if not isinstance(email, str) or not is_valid_email(email):
        raise _invalid(f"email must be a valid e-mail address, got {email!r}", "email")
    nested = body.get("fields", {})
    if not isinstance(nested, dict):
        raise _invalid("fields must be an object of field name to value", "fields")
    fields: dict[str, str | None] = {}
    for name, value in [*nested.items(), *body.items()]:
        if name in ("email", "fields"):
            continue
        if not _FIELD.match(name) or name in _RESERVED:
            raise _invalid(f"{name!r} is not a writable field name (lower-case letters, digits, _)", name)
        if name == "tags":
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(t, str) for t in value)
            ):
                raise _invalid("tags must be an array of strings", "tags")
            fields["tags"] = join_multi(value) if value else None
        elif value is None or isinstance(value, str):
            fields[name] = value
        elif isinstance(value, bool):
            fields[name] = "true" if value else "false"
        elif isinstance(value, int | float):
            fields[name] = str(value)
        else:
            raise _invalid(f"{name} must be a string, number, boolean or null", name)
    identity = normalize_email(email)
    fields["email"] = identity
    return identity, fields


def parse_note(body: Any) -> str:
    if not isinstance(body, dict):
        raise GenericRejected(400, generic_error("invalid_json", "The body must be a JSON object."))
    text = body.get("body")
    if not isinstance(text, str) or not text.strip():
        raise _invalid("body must be a non-empty string", "body")
    if len(text) > _MAX_NOTE:
        raise _invalid(f"body must be at most {_MAX_NOTE} characters", "body")
    return text


def lead_json(obj: StoredObject, created: bool) -> dict[str, Any]:
    fields: dict[str, Any] = dict(obj.properties)
    fields["tags"] = split_multi(obj.properties.get("tags"))
    return {
        "id": obj.object_id,
        **fields,
        "created": created,
        "created_at": iso_ms(obj.created_at),
        "updated_at": iso_ms(obj.updated_at),
    }


def note_json(obj: StoredObject) -> dict[str, Any]:
    return {
        "id": obj.object_id,
        "lead_id": obj.associations[0] if obj.associations else None,
        "body": obj.properties.get("body"),
        "created_at": iso_ms(obj.created_at),
    }
