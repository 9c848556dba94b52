"""Fixtures shared by crm-writer's tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn

from shopbotly.common.config import ConnectionConfig
from shopbotly.crm_writer.runtime import BreakerSettings, ConnectionRuntime

RuntimeFactory = Callable[..., ConnectionRuntime]


@pytest.fixture
async def make_runtime() -> AsyncIterator[RuntimeFactory]:
    """Build a ConnectionRuntime over a given transport; clients are closed after the test."""
    clients: list[httpx.AsyncClient] = []

    def factory(
        config: dict[str, Any] | ConnectionConfig,
        transport: httpx.AsyncBaseTransport,
        *,
        name: str = "t:crm",
        breaker: BreakerSettings | None = None,
        share: float = 1.0,
    ) -> ConnectionRuntime:
        cfg = config if isinstance(config, ConnectionConfig) else ConnectionConfig.model_validate(config)
        client = httpx.AsyncClient(transport=transport)
        clients.append(client)
        return ConnectionRuntime(
            name,
            cfg,
            client,
            breaker=breaker or BreakerSettings(failure_threshold=3, open_s=0.2, max_open_s=1.0),
            share=share,
        )

    yield factory
    for c in clients:
        await c.aclose()


class Emulator:
    """The CRM emulator (tools/crm-emulator) served in-process by uvicorn on a free port."""

    def __init__(self, base_url: str, admin: httpx.AsyncClient) -> None:
        self.base_url = base_url
        self.admin = admin

    async def state(self) -> dict[str, Any]:
        r = await self.admin.get("/_emulator/state")
        r.raise_for_status()
        return dict(r.json())

    async def faults(self, **changes: Any) -> None:
        r = await self.admin.post("/_emulator/faults", json=changes)
        r.raise_for_status()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    from shopbotly.crm_emulator.app import create_app
    from shopbotly.crm_emulator.settings import EmulatorSettings

    port = _free_port()
    app = create_app(EmulatorSettings(port=port, seed=7))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
    )
    task = asyncio.create_task(server._serve())  # _serve: leave the test runner's signal handlers alone
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as admin:
        yield Emulator(base, admin)
    server.should_exit = True
    await task
