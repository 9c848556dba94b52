"""Idempotency-Key across ingest replicas on the real broker: two apps, each with its own memory, producer and
follower, sharing one broker's topics, as two pods do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack

import httpx
import pytest

from shopbotly.common.events import RawEvent
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic
from shopbotly.ingest.idempotency import IdempotencyRecord
from shopbotly.ingest.schemas import Lead, lead_event_id, lead_fingerprint
from shopbotly.ingest.settings import Settings
from shopbotly.testkit.ingest import API_KEY, Running, read_topic, running_app

pytestmark = pytest.mark.integration

AUTH = {"authorization": f"Bearer {API_KEY}"}
JANE = {"email": "jane@example.com", "first_name": "Jane", "tags": ["newsletter"]}
JANET = {"email": "jane@example.com", "first_name": "Janet", "tags": ["newsletter"]}


def first_name(event: RawEvent) -> object:
    assert isinstance(event.data, dict)
    return event.data["first_name"]


def expected_id(key: str, body: Mapping[str, object]) -> str:
    return lead_event_id("acme", key, lead_fingerprint(Lead.model_validate(body).event_data()))


async def post(replica: Running, body: Mapping[str, object], key: str) -> httpx.Response:
    return await replica.client.post("/api/v1/leads", json=body, headers={**AUTH, "idempotency-key": key})


async def stored_note_read(replica: Running, key: str) -> None:
    """Until the replica has read the other's note that the lead is stored (it arrives after the answer)."""
    while True:
        binding = replica.runtime.intake.idempotency.binding("acme", key)
        if binding is not None and binding.stored:
            return
        await asyncio.sleep(0.05)


@pytest.fixture
async def replicas(settings: Settings) -> AsyncIterator[tuple[Running, Running]]:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_app(settings))
        b = await stack.enter_async_context(running_app(settings))
        yield a, b


async def test_a_key_holds_across_replicas_and_a_restart(
    replicas: tuple[Running, Running], settings: Settings, kafka_settings: KafkaSettings
) -> None:
    a, b = replicas
    first = await post(a, JANE, "form-1")
    assert first.status_code == 202, first.text
    event_id = first.json()["event_id"]
    assert event_id == expected_id("form-1", JANE)

    await asyncio.wait_for(stored_note_read(b, "form-1"), 15)
    same = await post(b, JANE, "form-1")
    assert (same.status_code, same.json()) == (202, {"event_id": event_id})
    other = await post(b, JANET, "form-1")
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_conflict")
    assert (await post(a, JANET, "form-1")).status_code == 422

    # A replica started now (a restarted pod: empty memory) rebuilds the records from the topic before it is
    # ready.
    async with running_app(settings) as c:
        again = await post(c, JANE, "form-1")
        assert (again.status_code, again.json()) == (202, {"event_id": event_id})
        assert (await post(c, JANET, "form-1")).json()["code"] == "idempotency_conflict"

    # One event on raw-events, with the first body; the other body was never published.
    records = await read_topic(kafka_settings, expected=1)
    events = [RawEvent.from_json(r.value) for r in records]
    assert [(e.id, first_name(e)) for e in events] == [(event_id, "Jane")]
    # On lead-idempotency: the claim and the stored-note, keyed by tenant and key.
    notes = await read_topic(kafka_settings, expected=2, topic=Topic.LEAD_IDEMPOTENCY)
    assert {n.key for n in notes} == {b"acme:form-1"}
    values = [IdempotencyRecord.model_validate_json(n.value) for n in notes]
    assert [(v.event_id, v.stored) for v in values] == [(event_id, False), (event_id, True)]
    assert notes[0].headers["schema"] == "shopbotly.idempotency-record/1"


async def test_concurrent_requests_on_two_replicas_agree_on_the_first_claim(
    replicas: tuple[Running, Running], kafka_settings: KafkaSettings
) -> None:
    """Each key is sent at the same moment to A with one body and to B with another: exactly one gets 202, the
    other 422, and only the winner's body is on raw-events. Same body on both: both 202, one event id."""
    a, b = replicas
    keys = [f"race-{i}" for i in range(12)]
    answers = await asyncio.gather(*(post(a, JANE, k) for k in keys), *(post(b, JANET, k) for k in keys))
    by_a, by_b = answers[: len(keys)], answers[len(keys) :]
    winners: dict[str, str] = {}
    for key, from_a, from_b in zip(keys, by_a, by_b, strict=True):
        statuses = sorted((from_a.status_code, from_b.status_code))
        assert statuses == [202, 422], (key, from_a.text, from_b.text)
        loser = from_b if from_a.status_code == 202 else from_a
        assert loser.json()["code"] == "idempotency_conflict"
        winners[key] = "Jane" if from_a.status_code == 202 else "Janet"
        winning = from_a if from_a.status_code == 202 else from_b
        assert winning.json()["event_id"] == expected_id(key, JANE if winners[key] == "Jane" else JANET)

    same = await asyncio.gather(*(post(r, JANE, "same-body") for r in (a, b)))
    assert [r.status_code for r in same] == [202, 202]
    assert {r.json()["event_id"] for r in same} == {expected_id("same-body", JANE)}

    records = await read_topic(kafka_settings, expected=len(keys) + 1)
    stored = {RawEvent.from_json(r.value).id: RawEvent.from_json(r.value) for r in records}
    for key, name in winners.items():
        winner_body, loser_body = (JANE, JANET) if name == "Jane" else (JANET, JANE)
        assert first_name(stored[expected_id(key, winner_body)]) == name
        assert expected_id(key, loser_body) not in stored, f"{key}: the refused body was published"
    # Both replicas may publish the same body under its one id (downstream absorbs the repeat); nothing else.
    assert set(stored) == {expected_id(k, JANE if n == "Jane" else JANET) for k, n in winners.items()} | {
        expected_id("same-body", JANE)
    }
