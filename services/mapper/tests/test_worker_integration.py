"""The real faust worker (a child process) against the real broker: events in, commands and state out.

Each test has its own topic prefix, so its own topics and consumer group. Waits are for messages or log
lines to arrive, bounded by a timeout; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from shopbotly.common.config import ShopbotlyConfig
from shopbotly.common.events import (
    CommandOp,
    CommandOutcome,
    CommandResult,
    CrmCommand,
    Order,
    Ticket,
    decode_headers,
    message_headers,
)
from shopbotly.common.kafka import KafkaSettings, make_admin, make_consumer, make_producer
from shopbotly.common.topics import Topic
from shopbotly.mapper.domain import Mappings, map_event, ticket_from_result
from shopbotly.mapper.presets import sample_events
from shopbotly.mapper.process import MapperProcess
from shopbotly.mapper.state import StateStore

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).parent / "golden" / "shopbotly.yaml"
KEY = b"demo:jane.doe@example.com"
NOW = datetime(2026, 3, 2, 10, 15, 31, tzinfo=UTC)
Records = dict[Topic, list[ConsumerRecord[bytes, bytes]]]


@pytest.fixture
def mappers(kafka_settings: KafkaSettings, tmp_path: Path) -> Iterator[Callable[[], MapperProcess]]:
    """Make mapper processes for this test's topics (same group: a restart resumes); all killed at the end."""
    made: list[MapperProcess] = []

    def make() -> MapperProcess:
        proc = MapperProcess(
            config=CONFIG,
            kafka=kafka_settings,
            workdir=tmp_path / f"mapper{len(made)}",
            env={"SHOPBOTLY_MAPPER_BATCH_WITHIN_MS": "10"},
        )
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.kill()


async def start(proc: MapperProcess) -> MapperProcess:
    await asyncio.to_thread(proc.start)
    return proc


def raw(event: dict[str, Any]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    headers = message_headers(
        event_id=event["id"],
        tenant=event["tenant"],
        trace_id=event.get("traceid"),
        schema="shopbotly.raw-event/1",
    )
    return KEY, orjson.dumps(event), headers


async def produce(
    settings: KafkaSettings, topic: Topic, messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
) -> list[tuple[int, int, int]]:
    """Send in order; returns (partition, offset, timestamp_ms) of each. Each record's timestamp is set here:
    the send's metadata can report the batch's rather than the record's when it was left to the client."""
    producer = make_producer(settings, client_role="test")
    await producer.start()
    base = int(time.time() * 1000)
    try:
        futures = [
            await producer.send(settings.topic(topic), value, key=key, headers=headers, timestamp_ms=base + i)
            for i, (key, value, headers) in enumerate(messages)
        ]
        metas = await asyncio.gather(*futures)
        return [(meta.partition, meta.offset, base + i) for i, meta in enumerate(metas)]
    finally:
        await producer.stop()


class Outputs:
    """Reads the output topics from the beginning and keeps everything seen."""

    def __init__(self, settings: KafkaSettings, *topics: Topic) -> None:
        self.settings = settings
        self.topics = topics
        self.seen: Records = {t: [] for t in topics}
        self._by_name = {settings.topic(t): t for t in topics}

    async def __aenter__(self) -> Outputs:
        self.consumer = make_consumer(self.settings, group_id=None, client_role="test-outputs")
        await self.consumer.start()
        tps = [TopicPartition(name, p) for name in self._by_name for p in range(self.settings.partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def until(self, done: Callable[[Records], bool], timeout: float = 45.0) -> Records:
        async with asyncio.timeout(timeout):
            while not done(self.seen):
                batch = await self.consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    self.seen[self._by_name[tp.topic]].extend(records)
        return self.seen


def values(records: list[ConsumerRecord[bytes, bytes]]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records if r.value is not None]


async def committed(settings: KafkaSettings, group: str) -> dict[TopicPartition, int]:
    admin = make_admin(settings, client_role="test")
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


async def wait_committed(
    settings: KafkaSettings, tp: TopicPartition, offset: int, timeout: float = 30.0
) -> None:
    """faust commits on a timer (about every 3 s) after the events are acknowledged."""
    async with asyncio.timeout(timeout):
        while (await committed(settings, f"{settings.topic_prefix}mapper")).get(tp, -1) < offset:
            await asyncio.sleep(0.2)


async def test_events_map_through_kafka_and_a_poison_event_is_dead_lettered(
    kafka_settings: KafkaSettings, mappers: Callable[[], MapperProcess]
) -> None:
    proc = await start(mappers())
    bot, shop, api = sample_events("shopbotly"), sample_events("shopify"), sample_events("api")
    bad_lead = api["lead.submitted"]
    bad_lead["data"]["email"] = "jane.doe@"  # valid JSON, valid envelope: the rule fails
    poison_headers = message_headers(event_id="poison-1", tenant="demo", trace_id="t-poison", schema="x/1")
    batch = [
        raw(bot["conversation.started"]),
        (KEY, b'{"id": "poison-1", "tenant": "demo", ', poison_headers),
        raw(shop["orders.create"]),
        raw(bad_lead),
        raw(bot["lead.qualified"]),
    ]
    placed = await produce(kafka_settings, Topic.RAW_EVENTS, batch)
    partition = placed[0][0]
    assert {p for p, _, _ in placed} == {partition}  # one key: one partition, in this order

    async with Outputs(kafka_settings, Topic.CRM_COMMANDS, Topic.ORDERS, Topic.RAW_EVENTS_DLQ) as out:
        seen = await out.until(
            lambda s: (
                len(s[Topic.CRM_COMMANDS]) >= 5 and s[Topic.ORDERS] and len(s[Topic.RAW_EVENTS_DLQ]) >= 2
            )
        )

    # The neighbours of the poison event are all mapped, in order per identity. attach_order is built from
    # the merged order by the order's owner (stage 2): after its event's own commands, never before them.
    commands = [CrmCommand.model_validate(v) for v in values(seen[Topic.CRM_COMMANDS])]
    made = [(c.causation_event_id, c.op) for c in commands]
    attach = ("shopify:orders/create:6f9c2b4e-1f3a-4a8e-9d1c-2b7e5f0a9c31", CommandOp.ATTACH_ORDER)
    assert [m for m in made if m != attach] == [
        ("msg_2a8CwT0mWu4dVnKx", CommandOp.UPSERT_CONTACT),
        ("shopify:orders/create:6f9c2b4e-1f3a-4a8e-9d1c-2b7e5f0a9c31", CommandOp.UPSERT_CONTACT),
        ("msg_2a8CwX1bR7tPzQm4", CommandOp.UPSERT_LEAD),
        ("msg_2a8CwX1bR7tPzQm4", CommandOp.ADD_TAGS),
    ]
    assert made.index(attach) > made.index((attach[0], CommandOp.UPSERT_CONTACT))
    for record, command in zip(seen[Topic.CRM_COMMANDS], commands, strict=True):
        assert record.key == command.key() == b"demo:hubspot:jane.doe@example.com"
        headers = decode_headers(record.headers)
        assert headers == {
            "event_id": command.causation_event_id,
            "tenant": "demo",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "schema": CrmCommand.SCHEMA,
        }
        assert command.received_at is not None and command.mapping_version.startswith("2026-03+")

    [order_record] = seen[Topic.ORDERS]
    assert order_record.key == b"demo:820982911946154508"
    assert decode_headers(order_record.headers)["schema"] == Order.SCHEMA
    assert Order.from_json(order_record.value or b"").total == "2839.00"

    # Both bad events are in the DLQ as carbon copies with the reason and their origin.
    poison, lead = seen[Topic.RAW_EVENTS_DLQ]
    for letter, (key, value, headers), (part, offset, timestamp) in (
        (poison, batch[1], placed[1]),
        (lead, batch[3], placed[3]),
    ):
        assert (letter.key, letter.value, letter.timestamp) == (key, value, timestamp)
        got = decode_headers(letter.headers)
        assert {k: got[k] for k in ("event_id", "tenant", "trace_id", "schema")} == decode_headers(headers)
        assert got["error.class"] == "permanent" and got["error.attempts"] == "1"
        assert (got["origin.topic"], got["origin.partition"], got["origin.offset"]) == (
            kafka_settings.topic(Topic.RAW_EVENTS),
            str(part),
            str(offset),
        )
        assert got["origin.service"] == "mapper"
    assert decode_headers(poison.headers)["error.message"].startswith("schema: not JSON")
    assert decode_headers(lead.headers)["error.message"] == (
        "rule api-lead-submitted: command 0 (upsert_lead): identity: email: not a valid e-mail address"
    )

    # Everything was acknowledged, the poison event included: the group's offset moves past all five.
    await wait_committed(kafka_settings, TopicPartition(kafka_settings.topic(Topic.RAW_EVENTS), partition), 5)
    async with httpx.AsyncClient(base_url=proc.url) as http:
        metrics = (await http.get("/metrics")).text
        assert (await http.get("/readyz")).status_code == 200
    assert 'shopbotly_mapper_events_total{outcome="mapped",tenant="demo"} 3.0' in metrics
    assert 'shopbotly_mapper_events_total{outcome="dead_lettered",tenant="demo"} 1.0' in metrics
    assert 'shopbotly_mapper_events_total{outcome="dead_lettered",tenant="unknown"} 1.0' in metrics
    assert 'shopbotly_mapper_rule_hits_total{rule="shopify-order-state",tenant="demo"} 1.0' in metrics
    assert "shopbotly_mapper_mapping_duration_seconds_count 5.0" in metrics
    assert proc.stop() == 0
    # faust created no topic of its own (no tables, no leader topic, declaration off).
    admin = make_admin(kafka_settings, client_role="test")
    await admin.start()
    try:
        ours = {t for t in await admin.list_topics() if t.startswith(kafka_settings.topic_prefix)}
    finally:
        await admin.close()
    assert ours == {spec.name for spec in kafka_settings.topics().values()}


async def test_partial_order_updates_merge_across_a_restart(
    kafka_settings: KafkaSettings, mappers: Callable[[], MapperProcess]
) -> None:
    created = sample_events("shopify")["orders.create"]
    first = await start(mappers())
    await produce(kafka_settings, Topic.RAW_EVENTS, [raw(created)])
    async with Outputs(kafka_settings, Topic.ORDERS) as out:
        await out.until(lambda s: len(s[Topic.ORDERS]) >= 1)
    assert first.stop() == 0

    # A new worker: it knows the order only from the orders topic. Partial updates merge into it.
    second = await start(mappers())
    base = {k: created[k] for k in ("source", "tenant", "sourcename", "traceid", "receivedat", "subject")}
    fulfilled = {
        **base,
        "id": "partial-1",
        "type": "orders/updated",
        "data": {
            "id": created["data"]["id"],
            "email": "jane.doe@example.com",
            "updated_at": "2026-03-04T09:00:00Z",
            "fulfillment_status": "fulfilled",
            "fulfillments": [{"tracking_numbers": ["1Z999"], "tracking_url": "https://t.example/1Z999"}],
        },
    }
    cancelled = {
        **base,
        "id": "partial-2",
        "type": "orders/cancelled",
        "data": {
            "id": created["data"]["id"],
            "email": "jane.doe@example.com",
            "updated_at": "2026-03-05T09:00:00Z",
            "cancelled_at": "2026-03-05T09:00:00Z",
        },
    }
    await produce(kafka_settings, Topic.RAW_EVENTS, [raw(fulfilled), raw(cancelled)])
    async with Outputs(kafka_settings, Topic.ORDERS, Topic.CRM_COMMANDS) as out:
        seen = await out.until(lambda s: len(s[Topic.ORDERS]) >= 3 and len(s[Topic.CRM_COMMANDS]) >= 5)
    states = [Order.from_json(r.value or b"") for r in seen[Topic.ORDERS]]
    assert {r.key for r in seen[Topic.ORDERS]} == {b"demo:820982911946154508"}
    after_fulfilled, after_cancelled = states[1], states[2]
    assert after_fulfilled.status == "fulfilled" and after_fulfilled.tracking_numbers == ["1Z999"]
    # Fields only the first event carried survive both partial updates.
    for state in (after_fulfilled, after_cancelled):
        assert (state.total, state.order_number, state.currency) == ("2839.00", "#1001", "USD")
        assert [line.sku for line in state.lines] == ["AER-GR-B", None]
    assert after_cancelled.status == "cancelled" and after_cancelled.last_event_id == "partial-2"
    assert after_cancelled.tracking_numbers == ["1Z999"]
    attach = [
        c
        for c in (CrmCommand.model_validate(v) for v in values(seen[Topic.CRM_COMMANDS]))
        if c.op == "attach_order"
    ]
    assert [(c.causation_event_id, c.fields["status"], c.fields["total"]) for c in attach][-2:] == [
        ("partial-1", "fulfilled", "2839.00"),
        ("partial-2", "cancelled", "2839.00"),
    ]
    assert second.stop() == 0


async def test_ticket_from_crm_results_then_crm_changes_notify_the_bot(
    kafka_settings: KafkaSettings, mappers: Callable[[], MapperProcess]
) -> None:
    await start(mappers())
    result = CommandResult(
        command_id="cmd_handoff",
        tenant="demo",
        connection="hubspot",
        identity="jane.doe@example.com",
        op=CommandOp.CREATE_TICKET,
        outcome=CommandOutcome.APPLIED,
        crm_ids={"ticket": "9876543", "contact": "151"},
    )
    headers = message_headers(
        event_id="msg_handoff", tenant="demo", trace_id="t-1", schema=CommandResult.SCHEMA
    )
    await produce(
        kafka_settings, Topic.CRM_RESULTS, [(b"demo:hubspot:jane.doe@example.com", result.to_json(), headers)]
    )
    async with Outputs(kafka_settings, Topic.TICKETS, Topic.CRM_COMMANDS) as out:
        seen = await out.until(lambda s: len(s[Topic.TICKETS]) >= 1)
        seeded = Ticket.from_json(seen[Topic.TICKETS][0].value or b"")
        assert seen[Topic.TICKETS][0].key == b"demo:9876543"
        assert (seeded.customer_email, seeded.status, seeded.is_open) == (
            "jane.doe@example.com",
            "open",
            True,
        )
        assert decode_headers(seen[Topic.TICKETS][0].headers)["event_id"] == "msg_handoff"

        hubspot = sample_events("hubspot")
        changes = [hubspot["ticket.propertyChange.reply"], hubspot["ticket.propertyChange.stage"]]
        await produce(kafka_settings, Topic.RAW_EVENTS, [raw(e) for e in changes])
        seen = await out.until(lambda s: len(s[Topic.TICKETS]) >= 3 and len(s[Topic.CRM_COMMANDS]) >= 2)

    reply, stage = (CrmCommand.model_validate(v) for v in values(seen[Topic.CRM_COMMANDS]))
    for command, record in zip((reply, stage), seen[Topic.CRM_COMMANDS], strict=True):
        assert command.op == CommandOp.NOTIFY_BOT and command.connection == "bot"
        assert command.event_type == "ticket.updated"  # the webhook `type` crm-writer sends to the bot
        assert record.key == b"demo:bot:jane.doe@example.com"  # the customer, learnt from crm-results
        assert command.fields["type"] == "ticket.updated" and command.fields["ticket_id"] == "9876543"
    assert (
        reply.body == "Good news: we can offer 15% off for 20 chairs." and reply.fields["change"] == "reply"
    )
    assert (stage.fields["status"], stage.fields["is_open"], stage.fields["change"]) == (
        "closed",
        False,
        "status",
    )
    final = Ticket.from_json(seen[Topic.TICKETS][-1].value or b"")
    assert (final.status, final.is_open, final.customer_email) == ("closed", False, "jane.doe@example.com")
    assert final.last_reply == "Good news: we can offer 15% off for 20 chairs."


async def test_a_killed_worker_loses_nothing(
    kafka_settings: KafkaSettings, mappers: Callable[[], MapperProcess]
) -> None:
    """SIGKILL mid-stream: whatever was not acknowledged is redelivered to the next worker."""
    template = sample_events("shopbotly")["message.received"]

    def message(n: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        email = f"customer{n % 40}@example.com"
        event = {**template, "id": f"kill-{n}", "subject": email}
        event["data"] = {
            **template["data"],
            "data": {**template["data"]["data"], "customer": {"email": email}},
        }
        _, value, headers = raw(event)
        return f"demo:{email}".encode(), value, headers

    first = await start(mappers())
    total = 2400
    await produce(kafka_settings, Topic.RAW_EVENTS, [message(n) for n in range(200)])
    async with Outputs(kafka_settings, Topic.CRM_COMMANDS) as out:
        await out.until(lambda s: len(s[Topic.CRM_COMMANDS]) >= 200)
        sending = asyncio.create_task(
            produce(kafka_settings, Topic.RAW_EVENTS, [message(n) for n in range(200, total)])
        )
        await out.until(lambda s: len(s[Topic.CRM_COMMANDS]) >= 201)
        first.kill()  # mid-stream, without a chance to flush or commit
        await sending
        await start(mappers())
        seen = await out.until(
            lambda s: (
                {orjson.loads(r.value or b"")["causation_event_id"] for r in s[Topic.CRM_COMMANDS]}
                >= {f"kill-{n}" for n in range(total)}
            ),
            timeout=60,
        )
    causes = [orjson.loads(r.value or b"")["causation_event_id"] for r in seen[Topic.CRM_COMMANDS]]
    assert set(causes) == {f"kill-{n}" for n in range(total)}
    # Repeats are allowed (at-least-once) and carry the same command id, so crm-writer applies them once.
    ids_by_cause: dict[str, set[str]] = {}
    for record in seen[Topic.CRM_COMMANDS]:
        value = orjson.loads(record.value or b"")
        ids_by_cause.setdefault(value["causation_event_id"], set()).add(value["command_id"])
    assert all(len(ids) == 1 for ids in ids_by_cause.values())


# --- two mappers in one group: one owner per order and per ticket ------------------------------------------

T0 = 1772450000000  # ms


async def wait_for_members(settings: KafkaSettings, count: int, timeout: float = 60.0) -> None:
    """Until the mapper group is stable with `count` members (each then owns some partitions)."""
    admin = make_admin(settings, client_role="test")
    await admin.start()
    try:
        async with asyncio.timeout(timeout):
            while True:
                [response] = await admin.describe_consumer_groups([f"{settings.topic_prefix}mapper"])
                _, _, state, _, _, members, *_ = response.groups[0]
                if state == "Stable" and len(members) == count:
                    return
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def produce_at(
    settings: KafkaSettings, messages: list[tuple[Topic, int, bytes, bytes, list[tuple[str, bytes]]]]
) -> None:
    """Send each (topic, partition, key, value, headers) in this order, to the partition given."""
    producer = make_producer(settings, client_role="test")
    await producer.start()
    try:
        futures = [
            await producer.send(settings.topic(topic), value, key=key, headers=headers, partition=partition)
            for topic, partition, key, value, headers in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def order_events(n: int) -> list[dict[str, Any]]:
    """Three events of order n, each under another customer, each with fields the others lack or a later
    `updated_at`: their merge does not depend on the order they arrive in (a late update only fills fields
    the known state lacks, so overlapping fields would make the expected state depend on arrival)."""
    created = sample_events("shopify")["orders.create"]
    order_id = 5000 + n
    stamps = [f"2026-03-0{2 + k}T10:00:00Z" for k in range(3)]
    data: list[dict[str, Any]] = [
        {
            **created["data"],
            "id": order_id,
            "name": f"#{order_id}",
            "email": f"buyer{n}@example.com",
            "financial_status": None,
            "created_at": stamps[0],
            "updated_at": stamps[0],
        },
        {
            "id": order_id,
            "email": f"payer{n}@example.com",
            "financial_status": "paid",
            "updated_at": stamps[1],
        },
        {
            "id": order_id,
            "email": f"giftee{n}@example.com",
            "fulfillment_status": "fulfilled",
            "fulfillments": [{"tracking_numbers": [f"1Z{n}"], "tracking_url": f"https://t.example/1Z{n}"}],
            "updated_at": stamps[2],
        },
    ]
    types = ["orders/create", "orders/updated", "orders/updated"]
    return [
        {**created, "id": f"order-{n}-{k}", "type": types[k], "subject": d["email"], "data": d}
        for k, d in enumerate(data)
    ]


def ticket_events(n: int) -> tuple[CommandResult, list[dict[str, Any]]]:
    """Ticket n: crm-writer's result that created it (its customer), and four HubSpot changes."""
    hubspot = sample_events("hubspot")
    ticket_id = 7000 + n
    result = CommandResult(
        command_id=f"cmd-ticket-{n}",
        tenant="demo",
        connection="hubspot",
        identity=f"asker{n}@example.com",
        op=CommandOp.CREATE_TICKET,
        outcome=CommandOutcome.APPLIED,
        crm_ids={"ticket": str(ticket_id)},
    )
    changes = [
        ("ticket.creation", {}),
        ("ticket.propertyChange.stage", {"propertyValue": "3"}),
        ("ticket.propertyChange.priority", {"propertyValue": "HIGH"}),
        ("ticket.propertyChange.reply", {"propertyValue": f"Reply {n}"}),
    ]
    events = []
    for k, (name, data) in enumerate(changes):
        sample = hubspot[name]
        events.append(
            {
                **sample,
                "id": f"ticket-{n}-{k}",
                "subject": str(ticket_id),
                "data": {
                    **sample["data"],
                    **data,
                    "objectId": ticket_id,
                    "eventId": n * 10 + k,
                    "occurredAt": T0 + k * 1000,
                },
            }
        )
    return result, events


def expected_orders(orders: int, mappings: Mappings) -> dict[bytes, Order]:
    """Each order merged from all its events by one merger: what the orders topic must end with."""
    store = StateStore()
    for n in range(orders):
        for event in order_events(n):
            for order in map_event(orjson.dumps(event), mappings, store, now=NOW).orders:
                store.put_order(f"demo:{order.order_id}", order)
    return {f"demo:{5000 + n}".encode(): store.order(f"demo:{5000 + n}") for n in range(orders)}  # type: ignore[misc]


def expected_tickets(tickets: int, mappings: Mappings) -> dict[bytes, Ticket]:
    store = StateStore()
    for n in range(tickets):
        result, events = ticket_events(n)
        seeded = ticket_from_result(result, store, event_id=result.command_id)
        assert seeded is not None
        store.put_ticket(f"demo:{seeded.ticket_id}", seeded)
        for event in events:
            for ticket in map_event(orjson.dumps(event), mappings, store, now=NOW).tickets:
                store.put_ticket(f"demo:{ticket.ticket_id}", ticket)
    return {f"demo:{7000 + n}".encode(): store.ticket(f"demo:{7000 + n}") for n in range(tickets)}  # type: ignore[misc]


def without_last_event(ticket: Ticket) -> Ticket:
    # Tickets merge in arrival order (CRM changes carry no whole-record version), so the last event id
    # depends on which copy arrived last; every field is set by one change only and is order-free.
    return ticket.model_copy(update={"last_event_id": ""})


async def test_two_mappers_merge_each_order_and_ticket_once_whatever_customer_its_events_come_under(
    kafka_settings: KafkaSettings, mappers: Callable[[], MapperProcess], golden_config: ShopbotlyConfig
) -> None:
    """Two members of one group. Each order's events come under three customers and each ticket's under its
    own id and its customer (crm-results), spread over every partition and interleaved: two replicas see
    one order's events. The final state of each == the merge of all its events by one merger."""
    orders, tickets = 20, 15
    first, second = await start(mappers()), await start(mappers())
    await wait_for_members(kafka_settings, 2)
    parts = kafka_settings.partitions
    rounds: list[list[tuple[Topic, int, bytes, bytes, list[tuple[str, bytes]]]]] = [[] for _ in range(5)]
    for n in range(orders):
        for k, event in enumerate(order_events(n)):
            _, value, headers = raw(event)
            rounds[k].append(
                (Topic.RAW_EVENTS, (n + k) % parts, f"demo:{event['subject']}".encode(), value, headers)
            )
    for n in range(tickets):
        result, events = ticket_events(n)
        headers = message_headers(
            event_id=f"handoff-{n}", tenant="demo", trace_id=None, schema=CommandResult.SCHEMA
        )
        key = f"demo:hubspot:{result.identity}".encode()
        rounds[0].append((Topic.CRM_RESULTS, n % parts, key, result.to_json(), headers))
        for k, event in enumerate(events):
            _, value, headers = raw(event)
            rounds[k + 1].append(
                (Topic.RAW_EVENTS, (n + k + 1) % parts, f"demo:{event['subject']}".encode(), value, headers)
            )
    await produce_at(kafka_settings, [m for round_ in rounds for m in round_])

    mappings = Mappings.from_config(golden_config)
    want_orders, want_tickets = expected_orders(orders, mappings), expected_tickets(tickets, mappings)
    final_orders: dict[bytes, Order] = {}
    final_tickets: dict[bytes, Ticket] = {}

    def converged(seen: Records) -> bool:
        final_orders.update(
            {r.key: Order.from_json(r.value) for r in seen[Topic.ORDERS] if r.key and r.value}
        )
        final_tickets.update(
            {
                r.key: without_last_event(Ticket.from_json(r.value))
                for r in seen[Topic.TICKETS]
                if r.key and r.value
            }
        )
        seen[Topic.ORDERS].clear()
        seen[Topic.TICKETS].clear()
        return final_orders == want_orders and final_tickets == {
            k: without_last_event(v) for k, v in want_tickets.items()
        }

    async with Outputs(kafka_settings, Topic.ORDERS, Topic.TICKETS) as out:
        with contextlib.suppress(TimeoutError):
            await out.until(converged, timeout=90)
    lost = {k: (final_orders.get(k), v) for k, v in want_orders.items() if final_orders.get(k) != v}
    assert not lost, (
        f"{len(lost)} of {orders} orders differ from the merge of their events: {next(iter(lost.values()))}"
    )
    want = {k: without_last_event(v) for k, v in want_tickets.items()}
    lost_tickets = {k: (final_tickets.get(k), v) for k, v in want.items() if final_tickets.get(k) != v}
    assert not lost_tickets, (
        f"{len(lost_tickets)} of {tickets} tickets differ, e.g. {next(iter(lost_tickets.values()))}"
    )

    # Both members took part: each mapped raw events (stage 1) and merged (stage 2).
    for proc in (first, second):
        async with httpx.AsyncClient(base_url=proc.url) as http:
            text = (await http.get("/metrics")).text
        assert metric_sum(text, "shopbotly_mapper_events_total", outcome="mapped") > 0
        assert metric_sum(text, "shopbotly_mapper_state_patches_total", outcome="merged") > 0
    assert first.stop() == 0 and second.stop() == 0


def customer_message(
    prefix: str, n: int, customers: int = 60
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """A `message.received` for one of `customers` customers (so every partition gets some): one command."""
    template = sample_events("shopbotly")["message.received"]
    email = f"customer{n % customers}@example.com"
    event = {**template, "id": f"{prefix}-{n}", "subject": email}
    event["data"] = {**template["data"], "data": {**template["data"]["data"], "customer": {"email": email}}}
    _, value, headers = raw(event)
    return f"demo:{email}".encode(), value, headers


class CommitWatch:
    """Checks, while mappers run, that the group's committed offset never passes an event whose command is not
    on crm-commands: the committed offsets are read first, the commands topic's end offsets after, so every
    command published before that commit is below those ends and must have been read."""

    def __init__(self, settings: KafkaSettings, out: Outputs, placed: dict[str, tuple[int, int]]) -> None:
        self.settings = settings
        self.out = out
        self.placed = placed  # event id -> (partition, offset) on raw-events
        self.raw_topic = settings.topic(Topic.RAW_EVENTS)
        self.violations: list[str] = []
        self.checks = 0

    async def check(self) -> list[str]:
        offsets = await committed(self.settings, f"{self.settings.topic_prefix}mapper")
        consumer = self.out.consumer
        tps = list(consumer.assignment())
        ends = await consumer.end_offsets(tps)

        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        async with asyncio.timeout(30):
            while await behind():
                batch = await consumer.getmany(timeout_ms=100)
                for tp, records in batch.items():
                    self.out.seen[self.out._by_name[tp.topic]].extend(records)
        mapped = {
            orjson.loads(r.value or b"")["causation_event_id"] for r in self.out.seen[Topic.CRM_COMMANDS]
        }
        self.checks += 1
        return [
            f"{event_id} at {partition}:{offset} (committed {offsets[tp]})"
            for event_id, (partition, offset) in self.placed.items()
            if (tp := TopicPartition(self.raw_topic, partition)) in offsets
            and offset < offsets[tp]
            and event_id not in mapped
        ]


async def test_rebalances_while_batches_are_in_flight_skip_no_offset(
    kafka_settings: KafkaSettings, mappers: Callable[[], MapperProcess]
) -> None:
    """Members join, leave and crash while the first one has batches in flight. The group's committed offset
    must never pass an event that is not mapped (checked all along); a worker is SIGKILLed right after each
    rebalance, and at the end every event sent has its command (repeats allowed)."""
    total = 4000  # two rebalances with batches in flight: one crash, one clean leave
    placed: dict[str, tuple[int, int]] = {}

    async def send(start: int, stop: int) -> None:
        messages = [customer_message("rb", n) for n in range(start, stop)]
        for n, (partition, offset, _) in zip(
            range(start, stop), await produce(kafka_settings, Topic.RAW_EVENTS, messages), strict=True
        ):
            placed[f"rb-{n}"] = (partition, offset)

    await send(0, 2000)  # a backlog: the first worker is mid-batch when the others join
    running = [await start(mappers())]
    async with Outputs(kafka_settings, Topic.CRM_COMMANDS) as out:
        watch = CommitWatch(kafka_settings, out, placed)

        async def watching() -> None:
            while True:
                missing = await watch.check()
                if missing:
                    watch.violations += missing
                    for proc in running:  # freeze it: a crash now makes the skip permanent
                        proc.kill()
                    return

        watcher = asyncio.create_task(watching())
        await out.until(lambda s: len(s[Topic.CRM_COMMANDS]) >= 100)
        for step, chunk in enumerate(range(2000, total, 1000)):
            sending = asyncio.create_task(send(chunk, chunk + 1000))
            running.append(
                await start(mappers())
            )  # joins: a rebalance while the others have batches in flight
            await sending
            if watcher.done():
                watcher.result()  # a failure of the watch itself is raised here
                break
            oldest = running.pop(0)
            if step % 2 == 0:
                oldest.kill()  # crashes right after the rebalance
            else:
                assert oldest.stop() == 0  # or leaves cleanly: another rebalance
        if watcher.done():
            await send(len(placed), total)
            running.append(await start(mappers()))  # a fresh worker resumes from the committed offsets
        raw_topic = kafka_settings.topic(Topic.RAW_EVENTS)
        for partition in range(kafka_settings.partitions):
            end = max((o for p, o in placed.values() if p == partition), default=-1) + 1
            await wait_committed(kafka_settings, TopicPartition(raw_topic, partition), end, timeout=120)
        watcher.cancel()
        missing = await watch.check()
    assert watch.violations == [], f"committed past unmapped events: {watch.violations[:10]}"
    assert missing == [], f"events skipped for good: {missing[:10]}"
    assert watch.checks > 5


async def test_a_worker_killed_mid_batch_commits_nothing_it_did_not_publish_and_loses_nothing(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """One large batch (3,000 events, so its outputs take several record batches per partition) and a SIGKILL
    as soon as its first commands are acknowledged: the committed offsets never pass an event whose command
    is not on crm-commands, and the next worker maps every event (repeats allowed, with the same ids)."""
    total = 3000
    env = {"SHOPBOTLY_MAPPER_BATCH_MAX": str(total), "SHOPBOTLY_MAPPER_BATCH_WITHIN_MS": "2000"}
    workers = [
        MapperProcess(config=CONFIG, kafka=kafka_settings, workdir=tmp_path / f"mapper{n}", env=env)
        for n in range(2)
    ]
    messages = [customer_message("mid", n) for n in range(total)]
    placed = {
        f"mid-{n}": (partition, offset)
        for n, (partition, offset, _) in enumerate(await produce(kafka_settings, Topic.RAW_EVENTS, messages))
    }
    try:
        async with Outputs(kafka_settings, Topic.CRM_COMMANDS) as out:
            watch = CommitWatch(kafka_settings, out, placed)
            await start(workers[0])
            await out.until(lambda s: len(s[Topic.CRM_COMMANDS]) >= 1, timeout=60)
            workers[0].kill()  # its batch is in flight: some outputs acknowledged, the batch not finished
            assert await watch.check() == []
            await start(workers[1])
            raw_topic = kafka_settings.topic(Topic.RAW_EVENTS)
            for partition in range(kafka_settings.partitions):
                end = max((o for p, o in placed.values() if p == partition), default=-1) + 1
                await wait_committed(kafka_settings, TopicPartition(raw_topic, partition), end, timeout=120)
            assert await watch.check() == []
    finally:
        for worker in workers:
            worker.kill()
    commands = values(out.seen[Topic.CRM_COMMANDS])
    assert {c["causation_event_id"] for c in commands} == set(placed)
    ids_by_cause: dict[str, set[str]] = {}
    for command in commands:
        ids_by_cause.setdefault(command["causation_event_id"], set()).add(command["command_id"])
    assert all(len(ids) == 1 for ids in ids_by_cause.values())
