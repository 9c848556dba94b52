"""ResilientProducer.stop returns within its timeout even when aiokafka's stop outlasts a cancel (no broker
needed: the stuck producer is a stand-in that ignores cancellation, as a flush waiting for a leader can)."""

from __future__ import annotations

import asyncio
import time

import pytest

from shopbotly.common.kafka import KafkaSettings, ResilientProducer

pytestmark = pytest.mark.unit


class StuckProducer:
    """An AIOKafkaProducer whose stop ignores cancellation until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.stopping = False

    async def stop(self) -> None:
        self.stopping = True
        while True:
            try:
                await self.release.wait()
                return
            except asyncio.CancelledError:
                continue


async def test_stop_is_bounded_by_its_timeout() -> None:
    producer = ResilientProducer(KafkaSettings(bootstrap="127.0.0.1:1"), client_role="test")
    stuck = StuckProducer()
    producer._producer = stuck  # type: ignore[assignment]
    started = time.monotonic()
    stopping = asyncio.create_task(producer.stop(timeout_s=0.5))
    done, _ = await asyncio.wait({stopping}, timeout=5)
    took = time.monotonic() - started
    stuck.release.set()
    await asyncio.sleep(0)
    assert stopping in done and took < 1.5, took
    assert stuck.stopping
