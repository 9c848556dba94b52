"""Publish paths against the real broker: what lands on raw-events, keyed and headed as the contract says,
and what does not (duplicates, refusals)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from aiokafka import TopicPartition

from shopbotly.common.events import RawEvent
from shopbotly.common.ids import raw_event_key
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic
from shopbotly.ingest.schemas import Lead, lead_event_id, lead_fingerprint
from shopbotly.ingest.settings import Settings
from shopbotly.testkit.ingest import (
    API_KEY,
    OTHER_TENANT_KEY,
    Running,
    demo_config,
    read_topic,
    running_app,
    signed_headers,
)

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def ingest(settings: Settings) -> AsyncIterator[Running]:
    async with running_app(settings) as running:
        yield running


def _events(records: list) -> dict[str, tuple[RawEvent, object]]:  # type: ignore[type-arg]
    return {RawEvent.from_json(r.value).id: (RawEvent.from_json(r.value), r) for r in records}


async def test_every_kind_is_published_with_key_headers_and_envelope(
    ingest: Running, kafka_settings: KafkaSettings
) -> None:
    c = ingest.client
    sent: dict[str, tuple[str, str, str | None]] = {}  # event id -> (source, type, subject)

    async def post(
        source: str,
        body: dict[str, object],
        *,
        kind: str | None = None,
        extra: dict[str, str] | None = None,
        msg_id: str = "m",
    ) -> dict[str, object]:
        raw = orjson.dumps(body)
        url = f"http://ingest.test/v1/webhooks/acme/{source}"
        headers = signed_headers(
            kind or source, raw, msg_id=msg_id, url=url, extra={"traceparent": TRACEPARENT, **(extra or {})}
        )
        resp = await c.post(url, content=raw, headers=headers)
        assert resp.status_code == 202, (source, resp.text)
        answer: dict[str, object] = resp.json()
        assert answer["published"] == len(answer["event_ids"])  # type: ignore[arg-type]
        return answer

    await post(
        "shopbotly",
        {"type": "conversation.started", "data": {"email": "Jane@Example.com"}},
        msg_id="msg_bot_1",
    )
    sent["msg_bot_1"] = ("shopbotly", "conversation.started", "jane@example.com")
    await post(
        "standard_webhooks", {"type": "user.created", "data": {"contact_id": "c-77"}}, msg_id="msg_sw_1"
    )
    sent["msg_sw_1"] = ("standard_webhooks", "user.created", "c-77")
    await post(
        "stripe", {"id": "evt_1", "type": "charge.succeeded", "data": {"object": {"receipt_email": "b@x.io"}}}
    )
    sent["evt_1"] = ("stripe", "charge.succeeded", "b@x.io")
    await post(
        "shopify",
        {"id": 450789469, "email": "bob@example.com"},
        extra={"x-shopify-webhook-id": "b54557e4-bdd9", "x-shopify-topic": "orders/create"},
    )
    sent["b54557e4-bdd9"] = ("shopify", "orders/create", "bob@example.com")
    await post(
        "github",
        {"sender": {"login": "octocat"}},
        extra={"x-github-delivery": "72d3162e", "x-github-event": "issues"},
    )
    sent["72d3162e"] = ("github", "issues", "octocat")
    await post(
        "slack", {"event_id": "Ev08", "type": "event_callback", "event": {"type": "message", "user": "U1"}}
    )
    sent["Ev08"] = ("slack", "event_callback", "U1")
    await post(
        "intercom", {"id": "notif_9", "topic": "contact.created", "data": {"item": {"email": "c@d.ef"}}}
    )
    sent["notif_9"] = ("intercom", "contact.created", "c@d.ef")
    await post("generic_hmac", {"id": "g-1", "type": "signup", "email": "g@h.ij"})
    sent["g-1"] = ("generic_hmac", "signup", "g@h.ij")
    batch = [
        {"eventId": 101, "subscriptionType": "ticket.creation", "objectId": 5001, "occurredAt": 1},
        {
            "eventId": 102,
            "subscriptionType": "ticket.propertyChange",
            "objectId": 5001,
            "propertyName": "hs_pipeline_stage",
            "propertyValue": "4",
        },
        {
            "eventId": 103,
            "subscriptionType": "contact.propertyChange",
            "objectId": 9,
            "propertyName": "email",
            "propertyValue": "z@y.x",
        },
    ]
    answer = await post("hubspot", batch)  # type: ignore[arg-type]
    assert answer["event_ids"] == ["101", "102", "103"]
    sent["101"] = ("hubspot", "ticket.creation", "ticket:5001")
    sent["102"] = ("hubspot", "ticket.propertyChange", "ticket:5001")
    sent["103"] = ("hubspot", "contact.propertyChange", "contact:9")

    records = await read_topic(kafka_settings, expected=len(sent))
    got = _events(records)
    assert set(got) == set(sent)
    for event_id, (source, event_type, subject) in sent.items():
        event, record = got[event_id]
        assert (event.sourcename, event.type, event.subject) == (source, event_type, subject)
        assert event.source == f"/tenants/acme/sources/{source}"
        assert event.tenant == "acme" and event.traceid == "0af7651916cd43dd8448eb211c80319c"
        assert record.key == raw_event_key("acme", subject or event_id)  # type: ignore[attr-defined]
        assert record.headers == {  # type: ignore[attr-defined]
            "event_id": event_id,
            "tenant": "acme",
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "schema": "shopbotly.raw-event/1",
        }
    # HubSpot: each element is its own event, its data the element alone; one ticket, one partition.
    assert got["102"][0].data == batch[1]
    assert got["101"][1].partition == got["102"][1].partition  # type: ignore[attr-defined]


async def test_repeats_are_answered_from_memory_and_refusals_never_reach_kafka(
    ingest: Running, kafka_settings: KafkaSettings
) -> None:
    c = ingest.client
    body = orjson.dumps({"type": "order.paid", "data": {"email": "a@b.co"}})
    url = "/v1/webhooks/acme/shopbotly"
    first = await c.post(url, content=body, headers=signed_headers("shopbotly", body, msg_id="msg_dup"))
    assert first.status_code == 202
    # A retry (new timestamp, same webhook-id) and two concurrent identical deliveries.
    again = await asyncio.gather(
        *(
            c.post(url, content=body, headers=signed_headers("shopbotly", body, msg_id="msg_dup"))
            for _ in range(3)
        )
    )
    assert [r.status_code for r in again] == [200, 200, 200]
    assert all(
        r.json() == {"event_id": "msg_dup", "event_ids": ["msg_dup"], "published": 0, "duplicate": True}
        for r in again
    )
    concurrent = await asyncio.gather(
        *(
            c.post(url, content=body, headers=signed_headers("shopbotly", body, msg_id="msg_race"))
            for _ in range(5)
        )
    )
    assert sorted(r.status_code for r in concurrent) == [200, 200, 200, 200, 202]
    # Refusals of every kind, with a valid-looking body.
    await c.post(
        url,
        content=body,
        headers=signed_headers("shopbotly", body, msg_id="x", secret="whsec_QUFBQUFBQUFBQUFBQUFBQQ=="),
    )
    await c.post(url, content=b"{nope", headers=signed_headers("shopbotly", b"{nope", msg_id="y"))
    no_type = orjson.dumps({"data": {}})
    assert (
        await c.post(url, content=no_type, headers=signed_headers("shopbotly", no_type, msg_id="z"))
    ).status_code == 422
    await c.post(
        url,
        content=body,
        headers={**signed_headers("shopbotly", body, msg_id="w"), "content-type": "text/plain"},
    )
    await c.post(
        "/v1/webhooks/acme/small",
        content=orjson.dumps({"type": "t", "p": "x" * 4000}),
        headers={"content-type": "application/json"},
    )

    records = await read_topic(kafka_settings, expected=2)
    assert sorted(RawEvent.from_json(r.value).id for r in records) == ["msg_dup", "msg_race"]


async def test_retried_hubspot_batch_publishes_only_the_new_elements(
    ingest: Running, kafka_settings: KafkaSettings
) -> None:
    url = "http://ingest.test/v1/webhooks/acme/hubspot"

    async def send(batch: list[dict[str, object]]) -> dict[str, object]:
        raw = orjson.dumps(batch)
        resp = await ingest.client.post(url, content=raw, headers=signed_headers("hubspot", raw, url=url))
        assert resp.status_code in (200, 202), resp.text
        return {"status": resp.status_code, **resp.json()}

    def element(n: int) -> dict[str, object]:
        return {
            "eventId": n,
            "subscriptionType": "ticket.propertyChange",
            "objectId": 70 + n,
            "attemptNumber": 0,
        }

    first = await send([element(1), element(2)])
    assert (first["status"], first["published"]) == (202, 2)
    retried = await send([element(1), element(2), element(3), element(3)])
    assert (retried["status"], retried["published"], retried["event_ids"]) == (202, 1, ["1", "2", "3", "3"])
    again = await send([element(2), element(3)])
    assert (again["status"], again["published"], again["duplicate"]) == (200, 0, True)
    records = await read_topic(kafka_settings, expected=3)
    assert sorted(RawEvent.from_json(r.value).id for r in records) == ["1", "2", "3"]


async def test_lead_is_published_and_idempotency_key_is_honoured(
    ingest: Running, kafka_settings: KafkaSettings
) -> None:
    c = ingest.client
    auth = {"authorization": f"Bearer {API_KEY}"}
    lead = {
        "email": "Jane.Doe@Example.com",
        "first_name": "Jane",
        "tags": ["newsletter"],
        "custom_fields": {"plan": "pro"},
        "consent": {"marketing": True},
    }
    resp = await c.post("/api/v1/leads", json=lead, headers={**auth, "idempotency-key": "form-42"})
    assert resp.status_code == 202
    event_id = resp.json()["event_id"]
    expected = Lead.model_validate(lead).event_data()
    assert event_id == lead_event_id("acme", "form-42", lead_fingerprint(expected))
    # Same key and body (other key order): same answer, nothing new.
    same = await c.post(
        "/api/v1/leads",
        content=orjson.dumps(dict(reversed(list(lead.items())))),
        headers={**auth, "idempotency-key": "form-42", "content-type": "application/json"},
    )
    assert (same.status_code, same.json()) == (202, {"event_id": event_id})
    other = await c.post(
        "/api/v1/leads", json={**lead, "first_name": "Janet"}, headers={**auth, "idempotency-key": "form-42"}
    )
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_conflict")
    # Another tenant's key space is its own.
    theirs = await c.post(
        "/api/v1/leads",
        json=lead,
        headers={"authorization": f"Bearer {OTHER_TENANT_KEY}", "idempotency-key": "form-42"},
    )
    assert theirs.status_code == 202 and theirs.json()["event_id"] != event_id
    # Without a key every submission is a new event.
    plain = [await c.post("/api/v1/leads", json={"email": "p@q.rs"}, headers=auth) for _ in range(2)]
    assert plain[0].json()["event_id"] != plain[1].json()["event_id"]

    records = await read_topic(kafka_settings, expected=4)
    assert len(records) == 4
    got = _events(records)
    event, record = got[event_id]
    assert (event.type, event.sourcename, event.subject, event.tenant) == (
        "lead.submitted",
        "api",
        "jane.doe@example.com",
        "acme",
    )
    assert event.source == "/tenants/acme/sources/api"
    assert event.data == {**lead, "email": "Jane.Doe@Example.com"}
    assert record.key == b"acme:jane.doe@example.com"  # type: ignore[attr-defined]
    assert record.headers["event_id"] == event_id and record.headers["schema"] == "shopbotly.raw-event/1"  # type: ignore[attr-defined]


async def test_after_a_lost_numbered_batch_the_producer_is_replaced_and_nothing_unstored_gets_2xx(
    ingest: Running, kafka_settings: KafkaSettings
) -> None:
    """The state a broker restart can leave (aio-libs/aiokafka#1017): the producer's sequence number for a
    partition is ahead of the broker's, so the broker refuses every later batch there. The request in
    flight gets 503 (not stored); the monitor replaces the producer; the client's retry is stored."""
    c = ingest.client
    url = "/v1/webhooks/acme/shopbotly"
    body = orjson.dumps({"type": "order.paid", "data": {"email": "seq@example.com"}})
    first = await c.post(url, content=body, headers=signed_headers("shopbotly", body, msg_id="msg_seq_1"))
    assert first.status_code == 202, first.text
    topic = kafka_settings.topic(Topic.RAW_EVENTS)
    (stored,) = await read_topic(kafka_settings, expected=1)
    producer = ingest.runtime.publisher._producer
    assert producer is not None
    current = await producer.healthy()
    current._txn_manager.increment_sequence_number(TopicPartition(topic, stored.partition), 3)

    # Same subject, so the same key and partition as the first event.
    refused = await c.post(url, content=body, headers=signed_headers("shopbotly", body, msg_id="msg_seq_2"))
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"]

    async def retried() -> httpx.Response:
        while True:
            resp = await c.post(
                url, content=body, headers=signed_headers("shopbotly", body, msg_id="msg_seq_2")
            )
            if resp.status_code != 503:
                return resp
            await asyncio.sleep(0.2)

    again = await asyncio.wait_for(retried(), 15)
    assert again.status_code == 202, again.text
    assert producer.replaced == 1
    assert (await c.get("/readyz")).status_code == 200
    records = await read_topic(kafka_settings, expected=2)
    assert [RawEvent.from_json(r.value).id for r in records] == ["msg_seq_1", "msg_seq_2"]
    assert {r.partition for r in records} == {stored.partition}


async def test_ready_once_the_producer_has_broker_metadata(ingest: Running) -> None:
    resp = await ingest.client.get("/readyz")
    assert resp.status_code == 200, resp.text


async def test_a_body_near_the_largest_limit_is_published(
    settings: Settings, kafka_settings: KafkaSettings
) -> None:
    # Larger than the producer's batch size: it travels in a batch of its own.
    config = demo_config(
        big={
            "kind": "shopbotly",
            "secrets": [{"env": "INGEST_TEST_SHOPBOTLY_SECRET"}],
            "max_body_bytes": 1024 * 1024,
        }
    )
    body = orjson.dumps({"type": "export.ready", "data": {"email": "a@b.co", "blob": "z" * (900 * 1024)}})
    async with running_app(settings, config) as ingest:
        resp = await ingest.client.post(
            "/v1/webhooks/acme/big", content=body, headers=signed_headers("shopbotly", body, msg_id="big-1")
        )
        assert resp.status_code == 202, resp.text
    records = await read_topic(kafka_settings, expected=1)
    assert [RawEvent.from_json(r.value).data for r in records] == [orjson.loads(body)]
