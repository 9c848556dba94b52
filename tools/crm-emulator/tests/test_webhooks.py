"""Outbound HubSpot-style webhooks to a real local receiver: signatures, batching, retries, timeouts."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from shopbotly.common.sources import verify_webhook
from shopbotly.crm_emulator import EmulatorSettings, create_app, runtime_of
from shopbotly.crm_emulator.signatures import hubspot_signature_v1
from shopbotly.testkit.crm_emulator import HUBSPOT, Clock, Emulator, Received, Receiver

pytestmark = pytest.mark.component

SECRET = "test-client-secret"
ASSOC = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 16}


async def configure(emu: Emulator, receiver: Receiver, **extra: Any) -> None:
    settings = {
        "url": receiver.url,
        "client_secret": SECRET,
        "batch_window_ms": 20,
        "retry_initial_ms": 20,
        **extra,
    }
    response = await emu.client.post("/_emulator/webhooks", json=settings)
    assert response.status_code == 200, response.text
    assert response.json()["config"]["client_secret"] == "***"


async def new_ticket(emu: Emulator, subject: str = "Where is my order?") -> str:
    contact = await emu.client.post(
        "/crm/v3/objects/contacts/batch/upsert",
        headers=HUBSPOT,
        json={"inputs": [{"id": "buyer@example.com", "idProperty": "email", "properties": {}}]},
    )
    contact_id = contact.json()["results"][0]["id"]
    ticket = await emu.client.post(
        "/crm/v3/objects/tickets",
        headers=HUBSPOT,
        json={
            "properties": {
                "subject": subject,
                "content": "Order #1001",
                "hs_pipeline": "0",
                "hs_pipeline_stage": "1",
            },
            "associations": [{"to": {"id": contact_id}, "types": [ASSOC]}],
        },
    )
    assert ticket.status_code == 201, ticket.text
    ticket_id: str = ticket.json()["id"]
    return ticket_id


def verified(request: Received) -> list[dict[str, Any]]:
    """Check both signatures as ingest would, and return the parsed event array."""
    headers = request.headers
    assert headers["content-type"] == "application/json"
    verify_webhook(
        "hubspot", [SECRET], headers, request.body, now=time.time(), method=request.method, url=request.url
    )
    assert headers["x-hubspot-signature-version"] == "v1"
    assert headers["x-hubspot-signature"] == hubspot_signature_v1(SECRET, request.body)
    events: list[dict[str, Any]] = json.loads(request.body)
    return events


async def flush(emu: Emulator) -> dict[str, Any]:
    response = await emu.client.post("/_emulator/webhooks/flush", params={"timeout_s": 10})
    body: dict[str, Any] = response.json()
    assert body["drained"] is True
    return body


async def test_ticket_loop_creation_reply_and_close(emulator: Emulator, receiver: Receiver) -> None:
    await configure(emulator, receiver)
    ticket_id = await new_ticket(emulator)
    await flush(emulator)
    (delivery,) = receiver.received
    (created,) = verified(delivery)
    assert created["subscriptionType"] == "ticket.creation"
    assert created["objectId"] == int(ticket_id) and created["changeFlag"] == "NEW"
    assert created["portalId"] == 62515 and created["appId"] == 54321 and created["attemptNumber"] == 0
    assert {"eventId", "subscriptionId", "occurredAt", "changeSource"} <= set(created)

    reply = await emulator.client.post(
        f"/_emulator/tickets/{ticket_id}",
        json={"reply": {"text": "It ships tomorrow."}, "hs_pipeline_stage": "3"},
    )
    assert reply.status_code == 200, reply.text
    await flush(emulator)
    events = verified(receiver.received[1])
    by_property = {e["propertyName"]: e for e in events}
    assert set(by_property) == {"hs_pipeline_stage", "shopbotly_last_reply"}
    assert by_property["shopbotly_last_reply"]["propertyValue"] == "It ships tomorrow."
    assert by_property["hs_pipeline_stage"]["propertyValue"] == "3"
    assert all(
        e["subscriptionType"] == "ticket.propertyChange" and e["changeSource"] == "CRM_UI" for e in events
    )
    assert sorted(reply.json()["event_ids"]) == sorted(e["eventId"] for e in events)

    await emulator.client.post(f"/_emulator/tickets/{ticket_id}", json={"hs_pipeline_stage": "4"})
    await flush(emulator)
    (closed,) = verified(receiver.received[2])
    assert (closed["propertyName"], closed["propertyValue"]) == ("hs_pipeline_stage", "4")

    ticket = (await emulator.state())["tickets"]["hubspot"][0]
    assert ticket["properties"]["hs_pipeline_stage"] == "4"
    assert [r["text"] for r in ticket["replies"]] == ["It ships tomorrow."]


async def test_contact_property_change_is_delivered(emulator: Emulator, receiver: Receiver) -> None:
    await configure(emulator, receiver)
    await emulator.client.post(
        "/crm/v3/objects/contacts/batch/upsert",
        headers=HUBSPOT,
        json={
            "inputs": [
                {"id": "c@example.com", "idProperty": "email", "properties": {"lifecyclestage": "lead"}}
            ]
        },
    )
    await emulator.client.post(
        "/_emulator/contacts/c@example.com", json={"properties": {"lifecyclestage": "customer"}}
    )
    await flush(emulator)
    events = [e for r in receiver.received for e in verified(r)]
    assert [(e["subscriptionType"], e["propertyValue"], e["changeSource"]) for e in events] == [
        ("contact.propertyChange", "lead", "INTEGRATION"),
        ("contact.propertyChange", "customer", "CRM_UI"),
    ]


async def test_events_close_in_time_are_batched(emulator: Emulator, receiver: Receiver) -> None:
    await configure(emulator, receiver, batch_window_ms=150, max_batch_size=2)
    for i in range(3):
        await new_ticket(emulator, subject=f"Ticket {i}")
    await flush(emulator)
    sizes = sorted(len(verified(r)) for r in receiver.received)
    assert sizes == [1, 2]  # three events, batches of at most two
    ids = [e["eventId"] for r in receiver.received for e in json.loads(r.body)]
    assert len(set(ids)) == 3


async def test_failed_delivery_is_retried_with_incremented_attempt_number(
    emulator: Emulator, receiver: Receiver
) -> None:
    await configure(emulator, receiver)
    receiver.script = [500, 503]
    await new_ticket(emulator)
    await flush(emulator)
    assert len(receiver.received) == 3
    batches = [verified(r) for r in receiver.received]
    assert [b[0]["attemptNumber"] for b in batches] == [0, 1, 2]
    assert len({b[0]["eventId"] for b in batches}) == 1
    # Each attempt is signed afresh (the body and the timestamp change).
    assert len({r.headers["x-hubspot-signature-v3"] for r in receiver.received}) == 3
    view = (await emulator.client.get("/_emulator/webhooks")).json()
    assert [(a["status"], a["outcome"]) for a in view["attempts"]] == [
        (500, "retry"),
        (503, "retry"),
        (200, "delivered"),
    ]
    assert receiver.received[1].at - receiver.received[0].at >= 0.015  # backed off (20 ms, then 40 ms)


async def test_timeout_counts_as_failure(emulator: Emulator, receiver: Receiver) -> None:
    await configure(emulator, receiver, timeout_ms=100)
    receiver.script = [0.5]  # answer after 500 ms: too late
    await new_ticket(emulator)
    await flush(emulator)
    view = (await emulator.client.get("/_emulator/webhooks")).json()
    assert [(a["error"], a["outcome"]) for a in view["attempts"]] == [
        ("timeout", "retry"),
        (None, "delivered"),
    ]
    assert [json.loads(r.body)[0]["attemptNumber"] for r in receiver.received] == [0, 1]


async def test_delivery_gives_up_after_max_attempts(emulator: Emulator, receiver: Receiver) -> None:
    await configure(emulator, receiver, max_attempts=3)
    receiver.script = [500, 500, 500, 500]
    await new_ticket(emulator)
    body = await flush(emulator)
    assert len(receiver.received) == 3
    assert body["stats"]["batches_exhausted"] == 1 and body["stats"]["batches_delivered"] == 0
    assert body["attempts"][-1]["outcome"] == "exhausted"
    state = await emulator.state()
    assert state["webhooks"]["batches_exhausted"] == 1


async def test_without_a_target_events_are_dropped_and_counted(emulator: Emulator) -> None:
    await new_ticket(emulator)
    view = (await emulator.client.get("/_emulator/webhooks")).json()
    assert view["stats"]["events_dropped"] == 1 and view["pending_events"] == 0


# --- event ids stay unique across restarts (ingest and the crm-writer ledger drop a repeated id) ----------


@asynccontextmanager
async def running(clock: Clock, **settings: Any) -> AsyncIterator[Emulator]:
    """One emulator process's life: started, then stopped with its store closed (as at a process exit)."""
    app = create_app(EmulatorSettings(**{"seed": 7, **settings}), clock=clock)
    runtime = runtime_of(app)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://crm.test") as client,
        ):
            yield Emulator(app, client, clock, runtime)
    finally:
        runtime.store.close()


def event_ids(receiver: Receiver, since: int = 0) -> list[int]:
    return [e["eventId"] for r in receiver.received[since:] for e in verified(r)]


async def test_event_ids_go_on_after_a_restart_on_the_same_store(receiver: Receiver, tmp_path: Path) -> None:
    # The same instant on both sides of the restart: what keeps ids apart is the store, not the clock.
    clock = Clock()
    db = tmp_path / "crm-emulator.sqlite3"
    async with running(clock, db_path=db) as first:
        await configure(first, receiver)
        ticket_id = await new_ticket(first)
        await flush(first)
    before = event_ids(receiver)
    assert len(before) == 1

    async with running(clock, db_path=db) as second:
        await configure(second, receiver)  # the webhook target is runtime configuration, not stored
        reply = await second.client.post(
            f"/_emulator/tickets/{ticket_id}", json={"reply": {"text": "Shipped."}}
        )
        assert reply.status_code == 200, reply.text
        await flush(second)
    after = event_ids(receiver, since=1)
    assert sorted(reply.json()["event_ids"]) == sorted(after)
    assert after and min(after) > max(before), (before, after)


async def test_event_ids_do_not_start_over_with_a_fresh_store(receiver: Receiver) -> None:
    """An in-memory store (no data dir) forgets everything on restart; the ids still must not repeat."""
    clock = Clock()
    async with running(clock) as first:
        await configure(first, receiver)
        await new_ticket(first)
        await flush(first)
    before = event_ids(receiver)
    clock.advance(0.001)  # a restart takes far longer than a millisecond
    async with running(clock) as second:
        await configure(second, receiver)
        await new_ticket(second)
        await flush(second)
    after = event_ids(receiver, since=1)
    assert after and min(after) > max(before), (before, after)


async def test_event_ids_go_on_after_an_admin_reset_and_a_restart(receiver: Receiver, tmp_path: Path) -> None:
    """The admin reset forgets records, not the event ids sent: HubSpot never reuses one."""
    clock = Clock()
    db = tmp_path / "crm-emulator.sqlite3"
    async with running(clock, db_path=db) as first:
        await configure(first, receiver)
        await new_ticket(first)
        await flush(first)
        reset = await first.client.post("/_emulator/reset", json={"webhooks": False})
        assert reset.status_code == 200, reset.text
        assert (await first.state())["tickets"]["hubspot"] == []
    before = event_ids(receiver)
    async with running(clock, db_path=db) as second:
        await configure(second, receiver)
        await new_ticket(second)
        await flush(second)
    after = event_ids(receiver, since=1)
    assert after and min(after) > max(before), (before, after)


async def test_ticket_upserts_send_a_creation_then_nothing_for_a_same_content_repeat(
    emulator: Emulator, receiver: Receiver
) -> None:
    await emulator.provision_hubspot()
    await configure(emulator, receiver)
    ticket = {
        "idProperty": "shopbotly_command_id",
        "id": "cmd-1",
        "properties": {"subject": "Late", "content": "#1001", "hs_pipeline": "0", "hs_pipeline_stage": "1"},
    }
    for _ in range(2):  # a writer retrying the same command
        answer = await emulator.client.post(
            "/crm/v3/objects/tickets/batch/upsert", headers=HUBSPOT, json={"inputs": [ticket]}
        )
        assert answer.status_code == 200, answer.text
    await flush(emulator)
    events = [e for delivery in receiver.received for e in verified(delivery)]
    assert [e["subscriptionType"] for e in events] == ["ticket.creation"]  # no property changes, no repeat
