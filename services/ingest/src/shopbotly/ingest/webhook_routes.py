"""`POST /v1/webhooks/{tenant}/{source}`: platform webhooks, verified and published as raw events."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from shopbotly.common.sources import Answer
from shopbotly.common.sources.salesforce import ACK
from shopbotly.ingest.domain import Rejection
from shopbotly.ingest.edge import (
    PROBLEM_RESPONSES,
    Call,
    IngestRuntime,
    answer_response,
    read_body,
    rejected,
)
from shopbotly.ingest.intake import Accepted, WebhookRequest
from shopbotly.ingest.schemas import SlackChallenge, WebhookAccepted

__all__ = ["PATH", "WebhookEndpoint", "endpoint", "router", "webhook_path"]

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


PATH = "/v1/webhooks/{tenant}/{source}"
_PREFIX = "/v1/webhooks/"
_JSON_TYPE = (b"content-type", b"application/json")


def webhook_path(path: str) -> tuple[str, str] | None:
    """(tenant, source) when `path` is this route's, matched as the router matches it (two non-empty
    segments after the prefix), else None."""
    if not path.startswith(_PREFIX):
        return None
    tenant, slash, source = path[len(_PREFIX) :].partition("/")
    if not slash or not tenant or not source or "/" in source:
        return None
    return tenant, source


def _request_url(scope: Scope, headers: dict[str, str]) -> tuple[str, str]:
    """The URL as this service received it, and its raw path + query."""
    raw_path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    path_qs = raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    host = headers.get("host") or "{}:{}".format(*(scope.get("server") or ("localhost", 80)))
    return f"{scope['scheme']}://{host}{path_qs}", path_qs


class WebhookEndpoint:
    """The webhook route as a plain ASGI app: no Request object, no Starlette response, nothing per request
    that the answer does not need. Served by the app before its middleware stack and router (see
    `IngestApi`); what those do for other routes (trace id, body limit, metrics, refusals as problems) is
    done here, once."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As the router's endpoint, for what the app's fast path leaves to the router (a root path)."""
        params = scope["path_params"]
        await self.serve(scope, receive, send, scope["app"].state.runtime, params["tenant"], params["source"])

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, runtime: IngestRuntime, tenant: str, source: str
    ) -> None:
        """Answer one delivery (see `_documented` for what it does)."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        call = Call.begin(headers.get("traceparent"))
        try:
            try:
                status, answer = await self._handle(scope, receive, runtime, headers, call, tenant, source)
            except Rejection as rejection:
                await rejected(call, rejection)(scope, receive, send)
                return
            call.answered(status, answer)
            if isinstance(answer, Answer):
                await answer_response(status, answer)(scope, receive, send)
                return
            body = answer.json()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-length", b"%d" % len(body)), _JSON_TYPE],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            call.finish("webhook")

    @staticmethod
    async def _handle(
        scope: Scope,
        receive: Receive,
        runtime: IngestRuntime,
        headers: dict[str, str],
        call: Call,
        tenant: str,
        source: str,
    ) -> tuple[int, Accepted | Answer]:
        intake = runtime.intake
        src = intake.source(tenant, source)
        call.tenant, call.source = src.tenant, src.name
        body = await read_body(
            receive,
            src.max_body_bytes,
            headers.get("content-type"),
            headers.get("content-length"),
            src.impl.accepts,
            src.impl.media_description,
        )
        call.body_bytes = len(body)
        url, path_qs = _request_url(scope, headers)
        return await intake.webhook(
            src,
            WebhookRequest(
                headers=headers,
                body=body,
                method=scope["method"],
                url=url,
                path_qs=path_qs,
                trace_id=call.trace_id,
                received_at=call.received_at,
            ),
        )


endpoint = WebhookEndpoint()


async def _documented(request: Request) -> Response:
    """Verify the signature of the source's kind, then publish each event to raw-events.

    202 only after Kafka acknowledged every event; a delivery seen before (same event id, within the
    dedup window of this replica) gets 200 with its event id and publishes nothing.
    """
    # The operation of the OpenAPI document (its docstring is the description); `endpoint` serves the path.
    raise AssertionError("never routed: the plain route before this one serves the path")


# Served by the app before its middleware stack (IngestApi), else by this plain route, matched before the
# documented FastAPI route below: FastAPI's per-request dependency solving (query parameters, cookies, an
# exit stack) and Starlette's request and response objects are pure cost here (docs/benchmarks.md, "What
# bounds ingest"). The FastAPI route only documents it in the OpenAPI schema.
router.routes.append(Route(PATH, endpoint, methods=["POST"], include_in_schema=False))
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
)(_documented)
