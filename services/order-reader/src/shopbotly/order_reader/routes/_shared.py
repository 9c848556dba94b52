"""Pieces of the lookup pipeline (_pipeline.py): parameters, conditional answers, metrics, OpenAPI docs.

Parameters are read and checked here rather than declared for FastAPI to validate: FastAPI's
per-request dependency and parameter machinery costs more than the lookup itself. The OpenAPI
description of the same parameters is written out below, from the same patterns.
"""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.datastructures import QueryParams
from starlette.responses import Response
from starlette.types import Scope

from shopbotly.common.ids import normalize_email
from shopbotly.order_reader.auth import SECURITY
from shopbotly.order_reader.domain import (
    EMAIL_PATTERN,
    ID_PATTERN,
    Answer,
    CursorError,
    CursorKey,
    Kind,
    decode_cursor,
    if_none_match_hits,
    valid_email,
    valid_id,
)
from shopbotly.order_reader.metrics import LookupKind, Outcome
from shopbotly.order_reader.problems import Problem, ProblemError, bad_parameter
from shopbotly.order_reader.runtime import Runtime

__all__ = [
    "EMAIL_PARAMETER",
    "PAGE_PARAMETERS",
    "AnswerResponse",
    "answer",
    "docs",
    "id_parameter",
    "lookup_headers",
    "lookup_openapi",
    "not_found",
    "page_of",
    "path_email",
    "path_id",
    "refuse_unknown_query",
    "runtime_of",
]

CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,512}$"
_CURSOR = re.compile(CURSOR_PATTERN)
_LIMIT = re.compile(r"^[0-9]{1,3}$")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
HISTORY_QUERY = frozenset({"limit", "cursor"})


# --- OpenAPI ---------------------------------------------------------------------------------------------


def id_parameter(name: str, what: str, example: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"The platform's {what} id.",
        "schema": {"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": 128},
        "example": example,
    }


EMAIL_PARAMETER: dict[str, Any] = {
    "name": "email",
    "in": "path",
    "required": True,
    "description": "The customer's e-mail address (matched case-insensitively).",
    "schema": {"type": "string", "pattern": EMAIL_PATTERN, "maxLength": 320},
    "example": "jane@example.com",
}
PAGE_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "Items per page.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "`next_cursor` of the previous page, unchanged; omit for the first page.",
        "schema": {"type": "string", "pattern": CURSOR_PATTERN},
    },
]


def lookup_openapi(parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """`openapi_extra` of a lookup route: its parameters and the bearer API key."""
    return {"parameters": parameters, "security": SECURITY}


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


def docs(
    model: type[BaseModel], what: str, *, single: bool, readthrough: bool = False
) -> dict[int | str, Any]:
    """OpenAPI responses of a lookup route (app.py files problem bodies under application/problem+json)."""
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "model": model,
            "description": f"The {what}.",
            "headers": {
                "ETag": {"description": "Version of this answer; send it back in If-None-Match."},
                "Cache-Control": {"description": "private, short max-age."},
            },
        },
        304: {"description": "Not modified: If-None-Match named the current ETag."},
        400: _problem("Malformed id, e-mail, limit or cursor, or an unknown query parameter."),
        401: _problem("Missing or invalid API key."),
        403: _problem("The API key lacks the scope for this lookup."),
    }
    if single:
        responses[404] = _problem(f"No such {what} for this API key's tenant.")
    if readthrough:
        responses[503] = _problem("Not in the table, and the tenant's upstream order API did not answer.")
    return responses


# --- reading the request -----------------------------------------------------------------------------------


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


def lookup_headers(scope: Scope) -> tuple[str | None, str | None]:
    """`Authorization` and `If-None-Match` (the first of each), in one pass over the raw headers."""
    authorization = if_none_match = None
    for name, value in scope["headers"]:
        # ASGI servers give header names in lower case.
        if name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif name == b"if-none-match" and if_none_match is None:
            if_none_match = value.decode("latin-1")
    return authorization, if_none_match


def path_id(scope: Scope, name: str) -> str:
    value: str = scope["path_params"][name]
    if not valid_id(value):
        raise bad_parameter("path", name)
    return value


def path_email(scope: Scope) -> str:
    value: str = scope["path_params"]["email"]
    if not valid_email(value):
        raise bad_parameter("path", "email")
    return normalize_email(value)


def refuse_unknown_query(scope: Scope, allowed: frozenset[str] = frozenset()) -> None:
    """400 for query parameters the route does not take (a misspelt `limit` must not pass unnoticed)
    or that are given twice."""
    query: bytes = scope.get("query_string", b"")
    if not query:
        return
    names = [name for name, _ in QueryParams(query).multi_items()]
    unknown = sorted(set(names) - allowed)
    if unknown:
        takes = f"; this lookup takes {', '.join(sorted(allowed))}" if allowed else ""
        raise ProblemError(
            400, f"unknown query parameter(s): {', '.join(unknown)}{takes}", outcome=Outcome.BAD_REQUEST
        )
    for name in allowed:
        if names.count(name) > 1:
            raise bad_parameter("query", name, "given more than once")


def page_of(scope: Scope, kind: Kind) -> tuple[int, CursorKey | None]:
    refuse_unknown_query(scope, HISTORY_QUERY)
    query = QueryParams(scope.get("query_string", b""))
    limit = DEFAULT_LIMIT
    raw_limit = query.get("limit")
    if raw_limit is not None:
        if not _LIMIT.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise bad_parameter("query", "limit")
        limit = int(raw_limit)
    raw_cursor = query.get("cursor")
    if raw_cursor is None:
        return limit, None
    if not _CURSOR.fullmatch(raw_cursor):
        raise bad_parameter("query", "cursor")
    try:
        return limit, decode_cursor(kind, raw_cursor)
    except CursorError as exc:
        raise bad_parameter("query", "cursor", str(exc)) from None


# --- answering ---------------------------------------------------------------------------------------------


class AnswerResponse(Response):
    """A response with its raw headers given: `Response.__init__` costs a noticeable share of a lookup."""

    def __init__(self, status_code: int, body: bytes, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = raw_headers


def answer(
    runtime: Runtime,
    if_none_match: str | None,
    kind: LookupKind,
    found: Answer,
    started: float,
    outcome: Outcome,
) -> Response:
    """200 with ETag and Cache-Control, or 304 when If-None-Match names the current ETag."""
    etag = found.etag.encode()
    if if_none_match is not None and if_none_match_hits(if_none_match, found.etag):
        response = AnswerResponse(304, b"", [(b"etag", etag), *runtime.answer_headers])
        outcome = Outcome.NOT_MODIFIED
    else:
        headers = [
            (b"content-length", str(len(found.body)).encode()),
            (b"content-type", b"application/json"),
            (b"etag", etag),
            *runtime.answer_headers,
        ]
        response = AnswerResponse(200, found.body, headers)
    metrics = runtime.metrics
    metrics.count_lookup(kind, outcome)
    metrics.observe_lookup(kind, time.perf_counter() - started)
    return response


def not_found(runtime: Runtime, kind: LookupKind, started: float, what: str) -> ProblemError:
    # The same status and body for an unknown id and another tenant's id: nothing tells them apart.
    runtime.metrics.observe_lookup(kind, time.perf_counter() - started)
    return ProblemError(404, f"{what} not found", outcome=Outcome.NOT_FOUND)
