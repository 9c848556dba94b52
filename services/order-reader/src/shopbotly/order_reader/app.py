"""The order-reader FastAPI app, built by `create_app` (nothing happens at import time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry

from shopbotly.common.config import ShopbotlyConfig, load_config
from shopbotly.common.health import probe_router
from shopbotly.common.problems import problem_openapi
from shopbotly.order_reader.auth import SECURITY_SCHEMES
from shopbotly.order_reader.problems import install_problem_handlers
from shopbotly.order_reader.routes import add_order_routes, add_ticket_routes
from shopbotly.order_reader.runtime import Runtime
from shopbotly.order_reader.settings import Settings

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    *,
    config: ShopbotlyConfig | None = None,
    registry: CollectorRegistry = REGISTRY,
    consume: bool = True,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The app. `consume=False` serves whatever the store holds without reading Kafka (tests, inspection);
    `upstream_transport` replaces the network for read-through calls (tests)."""
    runtime = Runtime(
        settings,
        config if config is not None else load_config(settings.config),
        registry=registry,
        consume=consume,
        upstream_transport=upstream_transport,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="ShopBotly order-reader",
        version="1.0.0",
        description="Order and ticket lookups for the chatbot, answered from a local materialized table.",
        lifespan=lifespan,
        redoc_url=None,
        # No redirects: `/api/v1/orders/1001/` is an unknown path (404), never a Location built from Host.
        redirect_slashes=False,
    )
    app.state.runtime = runtime
    install_problem_handlers(app)
    # Lookups first: routes are matched in order, and they are the traffic.
    add_order_routes(app)
    add_ticket_routes(app)
    app.include_router(probe_router(runtime.health))
    _finish_openapi(app)
    return app


def _finish_openapi(app: FastAPI) -> None:
    """Error bodies are filed under application/problem+json, and the bearer scheme that the routes check
    by hand is declared."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = problem_openapi(generate())
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
