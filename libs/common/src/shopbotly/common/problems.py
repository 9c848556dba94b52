"""The one error format of every ShopBotly HTTP API: RFC 9457 problem details (`application/problem+json`).

A problem is `type` (always `about:blank`: the status says what kind of problem it is), `title` (the
status phrase), `status`, `detail` (what was wrong and what to do), `code` (a stable snake_case name a
client can branch on) and, for field errors, `errors` (each with `loc`, `msg` and `type`). The services
render their own refusals with `problem_response`; `install_problem_handlers` renders what the framework
raises (unknown paths, wrong methods, invalid parameters) and unexpected failures the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from shopbotly.common.logging import get_logger

__all__ = [
    "PROBLEM_TYPE",
    "FieldProblem",
    "Problem",
    "install_problem_handlers",
    "problem_openapi",
    "problem_response",
]

log = get_logger(__name__)

PROBLEM_TYPE = "application/problem+json"


class FieldProblem(BaseModel):
    """One wrong field: where (`body.tags[1]`), what is wrong, and its error type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    loc: str
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every 4xx and 5xx answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(default="about:blank", description="Always about:blank: `status` is the kind.")
    title: str = Field(description="The HTTP status phrase.")
    status: int
    detail: str = Field(description="What was wrong and what to do about it.")
    code: str = Field(description="A stable snake_case name of the problem, for clients to branch on.")
    errors: list[FieldProblem] = Field(default_factory=list, description="Each wrong field, if any.")


def _code_of(status: int) -> str:
    return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")


def problem_response(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    errors: Sequence[FieldProblem] = (),
    headers: dict[str, str] | None = None,
) -> Response:
    """The problem+json answer; `code` defaults to the status phrase in snake_case (`not_found`)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code or _code_of(status),
        "errors": [e.model_dump() for e in errors],
    }
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type=PROBLEM_TYPE,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _loc(parts: Sequence[int | str]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def install_problem_handlers(app: FastAPI) -> None:
    """Framework errors and unexpected failures as problems too.

    A routing 404 whose raw path holds an encoded slash (`%2F`) is a 400: the client meant one path
    parameter with a `/` in it (`a%2Fb`, `..%2F..%2Fetc%2Fpasswd`), which no id, e-mail, tenant or source
    name may contain. A `/` sent as is makes another path, and unknown paths are 404.
    """

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        status = exc.status_code
        if status == 404:
            raw_path: bytes = request.scope.get("raw_path") or b""
            if b"%2f" in raw_path.lower():
                return problem_response(
                    400,
                    "a path parameter contains an encoded '/' (%2F); ids, e-mail addresses, tenant and"
                    " source names cannot contain '/'",
                    code="encoded_slash",
                )
            return problem_response(404, "no such resource: check the method and path", headers=headers)
        if status == 405:
            return problem_response(405, f"{request.method} is not allowed on this path", headers=headers)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
        return problem_response(status, detail, headers=headers)

    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            FieldProblem(
                loc=_loc(tuple(e.get("loc", ()))), msg=str(e.get("msg", "")), type=str(e.get("type", ""))
            )
            for e in exc.errors()
        ]
        return problem_response(
            422, f"{len(errors)} invalid parameter(s)", code="invalid_request", errors=errors
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # A bug: logged with its traceback; the client gets the same format, never internals.
        log.error("unhandled error", path=request.url.path, error=type(exc).__name__, exc_info=exc)
        return problem_response(500, "an unexpected error occurred; it has been logged")

    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(Exception, on_unexpected)


def problem_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """File every 4xx/5xx body of an OpenAPI document under application/problem+json (FastAPI writes
    application/json), so the document says what the service sends."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                content = response.get("content")
                if str(status)[0] in "45" and content and "application/json" in content:
                    content[PROBLEM_TYPE] = content.pop("application/json")
    return schema
