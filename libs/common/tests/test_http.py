"""The shared HTTP server runner over real sockets: slow clients are cut off at the read deadlines while
others are served, the connection cap answers 503 with Retry-After, and errors are problem+json."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from shopbotly.common.health import Health
from shopbotly.common.http import HttpServerSettings, ServiceServer, server_config
from shopbotly.common.problems import install_problem_handlers

pytestmark = pytest.mark.component

# Long enough that another client's requests complete meanwhile on a loaded 2-core machine.
HEADER_S = 1.0
BODY_S = 1.5


def _app() -> FastAPI:
    app = FastAPI(redirect_slashes=False)
    install_problem_handlers(app)

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        try:
            return Response(await request.body(), media_type="application/octet-stream")
        except ClientDisconnect:  # as the services do: a client that went away is not an error
            return Response(status_code=400)

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    return app


@asynccontextmanager
async def serving(limits: HttpServerSettings) -> AsyncIterator[ServiceServer]:
    config = server_config(_app(), host="127.0.0.1", port=0, limits=limits, shutdown_grace_s=1)
    server = ServiceServer(config, Health())
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield server
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task


async def _closed_after(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), 10)
    return data, time.monotonic() - started


async def _served_meanwhile(client: httpx.AsyncClient, held: asyncio.Event) -> int:
    """Requests another client completes while the slow one is held (until `held` is cleared)."""
    served = 0
    while held.is_set():
        answer = await client.get("/ping")
        if held.is_set():
            assert answer.json() == {"ok": True}
            served += 1
        await asyncio.sleep(0.05)
    return served


@asynccontextmanager
async def other_client(port: int) -> AsyncIterator[httpx.AsyncClient]:
    """Another client, connected and answered once before the slow one starts: making a client (its TLS
    context) and a first connection can take most of a second on a loaded machine."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        assert (await client.get("/ping")).json() == {"ok": True}
        yield client


async def _cut_off_while_others_are_served(
    client: httpx.AsyncClient, reader: asyncio.StreamReader
) -> tuple[bytes, float, int]:
    """Wait for the server to close the slow connection; meanwhile another client sends requests."""
    held = asyncio.Event()
    held.set()
    others = asyncio.create_task(_served_meanwhile(client, held))
    data, took = await _closed_after(reader)
    held.clear()
    return data, took, await others


async def test_trickled_headers_are_cut_off_at_the_header_deadline_while_others_are_served() -> None:
    limits = HttpServerSettings(header_timeout_s=HEADER_S, body_timeout_s=BODY_S)
    async with serving(limits) as server, other_client(server.port) as client:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)

        async def trickle() -> None:
            for byte in b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)

        trickling = asyncio.create_task(trickle())
        data, took, served = await _cut_off_while_others_are_served(client, reader)
        trickling.cancel()
        assert served >= 1
        assert data.startswith(b"HTTP/1.1 408 ")
        assert orjson.loads(data.split(b"\r\n\r\n", 1)[1])["status"] == 408
        assert HEADER_S * 0.8 <= took <= HEADER_S + 1.0
        writer.close()


async def test_a_silent_connection_is_closed_at_the_header_deadline() -> None:
    async with serving(HttpServerSettings(header_timeout_s=HEADER_S)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        data, took = await _closed_after(reader)
        assert data.startswith(b"HTTP/1.1 408 ") and took <= HEADER_S + 1.0
        writer.close()


async def test_a_trickled_body_is_cut_off_at_the_body_deadline_while_others_are_served() -> None:
    limits = HttpServerSettings(header_timeout_s=HEADER_S, body_timeout_s=BODY_S)
    async with serving(limits) as server, other_client(server.port) as client:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")

        async def trickle() -> None:
            for _ in range(1000):
                writer.write(b"x")
                await asyncio.sleep(0.05)

        trickling = asyncio.create_task(trickle())
        data, took, served = await _cut_off_while_others_are_served(client, reader)
        trickling.cancel()
        assert served >= 1
        assert data.startswith(b"HTTP/1.1 408 ")
        assert BODY_S * 0.8 <= took <= BODY_S + 1.0
        writer.close()


async def test_a_body_sent_within_the_deadline_is_served_on_a_kept_alive_connection() -> None:
    limits = HttpServerSettings(header_timeout_s=HEADER_S, body_timeout_s=BODY_S)
    async with serving(limits) as server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
        for _ in range(3):
            resp = await c.post("/echo", content=b"hello")
            assert resp.content == b"hello"
            await asyncio.sleep(HEADER_S * 1.2)  # idle between requests: the keep-alive time applies


async def test_connections_past_the_cap_get_503_with_retry_after_and_the_others_are_served() -> None:
    limits = HttpServerSettings(max_connections=2, retry_after_s=3, header_timeout_s=5)
    async with serving(limits) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        data, took = await _closed_after(reader)
        assert took < 1.0
        head, body = data.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 503 ") and b"retry-after: 3" in head.lower()
        assert orjson.loads(body)["status"] == 503
        writer.close()
        # One of the held connections is still served.
        r, w = held[0]
        w.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200 ")
        for _, w in held:
            w.close()


async def test_unknown_paths_are_404_problems_and_nothing_redirects() -> None:
    async with (
        serving(HttpServerSettings()) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client,
    ):
        resp = await client.get("/ping/", headers={"host": "evil.example.com"})
        assert resp.status_code == 404 and "location" not in resp.headers
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["code"] == "not_found"
        resp = await client.get("/a%2Fb")
        assert resp.status_code == 400 and resp.json()["code"] == "encoded_slash"
