"""The one HTTP server runner of the ShopBotly APIs (ingest, order-reader): uvicorn with uvloop and
httptools, a drain phase on SIGTERM, and limits that keep slow or idle clients from holding the process.

Limits (`SHOPBOTLY_HTTP_*`, see `HttpServerSettings`): a request's headers must arrive within
`header_timeout_s` of its first byte (or of the connection opening), its body within `body_timeout_s` of
the headers, and an idle keep-alive connection is closed after `keep_alive_s`. Past a deadline the client
gets `408` (problem+json, `Connection: close`) if no answer has started, and the connection is half-closed
(what the client still sends is dropped for a second, so no reset destroys the 408) and then closed. At
most `max_connections` connections are open per process; one more is answered `503` with `Retry-After`
and closed at once, so file descriptors and memory stay bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from http import HTTPStatus
from types import FrameType
from typing import Any

import orjson
import uvicorn
from fastapi import APIRouter
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shopbotly.common.health import Health, probe_app
from shopbotly.common.logging import get_logger
from shopbotly.common.problems import PROBLEM_TYPE

__all__ = ["HttpServerSettings", "ServiceServer", "run_server", "serve_probes", "server_config"]

log = get_logger(__name__)


class HttpServerSettings(BaseSettings):
    """Deadlines and the connection cap of an HTTP API process, from `SHOPBOTLY_HTTP_*`."""

    model_config = SettingsConfigDict(env_prefix="SHOPBOTLY_HTTP_", extra="ignore", frozen=True)

    # From a connection's first byte (or its opening) until the request's headers are complete.
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # From the end of the headers until the whole body is in (1 MiB at ~35 KiB/s fits in 30 s).
    body_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # An idle keep-alive connection is closed after this long.
    keep_alive_s: float = Field(default=5.0, gt=0, le=300)
    # Open connections per process; one more is refused with 503 and Retry-After.
    max_connections: int = Field(default=1000, ge=1, le=100_000)
    # Retry-After (seconds) of that 503.
    retry_after_s: int = Field(default=1, ge=1, le=3600)


def _raw_problem(status: int, detail: str, extra_headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A complete HTTP/1.1 problem+json answer that closes the connection (written by the protocol itself,
    before or instead of the app)."""
    phrase = HTTPStatus(status).phrase
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": phrase,
            "status": status,
            "detail": detail,
            "code": phrase.lower().replace(" ", "_"),
            "errors": [],
        }
    )
    headers = [
        (b"content-type", PROBLEM_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
        *extra_headers,
    ]
    head = f"HTTP/1.1 {status} {phrase}\r\n".encode() + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    return head + b"\r\n" + body


# How long a connection cut off at a deadline stays half-closed (its further input dropped) before the close.
_LINGER_S = 1.0


def _protocol_class(limits: HttpServerSettings) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with read deadlines and the connection cap of `limits`."""
    timed_out = _raw_problem(
        408, "the request was not received in time; send headers and body without long pauses"
    )
    refused = _raw_problem(
        503,
        "too many open connections; retry later",
        ((b"retry-after", str(limits.retry_after_s).encode()),),
    )

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        # idle (between requests) → headers → body → app (the request is in, the app answers) → idle
        _phase = "idle"
        _refused = False
        # Answered and half-closed: what the client still sends is read and dropped until the close.
        _lingering = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= limits.max_connections:
                self._refused = True
                self.transport = transport
                transport.write(refused)
                transport.close()
                log.warning("connection refused: too many open connections", limit=limits.max_connections)
                return
            super().connection_made(transport)
            self._arm(limits.header_timeout_s, self._headers_late)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._refused:
                return
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused or self._lingering:
                return
            if self._phase == "idle" and self._deadline is None:
                self._arm(limits.header_timeout_s, self._headers_late)
            super().data_received(data)

        # --- parser callbacks: the phases of a request ------------------------------------------

        def on_message_begin(self) -> None:
            self._phase = "headers"
            if self._deadline is None:  # else the clock runs from the connection's opening or first byte
                self._arm(limits.header_timeout_s, self._headers_late)
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._phase = "body"
            self._arm(limits.body_timeout_s, self._body_late)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._phase = "app"
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            if self._phase == "app":
                self._phase = "idle"
            super().on_response_complete()

        # --- deadlines ------------------------------------------------------------------------------

        def _arm(self, delay_s: float, callback: Any) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(delay_s, callback)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_late(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(timed_out)
            log.info("connection closed: request headers too slow", timeout_s=limits.header_timeout_s)
            self._close_after_answer()

        def _body_late(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is not None and not cycle.response_started:
                self.transport.write(timed_out)
            if cycle is not None:
                # The app's receive() now reports a disconnect, and whatever it answers is dropped.
                cycle.disconnected = True
                cycle.message_event.set()
            log.info("connection closed: request body too slow", timeout_s=limits.body_timeout_s)
            self._close_after_answer()

        def _close_after_answer(self) -> None:
            """A staged close (RFC 9112 §9.6): send what is written, then FIN, and drop the client's
            further bytes for up to `_LINGER_S` before closing. Closing at once with the client's bytes
            unread makes the kernel send a reset, which can destroy the 408 before the client reads it."""
            self._lingering = True
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(_LINGER_S, self.transport.close)

    return LimitedHttpToolsProtocol


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    limits: HttpServerSettings,
    shutdown_grace_s: float,
    forwarded_allow_ips: str | None = None,
) -> uvicorn.Config:
    """The uvicorn settings every ShopBotly API runs with (benchmarks serve their baselines the same way)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=_protocol_class(limits),
        lifespan="on",
        access_log=False,
        log_config=None,
        proxy_headers=forwarded_allow_ips is not None,
        forwarded_allow_ips=forwarded_allow_ips,
        timeout_keep_alive=math.ceil(limits.keep_alive_s),
        timeout_graceful_shutdown=math.ceil(shutdown_grace_s),
    )


class ServiceServer(uvicorn.Server):
    """uvicorn with a drain phase: on SIGTERM /readyz fails at once, and the listener closes
    `drain_delay_s` later (so load balancers stop sending first); then in-flight requests finish within
    the graceful shutdown time and the app's lifespan ends."""

    def __init__(self, config: uvicorn.Config, health: Health, drain_delay_s: float = 0.0) -> None:
        super().__init__(config)
        self.health = health
        self.drain_delay_s = drain_delay_s
        self._exit_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.health.draining = True
        if self.drain_delay_s > 0 and self._exit_at is None:
            self._exit_at = time.monotonic() + self.drain_delay_s
            self._captured_signals.append(sig)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        port: int = self.servers[0].sockets[0].getsockname()[1]
        return port


def run_server(config: uvicorn.Config, health: Health, *, drain_delay_s: float = 0.0) -> None:
    """Serve until SIGTERM or Ctrl-C; an orderly shutdown exits with status 0."""
    server = ServiceServer(config, health, drain_delay_s)
    # uvicorn re-raises the signal it stopped for once it is done; a no-op handler makes that a clean
    # exit (status 0) rather than death by SIGTERM, since the shutdown was orderly.
    signal.signal(signal.SIGTERM, lambda *_: None)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the same orderly shutdown, no traceback
        server.run()


async def serve_probes(
    health: Health, *, host: str, port: int, title: str, extra: APIRouter | None = None
) -> tuple[ServiceServer, asyncio.Task[None]]:
    """Serve probes and metrics (and a worker's own read-only `extra` routes) on the current event loop,
    for workers whose main loop is Kafka (mapper, crm-writer): the same runner, read deadlines and
    connection cap as the APIs (`SHOPBOTLY_HTTP_*`), so a slow client cannot hold a worker's probe port."""
    config = server_config(
        probe_app(health, title, extra), host=host, port=port, limits=HttpServerSettings(), shutdown_grace_s=1
    )
    server = ServiceServer(config, health)
    # _serve, not serve: serve() captures SIGTERM/SIGINT, which belong to the worker's own shutdown.
    task = asyncio.create_task(server._serve())
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    return server, task
