"""Fixtures: an emulator app driven through httpx's ASGITransport, with a clock tests can move."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shopbotly.crm_emulator import EmulatorSettings, create_app, runtime_of
from shopbotly.crm_emulator.runtime import Runtime

HUBSPOT = {"Authorization": "Bearer emulator-hubspot-token"}
GENERIC = {"Authorization": "Bearer emulator-generic-token"}


class Clock:
    """Epoch seconds that only move when a test says so (starting at the real time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Emulator:
    app: FastAPI
    client: httpx.AsyncClient
    clock: Clock
    runtime: Runtime

    async def state(self, **params: Any) -> dict[str, Any]:
        response = await self.client.get("/_emulator/state", params=params)
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    async def sf_token(self) -> dict[str, str]:
        response = await self.client.post(
            "/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "emulator-sf-client",
                "client_secret": "emulator-sf-secret",
            },
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


EmulatorFactory = Callable[..., Awaitable[Emulator]]


@pytest.fixture
async def make_emulator() -> AsyncIterator[EmulatorFactory]:
    """Build emulators with setting overrides; each runs its lifespan and is closed after the test."""
    stack: list[tuple[Any, httpx.AsyncClient]] = []

    async def make(**overrides: Any) -> Emulator:
        clock = Clock()
        app = create_app(EmulatorSettings(**{"seed": 7, **overrides}), clock=clock)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://crm.test")
        stack.append((lifespan, client))
        return Emulator(app, client, clock, runtime_of(app))

    yield make
    for lifespan, client in reversed(stack):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def emulator(make_emulator: EmulatorFactory) -> Emulator:
    return await make_emulator()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Received:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A webhook receiver on a real port. `script` gives the answer per request: a status, or a delay in
    seconds (float) before answering 200 — longer than the sender's timeout means a timeout."""

    url: str
    received: list[Received] = field(default_factory=list)
    script: list[int | float] = field(default_factory=list)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} deliveries, got {len(self.received)}")
            await asyncio.sleep(0.01)
        return self.received


async def _serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server._serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task, port


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver(url="")

    async def hook(request: Request) -> Response:
        state.received.append(
            Received(
                request.method, str(request.url), dict(request.headers), await request.body(), time.time()
            )
        )
        action = state.script.pop(0) if state.script else 200
        if isinstance(action, float):
            await asyncio.sleep(action)
            return JSONResponse({"ok": True})
        return JSONResponse({"status": action}, action)

    app = FastAPI()
    app.router.routes.append(Route("/hooks/hubspot", hook, methods=["POST"]))
    server, task, port = await _serve(app)
    state.url = f"http://127.0.0.1:{port}/hooks/hubspot?tenant=demo"
    yield state
    server.should_exit = True
    await task


@pytest.fixture
async def serve_app() -> AsyncIterator[Callable[[Any], Awaitable[int]]]:
    """Serve ASGI apps with uvicorn on free ports for the test's duration; each call returns the port."""
    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def serve(app: Any) -> int:
        server, task, port = await _serve(app)
        running.append((server, task))
        return port

    yield serve
    for server, task in running:
        server.should_exit = True
        await task
