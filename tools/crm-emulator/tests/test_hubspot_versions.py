"""HubSpot's two path families: the numbered one (`/crm/v3/...`, `/crm/v4/...` associations) and the
date-based versions (`/crm/objects/2026-03/...`), served with the same behaviour and error shapes; the
2026-09 version enforces a portal's required properties on creates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from shopbotly.testkit.crm_emulator import HUBSPOT, Emulator, EmulatorFactory

pytestmark = pytest.mark.component


@dataclass(frozen=True)
class Family:
    objects: str
    associations: str
    properties: str


FAMILIES = {
    "v3": Family("/crm/v3/objects", "/crm/v4/objects", "/crm/v3/properties"),
    "2026-03": Family("/crm/objects/2026-03", "/crm/objects/2026-03", "/crm/properties/2026-03"),
    "2026-09": Family("/crm/objects/2026-09", "/crm/objects/2026-09", "/crm/properties/2026-09"),
}
COMMAND_ID = {
    "name": "shopbotly_command_id",
    "label": "ShopBotly command id",
    "type": "string",
    "fieldType": "text",
    "groupName": "engagement",
    "hasUniqueValue": True,
}


def _volatile(body: Any) -> Any:
    """An answer without what differs between two runs (times, ids, correlation ids)."""
    if isinstance(body, dict):
        return {
            k: _volatile(v)
            for k, v in body.items()
            if k not in ("startedAt", "completedAt", "createdAt", "updatedAt", "correlationId", "createdate")
            and k not in ("lastmodifieddate", "hs_object_id", "id")
        }
    if isinstance(body, list):
        return [_volatile(v) for v in body]
    return body


async def _walk(emu: Emulator, f: Family) -> list[tuple[int, Any]]:
    """The calls crm-writer and `connections setup` make, and the refusals they meet, in one family."""
    c, out = emu.client, []

    async def call(method: str, path: str, body: Any = None) -> Any:
        response = await c.request(method, path, headers=HUBSPOT, json=body)
        out.append((response.status_code, _volatile(response.json())))
        return response.json()

    await call("GET", f"{f.properties}/notes/shopbotly_command_id")  # 404 before setup
    for object_type in ("notes", "tickets"):
        await call("POST", f"{f.properties}/{object_type}", COMMAND_ID)
    await call("POST", f"{f.properties}/notes", COMMAND_ID)  # 409: exists
    listed = await call("GET", f"{f.properties}/0-46")  # by object type id
    assert "shopbotly_command_id" in {p["name"] for p in listed["results"]}
    upserted = await call(
        "POST",
        f"{f.objects}/contacts/batch/upsert",
        {
            "inputs": [
                {"id": "jo@example.com", "idProperty": "email", "properties": {"firstname": "Jo"}},
                {"id": "bad@@example", "idProperty": "email", "properties": {"firstname": "B"}},
                {"id": "x@example.com", "idProperty": "email", "properties": {"nope": "1"}},
            ]
        },
    )
    contact_id = upserted["results"][0]["id"]
    await call(
        "POST",
        f"{f.objects}/contacts/batch/read",
        {"idProperty": "email", "inputs": [{"id": "jo@example.com"}, {"id": "no@example.com"}]},
    )
    await call("GET", f"{f.objects}/contacts/jo@example.com?idProperty=email&properties=firstname")
    await call("GET", f"{f.objects}/contacts/999999")  # 404
    await call("PATCH", f"{f.objects}/contacts/{contact_id}", {"properties": {"lastname": "Doe"}})
    note = {
        "idProperty": "shopbotly_command_id",
        "id": "cmd-1",
        "properties": {"hs_note_body": "Hello", "hs_timestamp": "2026-12-01T10:00:00Z"},
        "objectWriteTraceId": "cmd-1",
    }
    notes = await call("POST", f"{f.objects}/notes/batch/upsert", {"inputs": [note]})
    note_id = notes["results"][0]["id"]
    await call("POST", f"{f.objects}/notes/batch/upsert", {"inputs": [{**note, "idProperty": "nope"}]})
    path = f"{f.associations}/notes/{note_id}/associations/default/contacts/{contact_id}"
    await call("PUT", path)
    await call("PUT", path)  # idempotent
    await call("PUT", f"{f.associations}/notes/{note_id}/associations/default/contacts/999999")  # 404
    ticket = {"properties": {"subject": "Where is my order?", "hs_pipeline": "0", "hs_pipeline_stage": "1"}}
    created = await call("POST", f"{f.objects}/tickets", ticket)
    await call("PATCH", f"{f.objects}/tickets/{created['id']}", {"properties": {"hs_ticket_priority": "BAD"}})
    await call("POST", f"{f.objects}/tickets", {"properties": {"subject": "no pipeline"}})  # 400
    await call("GET", f"{f.objects}/widgets/1")  # 400: unknown object type
    return out


async def test_both_path_families_answer_the_same_calls_the_same_way(make_emulator: EmulatorFactory) -> None:
    answers = {}
    for version, family in FAMILIES.items():
        emu = await make_emulator()
        answers[version] = await _walk(emu, family)
    statuses = [status for status, _ in answers["v3"]]
    assert statuses == [
        *(404, 201, 201, 409, 200),  # properties: missing, created twice, exists, listed
        *(207, 207, 200, 404, 200),  # contacts: upsert and read with refusals, get, not found, update
        *(200, 400, 200, 200, 404),  # notes: upsert, by a non-unique property; associated twice, no contact
        *(201, 400, 400, 400),  # tickets: created, bad option, no pipeline; unknown object type
    ]
    assert answers["2026-03"] == answers["v3"]
    assert answers["2026-09"] == answers["v3"]  # no required properties configured: as 2026-03


async def test_the_route_template_names_the_family(make_emulator: EmulatorFactory) -> None:
    emu = await make_emulator()
    body = {"inputs": [{"id": "jo@example.com", "idProperty": "email", "properties": {}}]}
    for path in ("/crm/v3/objects/contacts/batch/upsert", "/crm/objects/2026-03/contacts/batch/upsert"):
        assert (await emu.client.post(path, headers=HUBSPOT, json=body)).status_code == 200
    counted = (await emu.state())["counters"]["by_endpoint"]
    assert counted["POST /crm/v3/objects/contacts/batch/upsert"] == {"200": 1}
    assert counted["POST /crm/objects/{version}/contacts/batch/upsert"] == {"200": 1}


@pytest.mark.parametrize(
    "path",
    [
        "/crm/objects/2025-09/contacts/batch/upsert",
        "/crm/objects/2027-03/contacts/batch/upsert",
        "/crm/properties/2025-03/contacts",
        "/crm/objects/v3/contacts/batch/upsert",
    ],
)
async def test_a_version_the_portal_does_not_serve_is_not_found(emulator: Emulator, path: str) -> None:
    method = "GET" if "/properties/" in path else "POST"
    response = await emulator.client.request(method, path, headers=HUBSPOT, json={"inputs": []})
    assert response.status_code == 404
    body = response.json()
    assert body["status"] == "error" and body["category"] == "OBJECT_NOT_FOUND" and body["correlationId"]
    assert "detail" not in body


async def test_dated_paths_are_hubspots_requests_auth_and_limits_included(
    make_emulator: EmulatorFactory,
) -> None:
    emu = await make_emulator(hubspot_rate_limit_max=1, hubspot_rate_limit_interval_ms=10_000)
    path = "/crm/objects/2026-03/contacts/batch/read"
    body = {"idProperty": "email", "inputs": [{"id": "jo@example.com"}]}
    unauthorized = await emu.client.post(path, json=body)
    assert unauthorized.status_code == 401 and unauthorized.json()["category"] == "INVALID_AUTHENTICATION"
    first = await emu.client.post(path, headers=HUBSPOT, json=body)
    assert first.headers["X-HubSpot-RateLimit-Max"] == "1"
    limited = await emu.client.post("/crm/properties/2026-09/contacts", headers=HUBSPOT)
    assert limited.status_code == 429 and limited.json()["policyName"] == "TEN_SECONDLY_ROLLING"


def _contact(email: str, **props: str) -> dict[str, Any]:
    return {"id": email, "idProperty": "email", "properties": props, "objectWriteTraceId": f"t-{email}"}


@pytest.mark.parametrize("version", ["v3", "2026-03", "2026-09"])
async def test_required_properties_hold_for_creates_from_2026_09_only(
    make_emulator: EmulatorFactory, version: str
) -> None:
    emu = await make_emulator(hubspot_required_properties={"contacts": ["lastname"], "tickets": ["content"]})
    f = FAMILIES[version]
    enforced = version == "2026-09"
    old = await emu.client.post(  # created before (on v3): an update needs no lastname
        "/crm/v3/objects/contacts/batch/upsert",
        headers=HUBSPOT,
        json={"inputs": [_contact("old@example.com")]},
    )
    assert old.status_code == 200
    response = await emu.client.post(
        f"{f.objects}/contacts/batch/upsert",
        headers=HUBSPOT,
        json={
            "inputs": [
                _contact("new@example.com", firstname="New"),
                _contact("full@example.com", firstname="Full", lastname="Doe"),
                _contact("old@example.com", firstname="Old"),
            ]
        },
    )
    records = (await emu.state())["records"]["hubspot"]
    assert "full@example.com" in records and records["old@example.com"]["properties"]["firstname"] == "Old"
    if not enforced:
        assert response.status_code == 200 and "new@example.com" in records
    else:
        assert response.status_code == 207 and "new@example.com" not in records
        [error] = response.json()["errors"]
        assert error["category"] == "VALIDATION_ERROR"
        assert error["objectWriteTraceId"] == "t-new@example.com"
        assert error["context"] == {"ids": ["new@example.com"]}
        assert error["errors"] == [
            {"message": "lastname is required", "code": "REQUIRED_FIELD", "in": "lastname"}
        ]
    single = await emu.client.post(
        f"{f.objects}/contacts", headers=HUBSPOT, json={"properties": {"email": "one@example.com"}}
    )
    ticket = await emu.client.post(
        f"{f.objects}/tickets",
        headers=HUBSPOT,
        json={"properties": {"subject": "Help", "hs_pipeline": "0", "hs_pipeline_stage": "1"}},
    )
    assert (single.status_code, ticket.status_code) == ((400, 400) if enforced else (201, 201))
    if enforced:
        assert ticket.json()["category"] == "VALIDATION_ERROR"
        assert '"error":"REQUIRED_FIELD","name":"content"' in ticket.json()["message"]
