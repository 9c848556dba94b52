"""crm-writer assembly: the writer and its probes, built by factories (no work at import time)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from shopbotly.common.config import ShopbotlyConfig, load_config
from shopbotly.common.health import Health
from shopbotly.common.http import serve_probes
from shopbotly.common.logging import configure_logging, get_logger
from shopbotly.crm_writer.engine import Writer
from shopbotly.crm_writer.settings import Settings

__all__ = ["create_writer", "run", "status_router"]

log = get_logger(__name__)


def status_router(writer: Writer) -> APIRouter:
    """`GET /connections`: each connection's state in this replica (what `shopbotly connections status`
    shows, merged over replicas)."""
    router = APIRouter(tags=["status"])

    @router.get("/connections", include_in_schema=False)
    async def connections() -> JSONResponse:
        return JSONResponse({"connections": writer.connection_status()})

    return router


def create_writer(
    settings: Settings,
    config: ShopbotlyConfig | None = None,
    *,
    health: Health | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Writer:
    """A writer for these settings; the tenants file is read from `settings.config` unless given."""
    return Writer(
        settings,
        config if config is not None else load_config(settings.config),
        health=health,
        transport=transport,
    )


async def run(settings: Settings) -> None:
    """Serve probes and metrics, consume until SIGTERM/SIGINT, then drain and leave the group."""
    configure_logging("crm-writer", level=settings.log_level, fmt=settings.log_format)
    health = Health()
    writer = create_writer(settings, health=health)
    server, server_task = await serve_probes(
        health, host=settings.host, port=settings.port, title="crm-writer", extra=status_router(writer)
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, writer.stop)
    try:
        await writer.run()
    finally:
        server.should_exit = True
        await server_task
        log.info("crm-writer stopped")
