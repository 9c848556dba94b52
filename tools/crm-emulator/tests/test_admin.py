"""The admin API, probes and metrics; the app served by uvicorn and by its console script."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shopbotly.crm_emulator import EmulatorSettings, create_app
from shopbotly.testkit.crm_emulator import GENERIC, HUBSPOT, Emulator, EmulatorFactory, free_port

pytestmark = pytest.mark.component


async def upsert(emu: Emulator, email: str, **props: str) -> httpx.Response:
    return await emu.client.post(
        "/crm/v3/objects/contacts/batch/upsert",
        headers=HUBSPOT,
        json={"inputs": [{"id": email, "idProperty": "email", "properties": props}]},
    )


async def test_state_counters_and_history(emulator: Emulator) -> None:
    await emulator.provision_hubspot()
    # A reset forgets records and counters, not the properties created through the API.
    assert (await emulator.client.post("/_emulator/reset")).status_code == 200
    for seq in range(3):
        await upsert(emulator, "h@example.com", shopbotly_tags=f"t{seq}")
    await emulator.client.post("/api/v1/leads", headers=GENERIC, json={"email": "g@example.com"})
    state = await emulator.state(history="true")
    counters = state["counters"]
    assert counters["creates"] == 2 and counters["updates"] == 2 and counters["requests"] == 4
    assert counters["writes_by_system"]["hubspot"] == {"creates": 1, "updates": 2}
    history = state["records"]["hubspot"]["h@example.com"]["history"]
    assert [h["kind"] for h in history] == ["create", "update", "update"]
    assert [h["properties"]["shopbotly_tags"] for h in history] == ["t0", "t1", "t2"]
    only = await emulator.state(system="generic")
    assert set(only["records"]) == {"generic"}


async def test_request_log_keeps_every_request_refused_ones_included(emulator: Emulator) -> None:
    limit = {"systems": ["hubspot"], "rate_limit": {"max_requests": 2, "interval_ms": 10_000}}
    assert (await emulator.client.post("/_emulator/faults", json=limit)).status_code == 200
    for n in range(3):
        await upsert(emulator, f"log{n}@example.com")
    await emulator.client.post("/api/v1/leads", headers=GENERIC, json={"email": "g@example.com"})
    hubspot = (await emulator.client.get("/_emulator/requests", params={"system": "hubspot"})).json()
    assert [status for _, status in hubspot["requests"]] == [200, 200, 429]
    times = [at for at, _ in hubspot["requests"]]
    assert times == sorted(times)
    every = (await emulator.client.get("/_emulator/requests")).json()["requests"]
    assert len(every) == 4  # the admin calls themselves are not CRM requests
    await emulator.client.post("/_emulator/reset")
    assert (await emulator.client.get("/_emulator/requests")).json()["requests"] == []


async def test_reset_forgets_records_counters_and_faults(emulator: Emulator) -> None:
    await upsert(emulator, "r@example.com")
    await emulator.client.post("/_emulator/faults", json={"latency_ms": 5, "outage": True})
    reset = await emulator.client.post("/_emulator/reset")
    assert reset.status_code == 200
    state = await emulator.state()
    assert state["records"]["hubspot"] == {} and state["counters"]["requests"] == 0
    faults = (await emulator.client.get("/_emulator/faults")).json()
    assert faults["systems"]["hubspot"]["outage"] is False and faults["systems"]["hubspot"]["latency_ms"] == 0
    recreated = await upsert(emulator, "r@example.com")
    assert recreated.json()["results"][0]["new"] is True


async def test_fault_validation(emulator: Emulator) -> None:
    too_much = await emulator.client.post("/_emulator/faults", json={"error_rates": {"500": 0.8, "503": 0.5}})
    assert too_much.status_code == 422
    not_error = await emulator.client.post("/_emulator/faults", json={"fail_next": [200]})
    assert not_error.status_code == 422
    sf_window = await emulator.client.post(
        "/_emulator/faults", json={"systems": ["salesforce"], "rate_limit": {"max_requests": 5}}
    )
    assert sf_window.status_code == 422
    unknown = await emulator.client.post("/_emulator/faults", json={"latencyMs": 5})
    assert unknown.status_code == 422


async def test_faults_target_one_system(emulator: Emulator) -> None:
    await emulator.client.post("/_emulator/faults", json={"systems": ["generic"], "fail_next": [503, 502]})
    assert (await upsert(emulator, "a@example.com")).status_code == 200
    statuses = [
        (
            await emulator.client.post("/api/v1/leads", headers=GENERIC, json={"email": "a@example.com"})
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [503, 502, 201]
    state = await emulator.state()
    assert state["counters"]["injected_faults"] == {"generic:503": 1, "generic:502": 1}


async def test_latency_is_added(emulator: Emulator) -> None:
    await emulator.client.post("/_emulator/faults", json={"systems": ["hubspot"], "latency_ms": 150})
    started = time.perf_counter()
    await upsert(emulator, "slow@example.com")
    assert time.perf_counter() - started >= 0.15


async def test_admin_token(make_emulator: EmulatorFactory) -> None:
    emu = await make_emulator(admin_token="s3cret")
    assert (await emu.client.get("/_emulator/state")).status_code == 401
    ok = await emu.client.get("/_emulator/state", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200


async def test_probes_and_metrics(emulator: Emulator) -> None:
    assert (await emulator.client.get("/healthz")).json()["status"] == "ok"
    assert (await emulator.client.get("/readyz")).json()["status"] == "ready"
    await upsert(emulator, "m@example.com")
    metrics = (await emulator.client.get("/metrics")).text
    assert 'shopbotly_crm_emulator_requests_total{status="200",system="hubspot"}' in metrics
    assert "shopbotly_crm_emulator_request_duration_seconds_bucket" in metrics


async def test_served_in_process_by_uvicorn_with_a_file_database(tmp_path: Path, serve_app: object) -> None:
    """As crm-writer's tests do: the factory under uvicorn on a free port, state in a SQLite file."""
    db = tmp_path / "emulator.sqlite3"
    port = await serve_app(create_app(EmulatorSettings(db_path=db)))  # type: ignore[operator]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/readyz")).status_code == 200
        response = await client.post(
            "/crm/v3/objects/contacts/batch/upsert",
            headers=HUBSPOT,
            json={"inputs": [{"id": "file@example.com", "idProperty": "email", "properties": {}}]},
        )
        assert response.status_code == 200
    # The record is in the file: a second app on the same file sees it.
    reopened = create_app(EmulatorSettings(db_path=db))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=reopened), base_url="http://x") as client:
        state = (await client.get("/_emulator/state")).json()
    assert "file@example.com" in state["records"]["hubspot"]


async def test_console_script_serves_on_the_configured_port(tmp_path: Path) -> None:
    port = free_port()
    script = Path(sys.executable).with_name("shopbotly-crm-emulator")
    env = {**os.environ, "SHOPBOTLY_EMULATOR_PORT": str(port), "SHOPBOTLY_DATA_DIR": str(tmp_path)}
    process = subprocess.Popen([str(script)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the emulator did not become ready"
                await asyncio.sleep(0.1)
        assert (tmp_path / "crm-emulator.sqlite3").exists()
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()


def test_production_is_refused() -> None:
    with pytest.raises(ValueError, match="refuses"):
        EmulatorSettings(environment="production")


async def test_queued_failures_hit_only_requests_that_would_succeed(emulator: Emulator) -> None:
    await emulator.client.post("/_emulator/faults", json={"fail_next": [503]})
    token = await emulator.sf_token()  # the token endpoint does not consume the queue
    limits = "/services/data/v61.0/limits"
    assert (await emulator.client.get(limits, headers={"Authorization": "Bearer forged"})).status_code == 401
    assert (await emulator.client.get(limits, headers=token)).status_code == 503
    assert (await emulator.client.get(limits, headers=token)).status_code == 200
