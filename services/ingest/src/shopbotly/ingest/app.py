"""The ingest FastAPI app, built by a factory: nothing connects or reads files at import time."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.types import Receive, Scope, Send

from shopbotly.common import __version__
from shopbotly.common.config import ShopbotlyConfig, load_config
from shopbotly.common.health import Health, probe_router
from shopbotly.common.logging import get_logger
from shopbotly.common.problems import install_problem_handlers, problem_openapi
from shopbotly.common.topics import Topic
from shopbotly.ingest import lead_routes, webhook_routes
from shopbotly.ingest.edge import IngestRuntime
from shopbotly.ingest.idempotency import LeadIdempotency
from shopbotly.ingest.intake import Intake, resolve_sources
from shopbotly.ingest.publisher import RawEventPublisher
from shopbotly.ingest.schemas import Lead
from shopbotly.ingest.settings import Settings
from shopbotly.ingest.webhook_routes import webhook_path

__all__ = ["IngestApi", "create_app"]

log = get_logger(__name__)

_DESCRIPTION = """\
Verifies platform webhooks and the Sync Lead API and publishes each event to Kafka (`raw-events`).
A 2xx answer means Kafka acknowledged the event (`acks=all`); 503 with `Retry-After` means retry later.
"""


class IngestApi(FastAPI):
    """The FastAPI app, with `POST /v1/webhooks/{tenant}/{source}` served before its middleware stack and
    router: that stack (error and exception middlewares, body limit, telemetry, exit stack, route matching)
    cost 37 % of the CPU of an accepted webhook in-process (docs/benchmarks.md, "What bounds ingest").
    Every other request, the OpenAPI document and the lifespan are FastAPI's as usual."""

    runtime: IngestRuntime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            where = webhook_path(scope["path"])
            if where is not None:
                try:
                    await webhook_routes.endpoint.serve(scope, receive, send, self.runtime, *where)
                except Exception as exc:
                    # What ServerErrorMiddleware does for routed requests: the app's handler answers (a 500
                    # problem, logged) unless an answer has started, and the server sees the exception.
                    response = self.exception_handlers[Exception](Request(scope), exc)
                    if inspect.isawaitable(response):
                        response = await response
                    with contextlib.suppress(RuntimeError):  # an answer had started
                        await response(scope, receive, send)
                    raise
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, config: ShopbotlyConfig | None = None) -> IngestApi:
    """The app for `settings`; `config` defaults to the tenants file at `settings.config`.

    Raises ConfigError when the file or a secret it references is missing or invalid.
    """
    if config is None:
        config = load_config(settings.config)
    health = Health()
    publisher = RawEventPublisher(
        settings.kafka,
        settings.kafka.topic(Topic.RAW_EVENTS),
        health,
        publish_timeout_s=settings.publish_timeout_s,
        check_interval_s=settings.broker_check_interval_s,
        also_writes=[settings.kafka.topic(Topic.LEAD_IDEMPOTENCY)],
    )
    idempotency = LeadIdempotency(
        settings.kafka,
        publisher,
        health,
        ttl_s=settings.idempotency_ttl_s,
        max_entries=settings.idempotency_max_entries,
        wait_s=settings.publish_timeout_s,
    )
    intake = Intake(
        resolve_sources(config, settings, origin=str(settings.config)),
        publisher,
        settings,
        idempotency=idempotency,
    )
    runtime = IngestRuntime(
        settings=settings, config=config, health=health, publisher=publisher, intake=intake
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await publisher.start()
        idempotency.start()
        log.info("ingest started", sources=len(intake.sources), topic=settings.kafka.topic(Topic.RAW_EVENTS))
        try:
            yield
        finally:
            # The server has stopped accepting and finished in-flight requests; flush what is left.
            health.draining = True
            await idempotency.stop()
            await publisher.stop(settings.shutdown_grace_s)
            log.info("ingest stopped")

    app = IngestApi(
        title="ShopBotly ingest",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        # No redirects: a trailing slash is an unknown path (404), never a Location built from Host.
        redirect_slashes=False,
    )
    app.state.runtime = app.runtime = runtime
    install_problem_handlers(app)
    # The hot route first: routes are matched in order.
    app.include_router(webhook_routes.router)
    app.include_router(lead_routes.router)
    app.include_router(probe_router(health))

    def openapi() -> dict[str, Any]:
        # The lead body is read by hand (to enforce the size limit while streaming), so FastAPI does not
        # see the model; its schema is added here for the `$ref` in the route's requestBody.
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            lead = Lead.model_json_schema(ref_template="#/components/schemas/{model}")
            nested = lead.pop("$defs", {})
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update({"Lead": lead, **nested})
            app.openapi_schema = problem_openapi(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
