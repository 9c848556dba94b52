"""order-reader's refusals, counted per lookup kind and rendered in the shared problem format
(`shopbotly.common.problems`, RFC 9457)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from shopbotly.common.problems import Problem, problem_response
from shopbotly.common.problems import install_problem_handlers as install_common_handlers
from shopbotly.order_reader.metrics import LookupKind, Metrics, Outcome

__all__ = ["Problem", "ProblemError", "bad_parameter", "install_problem_handlers", "refusal"]

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


class ProblemError(Exception):
    """A refusal; its `outcome` labels the lookup metric and is the problem's `code`."""

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


def refusal(metrics: Metrics, kind: LookupKind, exc: ProblemError) -> Response:
    """The problem answer of a refused lookup, counted under its kind and outcome."""
    metrics.count_lookup(kind, exc.outcome)
    return problem_response(exc.status, exc.detail, code=exc.outcome.value, headers=exc.headers)


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
        return problem_response(exc.status, exc.detail, code=exc.outcome.value, headers=exc.headers)

    install_common_handlers(app)
    app.add_exception_handler(ProblemError, on_problem)
