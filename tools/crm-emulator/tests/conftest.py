"""Fixtures: an emulator app driven through httpx's ASGITransport, with a clock tests can move."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shopbotly.crm_emulator import EmulatorSettings, create_app, runtime_of
from shopbotly.testkit.crm_emulator import Clock, Emulator, EmulatorFactory, Received, Receiver
from shopbotly.testkit.crm_emulator import serve as _serve


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
