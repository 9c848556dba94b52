"""Publishing a batch when produces fail: resend in order, dead-letter what the broker can never take.

The producer here is a scripted stand-in for aiokafka's (`send()` returns a future per record), so the
failure sequences are exact; the same code runs against the real broker in test_worker_integration.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.structs import RecordMetadata

from shopbotly.common.events import decode_headers
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.logging import get_logger
from shopbotly.common.topics import Topic
from shopbotly.mapper.domain import Mappings
from shopbotly.mapper.pipeline import BatchAbandoned, Pipeline
from shopbotly.mapper.presets import sample_events
from shopbotly.mapper.state import StateStore

pytestmark = pytest.mark.unit

KAFKA = KafkaSettings(topic_prefix="unit.")


@dataclass
class Message:
    value: bytes
    offset: int
    topic: str = "unit.raw-events.v1"
    partition: int = 0
    key: bytes | None = b"demo:jane.doe@example.com"
    headers: Any = ()
    timestamp: float = 1772446530.0


@dataclass
class ScriptedProducer:
    """send() → future; `script` says, per call, what happens: 'ok', 'timeout' (the future fails) or
    'too_large' (send() raises, as aiokafka does for a record over max_request_size)."""

    script: list[str]
    sent: list[tuple[str, bytes | None]] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)

    async def send(self, topic: str, value: bytes | None, **kwargs: Any) -> asyncio.Future[Any]:
        step = self.script.pop(0) if self.script else "ok"
        if step == "too_large":
            raise MessageSizeTooLargeError("The message is 3000000 bytes when serialized")
        self.sent.append((topic, kwargs.get("key")))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if step == "timeout":
            future.set_exception(KafkaTimeoutError())
        else:
            offset = self.offsets[topic] = self.offsets.get(topic, -1) + 1
            future.set_result(RecordMetadata(topic, 0, None, offset, -1, -1, -1))
        return future


def pipeline(producer: ScriptedProducer, mappings: Mappings, store: StateStore) -> Pipeline:
    return Pipeline(
        kafka=KAFKA,
        mappings=mappings,
        store=store,
        producer=producer,  # type: ignore[arg-type]
        log=get_logger("test"),
        backoff_cap_s=0.001,
    )


def batch() -> list[Message]:
    contact = sample_events("shopbotly")["conversation.started"]  # 1 command
    order = sample_events("shopify")["orders.create"]  # 2 commands + 1 order
    return [Message(orjson.dumps(contact), 10), Message(orjson.dumps(order), 11)]


async def test_a_failed_produce_resends_everything_after_it_in_order(mappings: Mappings) -> None:
    producer = ScriptedProducer(["ok", "timeout", "ok", "ok"])
    store = StateStore()
    await pipeline(producer, mappings, store).handle(batch())
    commands, orders = "unit.crm-commands.v1", "unit.orders.v1"
    assert [topic for topic, _ in producer.sent] == [
        commands,  # contact of event 10: acknowledged
        commands,  # event 11's upsert_contact: timed out ...
        commands,
        orders,
        commands,  # ... so it and everything after it go again, in the same order
        commands,
        orders,
    ]
    # The order's state is settled with the offset of its last, acknowledged write.
    assert store.order("demo:820982911946154508") is not None
    entry = store._orders.entries["demo:820982911946154508"]
    assert (entry.pending, entry.offset) == (0, 1)


async def test_a_record_the_broker_cannot_take_dead_letters_its_event(mappings: Mappings) -> None:
    # Event 10's command ok; event 11: upsert_contact ok, attach_order ok, order state too large.
    producer = ScriptedProducer(["ok", "ok", "ok", "too_large"])
    messages = batch()
    await pipeline(producer, mappings, StateStore()).handle(messages)
    dlq = [(topic, key) for topic, key in producer.sent if topic == KAFKA.topic(Topic.RAW_EVENTS_DLQ)]
    assert dlq == [("unit.raw-events.dlq.v1", messages[1].key)]
    assert len(producer.sent) == 4  # nothing was resent: the failure was not transient


async def test_stopping_abandons_a_batch_that_cannot_be_published(mappings: Mappings) -> None:
    producer = ScriptedProducer(["timeout"] * 1000)
    store = StateStore()
    worker = pipeline(producer, mappings, store)
    worker.grace_s = 0.0
    worker.stopping_since = 0.0  # long ago
    with pytest.raises(BatchAbandoned):
        await worker.handle(batch())
    entry = store._orders.entries["demo:820982911946154508"]
    assert entry.pending == 0  # the abandoned write no longer holds the key against the feed


async def test_dead_letter_headers_carry_the_reason(mappings: Mappings) -> None:
    producer = ScriptedProducer([])
    captured: list[dict[str, str]] = []
    original_send = producer.send

    async def send(topic: str, value: bytes | None, **kwargs: Any) -> asyncio.Future[Any]:
        if topic.endswith("dlq.v1"):
            captured.append(decode_headers(kwargs["headers"]))
        return await original_send(topic, value, **kwargs)

    producer.send = send  # type: ignore[method-assign]
    await pipeline(producer, mappings, StateStore()).handle(
        [Message(b"[1]", 7, headers=[("event_id", b"x")])]
    )
    [headers] = captured
    assert headers["event_id"] == "x"
    assert headers["error.message"] == "schema: expected a CloudEvents JSON object, got list"
    assert (headers["origin.offset"], headers["origin.service"]) == ("7", "mapper")
