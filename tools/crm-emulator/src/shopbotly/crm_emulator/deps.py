"""Shared route plumbing: the runtime as a dependency, and JSON bodies read without FastAPI's 422 shape."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, Request

from shopbotly.crm_emulator.runtime import Runtime

__all__ = ["RuntimeDep", "get_runtime", "read_json"]


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def read_json(request: Request) -> tuple[Any, str | None]:
    """(parsed body, None) or (None, parser error message) — each CRM words its own 400."""
    raw = await request.body()
    if not raw:
        return None, "empty request body"
    try:
        return json.loads(raw), None
    except ValueError as exc:
        return (
            None,
            f"Unexpected character at line {getattr(exc, 'lineno', 1)}, column {getattr(exc, 'colno', 1)}",
        )
