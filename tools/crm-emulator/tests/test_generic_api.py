"""The generic REST CRM through HTTP: upsert by e-mail, Idempotency-Key, auth kinds, OAuth, rate limit."""

from __future__ import annotations

import asyncio

import pytest

from shopbotly.testkit.crm_emulator import GENERIC, Emulator, EmulatorFactory

pytestmark = pytest.mark.component


async def test_upsert_by_email(emulator: Emulator) -> None:
    created = await emulator.client.post(
        "/api/v1/leads", headers=GENERIC, json={"email": "Lee@Example.com", "firstname": "Lee", "tags": ["a"]}
    )
    assert created.status_code == 201
    assert created.json()["created"] is True and created.json()["email"] == "lee@example.com"
    updated = await emulator.client.post(
        "/api/v1/leads",
        headers=GENERIC,
        json={"email": "lee@example.com", "lastname": "Ray", "tags": ["a", "b"]},
    )
    assert updated.status_code == 200
    body = updated.json()
    assert body["id"] == created.json()["id"] and body["created"] is False
    assert body["firstname"] == "Lee" and body["lastname"] == "Ray" and body["tags"] == ["a", "b"]
    got = await emulator.client.get("/api/v1/leads/LEE@example.com", headers=GENERIC)
    assert got.json()["lastname"] == "Ray"
    record = (await emulator.state())["records"]["generic"]["lee@example.com"]
    assert record["creates"] == 1 and record["updates"] == 1 and record["tags"] == ["a", "b"]


async def test_same_idempotency_key_same_answer_without_second_effect(emulator: Emulator) -> None:
    headers = {**GENERIC, "Idempotency-Key": "cmd-123"}
    body = {"email": "idem@example.com", "firstname": "I"}
    first = await emulator.client.post("/api/v1/leads", headers=headers, json=body)
    # A different client writes in between; the replay must not undo it.
    await emulator.client.post(
        "/api/v1/leads", headers=GENERIC, json={"email": "idem@example.com", "firstname": "J"}
    )
    replay = await emulator.client.post(
        "/api/v1/leads", headers=headers, json={"firstname": "I", "email": "idem@example.com"}
    )
    assert replay.status_code == first.status_code == 201
    assert replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    record = (await emulator.state())["records"]["generic"]["idem@example.com"]
    assert record["creates"] == 1 and record["updates"] == 1
    assert record["properties"]["firstname"] == "J"

    reused = await emulator.client.post(
        "/api/v1/leads", headers=headers, json={"email": "idem@example.com", "firstname": "Other"}
    )
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"


async def test_concurrent_requests_with_one_key_apply_once(emulator: Emulator) -> None:
    headers = {**GENERIC, "Idempotency-Key": "race"}
    answers = await asyncio.gather(
        *(
            emulator.client.post("/api/v1/leads", headers=headers, json={"email": "race@example.com"})
            for _ in range(8)
        )
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    record = (await emulator.state())["records"]["generic"]["race@example.com"]
    assert record["creates"] == 1 and record["updates"] == 0


async def test_validation_errors_are_422_and_not_remembered(emulator: Emulator) -> None:
    headers = {**GENERIC, "Idempotency-Key": "fix-me"}
    bad = await emulator.client.post("/api/v1/leads", headers=headers, json={"email": "nope"})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "validation_error" and "email" in bad.json()["error"]["fields"]
    fixed = await emulator.client.post("/api/v1/leads", headers=headers, json={"email": "fixed@example.com"})
    assert fixed.status_code == 201
    not_json = await emulator.client.post(
        "/api/v1/leads", headers={**GENERIC, "Content-Type": "application/json"}, content=b"{nope"
    )
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"


async def test_notes_need_an_existing_lead(emulator: Emulator) -> None:
    missing = await emulator.client.post(
        "/api/v1/leads/x@example.com/notes", headers=GENERIC, json={"body": "hi"}
    )
    assert missing.status_code == 404
    await emulator.client.post("/api/v1/leads", headers=GENERIC, json={"email": "x@example.com"})
    headers = {**GENERIC, "Idempotency-Key": "note-1"}
    first = await emulator.client.post(
        "/api/v1/leads/x@example.com/notes", headers=headers, json={"body": "hi"}
    )
    again = await emulator.client.post(
        "/api/v1/leads/x@example.com/notes", headers=headers, json={"body": "hi"}
    )
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    notes = (await emulator.state())["records"]["generic"]["x@example.com"]["notes"]
    assert [n["properties"]["body"] for n in notes] == ["hi"]


async def test_auth_kinds(make_emulator: EmulatorFactory) -> None:
    emu = await make_emulator(generic_api_keys=["key-1"])
    lead = {"email": "k@example.com"}
    assert (
        await emu.client.post("/api/v1/leads", headers={"X-API-Key": "key-1"}, json=lead)
    ).status_code == 201
    wrong = await emu.client.post("/api/v1/leads", headers={"X-API-Key": "key-2"}, json=lead)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_token"
    none = await emu.client.post("/api/v1/leads", json=lead)
    assert none.status_code == 401 and none.json()["error"]["code"] == "unauthorized"
    assert none.headers["WWW-Authenticate"].startswith("Bearer")


async def test_oauth_client_credentials_refresh_and_expiry(make_emulator: EmulatorFactory) -> None:
    emu = await make_emulator(generic_token_lifetime_s=30)
    client = {"client_id": "emulator-generic-client", "client_secret": "emulator-generic-secret"}
    issued = await emu.client.post("/api/v1/oauth/token", data={"grant_type": "client_credentials", **client})
    body = issued.json()
    assert issued.status_code == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 30
    assert issued.headers["Cache-Control"] == "no-store"
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert (
        await emu.client.post("/api/v1/leads", headers=bearer, json={"email": "o@example.com"})
    ).status_code == 201
    emu.clock.advance(31)
    assert (
        await emu.client.post("/api/v1/leads", headers=bearer, json={"email": "o@example.com"})
    ).status_code == 401
    refreshed = await emu.client.post(
        "/api/v1/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"], **client},
    )
    assert refreshed.status_code == 200
    bearer = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    assert (
        await emu.client.post("/api/v1/leads", headers=bearer, json={"email": "o@example.com"})
    ).status_code == 200
    bad_client = await emu.client.post(
        "/api/v1/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"},
    )
    assert bad_client.status_code == 401 and bad_client.json()["error"] == "invalid_client"
    bad_refresh = await emu.client.post(
        "/api/v1/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "rt_forged", **client}
    )
    assert bad_refresh.status_code == 400 and bad_refresh.json()["error"] == "invalid_grant"


async def test_rate_limit_with_retry_after(make_emulator: EmulatorFactory) -> None:
    emu = await make_emulator(generic_rate_limit_max=2, generic_rate_limit_interval_ms=1000)
    answers = [
        await emu.client.post("/api/v1/leads", headers=GENERIC, json={"email": "r@example.com"})
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [201, 200, 429]
    limited = answers[-1]
    assert limited.headers["Retry-After"] == "1"
    assert limited.headers["RateLimit-Limit"] == "2" and limited.headers["RateLimit-Remaining"] == "0"
    assert limited.json()["error"]["code"] == "rate_limited"
    emu.clock.advance(1)
    assert (
        await emu.client.post("/api/v1/leads", headers=GENERIC, json={"email": "r@example.com"})
    ).status_code == 200
