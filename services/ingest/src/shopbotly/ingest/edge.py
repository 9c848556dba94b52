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
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from shopbotly.common.config import ShopbotlyConfig
from shopbotly.common.health import Health
from shopbotly.common.logging import bound, get_logger
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
    "json_response",
    "read_json_body",
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


async def read_json_body(
    request: Request,
    limit: int,
    accepts: Callable[[str | None], bool] = is_json_media_type,
    media: str = "application/json",
) -> bytes:
    """The raw body of a JSON request (or of the `media` that `accepts` takes), refused (415, 413) before
    or while it streams in."""
    if not accepts(request.headers.get("content-type")):
        raise Rejection(415, "unsupported_media_type", f"Content-Type must be {media}")
    guard = BodyLimit(limit)
    guard.check_declared(request.headers.get("content-length"))
    chunks: list[bytes] = []
    try:
        async for chunk in request.stream():
            if chunk:
                guard.add(len(chunk))
                chunks.append(chunk)
    except ClientDisconnect:
        raise Rejection(400, "client_disconnected", "the client went away while sending the body") from None
    return b"".join(chunks)


@dataclass
class Call:
    """What one request is about, filled in as the handler learns it (for metrics and logs)."""

    request: Request
    tenant: str = metrics.UNKNOWN
    source: str = metrics.UNKNOWN
    body_bytes: int = 0
    outcome: str | None = None

    def __post_init__(self) -> None:
        self.trace_id = trace_id_from(self.request.headers.get("traceparent"))
        self.received_at = datetime.now(UTC)


async def serve(
    route: str, request: Request, handler: Callable[[Call], Awaitable[tuple[int, BaseModel | Answer]]]
) -> Response:
    """Run a handler: render its answer or its Rejection, and count both."""
    started = time.perf_counter()
    call = Call(request)
    metrics.IN_FLIGHT.inc()
    try:
        with bound(trace_id=call.trace_id):
            try:
                status, payload = await handler(call)
            except Rejection as rejection:
                return _rejected(call, rejection)
            if isinstance(payload, Answer):
                outcome = payload.outcome or call.outcome or "accepted"
                metrics.REQUESTS.labels(call.tenant, call.source, outcome).inc()
                return Response(payload.body, status, payload.headers, media_type=payload.media_type)
            outcome = call.outcome or ("accepted" if status == 202 else "duplicate")
            metrics.REQUESTS.labels(call.tenant, call.source, outcome).inc()
            return json_response(status, payload)
    finally:
        metrics.IN_FLIGHT.dec()
        if call.body_bytes:
            metrics.BODY_BYTES.labels(call.tenant, call.source).inc(call.body_bytes)
        metrics.REQUEST_DURATION.labels(route).observe(time.perf_counter() - started)


def _rejected(call: Call, rejection: Rejection) -> Response:
    outcome = "unavailable" if rejection.status == 503 else "rejected"
    metrics.REQUESTS.labels(call.tenant, call.source, outcome).inc()
    metrics.REJECTIONS.labels(call.tenant, call.source, rejection.reason).inc()
    level = log.warning if rejection.status in (401, 403, 503) else log.info
    level(
        "request refused",
        status=rejection.status,
        reason=rejection.reason,
        tenant=call.tenant,
        source=call.source,
        **({"note": rejection.note} if rejection.note else {}),
    )
    return problem_response(
        rejection.status,
        rejection.detail,
        code=rejection.code,
        errors=[FieldProblem(loc=e.loc, msg=e.msg, type=e.type) for e in rejection.errors],
        headers=rejection.headers,
    )
