"""The pieces behind a quiet broker outage, without a broker: repeated client log lines fold into one per
interval with a count, reconnects back off, and a failed send nobody awaits is still retrieved (asyncio
would log "Future exception was never retrieved" for it). The whole-stack check is
test_broker_outage_noise.py."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest
from aiokafka.errors import LeaderNotAvailableError

from shopbotly.common.kafka import KafkaSettings, ReconnectBackoff, ResilientProducer
from shopbotly.common.logging import RepeatFilter

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeated_client_errors_become_one_line_per_interval_with_a_count() -> None:
    clock = Clock()
    fold = RepeatFilter(interval_s=10, clock=clock)
    shown = []
    for i in range(3000):  # 3,000 refused connects over 30 s, to two nodes
        clock.now = 1000.0 + i * 0.01
        record = _record("aiokafka", "Unable connect to node with id %s: %s", i % 2, "refused")
        if fold.filter(record):
            shown.append(record)
    assert len(shown) == 3
    assert [getattr(r, "repeated", 0) for r in shown] == [0, 999, 999]


def test_kinds_fold_separately_and_service_lines_always_pass() -> None:
    clock = Clock()
    fold = RepeatFilter(interval_s=10, clock=clock)
    assert fold.filter(_record("aiokafka", "Unable connect to node with id %s: %s", 1, "x"))
    assert fold.filter(_record("aiokafka", "Unable to update metadata from %s", [1]))
    assert fold.filter(_record("aiokafka.consumer.fetcher", "Failed fetch messages from %s: %s", 1, "x"))
    assert not fold.filter(_record("aiokafka", "Unable to update metadata from %s", [1]))
    for _ in range(5):
        assert fold.filter(_record("shopbotly.ingest.publisher", "publish failed"))
        assert fold.filter(_record("uvicorn.error", "boom"))


def test_reconnect_backoff_doubles_to_its_cap_and_resets_on_success() -> None:
    clock = Clock()
    backoff = ReconnectBackoff(base_s=0.1, max_s=1.0, clock=clock)
    assert backoff.delay(1) == 0
    waits = [backoff.failed(1) for _ in range(8)]
    assert 0.08 <= waits[0] <= 0.12
    assert all(0.8 <= w <= 1.2 for w in waits[4:])  # 0.1 x 2^4 > 1 s: capped (with +/-20 % jitter)
    assert backoff.delay(1) == pytest.approx(waits[-1])
    assert backoff.delay(2) == 0  # per broker
    backoff.succeeded(1)
    assert backoff.delay(1) == 0
    assert 0.08 <= backoff.failed(1) <= 0.12


class _HeldProducer:
    """Stands in for AIOKafkaProducer: hands out delivery futures the test resolves."""

    def __init__(self) -> None:
        self.deliveries: list[asyncio.Future[Any]] = []

    async def send(self, *_: Any, **__: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.deliveries.append(future)
        return future


async def test_a_failed_send_nobody_awaits_is_retrieved() -> None:
    """Two sends are in flight when the partition loses its leader; the caller of the second gave up waiting
    (its own deadline). Both fail; asyncio must not report the second as never retrieved."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        producer = ResilientProducer(KafkaSettings(), client_role="test")
        held = _HeldProducer()
        producer._producer = held  # type: ignore[assignment]
        awaited = await producer.send("t", b"1")
        abandoned = await producer.send("t", b"2")
        for delivery in held.deliveries:
            delivery.set_exception(LeaderNotAvailableError())
        await asyncio.sleep(0)  # the done callbacks run
        with pytest.raises(LeaderNotAvailableError):
            await awaited
        assert isinstance(producer.failure, LeaderNotAvailableError)  # the producer will be replaced
        held.deliveries.clear()
        del abandoned, delivery
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    unretrieved = [c["message"] for c in reported if "never retrieved" in c.get("message", "")]
    assert unretrieved == []
