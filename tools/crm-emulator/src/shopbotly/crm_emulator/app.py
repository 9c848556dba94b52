"""The app factory: `create_app(settings)` builds a FastAPI app with no work at import time.

The store opens when the app is built (so ASGITransport tests need no lifespan); the lifespan starts and
stops the webhook sender and closes the store.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shopbotly.common.health import probe_router
from shopbotly.common.logging import get_logger
from shopbotly.crm_emulator import admin, generic, generic_noupsert, hubspot, salesforce, salesforce_tooling
from shopbotly.crm_emulator.gate import Gate
from shopbotly.crm_emulator.generic_rules import GenericRejected
from shopbotly.crm_emulator.hubspot_rules import RequestRejected
from shopbotly.crm_emulator.oauth import OAuthError
from shopbotly.crm_emulator.runtime import Runtime, build_runtime
from shopbotly.crm_emulator.salesforce_rules import SalesforceRejected
from shopbotly.crm_emulator.settings import EmulatorSettings

__all__ = ["create_app"]

log = get_logger(__name__)


def create_app(
    settings: EmulatorSettings | None = None, *, clock: Callable[[], float] = time.time
) -> FastAPI:
    """An emulator app. `clock` (epoch seconds) is injectable so tests can expire tokens and windows."""
    settings = settings if settings is not None else EmulatorSettings()
    runtime = build_runtime(settings, clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.webhooks.start()
        await runtime.outbound.start()
        runtime.health.set_ready("store", runtime.store.ping(), "SQLite store")
        log.info("crm_emulator_started", database=runtime.store.path)
        try:
            yield
        finally:
            runtime.health.draining = True
            await runtime.webhooks.aclose()
            await runtime.outbound.aclose()

    app = FastAPI(
        title="ShopBotly CRM emulator",
        description="HubSpot, Salesforce and a generic REST CRM with real shapes, limits and faults.",
        lifespan=lifespan,
        docs_url="/_emulator/docs",
        redoc_url=None,
        openapi_url="/_emulator/openapi.json",
    )
    app.state.runtime = runtime
    runtime.health.set_ready("store", runtime.store.ping(), "SQLite store")
    app.include_router(probe_router(runtime.health))
    app.include_router(admin.router)
    app.include_router(hubspot.router)
    app.include_router(hubspot.associations_router)
    app.include_router(hubspot.properties_router)
    app.include_router(salesforce.router)
    app.include_router(salesforce_tooling.router)
    app.include_router(generic.router)
    app.include_router(generic_noupsert.router)
    _error_handlers(app)
    app.add_middleware(Gate, runtime=runtime, routes=app.router.routes)
    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestRejected)
    async def hubspot_rejected(_: Request, exc: RequestRejected) -> JSONResponse:
        return JSONResponse(exc.body, exc.status)

    @app.exception_handler(SalesforceRejected)
    async def salesforce_rejected(_: Request, exc: SalesforceRejected) -> JSONResponse:
        return JSONResponse(exc.body, exc.status)

    @app.exception_handler(GenericRejected)
    async def generic_rejected(_: Request, exc: GenericRejected) -> JSONResponse:
        return JSONResponse(exc.body, exc.status)

    @app.exception_handler(OAuthError)
    async def oauth_rejected(_: Request, exc: OAuthError) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status)


def runtime_of(app: FastAPI) -> Runtime:
    """The live state behind an app (tests reach in to move time or read counters)."""
    runtime: Runtime = app.state.runtime
    return runtime
