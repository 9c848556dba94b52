"""Publishing a batch when produces fail: resend in order, dead-letter what the broker can never take.

The producer here is a scripted stand-in for aiokafka's (`send_batch()` returns a future per record batch,
`send()` one per record), so the failure sequences are exact; the same code runs against the real broker in
test_worker_integration.py.
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
class ScriptedBatch:
    """aiokafka's BatchBuilder, as the pipeline uses it."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def append(self, **record: Any) -> object:
        self.records.append(record)
        return object()

    def record_count(self) -> int:
        return len(self.records)


@dataclass
class ScriptedProducer:
    """One partition per topic. `script` says, per `send_batch()` or `send()` call, what happens: 'ok',
    'timeout' (the future fails) or 'too_large' (the broker refuses it for good; `send()` raises, as aiokafka
    does for a record over max_request_size)."""

    script: list[str]
    sent: list[tuple[str, bytes | None]] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)
    acknowledged: list[Message] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)  # records per send_batch() call

    async def healthy(self) -> ScriptedProducer:
        return self

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> ScriptedBatch:
        return ScriptedBatch()

    def watch(self, producer: Any, future: asyncio.Future[Any]) -> None:
        pass

    async def send_batch(self, batch: ScriptedBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        step = self.script.pop(0) if self.script else "ok"
        self.batches.append(batch.record_count())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if step == "too_large":
            future.set_exception(
                MessageSizeTooLargeError("The request included a message larger than the max")
            )
            return future
        self.sent += [(topic, r["key"]) for r in batch.records]
        if step == "timeout":
            future.set_exception(KafkaTimeoutError())
            return future
        future.set_result(RecordMetadata(topic, 0, None, self.offsets.get(topic, -1) + 1, -1, -1, -1))
        for r in batch.records:
            self._acknowledge(topic, r["value"], r["key"], r["headers"], r["timestamp"])
        return future

    async def send(self, topic: str, value: bytes | None, **kwargs: Any) -> asyncio.Future[Any]:
        step = self.script.pop(0) if self.script else "ok"
        if step == "too_large":
            raise MessageSizeTooLargeError("The message is 3000000 bytes when serialized")
        self.sent.append((topic, kwargs.get("key")))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if step == "timeout":
            future.set_exception(KafkaTimeoutError())
        else:
            offset = self._acknowledge(
                topic, value, kwargs.get("key"), kwargs.get("headers"), kwargs.get("timestamp_ms")
            )
            future.set_result(RecordMetadata(topic, 0, None, offset, -1, -1, -1))
        return future

    def _acknowledge(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Any, stamp: int | None
    ) -> int:
        offset = self.offsets[topic] = self.offsets.get(topic, -1) + 1
        self.acknowledged.append(
            Message(
                value or b"",
                offset,
                topic=topic,
                key=key,
                headers=headers or (),
                timestamp=stamp / 1000 if stamp else 0.0,
            )
        )
        return offset

    def patches(self) -> list[Message]:
        """What stage 1 sent to the state-patches topic: stage 2's input."""
        return [m for m in self.acknowledged if m.topic == KAFKA.topic(Topic.STATE_PATCHES)]


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
    order = sample_events("shopify")["orders.create"]  # upsert_contact + a patch (attach_order + order)
    contact = sample_events("shopbotly")["conversation.started"]  # 1 command
    return [Message(orjson.dumps(order), 10), Message(orjson.dumps(contact), 11)]


async def patches_of(messages: list[Message], mappings: Mappings) -> list[Message]:
    """Stage 1 of `messages`, published without failures."""
    producer = ScriptedProducer([])
    await pipeline(producer, mappings, StateStore()).handle(messages)
    return producer.patches()


async def test_stage_one_publishes_patches_after_its_other_outputs_are_acknowledged(
    mappings: Mappings,
) -> None:
    producer = ScriptedProducer(["timeout", "ok", "ok"])
    await pipeline(producer, mappings, StateStore()).handle(batch())
    commands, patches = "unit.crm-commands.v1", "unit.state-patches.v1"
    assert producer.sent == [
        (commands, b"demo:hubspot:jane.doe@example.com"),  # event 10's upsert_contact: timed out ...
        (commands, b"demo:hubspot:jane.doe@example.com"),  # event 11's contact
        (commands, b"demo:hubspot:jane.doe@example.com"),  # ... so it and everything after it go again
        (commands, b"demo:hubspot:jane.doe@example.com"),
        (patches, b"demo:820982911946154508"),  # the order's patch: only once both are acknowledged
    ]
    [patch] = producer.patches()
    assert patch.value == batch()[0].value  # a copy of the raw event
    headers = decode_headers(patch.headers)
    assert (headers["patch.kind"], headers["patch.rules"]) == ("order", '["shopify-order-state"]')
    assert (headers["patch.origin.offset"], headers["patch.origin.key"]) == (
        "10",
        "demo:jane.doe@example.com",
    )


async def test_a_failed_produce_resends_everything_after_it_in_order(mappings: Mappings) -> None:
    producer = ScriptedProducer(["timeout", "ok"])
    store = StateStore()
    await pipeline(producer, mappings, store).handle(await patches_of(batch(), mappings))
    commands, orders = "unit.crm-commands.v1", "unit.orders.v1"
    assert [topic for topic, _ in producer.sent] == [
        commands,  # the owner's attach_order: timed out ...
        orders,
        commands,  # ... so it and everything after it go again, in the same order
        orders,
    ]
    # The order's state is settled with the offset of its last, acknowledged write.
    assert store.order("demo:820982911946154508") is not None
    entry = store._orders.entries["demo:820982911946154508"]
    assert (entry.pending, entry.offset) == (0, 1)  # offset 0 was the first, resent write


async def test_a_bug_in_publishing_fails_the_batch_instead_of_being_retried(mappings: Mappings) -> None:
    """Not a produce failure: `handle` logs it as a failed batch (healthz turns red if it never passes)."""

    class NotABatchProducer(ScriptedProducer):  # e.g. a plain AIOKafkaProducer handed in by mistake
        async def healthy(self) -> ScriptedProducer:
            raise AttributeError("'AIOKafkaProducer' object has no attribute 'healthy'")

    stage = pipeline(NotABatchProducer([]), mappings, StateStore())
    messages = await patches_of(batch(), mappings)
    with pytest.raises(AttributeError):
        async with asyncio.timeout(10):
            await stage.publish(stage.map_batch(messages), messages)


async def test_a_record_the_broker_cannot_take_dead_letters_its_event(mappings: Mappings) -> None:
    # Stage 2 of event 10: attach_order ok, the order's state too large.
    producer = ScriptedProducer(["ok", "too_large"])
    messages = batch()
    await pipeline(producer, mappings, StateStore()).handle(await patches_of(messages, mappings))
    dlq = [m for m in producer.acknowledged if m.topic == KAFKA.topic(Topic.RAW_EVENTS_DLQ)]
    assert len(producer.sent) == 2  # nothing was resent: the failure was not transient
    # The dead letter is the raw event's carbon copy, from its place in raw-events: not the patch's.
    [letter] = dlq
    assert (letter.key, letter.value, letter.timestamp) == (messages[0].key, messages[0].value, 1772446530.0)
    headers = decode_headers(letter.headers)
    assert not [k for k in headers if k.startswith("patch.")]
    assert (headers["origin.topic"], headers["origin.offset"]) == ("unit.raw-events.v1", "10")
    assert headers["error.message"].startswith("cannot publish to orders.v1")


async def test_stopping_abandons_a_batch_that_cannot_be_published(mappings: Mappings) -> None:
    patches = await patches_of(batch(), mappings)
    producer = ScriptedProducer(["timeout"] * 1000)
    store = StateStore()
    worker = pipeline(producer, mappings, store)
    worker.grace_s = 0.0
    worker.stopping_since = 0.0  # long ago
    with pytest.raises(BatchAbandoned):
        await worker.handle(patches)
    entry = store._orders.entries["demo:820982911946154508"]
    assert entry.pending == 0  # the abandoned write no longer holds the key against the feed


async def test_dead_letter_headers_carry_the_reason(mappings: Mappings) -> None:
    producer = ScriptedProducer([])
    await pipeline(producer, mappings, StateStore()).handle(
        [Message(b"[1]", 7, headers=[("event_id", b"x")])]
    )
    [letter] = [m for m in producer.acknowledged if m.topic == KAFKA.topic(Topic.RAW_EVENTS_DLQ)]
    headers = decode_headers(letter.headers)
    assert headers["event_id"] == "x"
    assert headers["error.message"] == "schema: expected a CloudEvents JSON object, got list"
    assert (headers["origin.offset"], headers["origin.service"]) == ("7", "mapper")


async def test_a_batch_is_one_produce_per_partition_with_each_records_offset(mappings: Mappings) -> None:
    producer = ScriptedProducer([])
    store = StateStore()
    patches = await patches_of(batch() + batch(), mappings)  # the order twice: two patches
    await pipeline(producer, mappings, store).handle(patches)
    commands, orders = "unit.crm-commands.v1", "unit.orders.v1"
    assert producer.batches == [2, 2]  # two attach_order in one batch, the two order states in another
    assert producer.sent == [(commands, producer.sent[0][1])] * 2 + [(orders, b"demo:820982911946154508")] * 2
    entry = store._orders.entries["demo:820982911946154508"]
    assert (entry.pending, entry.offset) == (0, 1)  # the second record of the batch: base offset 0 + 1


async def test_a_refused_batch_is_sent_again_one_by_one_and_only_the_record_at_fault_dead_letters(
    mappings: Mappings,
) -> None:
    # Stage 1 of events 10 and 11: their two commands in one batch, refused for good; sent one by one, the
    # first goes through and the second is refused again.
    producer = ScriptedProducer(["too_large", "ok", "too_large"])
    messages = batch()
    await pipeline(producer, mappings, StateStore()).handle(messages)
    published = [m for m in producer.acknowledged if m.topic == KAFKA.topic(Topic.CRM_COMMANDS)]
    assert [orjson.loads(m.value)["causation_event_id"] for m in published] == [
        orjson.loads(messages[0].value)["id"]
    ]
    [letter] = [m for m in producer.acknowledged if m.topic == KAFKA.topic(Topic.RAW_EVENTS_DLQ)]
    headers = decode_headers(letter.headers)
    assert headers["origin.offset"] == "11"
    assert headers["error.message"].startswith("cannot publish to crm-commands.v1")
    assert len(producer.patches()) == 1  # event 10's patch still goes out, after its command
