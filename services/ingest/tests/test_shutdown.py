"""`python -m shopbotly.ingest` as a process under uvicorn: SIGTERM fails /readyz, stops accepting, lets the
requests in flight finish with 202, flushes the producer and exits 0; every accepted event is on the topic."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from shopbotly.common.events import RawEvent
from shopbotly.common.health import Health
from shopbotly.common.kafka import KafkaSettings
from shopbotly.ingest.publisher import RawEventPublisher
from shopbotly.testkit.ingest import demo_config, read_topic, signed_headers

pytestmark = pytest.mark.integration

IN_FLIGHT = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _slow_body(body: bytes, pieces: int = 20, pause_s: float = 0.1) -> AsyncIterator[bytes]:
    step = -(-len(body) // pieces)
    for i in range(0, len(body), step):
        yield body[i : i + step]
        await asyncio.sleep(pause_s)


async def _outlasting_cancel(release: asyncio.Event) -> None:
    """What aiokafka's start or stop can do: outlast a cancel (here: ignore it until released)."""
    while True:
        try:
            await release.wait()
            return
        except asyncio.CancelledError:
            continue


class _StuckProducer:
    def __init__(self, release: asyncio.Event) -> None:
        self.release = release

    async def stop(self, timeout_s: float = 30.0) -> None:
        await _outlasting_cancel(self.release)


async def test_publisher_stop_returns_within_its_timeout_whatever_it_waits_on() -> None:
    """Issue 15 item 10: the lifespan shutdown hung for 300 s. Neither a monitor task that will not end
    nor a producer stop that will not end may hold it past the timeout."""
    publisher = RawEventPublisher(
        KafkaSettings(bootstrap="127.0.0.1:1"), "t", Health(), publish_timeout_s=1, check_interval_s=1
    )
    release = asyncio.Event()
    publisher._task = asyncio.create_task(_outlasting_cancel(release))
    publisher._producer = _StuckProducer(release)  # type: ignore[assignment]
    started = time.monotonic()
    stopping = asyncio.create_task(publisher.stop(1.0))
    done, _ = await asyncio.wait({stopping}, timeout=10)
    took = time.monotonic() - started
    release.set()  # let the stand-ins end, whatever happened
    await asyncio.sleep(0)
    assert stopping in done and took < 1.5, took
    assert not publisher.available


async def test_sigterm_drains_in_flight_requests_and_loses_nothing(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    config_file = tmp_path / "shopbotly.yaml"
    config_file.write_text(yaml.safe_dump(demo_config().model_dump(mode="json", exclude_none=True)))
    port = _free_port()
    env = {
        **os.environ,
        "SHOPBOTLY_CONFIG": str(config_file),
        "SHOPBOTLY_PORT": str(port),
        "SHOPBOTLY_KAFKA_BOOTSTRAP": kafka_settings.bootstrap,
        "SHOPBOTLY_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "SHOPBOTLY_DRAIN_DELAY_S": "1",
        "SHOPBOTLY_SHUTDOWN_GRACE_S": "15",
        "SHOPBOTLY_LOG_FORMAT": "console",
    }
    log_file = tmp_path / "ingest.log"
    log_handle = log_file.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "shopbotly.ingest"], env=env, stderr=log_handle)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while True:
                assert proc.poll() is None, log_file.read_text()
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert loop.time() < deadline, "ingest did not become ready"
                await asyncio.sleep(0.1)

            async def post(n: int) -> httpx.Response:
                body = orjson.dumps(
                    {"type": "order.paid", "data": {"email": f"c{n}@example.com"}, "pad": "x" * 2000}
                )
                headers = signed_headers("shopbotly", body, msg_id=f"msg_{n}")
                # A client of its own per request: no pooled keep-alive connection is shared.
                async with httpx.AsyncClient(base_url=base, timeout=30) as own:
                    return await own.post(
                        "/v1/webhooks/acme/shopbotly", content=_slow_body(body), headers=headers
                    )

            requests = [asyncio.create_task(post(n)) for n in range(IN_FLIGHT)]
            await asyncio.sleep(0.5)  # every request has started sending its body
            assert not any(r.done() for r in requests)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            # Draining: still answering, but not ready any more.
            assert (await client.get("/readyz")).status_code == 503
            answers = await asyncio.gather(*requests)
            assert [a.status_code for a in answers] == [202] * IN_FLIGHT

        returncode = await asyncio.to_thread(proc.wait, 30)
        assert returncode == 0, log_file.read_text()
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(base_url=base) as late:
                await late.get("/healthz")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log_handle.close()

    records = await read_topic(kafka_settings, expected=IN_FLIGHT)
    assert sorted(RawEvent.from_json(r.value).id for r in records) == sorted(
        f"msg_{n}" for n in range(IN_FLIGHT)
    )
