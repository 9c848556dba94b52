"""With the real broker: produce orders and tickets, look them up through the app.

Visibility is polled with a deadline (`eventually`), never asserted against a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from shopbotly.common.events import Order, Ticket, message_headers
from shopbotly.common.ids import order_key, ticket_key
from shopbotly.common.kafka import KafkaSettings, make_admin, make_producer
from shopbotly.common.topics import Topic, ensure_topics
from shopbotly.testkit.order_reader import T0, Running, ServeFactory, auth, minutes, order, ticket

pytestmark = pytest.mark.integration

T = TypeVar("T")
DEADLINE_S = 20.0


async def eventually(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll until `check` returns a truthy value; fail with `what` at the deadline."""
    last: T | None = None
    try:
        async with asyncio.timeout(DEADLINE_S):
            while True:
                last = await check()
                if last:
                    return last
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not seen before the deadline: {what} (last: {last!r})") from None


class Producer:
    def __init__(self, settings: KafkaSettings, producer: AIOKafkaProducer) -> None:
        self._settings = settings
        self._producer = producer
        self._n = 0

    async def send(self, topic: Topic, key: bytes, value: bytes | None, schema: str) -> None:
        self._n += 1
        tenant = key.split(b":", 1)[0].decode()
        headers = message_headers(event_id=f"e{self._n}", tenant=tenant, trace_id=None, schema=schema)
        await self._producer.send_and_wait(self._settings.topic(topic), value, key=key, headers=headers)

    async def order(self, o: Order) -> None:
        await self.send(Topic.ORDERS, order_key(o.tenant, o.order_id), o.to_json(), Order.SCHEMA)

    async def ticket(self, t: Ticket) -> None:
        await self.send(Topic.TICKETS, ticket_key(t.tenant, t.ticket_id), t.to_json(), Ticket.SCHEMA)

    async def tombstone(self, topic: Topic, tenant: str, ident: str) -> None:
        await self.send(topic, f"{tenant}:{ident}".encode(), None, "tombstone")


@pytest.fixture
async def produce(kafka_settings: KafkaSettings) -> AsyncIterator[Producer]:
    producer = make_producer(kafka_settings, client_role="order-reader-test")
    await producer.start()
    try:
        yield Producer(kafka_settings, producer)
    finally:
        await producer.stop()


async def ready(r: Running) -> None:
    async def check() -> bool:
        return (await r.client.get("/readyz")).status_code == 200

    await eventually(check, "/readyz is 200")


def getter(r: Running, path: str, key: str = "acme") -> Callable[[], Awaitable[httpx.Response]]:
    async def get() -> httpx.Response:
        return await r.client.get(path, headers=auth(key))

    return get


async def status_becomes(r: Running, path: str, status: int, key: str = "acme") -> httpx.Response:
    get = getter(r, path, key)

    async def check() -> httpx.Response | None:
        resp = await get()
        return resp if resp.status_code == status else None

    return await eventually(check, f"GET {path} answers {status}")


async def field_becomes(r: Running, path: str, field: str, value: object) -> httpx.Response:
    get = getter(r, path)

    async def check() -> httpx.Response | None:
        resp = await get()
        return resp if resp.status_code == 200 and resp.json().get(field) == value else None

    return await eventually(check, f"GET {path} has {field}={value!r}")


def consumed(r: Running) -> float:
    return sum(
        r.metric(
            "shopbotly_order_reader_records_consumed_total",
            topic=r.runtime.settings.kafka.topic(t),
            result=res,
        )
        for t in (Topic.ORDERS, Topic.TICKETS)
        for res in ("upsert", "delete", "rejected")
    )


async def test_an_order_is_visible_updated_cancelled_and_removed(
    start: ServeFactory, kafka_settings: KafkaSettings, produce: Producer
) -> None:
    async with start(kafka=kafka_settings) as r:
        await ready(r)
        await produce.order(order(status="open"))
        first = await status_becomes(r, "/api/v1/orders/1001", 200)
        assert first.json()["status"] == "open"
        await produce.order(order(status="paid", financial_status="paid"))
        paid = await field_becomes(r, "/api/v1/orders/1001", "status", "paid")
        assert paid.json()["financial_status"] == "paid" and paid.headers["etag"] != first.headers["etag"]
        await produce.order(order(status="cancelled", cancelled_at=T0 + minutes(10)))
        cancelled = await field_becomes(r, "/api/v1/orders/1001", "status", "cancelled")
        assert cancelled.json()["cancelled_at"] == "2025-03-01T12:10:00Z"
        history = (await r.client.get("/api/v1/customers/jane@example.com/orders", headers=auth())).json()
        assert [(o["order_id"], o["status"]) for o in history["items"]] == [("1001", "cancelled")]
        await produce.tombstone(Topic.ORDERS, "acme", "1001")
        await status_becomes(r, "/api/v1/orders/1001", 404)
        history = (await r.client.get("/api/v1/customers/jane@example.com/orders", headers=auth())).json()
        assert history["items"] == []
        assert r.metric("shopbotly_order_reader_table_records", table="order") == 0


async def test_ready_means_everything_produced_before_start_is_there(
    start: ServeFactory, kafka_settings: KafkaSettings, produce: Producer
) -> None:
    n = 300
    for i in range(n):
        await produce.send(
            Topic.ORDERS, order_key("acme", f"r{i}"), order(order_id=f"r{i}").to_json(), Order.SCHEMA
        )
    async with start(kafka=kafka_settings, fetch_max_records=50) as r:
        await ready(r)
        assert r.metric("shopbotly_order_reader_table_records", table="order") == n
        assert r.metric("shopbotly_order_reader_rebuild_progress_ratio") == 1.0
        assert r.metric("shopbotly_order_reader_rebuilds_total", reason="empty") == 1
        for p in range(3):
            lag = r.metric(
                "shopbotly_order_reader_consumer_lag_messages",
                topic=kafka_settings.topic(Topic.ORDERS),
                partition=str(p),
            )
            assert lag == 0
        assert (await r.client.get("/healthz")).status_code == 200
        assert (await r.client.get(f"/api/v1/orders/r{n - 1}", headers=auth())).status_code == 200


async def test_a_restart_resumes_from_stored_offsets_without_a_rebuild(
    start: ServeFactory, kafka_settings: KafkaSettings, produce: Producer
) -> None:
    for i in range(40):
        await produce.order(order(order_id=f"w{i}"))
    async with start("warm", kafka=kafka_settings) as r:
        await ready(r)
        assert consumed(r) == 40
    for i in range(40, 50):
        await produce.order(order(order_id=f"w{i}"))
    await produce.tombstone(Topic.ORDERS, "acme", "w0")
    async with start("warm", kafka=kafka_settings) as r:
        await ready(r)
        # Only what was produced while it was down was read again.
        assert consumed(r) == 11
        assert r.metric("shopbotly_order_reader_rebuilds_total", reason="empty") == 0
        assert r.metric("shopbotly_order_reader_rebuilds_total", reason="reset") == 0
        assert r.metric("shopbotly_order_reader_table_records", table="order") == 49
        assert (await r.client.get("/api/v1/orders/w1", headers=auth())).status_code == 200
        assert (await r.client.get("/api/v1/orders/w49", headers=auth())).status_code == 200
        assert (await r.client.get("/api/v1/orders/w0", headers=auth())).status_code == 404
    async with start("cold", kafka=kafka_settings) as r:
        await ready(r)
        assert consumed(r) == 51  # a fresh data dir reads the whole topic
        assert r.metric("shopbotly_order_reader_rebuilds_total", reason="empty") == 1
        assert r.metric("shopbotly_order_reader_table_records", table="order") == 49


async def test_two_replicas_answer_every_key_alike(
    start: ServeFactory, kafka_settings: KafkaSettings, produce: Producer
) -> None:
    async with start("one", kafka=kafka_settings) as one, start("two", kafka=kafka_settings) as two:
        await asyncio.gather(ready(one), ready(two))
        ids = [f"k{i}" for i in range(60)]  # spread over the 3 partitions by key hash
        for ident in ids:
            await produce.order(order(order_id=ident))
        await produce.ticket(ticket())
        for r in (one, two):
            await status_becomes(r, f"/api/v1/orders/{ids[-1]}", 200)
            await status_becomes(r, "/api/v1/tickets/T-1", 200)
        for ident in ids:
            a = await one.client.get(f"/api/v1/orders/{ident}", headers=auth())
            b = await two.client.get(f"/api/v1/orders/{ident}", headers=auth())
            assert (a.status_code, b.status_code) == (200, 200)
            assert a.content == b.content and a.headers["etag"] == b.headers["etag"]


async def test_tenants_with_the_same_order_id_see_only_their_own(
    start: ServeFactory, kafka_settings: KafkaSettings, produce: Producer
) -> None:
    async with start(kafka=kafka_settings) as r:
        await ready(r)
        await produce.order(order(tenant="acme", order_id="1", total="10.00"))
        await produce.order(order(tenant="globex", order_id="1", total="99.00", email="jane@example.com"))
        await produce.order(order(tenant="acme", order_id="only-acme"))
        a = await status_becomes(r, "/api/v1/orders/1", 200, key="acme")
        g = await status_becomes(r, "/api/v1/orders/1", 200, key="globex")
        assert (a.json()["tenant"], a.json()["total"]) == ("acme", "10.00")
        assert (g.json()["tenant"], g.json()["total"]) == ("globex", "99.00")
        await status_becomes(r, "/api/v1/orders/only-acme", 200, key="acme")
        foreign = await r.client.get("/api/v1/orders/only-acme", headers=auth("globex"))
        unknown = await r.client.get("/api/v1/orders/never-was", headers=auth("globex"))
        assert foreign.status_code == 404 and foreign.content == unknown.content
        page = (
            await r.client.get("/api/v1/customers/jane@example.com/orders", headers=auth("globex"))
        ).json()
        assert [o["tenant"] for o in page["items"]] == ["globex"]


async def test_tickets_are_served_open_first_and_follow_updates(
    start: ServeFactory, kafka_settings: KafkaSettings, produce: Producer
) -> None:
    async with start(kafka=kafka_settings) as r:
        await ready(r)
        await produce.ticket(ticket(ticket_id="old", created=T0))
        await produce.ticket(ticket(ticket_id="new", created=T0 + minutes(5)))
        await produce.ticket(ticket(ticket_id="closed", is_open=False, created=T0 + minutes(9)))
        await status_becomes(r, "/api/v1/tickets/closed", 200)
        await status_becomes(r, "/api/v1/tickets/old", 200)
        await status_becomes(r, "/api/v1/tickets/new", 200)
        page = (await r.client.get("/api/v1/customers/jane@example.com/tickets", headers=auth())).json()
        assert [t["ticket_id"] for t in page["items"]] == ["new", "old", "closed"]
        await produce.ticket(
            ticket(ticket_id="new", is_open=False, created=T0 + minutes(5), last_reply="Shipped")
        )
        await field_becomes(r, "/api/v1/tickets/new", "is_open", False)
        page = (await r.client.get("/api/v1/customers/jane@example.com/tickets", headers=auth())).json()
        assert [t["ticket_id"] for t in page["items"]] == ["old", "closed", "new"]
        assert (await r.client.get("/api/v1/tickets/new", headers=auth("globex"))).status_code == 404


async def test_a_bad_record_is_rejected_and_the_previous_state_kept(
    start: ServeFactory, kafka_settings: KafkaSettings, produce: Producer
) -> None:
    async with start(kafka=kafka_settings) as r:
        await ready(r)
        await produce.order(order(status="open"))
        await status_becomes(r, "/api/v1/orders/1001", 200)
        await produce.send(
            Topic.ORDERS, order_key("acme", "1001"), b'{"tenant": "acme", "order_id": 5', "bad"
        )

        async def rejected() -> bool:
            labels = {"topic": kafka_settings.topic(Topic.ORDERS), "result": "rejected"}
            return r.metric("shopbotly_order_reader_records_consumed_total", **labels) == 1

        await eventually(rejected, "the bad record is counted as rejected")
        kept = await r.client.get("/api/v1/orders/1001", headers=auth())
        assert kept.status_code == 200 and kept.json()["status"] == "open"
        # The partition is not stuck behind it: the next record for the same key applies.
        await produce.order(order(status="paid"))
        await field_becomes(r, "/api/v1/orders/1001", "status", "paid")


async def _recreate(settings: KafkaSettings, topic: Topic) -> None:
    """Delete the topic and create it again (empty), waiting out the broker's asynchronous deletion."""
    admin = make_admin(settings)
    await admin.start()
    try:
        spec = settings.topics()[topic]
        await admin.delete_topics([spec.name])
        async with asyncio.timeout(DEADLINE_S):
            while spec.name in await admin.list_topics():
                await asyncio.sleep(0.1)
            while True:
                created, _ = await ensure_topics(admin, [spec])
                if created:
                    return
                await asyncio.sleep(0.2)  # still being deleted: "already exists"
    finally:
        await admin.close()


async def test_a_topic_recreated_under_a_running_reader_is_rebuilt_from(
    start: ServeFactory, kafka_settings: KafkaSettings, produce: Producer
) -> None:
    async with start(kafka=kafka_settings) as r:
        await ready(r)
        for status in ("open", "paid", "shipped"):  # one key, one partition: its position moves to 3
            await produce.order(order(order_id="old", status=status))
        await field_becomes(r, "/api/v1/orders/old", "status", "shipped")
        await _recreate(kafka_settings, Topic.ORDERS)
        await produce.order(order(order_id="new"))
        await status_becomes(r, "/api/v1/orders/new", 200)
        # The old topic's order is gone with it: the table was emptied and rebuilt from the new topic.
        await status_becomes(r, "/api/v1/orders/old", 404)
        assert r.metric("shopbotly_order_reader_rebuilds_total", reason="reset") == 1
        await ready(r)
