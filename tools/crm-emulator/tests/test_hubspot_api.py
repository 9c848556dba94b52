"""HubSpot CRM v3 through HTTP: upsert semantics, multi-status, batch limit, auth, rate limits, notes."""

from __future__ import annotations

from typing import Any

import pytest

from shopbotly.testkit.crm_emulator import HUBSPOT, Emulator, EmulatorFactory

pytestmark = pytest.mark.component

UPSERT = "/crm/v3/objects/contacts/batch/upsert"
ASSOC = {"associationCategory": "HUBSPOT_DEFINED"}


def contact(email: str, **props: Any) -> dict[str, Any]:
    return {"id": email, "idProperty": "email", "properties": props}


async def upsert(emu: Emulator, *inputs: dict[str, Any]) -> Any:
    return await emu.client.post(UPSERT, headers=HUBSPOT, json={"inputs": list(inputs)})


async def test_upsert_creates_then_updates_one_record_per_email(emulator: Emulator) -> None:
    await emulator.provision_hubspot()
    first = await upsert(emulator, contact("Jane@Example.com", firstname="Jane", shopbotly_tags="newsletter"))
    assert first.status_code == 200
    body = first.json()
    assert body["status"] == "COMPLETE" and "startedAt" in body and "completedAt" in body
    (created,) = body["results"]
    assert created["new"] is True and created["id"].isdigit()
    assert created["properties"]["email"] == "jane@example.com"
    assert created["properties"]["hs_object_id"] == created["id"]

    second = await upsert(
        emulator, contact("jane@example.com", lastname="Doe", shopbotly_tags="newsletter;vip")
    )
    (updated,) = second.json()["results"]
    assert updated["new"] is False and updated["id"] == created["id"]
    assert updated["properties"]["firstname"] == "Jane"  # kept: not sent the second time

    record = (await emulator.state())["records"]["hubspot"]["jane@example.com"]
    assert record["creates"] == 1 and record["updates"] == 1
    assert record["tags"] == ["newsletter", "vip"]
    assert record["properties"] == {
        "email": "jane@example.com",
        "firstname": "Jane",
        "lastname": "Doe",
        "shopbotly_tags": "newsletter;vip",
    }


async def test_invalid_email_is_a_per_record_error_and_the_others_apply(emulator: Emulator) -> None:
    response = await upsert(
        emulator,
        contact("good@example.com", firstname="G"),
        {**contact("bad@@example", firstname="B"), "objectWriteTraceId": "cmd-2"},
        contact("other@example.com", firstname="O"),
    )
    assert response.status_code == 207
    body = response.json()
    assert body["numErrors"] == 1
    assert sorted(r["properties"]["email"] for r in body["results"]) == [
        "good@example.com",
        "other@example.com",
    ]
    (error,) = body["errors"]
    assert error["category"] == "VALIDATION_ERROR" and error["context"]["ids"] == ["bad@@example"]
    assert error["objectWriteTraceId"] == "cmd-2"
    assert set((await emulator.state())["records"]["hubspot"]) == {"good@example.com", "other@example.com"}


async def test_more_than_100_inputs_is_400_and_nothing_is_written(emulator: Emulator) -> None:
    response = await upsert(emulator, *(contact(f"u{i}@example.com") for i in range(101)))
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR"
    assert "correlationId" in body
    assert (await emulator.state())["records"]["hubspot"] == {}


async def test_missing_or_wrong_token_is_401_with_hubspot_body(emulator: Emulator) -> None:
    for headers in ({}, {"Authorization": "Bearer pat-wrong"}, {"Authorization": "Basic abc"}):
        response = await emulator.client.post(UPSERT, headers=headers, json={"inputs": []})
        assert response.status_code == 401
        body = response.json()
        assert body["category"] == "INVALID_AUTHENTICATION" and body["status"] == "error"
        assert "Authentication credentials not found" in body["message"]
        assert "X-HubSpot-RateLimit-Remaining" not in response.headers
    state = await emulator.state()
    assert state["counters"]["auth_failures"] == {"hubspot": 3}


async def test_revoked_static_token_then_restored(emulator: Emulator) -> None:
    await emulator.client.post("/_emulator/faults", json={"static_tokens_valid": False})
    assert (await upsert(emulator, contact("a@example.com"))).status_code == 401
    await emulator.client.post("/_emulator/faults", json={"static_tokens_valid": True})
    assert (await upsert(emulator, contact("a@example.com"))).status_code == 200


async def test_ten_secondly_rolling_limit(make_emulator: EmulatorFactory) -> None:
    emu = await make_emulator(hubspot_rate_limit_max=3, hubspot_rate_limit_interval_ms=10_000)
    answers = []
    for i in range(4):
        answers.append(await upsert(emu, contact(f"r{i}@example.com")))
        emu.clock.advance(1)
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-HubSpot-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    limited = answers[-1]
    assert limited.headers["X-HubSpot-RateLimit-Max"] == "3"
    assert limited.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    body = limited.json()
    assert body["status"] == "error" and body["errorType"] == "RATE_LIMIT"
    assert body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert body["groupName"].endswith(":62515") and body["correlationId"]
    assert "r3@example.com" not in (await emu.state())["records"]["hubspot"]

    emu.clock.advance(6.5)  # the first request (t=0) has left the 10 s window
    again = await upsert(emu, contact("r3@example.com"))
    assert again.status_code == 200
    state = await emu.state()
    assert state["counters"]["rate_limited"] == 1
    assert state["counters"]["rate_limited_by_policy"] == {"hubspot:TEN_SECONDLY_ROLLING": 1}
    assert state["counters"]["by_endpoint"]["POST /crm/v3/objects/contacts/batch/upsert"] == {
        "200": 4,
        "429": 1,
    }


async def test_daily_limit(make_emulator: EmulatorFactory) -> None:
    emu = await make_emulator(hubspot_daily_limit=2)
    assert (await upsert(emu, contact("a@example.com"))).headers["X-HubSpot-RateLimit-Daily-Remaining"] == "1"
    await upsert(emu, contact("b@example.com"))
    limited = await upsert(emu, contact("c@example.com"))
    assert limited.status_code == 429
    assert limited.json()["policyName"] == "DAILY"
    assert limited.headers["X-HubSpot-RateLimit-Daily"] == "2"
    assert limited.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"


async def test_rate_limit_can_be_changed_at_run_time(emulator: Emulator) -> None:
    response = await emulator.client.post(
        "/_emulator/faults",
        json={"systems": ["hubspot"], "rate_limit": {"max_requests": 1, "interval_ms": 500}},
    )
    assert response.json()["systems"]["hubspot"]["rate_limit"]["max_requests"] == 1
    assert (await upsert(emulator, contact("a@example.com"))).status_code == 200
    assert (await upsert(emulator, contact("a@example.com"))).status_code == 429
    emulator.clock.advance(0.5)
    assert (await upsert(emulator, contact("a@example.com"))).status_code == 200


async def test_batch_read_reports_missing_ids_as_multi_status(emulator: Emulator) -> None:
    await upsert(emulator, contact("a@example.com", firstname="A"))
    response = await emulator.client.post(
        "/crm/v3/objects/contacts/batch/read",
        headers=HUBSPOT,
        json={
            "idProperty": "email",
            "inputs": [{"id": "A@example.com"}, {"id": "ghost@example.com"}],
            "properties": ["firstname"],
        },
    )
    assert response.status_code == 207
    body = response.json()
    assert body["results"][0]["properties"]["firstname"] == "A"
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert body["errors"][0]["context"] == {"ids": ["ghost@example.com"]}


async def test_get_create_conflict_and_update_contact(emulator: Emulator) -> None:
    created = await emulator.client.post(
        "/crm/v3/objects/contacts",
        headers=HUBSPOT,
        json={"properties": {"email": "c@example.com", "firstname": "C"}},
    )
    assert created.status_code == 201
    conflict = await emulator.client.post(
        "/crm/v3/objects/contacts", headers=HUBSPOT, json={"properties": {"email": "C@example.com"}}
    )
    assert conflict.status_code == 409
    assert conflict.json()["message"] == f"Contact already exists. Existing ID: {created.json()['id']}"
    patched = await emulator.client.patch(
        "/crm/v3/objects/contacts/c@example.com?idProperty=email",
        headers=HUBSPOT,
        json={"properties": {"lifecyclestage": "customer"}},
    )
    assert patched.status_code == 200
    got = await emulator.client.get(
        f"/crm/v3/objects/contacts/{created.json()['id']}?properties=firstname,lifecyclestage",
        headers=HUBSPOT,
    )
    assert got.json()["properties"]["lifecyclestage"] == "customer"
    anonymous = await emulator.client.post(
        "/crm/v3/objects/contacts", headers=HUBSPOT, json={"properties": {"firstname": "NoMail"}}
    )
    assert anonymous.status_code == 201
    records = (await emulator.state())["records"]["hubspot"]
    assert records[f"id:{anonymous.json()['id']}"]["properties"] == {"firstname": "NoMail"}
    missing = await emulator.client.get("/crm/v3/objects/contacts/999999", headers=HUBSPOT)
    assert missing.status_code == 404 and missing.json()["category"] == "OBJECT_NOT_FOUND"


async def test_notes_and_tickets_are_associated_to_the_contact(emulator: Emulator) -> None:
    contact_id = (await upsert(emulator, contact("t@example.com"))).json()["results"][0]["id"]
    note = await emulator.client.post(
        "/crm/v3/objects/notes",
        headers=HUBSPOT,
        json={
            "properties": {"hs_timestamp": "2024-05-01T10:00:00Z", "hs_note_body": "Ordered twice"},
            "associations": [{"to": {"id": contact_id}, "types": [{**ASSOC, "associationTypeId": 202}]}],
        },
    )
    assert note.status_code == 201, note.text
    ticket = await emulator.client.post(
        "/crm/v3/objects/tickets",
        headers=HUBSPOT,
        json={
            "properties": {
                "subject": "Where is my order?",
                "content": "#1001",
                "hs_pipeline": "0",
                "hs_pipeline_stage": "1",
                "hs_ticket_priority": "HIGH",
            },
            "associations": [{"to": {"id": contact_id}, "types": [{**ASSOC, "associationTypeId": 16}]}],
        },
    )
    assert ticket.status_code == 201, ticket.text
    ticket_id = ticket.json()["id"]
    closed = await emulator.client.patch(
        f"/crm/v3/objects/tickets/{ticket_id}",
        headers=HUBSPOT,
        json={"properties": {"hs_pipeline_stage": "4"}},
    )
    assert closed.json()["properties"]["hs_pipeline_stage"] == "4"
    read = await emulator.client.get(
        f"/crm/v3/objects/tickets/{ticket_id}?associations=contacts", headers=HUBSPOT
    )
    assert read.json()["associations"]["contacts"]["results"] == [
        {"id": contact_id, "type": "ticket_to_contact"}
    ]

    record = (await emulator.state())["records"]["hubspot"]["t@example.com"]
    assert [n["properties"]["hs_note_body"] for n in record["notes"]] == ["Ordered twice"]
    assert [t["properties"]["hs_pipeline_stage"] for t in record["tickets"]] == ["4"]

    orphan = await emulator.client.post(
        "/crm/v3/objects/notes",
        headers=HUBSPOT,
        json={
            "properties": {"hs_timestamp": "1714557600000"},
            "associations": [{"to": {"id": "424242"}, "types": [{**ASSOC, "associationTypeId": 202}]}],
        },
    )
    assert orphan.status_code == 400 and "424242" in orphan.json()["message"]


async def test_batch_create_notes_is_all_or_nothing(emulator: Emulator) -> None:
    contact_id = (await upsert(emulator, contact("n@example.com"))).json()["results"][0]["id"]

    def note(to: str) -> dict[str, Any]:
        return {
            "properties": {"hs_timestamp": "1714557600000", "hs_note_body": f"for {to}"},
            "associations": [{"to": {"id": to}, "types": [{**ASSOC, "associationTypeId": 202}]}],
        }

    refused = await emulator.client.post(
        "/crm/v3/objects/notes/batch/create", headers=HUBSPOT, json={"inputs": [note(contact_id), note("1")]}
    )
    assert refused.status_code == 400
    created = await emulator.client.post(
        "/crm/v3/objects/notes/batch/create", headers=HUBSPOT, json={"inputs": [note(contact_id)] * 2}
    )
    assert created.status_code == 201 and len(created.json()["results"]) == 2
    assert len((await emulator.state())["records"]["hubspot"]["n@example.com"]["notes"]) == 2


async def test_outage_answers_503_except_the_admin_api(emulator: Emulator) -> None:
    await emulator.client.post("/_emulator/faults", json={"outage": True, "retry_after_s": 30})
    down = await upsert(emulator, contact("a@example.com"))
    assert down.status_code == 503 and down.headers["Retry-After"] == "30"
    assert (await emulator.client.get("/readyz")).status_code == 200
    assert (await emulator.client.get("/_emulator/state")).status_code == 200
    await emulator.client.post("/_emulator/faults", json={"outage": False})
    assert (await upsert(emulator, contact("a@example.com"))).status_code == 200


async def test_error_after_effect_applies_the_write_but_answers_500(emulator: Emulator) -> None:
    await emulator.client.post(
        "/_emulator/faults", json={"systems": ["hubspot"], "fail_next": [500], "error_phase": "after"}
    )
    failed = await upsert(emulator, contact("ambiguous@example.com", firstname="A"))
    assert failed.status_code == 500 and failed.json()["status"] == "error"
    assert failed.headers["X-HubSpot-RateLimit-Remaining"] == "99"
    retried = await upsert(emulator, contact("ambiguous@example.com", firstname="A"))
    assert retried.json()["results"][0]["new"] is False  # the first attempt had already created it
    record = (await emulator.state())["records"]["hubspot"]["ambiguous@example.com"]
    assert record["creates"] == 1


async def test_injected_429_looks_like_hubspots(emulator: Emulator) -> None:
    await emulator.client.post("/_emulator/faults", json={"error_rates": {"429": 1.0}})
    response = await upsert(emulator, contact("a@example.com"))
    assert response.status_code == 429
    assert response.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    assert (await emulator.state())["records"]["hubspot"] == {}


def note_upsert(key: str, body: str, **extra: Any) -> dict[str, Any]:
    return {
        "idProperty": "shopbotly_command_id",
        "id": key,
        "properties": {"hs_timestamp": "2024-05-01T10:00:00Z", "hs_note_body": body},
        **extra,
    }


async def test_note_batch_upsert_by_a_unique_property_creates_once(emulator: Emulator) -> None:
    await emulator.provision_hubspot()
    contact_id = (await upsert(emulator, contact("u@example.com"))).json()["results"][0]["id"]
    path = "/crm/v3/objects/notes/batch/upsert"
    first = await emulator.client.post(
        path, headers=HUBSPOT, json={"inputs": [note_upsert("cmd-1", "hi", objectWriteTraceId="cmd-1")]}
    )
    assert first.status_code == 200, first.text
    (created,) = first.json()["results"]
    assert created["new"] is True and created["objectWriteTraceId"] == "cmd-1"
    assert created["properties"]["shopbotly_command_id"] == "cmd-1"
    again = await emulator.client.post(path, headers=HUBSPOT, json={"inputs": [note_upsert("cmd-1", "hi")]})
    (updated,) = again.json()["results"]
    assert updated["new"] is False and updated["id"] == created["id"]

    assoc = f"/crm/v4/objects/notes/{created['id']}/associations/default/contacts/{contact_id}"
    for _ in range(2):  # idempotent: the second PUT changes nothing
        answer = await emulator.client.put(assoc, headers=HUBSPOT)
        assert answer.status_code == 200, answer.text
        assert "X-HubSpot-RateLimit-Remaining" in answer.headers  # behind the same gate as v3
    (result,) = answer.json()["results"]
    assert result["associationSpec"] == {**ASSOC, "associationTypeId": 202}
    assert result["from"] == {"id": created["id"]} and result["to"] == {"id": contact_id}

    state = await emulator.state()
    notes = state["records"]["hubspot"]["u@example.com"]["notes"]
    assert [(n["id"], n["associations"], n["updates"]) for n in notes] == [(created["id"], [contact_id], 1)]
    assert state["counters"]["records_by_type"]["hubspot"]["notes"] == {"creates": 1, "updates": 1}
    assert state["counters"]["by_endpoint"][
        "PUT /crm/v4/objects/{from_type}/{from_id}/associations/default/{to_type}/{to_id}"
    ] == {"200": 2}

    missing = await emulator.client.put(
        f"/crm/v4/objects/notes/{created['id']}/associations/default/contacts/424242", headers=HUBSPOT
    )
    assert missing.status_code == 404 and missing.json()["category"] == "OBJECT_NOT_FOUND"


async def test_ticket_batch_upsert_validates_like_a_create_and_refuses_associations(
    emulator: Emulator,
) -> None:
    await emulator.provision_hubspot()
    path = "/crm/v3/objects/tickets/batch/upsert"
    ticket = {
        "idProperty": "shopbotly_command_id",
        "id": "cmd-t",
        "properties": {"subject": "Late", "hs_pipeline": "0", "hs_pipeline_stage": "1"},
    }
    ok = await emulator.client.post(path, headers=HUBSPOT, json={"inputs": [ticket]})
    assert ok.status_code == 200 and ok.json()["results"][0]["properties"]["subject"] == "Late"
    no_subject = {**ticket, "id": "cmd-u", "properties": {"hs_pipeline": "0", "hs_pipeline_stage": "1"}}
    refused = await emulator.client.post(path, headers=HUBSPOT, json={"inputs": [no_subject]})
    assert refused.status_code == 400 and "subject is required" in refused.json()["message"]
    with_assoc = {**ticket, "associations": []}
    refused = await emulator.client.post(path, headers=HUBSPOT, json={"inputs": [with_assoc]})
    assert refused.status_code == 400 and "associations" in refused.json()["message"]
    twice = await emulator.client.post(path, headers=HUBSPOT, json={"inputs": [ticket, ticket]})
    assert twice.status_code == 400 and "Duplicate IDs" in twice.json()["message"]
    assert (await emulator.state())["counters"]["records_by_type"]["hubspot"]["tickets"]["creates"] == 1


async def test_upsert_by_a_property_that_is_not_unique_is_refused_until_created(
    make_emulator: EmulatorFactory,
) -> None:
    emu = await make_emulator(hubspot_unique_properties={})
    path = "/crm/v3/objects/notes/batch/upsert"
    refused = await emu.client.post(path, headers=HUBSPOT, json={"inputs": [note_upsert("cmd-1", "hi")]})
    assert refused.status_code == 400
    body = refused.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith(
        "Unable to perform update/upsert by non-unique 0-46 property shopbotly_command_id in portal ID"
    )
    prop = {
        "name": "shopbotly_command_id",
        "label": "ShopBotly command id",
        "type": "string",
        "fieldType": "text",
        "groupName": "noteinformation",
        "hasUniqueValue": True,
    }
    created = await emu.client.post("/crm/v3/properties/notes", headers=HUBSPOT, json=prop)
    assert created.status_code == 201 and created.json()["hasUniqueValue"] is True
    again = await emu.client.post("/crm/v3/properties/notes", headers=HUBSPOT, json=prop)
    assert again.status_code == 409 and again.json()["category"] == "OBJECT_ALREADY_EXISTS"
    accepted = await emu.client.post(path, headers=HUBSPOT, json={"inputs": [note_upsert("cmd-1", "hi")]})
    assert accepted.status_code == 200
    tickets = await emu.client.post(
        "/crm/v3/objects/tickets/batch/upsert",
        headers=HUBSPOT,
        json={"inputs": [{**note_upsert("cmd-2", "x"), "properties": {"subject": "s"}}]},
    )
    assert tickets.status_code == 400 and "non-unique 0-5 property" in tickets.json()["message"]
