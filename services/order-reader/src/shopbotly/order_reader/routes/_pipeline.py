"""The request pipeline of every lookup route, written once: API key and tenant, parameters, the lookup
(cache, store, read-through), ETag and errors. orders.py and tickets.py say only what differs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute
from starlette.types import Receive, Scope, Send

from shopbotly.order_reader.auth import bearer_token
from shopbotly.order_reader.domain import Kind
from shopbotly.order_reader.metrics import LookupKind, Outcome
from shopbotly.order_reader.problems import ProblemError, refusal
from shopbotly.order_reader.readthrough import UpstreamUnavailable
from shopbotly.order_reader.routes._shared import (
    EMAIL_PARAMETER,
    PAGE_PARAMETERS,
    answer,
    docs,
    lookup_headers,
    lookup_openapi,
    not_found,
    page_of,
    path_email,
    path_id,
    refuse_unknown_query,
    runtime_of,
)

__all__ = ["LookupRoutes", "Route", "add_lookup_routes"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one lookup is in the API and how OpenAPI describes it; `metric` labels its lookups."""

    path: str
    name: str
    summary: str
    description: str
    metric: LookupKind


@dataclass(frozen=True, slots=True)
class LookupRoutes:
    """The two lookups of one kind of record: one by its id, and a customer's records a page at a time."""

    kind: Kind
    # The API key scope both lookups need; also their OpenAPI tag.
    scope: str
    # The record in words ("order"), for error details and the OpenAPI texts.
    what: str
    # The path parameter of `by_id` (see id_parameter), checked and documented from this one description.
    id_parameter: dict[str, Any]
    model: type[BaseModel]
    page: type[BaseModel]
    by_id: Route
    history: Route
    # Whether a miss asks the tenant's upstream API, which documents its 503.
    readthrough: bool = False


Handler = Callable[[Scope], Awaitable[Response]]


class _Served:
    """A lookup as a plain ASGI endpoint of a Starlette route: no Request object, no per-request wrapper.

    FastAPI's own route solves dependencies and opens exit stacks for every request, and Starlette's
    function endpoints wrap each one in a Request and an exception-handler layer; a lookup needs none of
    that, and at tens of microseconds per lookup they were a large share of its cost (docs/benchmarks.md,
    "What bounds lookups"). Refusals are answered here; anything else raised still reaches the app's
    problem handlers.
    """

    def __init__(self, handle: Handler) -> None:
        self._handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._handle(scope)
        await response(scope, receive, send)


def add_lookup_routes(app: FastAPI, routes: LookupRoutes) -> None:
    """Each lookup is served by a plain Starlette route on the app itself, matched before the FastAPI
    route of the same path, which only documents it in the OpenAPI schema (and answers the same way if
    it is ever reached)."""
    runtime = runtime_of(app)
    kind, scope_name, what = routes.kind, routes.scope, routes.what
    id_name: str = routes.id_parameter["name"]
    by_id, history = routes.by_id.metric, routes.history.metric

    async def fetch(scope: Scope) -> Response:
        started = time.perf_counter()
        try:
            authorization, if_none_match = lookup_headers(scope)
            caller = runtime.keys.authenticate(bearer_token(authorization), scope_name)
            ident = path_id(scope, id_name)
            refuse_unknown_query(scope)
            lookups = runtime.lookups
            found = lookups.local(kind, caller.tenant, ident)
            outcome = Outcome.FOUND
            if found is None:
                try:  # only orders of a tenant with an upstream order API read through
                    found = await lookups.remote(kind, caller.tenant, caller.config, ident)
                except UpstreamUnavailable:
                    raise ProblemError(
                        503,
                        f"the {what} is not in the table and the shop's order API did not answer;"
                        " try again shortly",
                        outcome=Outcome.READTHROUGH_UNAVAILABLE,
                        headers={"Retry-After": "1"},
                    ) from None
                if found is None:
                    raise not_found(runtime, by_id, started, what)
                outcome = Outcome.READTHROUGH_FOUND
            return answer(runtime, if_none_match, by_id, found, started, outcome)
        except ProblemError as exc:
            return refusal(runtime.metrics, by_id, exc)

    async def fetch_page(scope: Scope) -> Response:
        started = time.perf_counter()
        try:
            authorization, if_none_match = lookup_headers(scope)
            caller = runtime.keys.authenticate(bearer_token(authorization), scope_name)
            email = path_email(scope)
            limit, after = page_of(scope, kind)
            page = runtime.lookups.history(kind, caller.tenant, email, limit=limit, after=after)
            return answer(runtime, if_none_match, history, page, started, Outcome.FOUND)
        except ProblemError as exc:
            return refusal(runtime.metrics, history, exc)

    one_docs = docs(routes.model, what, single=True, readthrough=routes.readthrough)
    page_docs = docs(routes.page, f"page of {what}s", single=False)
    for route, handle, parameters, responses in (
        (routes.by_id, fetch, [routes.id_parameter], one_docs),
        (routes.history, fetch_page, [EMAIL_PARAMETER, *PAGE_PARAMETERS], page_docs),
    ):
        served = _Served(handle)
        app.router.routes.append(
            StarletteRoute(route.path, served, methods=["GET"], name=route.name, include_in_schema=False)
        )
        app.add_api_route(
            route.path,
            _documented(handle),
            methods=["GET"],
            tags=[scope_name],
            name=route.name,
            summary=route.summary,
            description=route.description,
            openapi_extra=lookup_openapi(parameters),
            responses=responses,
        )


def _documented(handle: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handle(request.scope)

    return endpoint
