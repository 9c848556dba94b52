"""Fixtures shared by crm-writer's tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shopbotly.common.config import ConnectionConfig, parse_connection
from shopbotly.crm_writer.runtime import BreakerSettings, ConnectionRuntime
from shopbotly.testkit.crm_emulator import free_port, serve

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
        cfg = config if isinstance(config, ConnectionConfig) else parse_connection(config)
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


async def _set_up(client: httpx.AsyncClient) -> None:
    """What `shopbotly connections setup --apply` creates in the emulator's fresh portal for a HubSpot
    connection with default options (the tags property, the unique command-id property, ...)."""
    from shopbotly.common.config.crm_kinds.hubspot import HubSpotOptions
    from shopbotly.crm_writer.schema.hubspot import hubspot_definition, owned_hubspot_properties

    for prop in owned_hubspot_properties(HubSpotOptions()):
        response = await client.post(
            f"/crm/v3/properties/{prop.object_type}",
            json=hubspot_definition(prop),
            headers={"Authorization": "Bearer emulator-hubspot-token"},
        )
        assert response.status_code == 201, response.text


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """The emulator as a portal `connections setup` ran on (it starts as a fresh portal)."""
    from shopbotly.crm_emulator.app import create_app
    from shopbotly.crm_emulator.settings import EmulatorSettings

    port = free_port()
    server, task, _ = await serve(create_app(EmulatorSettings(port=port, seed=7)), port)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as admin:
        await _set_up(admin)
        yield Emulator(base, admin)
    server.should_exit = True
    await task


class WriterProcess:
    """One crm-writer replica as a real process (`python -m shopbotly.crm_writer`), to SIGKILL or SIGSTOP."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def metric(self, name: str, **labels: str) -> float | None:
        """The value of a metric sample on /metrics with exactly these labels (None while not reported)."""
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{self.url}/metrics", timeout=5)).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


WriterFactory = Callable[..., Awaitable[WriterProcess]]


@pytest.fixture
async def writer_process(kafka_settings: Any, tmp_path: Path) -> AsyncIterator[WriterFactory]:
    """Start crm-writer replicas as processes on the test's topics; every one left is killed after."""
    started: list[WriterProcess] = []

    async def start(config: Path, *, name: str = "writer", **env: str) -> WriterProcess:
        port = free_port()
        log = tmp_path / f"{name}.log"
        full_env = {
            **os.environ,
            "SHOPBOTLY_CONFIG": str(config),
            "SHOPBOTLY_PORT": str(port),
            "SHOPBOTLY_KAFKA_BOOTSTRAP": kafka_settings.bootstrap,
            "SHOPBOTLY_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
            "SHOPBOTLY_CONSUMER_GROUP": f"{kafka_settings.topic_prefix}crm-writer",
            "SHOPBOTLY_COMMIT_INTERVAL_S": "0.5",
            "SHOPBOTLY_SESSION_TIMEOUT_MS": "6000",
            "SHOPBOTLY_LOG_LEVEL": "warning",
            **env,
        }
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shopbotly.crm_writer", env=full_env, stdout=out, stderr=out
            )
        writer = WriterProcess(proc, port, log)
        started.append(writer)
        async with httpx.AsyncClient() as client, asyncio.timeout(60):
            while True:
                if proc.returncode is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode}: {writer.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{writer.url}/readyz")).status_code == 200:
                        return writer
                await asyncio.sleep(0.2)

    yield start
    for writer in started:
        writer.signal(signal.SIGCONT)
        writer.signal(signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await writer.proc.wait()
