"""The installed `shopbotly-order-reader` process: serves from its env, shuts down gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from shopbotly.common.events import message_headers
from shopbotly.common.ids import order_key
from shopbotly.common.kafka import KafkaSettings, make_producer
from shopbotly.common.topics import Topic
from shopbotly.testkit.order_reader import auth, config_data, order

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_the_process_serves_lookups_and_shuts_down_gracefully_on_sigterm(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    producer = make_producer(kafka_settings, client_role="process-test")
    await producer.start()
    try:
        o = order(order_id="P-1")
        headers = message_headers(event_id="p1", tenant="acme", trace_id=None, schema="shopbotly.order/1")
        await producer.send_and_wait(
            kafka_settings.topic(Topic.ORDERS), o.to_json(), key=order_key("acme", "P-1"), headers=headers
        )
    finally:
        await producer.stop()
    config = tmp_path / "shopbotly.yaml"
    config.write_text(yaml.safe_dump(config_data()))
    port = _free_port()
    env = {
        **os.environ,
        "SHOPBOTLY_PORT": str(port),
        "SHOPBOTLY_DATA_DIR": str(tmp_path / "data"),
        "SHOPBOTLY_CONFIG": str(config),
        "SHOPBOTLY_KAFKA_BOOTSTRAP": kafka_settings.bootstrap,
        "SHOPBOTLY_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "SHOPBOTLY_SHUTDOWN_GRACE_S": "5",
    }
    exe = Path(sys.executable).with_name("shopbotly-order-reader")
    proc = await asyncio.create_subprocess_exec(
        str(exe), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            async with asyncio.timeout(30):
                while True:
                    try:
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass  # not listening yet
                    assert proc.returncode is None, "the process exited during start"
                    await asyncio.sleep(0.1)
            found = await client.get("/api/v1/orders/P-1", headers=auth())
            assert found.status_code == 200 and found.json()["order_id"] == "P-1"
            metrics = (await client.get("/metrics")).text
            assert 'shopbotly_order_reader_lookups_total{kind="order",outcome="found"} 1.0' in metrics
            assert "shopbotly_order_reader_rebuild_progress_ratio 1.0" in metrics
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            code = await proc.wait()
        # The shared runner (shopbotly.common.http) ends an orderly shutdown with status 0.
        assert code == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    lines = [orjson.loads(line) for line in (await proc.stderr.read()).splitlines() if line.startswith(b"{")]
    events = [line["event"] for line in lines]
    # "stopped" is logged at the end of the lifespan shutdown: consumer stopped, store closed.
    assert "order-reader started" in events and "order-reader stopped" in events
    assert events.index("order-reader stopped") < events.index("Application shutdown complete.")
    assert all(line.get("service") == "order-reader" for line in lines)
