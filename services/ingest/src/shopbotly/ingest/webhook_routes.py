"""`POST /v1/webhooks/{tenant}/{source}`: platform webhooks, verified and published as raw events."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from shopbotly.common.sources import Answer
from shopbotly.common.sources.salesforce import ACK
from shopbotly.ingest.edge import PROBLEM_RESPONSES, Call, IngestRuntime, read_json_body, serve
from shopbotly.ingest.intake import WebhookRequest
from shopbotly.ingest.schemas import SlackChallenge, WebhookAccepted

__all__ = ["router"]

router = APIRouter(tags=["webhooks"])

# Path parameters are documented here and read from the scope, not declared on the function: FastAPI's
# parameter resolution is the costliest part of the framework on this hot path (the bare baseline has none).
_OPENAPI = {
    "parameters": [
        {"name": "tenant", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "source", "in": "path", "required": True, "schema": {"type": "string"}},
    ],
    "requestBody": {
        "required": True,
        "description": (
            "The platform's payload, exactly as signed: JSON (HubSpot: an array of events), or for a"
            " salesforce source the SOAP outbound message (text/xml, up to 100 notifications)."
        ),
        "content": {"application/json": {"schema": {}}, "text/xml": {"schema": {"type": "string"}}},
    },
}


def _request_parts(request: Request) -> tuple[dict[str, str], str, str]:
    """Lowercase headers, the URL as this service received it, and its raw path + query."""
    scope = request.scope
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    raw_path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    path_qs = raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    host = headers.get("host") or "{}:{}".format(*(scope.get("server") or ("localhost", 80)))
    return headers, f"{scope['scheme']}://{host}{path_qs}", path_qs


PATH = "/v1/webhooks/{tenant}/{source}"


async def receive_webhook(request: Request) -> Response:
    """Verify the signature of the source's kind, then publish each event to raw-events.

    202 only after Kafka acknowledged every event; a delivery seen before (same event id, within the
    dedup window of this replica) gets 200 with its event id and publishes nothing.
    """

    # Straight from app state, not a FastAPI dependency (see _OPENAPI).
    runtime: IngestRuntime = request.app.state.runtime
    tenant: str = request.path_params["tenant"]
    source: str = request.path_params["source"]

    async def handle(call: Call) -> tuple[int, BaseModel | Answer]:
        src = runtime.intake.source(tenant, source)
        call.tenant, call.source = src.tenant, src.name
        body = await read_json_body(request, src.max_body_bytes, src.impl.accepts, src.impl.media_description)
        call.body_bytes = len(body)
        headers, url, path_qs = _request_parts(request)
        return await runtime.intake.webhook(
            src,
            WebhookRequest(
                headers=headers,
                body=body,
                method=request.method,
                url=url,
                path_qs=path_qs,
                trace_id=call.trace_id,
                received_at=call.received_at,
            ),
        )

    return await serve("webhook", request, handle)


# Served by a plain Starlette route, matched before the documented FastAPI route below: the handler reads
# everything from the request itself, so FastAPI's per-request dependency solving (query parameters,
# cookies, an exit stack) is pure cost here, about a tenth of the CPU of an accepted webhook
# (175 against 206 µs in-process, docs/benchmarks.md "What bounds ingest"). The FastAPI route only
# documents it in the OpenAPI schema.
router.add_route(PATH, receive_webhook, methods=["POST"], include_in_schema=False)
router.post(
    PATH,
    summary="Receive a signed platform webhook",
    status_code=202,
    response_model=WebhookAccepted,
    responses={
        200: {
            "model": WebhookAccepted | SlackChallenge,
            "description": (
                "Repeated delivery, or Slack's check; for a salesforce source every stored message"
                " (new or repeated) gets the SOAP acknowledgement Salesforce expects."
            ),
            "content": {"text/xml": {"schema": {"type": "string"}, "example": ACK.decode()}},
        },
        **PROBLEM_RESPONSES,
    },
    openapi_extra=_OPENAPI,
)(receive_webhook)
