"""`POST /api/v1/leads`: the Sync Lead API for direct integrations (Bearer API key per tenant)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from shopbotly.ingest.domain import FieldError, Rejection, parse_json
from shopbotly.ingest.edge import PROBLEM_RESPONSES, Call, Runtime, read_json_body, serve
from shopbotly.ingest.intake import LEAD_SOURCE
from shopbotly.ingest.schemas import EventAccepted, Lead

__all__ = ["LEAD_BODY", "router"]

router = APIRouter(tags=["leads"])
# auto_error off: a missing key is answered in our own problem format, after counting it.
bearer = HTTPBearer(auto_error=False, description="A tenant API key (its SHA-256 is in the tenants file).")

LEAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Lead"}}},
    }
}
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def _loc(parts: tuple[int | str, ...]) -> str:
    text = "body"
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def validate_lead(data: object) -> Lead:
    """The typed lead, or a 422 naming each wrong field (the input values are not echoed: they are PII)."""
    try:
        return Lead.model_validate(data)
    except ValidationError as exc:
        errors = [FieldError(_loc(tuple(e["loc"])), e["msg"], e["type"]) for e in exc.errors()]
        raise Rejection(
            422, "invalid_lead", f"{len(errors)} invalid field(s) in the lead", errors=errors
        ) from None


@router.post(
    "/api/v1/leads",
    summary="Submit a lead",
    status_code=202,
    response_model=EventAccepted,
    responses={
        **PROBLEM_RESPONSES,
        403: {**PROBLEM_RESPONSES[401], "description": "The key lacks the `leads` scope."},
    },
    openapi_extra=LEAD_BODY,
)
async def submit_lead(
    request: Request,
    runtime: Runtime,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Same key and body within 24 h, on any replica: the same answer (same event_id). "
            "Same key, other body: 422 idempotency_conflict.",
        ),
    ] = None,
) -> Response:
    """Publish the lead as a `lead.submitted` raw event; 202 `{"event_id"}` once Kafka acknowledged it."""

    async def handle(call: Call) -> tuple[int, BaseModel]:
        call.source = LEAD_SOURCE
        if credentials is None:
            raise Rejection(
                401, "unauthorized", "send `Authorization: Bearer <API key>`", headers=_UNAUTHORIZED
            )
        found = runtime.config.tenant_for_api_key(credentials.credentials)
        if found is None:
            raise Rejection(401, "unauthorized", "unknown API key", headers=_UNAUTHORIZED)
        tenant, tenant_config = found
        call.tenant = tenant
        key = tenant_config.api_key_for(credentials.credentials)
        if key is None or "leads" not in key.scopes:
            raise Rejection(403, "forbidden", "this API key lacks the `leads` scope")
        body = await read_json_body(request, runtime.settings.max_body_bytes)
        call.body_bytes = len(body)
        lead = validate_lead(parse_json(body))
        status, answer, replayed = await runtime.intake.lead(
            tenant,
            lead,
            idempotency_key=idempotency_key,
            trace_id=call.trace_id,
            received_at=call.received_at,
        )
        call.outcome = "duplicate" if replayed else "accepted"
        return status, answer

    return await serve("lead", request, handle)
