"""crm-writer's generic recipes against the emulator's no-upsert CRM (`/api/leads/`) and the real broker.

The connection is the complete example of docs/configuration.md ("Recipes: a CRM without upsert"), read
from the page, with only its base URL and token file pointed at the test's emulator.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from shopbotly.common.config import ShopbotlyConfig, parse_config
from shopbotly.common.events import ATTEMPTS_HEADER, CommandOp, CommandResult, CrmCommand
from shopbotly.common.kafka import KafkaSettings
from shopbotly.crm_writer.engine import Writer
from shopbotly.testkit.crm_writer import (
    command_record,
    count_results,
    crm_command,
    produce,
    results_of,
    settings_for,
    writer_outputs,
)

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
TOKEN = "emulator-generic-token"  # the emulator's public default
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def docs_example() -> dict[str, Any]:
    section = DOC.read_text().split("## Recipes: a CRM without upsert", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    loaded: dict[str, Any] = yaml.safe_load(block)
    return loaded


def config(base_url: str, token_file: Path, **operation: Any) -> ShopbotlyConfig:
    raw = docs_example()
    conn = raw["tenants"]["demo"]["connections"]["crm"]
    conn["base_url"] = base_url
    conn["auth"]["token"] = {"file": str(token_file)}
    ops = conn["options"]["operations"]
    ops["upsert_lead"] = {**ops["upsert_lead"], **operation}
    return parse_config(raw)


def command(n: int, op: CommandOp, identity: str, **kw: Any) -> CrmCommand:
    return crm_command(n, op, identity, tenant="demo", **kw)


def header(record: Any, name: str) -> str:
    return next(v.decode() for k, v in record.headers if k == name)


async def lead(emulator: Any, email: str) -> dict[str, Any]:
    found = await emulator.admin.get("/api/leads/", params={"email": email}, headers=AUTH)
    results: list[dict[str, Any]] = found.json()["results"]
    assert len(results) == 1, results
    return results[0]


async def test_docs_recipe_creates_updates_tags_notes_and_keeps_the_crm_reason(
    kafka_settings: KafkaSettings, emulator: Any, tmp_path: Path
) -> None:
    for name in ("vip", "newsletter"):  # ids 1 and 2, as the example's value map says
        assert (await emulator.admin.post("/api/tags/", json={"name": name}, headers=AUTH)).status_code == 201
    token_file = tmp_path / "token"
    token_file.write_text("a-revoked-token\n")
    writer = Writer(settings_for(kafka_settings), config(emulator.base_url, token_file))
    ann = "ann@example.com"
    async with writer_outputs(kafka_settings, writer) as (results, dlq):
        # 403 with a bad token: the file is read again once, still bad: dead-lettered as auth.
        await produce(kafka_settings, [command_record(command(1, CommandOp.UPSERT_LEAD, "dan@example.com"))])
        await results.wait_for(count_results(1), timeout_s=30)
        # The operator fixes the file; no restart: the next refused token re-reads it.
        token_file.write_text(f"{TOKEN}\n")
        await produce(kafka_settings, [command_record(command(2, CommandOp.UPSERT_LEAD, "dan@example.com"))])
        await results.wait_for(count_results(2), timeout_s=30)
        first = command(3, CommandOp.UPSERT_LEAD, ann, fields={"firstname": "Ann", "phone": "+1 555 0100"})
        first = first.model_copy(update={"tags": ["vip", "not-in-the-crm"]})
        await produce(kafka_settings, [command_record(first)])
        await results.wait_for(count_results(3), timeout_s=30)
        later = [
            command(4, CommandOp.UPSERT_CONTACT, ann, fields={"lastname": "Lee"}),
            command(5, CommandOp.ADD_TAGS, ann, tags=["newsletter"]),
            command(6, CommandOp.ADD_NOTE, ann, body="called back"),
            command(7, CommandOp.UPSERT_LEAD, "bob@example.com", fields={"phone": "call me"}),
            command(8, CommandOp.ADD_NOTE, "carol@example.com", body="no lead"),
        ]
        await produce(kafka_settings, [command_record(c) for c in later])
        await results.wait_for(count_results(8), timeout_s=30)
        await dlq.wait_for(lambda records: len(records) >= 3, timeout_s=10)
    by_id: dict[str, CommandResult] = results_of(results)
    outcomes = {k: (r.outcome.value, r.error_class) for k, r in by_id.items()}
    assert outcomes == {
        "c1": ("dead_lettered", "auth"),
        "c2": ("applied", None),
        "c3": ("applied", None),
        "c4": ("applied", None),
        "c5": ("applied", None),
        "c6": ("applied", None),
        "c7": ("dead_lettered", "permanent"),
        "c8": ("dead_lettered", "permanent"),
    }
    assert by_id["c1"].error_message == "CRM answered 403: Invalid token."
    reason = 'CRM answered 400: {"phone":["Enter a valid phone number"]}'
    assert by_id["c7"].error_message == reason
    letters = {header(r, "error.message") for r in dlq.records}
    assert reason in letters
    assert any("find found none" in m for m in letters)
    # One lead, created once and updated once by id; the unknown tag left out, the note on the lead.
    state = (await emulator.state())["records"]["generic"]
    record = state[ann]
    assert (record["creates"], record["updates"]) == (1, 1)
    assert record["properties"] == {
        "first_name": "Ann",
        "last_name": "Lee",
        "phone": "+1 555 0100",
        "tags": "vip",
    }
    assert [n["properties"]["body"] for n in record["notes"]] == ["called back"]
    assert by_id["c3"].crm_ids == {"lead": str((await lead(emulator, ann))["id"])}
    assert state["dan@example.com"]["creates"] == 1
    assert "bob@example.com" not in state and "carol@example.com" not in state


async def test_retry_after_a_timed_out_create_converges_on_the_duplicate_answer(
    kafka_settings: KafkaSettings, emulator: Any, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    cfg = config(emulator.base_url, token_file, lookup="on_duplicate")
    cfg.tenants["demo"].connections["crm"] = (
        cfg.tenants["demo"].connections["crm"].model_copy(update={"timeout_s": 0.5})
    )
    writer = Writer(settings_for(kafka_settings), cfg)
    eve = "eve@example.com"
    # Answers come 1.5 s after the effect: the create is written, the writer hears nothing.
    await emulator.faults(systems=["generic"], latency_ms=1500, error_phase="after")
    async with writer_outputs(kafka_settings, writer) as (results, dlq):
        cmd = command(1, CommandOp.UPSERT_LEAD, eve, fields={"firstname": "Eve", "company": "Acme"})
        await produce(kafka_settings, [command_record(cmd)])
        async with asyncio.timeout(20):
            while eve not in (await emulator.state())["records"]["generic"]:
                await asyncio.sleep(0.1)
        await emulator.faults(systems=["generic"], clear=True)
        await results.wait_for(count_results(1), timeout_s=30)
    assert dlq.records == []
    result = results_of(results)["c1"]
    assert result.outcome.value == "applied" and result.attempts >= 2
    # The result lists each try for the console: the timed-out create first, the applied one last.
    tries = orjson.loads(header(results.records[0], ATTEMPTS_HEADER))["tries"]
    assert tries[0]["n"] == 1 and tries[0]["outcome"] == "retryable" and tries[0]["answer"]
    assert tries[-1]["n"] == result.attempts and tries[-1]["outcome"] == "applied"
    assert tries[0]["ms"] >= 500  # the writer's timeout
    state = await emulator.state()
    record = state["records"]["generic"][eve]
    assert record["creates"] == 1 and record["properties"]["company"] == "Acme"
    answered = state["counters"]["by_endpoint"]["POST /api/leads/"]
    assert answered.get("400", 0) >= 1  # the CRM's "already exists", turned into find + update
    assert result.crm_ids == {"lead": str((await lead(emulator, eve))["id"])}
