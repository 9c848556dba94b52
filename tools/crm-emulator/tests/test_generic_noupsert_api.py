"""The generic CRM's no-upsert flavour (`/api/`): unique e-mail, update by id, its error shapes, 403."""

from __future__ import annotations

import pytest

from shopbotly.testkit.crm_emulator import GENERIC, Emulator

pytestmark = pytest.mark.component


async def test_create_then_update_by_id_and_one_lead_per_email(emulator: Emulator) -> None:
    c = emulator.client
    created = await c.post(
        "/api/leads/",
        headers={**GENERIC, "Idempotency-Key": "k1"},
        json={"email": "Ann@Example.com", "first_name": "Ann", "phone": "+33 1 23 45 67 89"},
    )
    assert created.status_code == 201
    lead = created.json()
    assert lead["email"] == "ann@example.com" and isinstance(lead["id"], int)
    # No upsert, and the idempotency key is ignored: the same request again is refused as a duplicate.
    again = await c.post(
        "/api/leads/", headers={**GENERIC, "Idempotency-Key": "k1"}, json={"email": "ann@example.com"}
    )
    assert again.status_code == 400
    assert again.json() == {"error": True, "errors": {"email": ["lead with this email already exists."]}}
    found = await c.get("/api/leads/", params={"email": "ANN@example.com"}, headers=GENERIC)
    assert [r["id"] for r in found.json()["results"]] == [lead["id"]]
    missing = await c.get("/api/leads/", params={"email": "nobody@example.com"}, headers=GENERIC)
    assert missing.json()["count"] == 0
    patched = await c.patch(f"/api/leads/{lead['id']}/", headers=GENERIC, json={"last_name": "Lee"})
    assert patched.status_code == 200
    assert (patched.json()["first_name"], patched.json()["last_name"]) == ("Ann", "Lee")
    assert (await c.patch("/api/leads/999/", headers=GENERIC, json={})).json() == {"detail": "Not found."}
    note = await c.post(f"/api/leads/{lead['id']}/notes/", headers=GENERIC, json={"body": "called"})
    assert note.status_code == 201 and note.json()["lead"] == lead["id"]
    record = (await emulator.state())["records"]["generic"]["ann@example.com"]
    assert (record["creates"], record["updates"]) == (1, 1)
    assert [n["properties"]["body"] for n in record["notes"]] == ["called"]


async def test_validation_errors_and_tags_by_id(emulator: Emulator) -> None:
    c = emulator.client
    bad = await c.post("/api/leads/", headers=GENERIC, json={"email": "b@example.com", "phone": "call me"})
    assert bad.status_code == 400
    assert bad.json() == {"error": True, "errors": {"phone": ["Enter a valid phone number"]}}
    vip = (await c.post("/api/tags/", headers=GENERIC, json={"name": "vip"})).json()
    dup = await c.post("/api/tags/", headers=GENERIC, json={"name": "vip"})
    assert dup.status_code == 400
    unknown = await c.post("/api/leads/", headers=GENERIC, json={"email": "b@example.com", "tags": ["vip"]})
    assert unknown.json()["errors"] == {"tags": ['Invalid pk "vip" - object does not exist.']}
    ok = await c.post("/api/leads/", headers=GENERIC, json={"email": "b@example.com", "tags": [vip["id"]]})
    assert ok.status_code == 201 and ok.json()["tags"] == [{"id": vip["id"], "name": "vip"}]
    assert (await emulator.state())["records"]["generic"]["b@example.com"]["tags"] == ["vip"]


async def test_bad_token_is_a_403(emulator: Emulator) -> None:
    c = emulator.client
    wrong = await c.get("/api/leads/", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json() == {"detail": "Invalid token."}
    none = await c.post("/api/leads/", json={"email": "x@example.com"})
    assert none.status_code == 403
    # The upsert flavour keeps its 401.
    assert (await c.post("/api/v1/leads", json={"email": "x@example.com"})).status_code == 401
