"""Test helpers for the CRM emulator: an in-process emulator with a controllable clock, a webhook receiver
on a real port. Used by the emulator's own tests and importable by other test suites."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from shopbotly.crm_emulator import EmulatorSettings, create_app
from shopbotly.crm_emulator.runtime import Runtime
from shopbotly.crm_emulator.tls import ServerTls

__all__ = [
    "GENERIC",
    "HUBSPOT",
    "Clock",
    "Emulator",
    "EmulatorFactory",
    "Received",
    "Receiver",
    "free_port",
    "serve",
    "served_emulators",
]

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

    async def create_property(
        self,
        object_type: str,
        name: str,
        *,
        type_: str = "string",
        field_type: str = "text",
        unique: bool = False,
    ) -> None:
        """A custom HubSpot property, created through the Properties API as `connections setup` does."""
        body = {
            "name": name,
            "label": name,
            "type": type_,
            "fieldType": field_type,
            "groupName": "contactinformation",
            "hasUniqueValue": unique,
        }
        response = await self.client.post(f"/crm/v3/properties/{object_type}", headers=HUBSPOT, json=body)
        assert response.status_code == 201, response.text

    async def provision_hubspot(self) -> None:
        """What `shopbotly connections setup --apply` creates in a fresh portal that these tests write to: the
        tags property, the reply property and the unique command-id property of notes and tickets."""
        await self.create_property("contacts", "shopbotly_tags", field_type="textarea")
        await self.create_property("tickets", "shopbotly_last_reply", field_type="textarea")
        for object_type in ("notes", "tickets"):
            await self.create_property(object_type, "shopbotly_command_id", unique=True)

    async def create_field(
        self, sobject: str, name: str, *, type_: str = "Text", external_id: bool = False, unique: bool = False
    ) -> None:
        """A Salesforce custom field, created through the Tooling API (`connections setup --apply`)."""
        metadata: dict[str, Any] = {"label": name.removesuffix("__c"), "type": type_}
        if type_ == "Text":
            metadata |= {"length": 255, "externalId": external_id, "unique": unique}
        elif type_ == "MultiselectPicklist":
            metadata |= {
                "visibleLines": 4,
                "valueSet": {
                    "valueSetDefinition": {"value": [{"fullName": "shopbotly", "label": "shopbotly"}]}
                },
            }
        response = await self.client.post(
            "/services/data/v61.0/tooling/sobjects/CustomField",
            headers=await self.sf_token(),
            json={"FullName": f"{sobject}.{name}", "Metadata": metadata},
        )
        assert response.status_code == 201, response.text


EmulatorFactory = Callable[..., Awaitable[Emulator]]


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

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} deliveries, got {len(self.received)}")
            await asyncio.sleep(0.01)
        return self.received


async def serve(
    app: Any, port: int | None = None, *, tls: ServerTls | None = None
) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """Serve `app` on 127.0.0.1 (`port`, else a free one; over HTTPS with `tls`, as `shopbotly-crm-emulator
    --tls` does) once it has started. `_serve` leaves the test runner's signal handlers alone."""
    port = port or free_port()
    chain = str(tls.chain) if tls else None
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ssl_certfile=chain,
        ssl_keyfile=chain,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server._serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    return server, task, port


@asynccontextmanager
async def served_emulators() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """A starter of CRM emulators on real ports (each its own), with setting overrides, returning each one's
    base URL; all stop on exit."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> str:
        server, task, port = await serve(create_app(EmulatorSettings(**overrides)))
        servers.append((server, task))
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for server, task in servers:
            server.should_exit = True
            await task
