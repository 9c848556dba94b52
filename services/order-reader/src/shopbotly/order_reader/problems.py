"""Errors as RFC 9457 problem details (`application/problem+json`), for every error the service answers."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from shopbotly.order_reader.metrics import LookupKind, Outcome

__all__ = [
    "PROBLEM_TYPE",
    "Problem",
    "ProblemError",
    "bad_parameter",
    "install_problem_handlers",
    "problem_response",
]

PROBLEM_TYPE = "application/problem+json"

# What a malformed parameter should look like, in words, so a client knows what to send.
_EXPECTED = {
    "order_id": "1-128 characters without '/', spaces or control characters",
    "ticket_id": "1-128 characters without '/', spaces or control characters",
    "email": "an e-mail address (local@domain, without '/', spaces or control characters)",
    "limit": "an integer from 1 to 100",
    "cursor": "the next_cursor of a previous page, unchanged",
}

# Route name → lookup kind, so errors raised before a handler runs are still counted per kind.
ROUTE_KINDS = {
    "fetch_order": LookupKind.ORDER,
    "order_history": LookupKind.ORDER_HISTORY,
    "fetch_ticket": LookupKind.TICKET,
    "ticket_history": LookupKind.TICKET_HISTORY,
}


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class ProblemError(Exception):
    def __init__(
        self, status: int, detail: str, *, outcome: Outcome, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.outcome = outcome
        self.headers = headers or {}


def bad_parameter(location: str, name: str, problem: str | None = None) -> ProblemError:
    """400 naming the parameter and what it should look like."""
    expected = problem or f"expected {_EXPECTED.get(name, 'a valid value')}"
    return ProblemError(400, f"{location} parameter {name}: {expected}", outcome=Outcome.BAD_REQUEST)


def problem_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type=PROBLEM_TYPE,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _count(request: Request, outcome: Outcome) -> None:
    route = request.scope.get("route")
    kind = ROUTE_KINDS.get(getattr(route, "name", ""))
    runtime = getattr(request.app.state, "runtime", None)
    if kind is not None and runtime is not None and runtime.metrics is not None:
        runtime.metrics.count_lookup(kind.value, outcome.value)


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        _count(request, exc.outcome)
        return problem_response(exc.status, exc.detail, exc.headers)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers: dict[str, Any] = dict(exc.headers or {})
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404:
            detail = f"no such resource: {request.url.path}"
        return problem_response(exc.status_code, detail, headers)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
