"""The console FastAPI app, built by `create_app` (nothing happens at import time).

Server-rendered pages (Jinja2) with a small script that refreshes a page's live part by polling; the
script and the stylesheet are served by the app itself (no CDN, nothing fetched at run time).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from shopbotly.common.health import Health, probe_router
from shopbotly.common.logging import get_logger
from shopbotly.common.problems import install_problem_handlers
from shopbotly.console.auth import Sessions, SignInRequired
from shopbotly.console.materializer import Materializer, topic_roles
from shopbotly.console.pages import router
from shopbotly.console.readmodel import ReadModel, iso
from shopbotly.console.replicas import Resolver, resolve_host
from shopbotly.console.settings import Settings

__all__ = ["create_app"]

_HERE = Path(__file__).parent
_log = get_logger(__name__)


def create_app(
    settings: Settings,
    *,
    consume: bool = True,
    model: ReadModel | None = None,
    writer_transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver = resolve_host,
) -> FastAPI:
    """The app. `consume=False` shows whatever `model` holds without reading Kafka (tests);
    `writer_transport` replaces the network to the crm-writer replicas, `resolver` the DNS lookups of
    `dns+` writer URLs (tests)."""
    health = Health()
    model = model or ReadModel(
        topic_roles(settings.kafka),
        max_age_s=settings.console_retention_hours * 3600,
        max_events=settings.console_max_events,
        max_dead_letters=settings.console_max_dead_letters,
    )
    materializer = Materializer(settings.kafka, model, health, retry_s=settings.startup_retry_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        waiter: asyncio.Task[None] | None = None
        if consume:
            materializer.start()
            waiter = asyncio.create_task(materializer.wait_caught_up())
        else:
            health.set_ready("read-model", True)
        app.state.writers = httpx.AsyncClient(transport=writer_transport, timeout=3.0)
        _log.info("console started", port=settings.port)
        try:
            yield
        finally:
            await app.state.writers.aclose()
            if waiter is not None:
                waiter.cancel()
            if consume:
                await materializer.stop()

    app = FastAPI(
        title="ShopBotly console",
        version="1.0.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.filters["iso"] = iso
    templates.env.globals["poll_ms"] = int(settings.console_poll_s * 1000)
    app.state.settings = settings
    app.state.model = model
    app.state.health = health
    app.state.sessions = Sessions(settings)
    app.state.templates = templates
    app.state.materializer = materializer
    app.state.writer_transport = writer_transport
    app.state.resolver = resolver
    install_problem_handlers(app)
    problem_http = app.exception_handlers[StarletteHTTPException]

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return RedirectResponse(f"/login?next={quote(exc.next_url, safe='')}", status_code=303)

    async def http_error(request: Request, exc: Exception) -> Response:
        # People get a page; programs (no text/html in Accept) get problem+json like every other API.
        assert isinstance(exc, StarletteHTTPException)
        if "text/html" not in request.headers.get("accept", ""):
            answer = problem_http(request, exc)
            return answer if isinstance(answer, Response) else await answer
        return templates.TemplateResponse(
            request,
            "error.html",
            {"status": exc.status_code, "detail": exc.detail, "operator": None},
            status_code=exc.status_code,
        )

    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    app.include_router(router)
    app.include_router(probe_router(health))
    return app
