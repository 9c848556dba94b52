"""Liveness and readiness, and the `/healthz`, `/readyz`, `/metrics` routes every service serves.

Liveness follows progress (a loop that stops beating fails `/healthz`), not only the process being up.
Readiness is the conjunction of named conditions (broker metadata, table caught up, ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from shopbotly.common.metrics import metrics_response

__all__ = ["Health", "probe_app", "probe_router"]


@dataclass
class Health:
    """Named readiness conditions and liveness heartbeats."""

    ready_conditions: dict[str, tuple[bool, str]] = field(default_factory=dict)
    heartbeats: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (last beat, max age)
    draining: bool = False

    def set_ready(self, name: str, ok: bool, detail: str = "") -> None:
        self.ready_conditions[name] = (ok, detail)

    def beat(self, name: str, max_age_s: float = 60.0) -> None:
        self.heartbeats[name] = (time.monotonic(), max_age_s)

    def live(self) -> tuple[bool, dict[str, str]]:
        now = time.monotonic()
        stale = {
            name: f"no progress for {now - last:.0f}s (limit {limit:.0f}s)"
            for name, (last, limit) in self.heartbeats.items()
            if now - last > limit
        }
        return not stale, stale

    def ready(self) -> tuple[bool, dict[str, str]]:
        failing = {
            name: detail or "not ready" for name, (ok, detail) in self.ready_conditions.items() if not ok
        }
        if self.draining:
            failing["shutdown"] = "draining"
        if not self.ready_conditions:
            failing["startup"] = "starting"
        return not failing, failing


def probe_router(health: Health) -> APIRouter:
    router = APIRouter(tags=["probes"])

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        ok, problems = health.live()
        return JSONResponse({"status": "ok" if ok else "failing", "problems": problems}, 200 if ok else 503)

    @router.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        ok, problems = health.ready()
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "problems": problems}, 200 if ok else 503
        )

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> object:
        return metrics_response()

    return router


def probe_app(health: Health, title: str, extra: APIRouter | None = None) -> FastAPI:
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(probe_router(health))
    if extra is not None:
        app.include_router(extra)
    return app
