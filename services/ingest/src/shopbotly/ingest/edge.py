"""HTTP plumbing shared by ingest's routes: the runtime dependency, limited body reads, answers, metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import Receive

from shopbotly.common.config import ShopbotlyConfig
from shopbotly.common.health import Health
from shopbotly.common.logging import get_logger
from shopbotly.common.problems import FieldProblem, Problem, problem_response
from shopbotly.common.sources import Answer
from shopbotly.ingest import metrics
from shopbotly.ingest.domain import BodyLimit, Rejection, is_json_media_type, trace_id_from
from shopbotly.ingest.intake import Intake
from shopbotly.ingest.publisher import RawEventPublisher
from shopbotly.ingest.settings import Settings

__all__ = [
    "PROBLEM_RESPONSES",
    "Call",
    "IngestRuntime",
    "Runtime",
    "answer_response",
    "json_response",
    "read_body",
    "read_json_body",
    "rejected",
    "serve",
]

log = get_logger(__name__)


@dataclass
class IngestRuntime:
    settings: Settings
    config: ShopbotlyConfig
    health: Health
    publisher: RawEventPublisher
    intake: Intake


async def _runtime(request: Request) -> IngestRuntime:
    # async on purpose: FastAPI runs a sync dependency in a worker thread, a thread hop on every request.
    runtime: IngestRuntime = request.app.state.runtime
    return runtime


Runtime = Annotated[IngestRuntime, Depends(_runtime)]


def _problem(description: str) -> dict[str, Any]:
    # Filed under application/problem+json by app.py (problem_openapi).
    return {"model": Problem, "description": description}


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem(
        "Malformed JSON (with its position), JSON nested too deep, a bad header, or an encoded '/' in"
        " the path."
    ),
    401: _problem(
        "Missing or invalid signature or API key, or a timestamp outside the allowed window (one answer"
        " for every such failure)."
    ),
    404: _problem("Unknown tenant or source."),
    413: _problem("Body larger than the limit."),
    415: _problem("Content-Type is not JSON."),
    422: _problem("The body does not match the schema; `errors` names each field."),
    503: _problem("Kafka is unavailable or did not acknowledge in time; retry after `Retry-After` seconds."),
}


def json_response(status: int, payload: BaseModel, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(payload.model_dump(mode="json"))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def read_body(
    receive: Receive,
    limit: int,
    content_type: str | None,
    content_length: str | None,
    accepts: Callable[[str | None], bool] = is_json_media_type,
    media: str = "application/json",
) -> bytes:
    """The raw body of a JSON request (or of the `media` that `accepts` takes) from the ASGI `receive`,
    refused (415, 413) before or while it streams in; a body in one message is taken without a copy."""
    if not accepts(content_type):
        raise Rejection(415, "unsupported_media_type", f"Content-Type must be {media}")
    guard = BodyLimit(limit)
    guard.check_declared(content_length)
    body = b""
    chunks: list[bytes] | None = None
    while True:
        message = await receive()
        if message["type"] != "http.request":
            # http.disconnect: the client went away, or the server's body deadline passed (it has answered
            # 408 itself and drops whatever this request answers).
            raise Rejection(400, "client_disconnected", "the client went away while sending the body")
        chunk: bytes = message.get("body", b"")
        if chunk:
            guard.add(len(chunk))
            if chunks is not None:
                chunks.append(chunk)
            elif body:
                chunks = [body, chunk]
            else:
                body = chunk
        if not message.get("more_body", False):
            return body if chunks is None else b"".join(chunks)


async def read_json_body(
    request: Request,
    limit: int,
    accepts: Callable[[str | None], bool] = is_json_media_type,
    media: str = "application/json",
) -> bytes:
    """`read_body` for a route that has a Request."""
    headers = request.headers
    return await read_body(
        request.receive, limit, headers.get("content-type"), headers.get("content-length"), accepts, media
    )


@dataclass(slots=True)
class Call:
    """What one request is about, filled in as the handler learns it (for metrics and logs)."""

    trace_id: str
    received_at: datetime
    started: float
    tenant: str = metrics.UNKNOWN
    source: str = metrics.UNKNOWN
    body_bytes: int = 0
    outcome: str | None = None

    @classmethod
    def begin(cls, traceparent: str | None) -> Call:
        """A request that just arrived (counted in flight until `finish`)."""
        metrics.IN_FLIGHT.inc()
        return cls(trace_id_from(traceparent), datetime.now(UTC), time.perf_counter())

    def answered(self, status: int, payload: object = None) -> None:
        """Count the answer (`payload`: an Answer may name its own outcome)."""
        if isinstance(payload, Answer):
            outcome = payload.outcome or self.outcome or "accepted"
        else:
            outcome = self.outcome or ("accepted" if status == 202 else "duplicate")
        metrics.requests(self.tenant, self.source, outcome).inc()

    def finish(self, route: str) -> None:
        metrics.IN_FLIGHT.dec()
        if self.body_bytes:
            metrics.body_bytes(self.tenant, self.source).inc(self.body_bytes)
        metrics.request_duration(route).observe(time.perf_counter() - self.started)


def answer_response(status: int, payload: BaseModel | Answer) -> Response:
    if isinstance(payload, Answer):
        return Response(payload.body, status, payload.headers, media_type=payload.media_type)
    return json_response(status, payload)


async def serve(
    route: str, request: Request, handler: Callable[[Call], Awaitable[tuple[int, BaseModel | Answer]]]
) -> Response:
    """Run a handler: render its answer or its Rejection, and count both."""
    call = Call.begin(request.headers.get("traceparent"))
    try:
        try:
            status, payload = await handler(call)
        except Rejection as rejection:
            return rejected(call, rejection)
        call.answered(status, payload)
        return answer_response(status, payload)
    finally:
        call.finish(route)


def rejected(call: Call, rejection: Rejection) -> Response:
    """Count and log a refusal; its problem+json answer."""
    call.outcome = "unavailable" if rejection.status == 503 else "rejected"
    call.answered(rejection.status)
    metrics.rejections(call.tenant, call.source, rejection.reason).inc()
    level = log.warning if rejection.status in (401, 403, 503) else log.info
    level(
        "request refused",
        status=rejection.status,
        reason=rejection.reason,
        tenant=call.tenant,
        source=call.source,
        trace_id=call.trace_id,
        **({"note": rejection.note} if rejection.note else {}),
    )
    return problem_response(
        rejection.status,
        rejection.detail,
        code=rejection.code,
        errors=[FieldProblem(loc=e.loc, msg=e.msg, type=e.type) for e in rejection.errors],
        headers=rejection.headers,
    )
