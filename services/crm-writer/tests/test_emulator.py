"""crm-writer against the CRM emulator (tools/crm-emulator, real HTTP) and the real Kafka broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shopbotly.common.config import ShopbotlyConfig, parse_config
from shopbotly.common.events import CommandOp, CrmCommand
from shopbotly.common.kafka import KafkaSettings
from shopbotly.crm_writer.circuit import CircuitState
from shopbotly.crm_writer.engine import Writer
from shopbotly.testkit.crm_writer import (
    ExpectedContact,
    command_record,
    count_results,
    crm_command,
    mixed_commands,
    produce,
    results_of,
    sequential_model,
    settings_for,
    writer_outputs,
)

pytestmark = pytest.mark.integration

TAGS = "shopbotly_tags"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_EMU_HS_TOKEN", "emulator-hubspot-token")


def config(base_url: str, *, rate: tuple[int, float], api_version: str | None = None) -> ShopbotlyConfig:
    hubspot: dict[str, Any] = {
        "kind": "hubspot",
        "base_url": base_url,
        "auth": {"kind": "bearer", "token": {"env": "SB_EMU_HS_TOKEN"}},
        "rate_limit": {"requests": rate[0], "per_seconds": rate[1]},
    }
    if api_version is not None:
        hubspot["options"] = {"api_version": api_version}
    return parse_config({"tenants": {"t1": {"connections": {"hs": hubspot}}}})


def emulator_state(state: dict[str, Any]) -> dict[str, ExpectedContact]:
    out = {}
    for email, rec in state["records"]["hubspot"].items():
        props = dict(rec["properties"])
        tags = [t for t in (props.pop(TAGS, None) or "").split(";") if t]
        props.pop("email", None)
        out[email] = ExpectedContact(
            properties={k: v for k, v in props.items() if v is not None},
            tags=tags,
            notes=[n["properties"]["hs_note_body"] for n in rec.get("notes", [])],
            tickets=[t["properties"]["subject"] for t in rec.get("tickets", [])],
        )
    return out


def comparable(model: dict[str, ExpectedContact]) -> dict[str, ExpectedContact]:
    # The emulator stores an empty string as "cleared": the same as never set.
    return {
        k: ExpectedContact({p: v for p, v in c.properties.items() if v != ""}, c.tags, c.notes, c.tickets)
        for k, c in model.items()
    }


async def apply_sequentially_comparable(
    kafka_settings: KafkaSettings, emulator: Any, commands: list[CrmCommand], cfg: ShopbotlyConfig
) -> dict[str, Any]:
    """Run the writer over `commands` until each has a result; every one applied, none dead-lettered, and the
    emulator's final state is the sequential application's. The emulator's state, for more checks."""
    await emulator.faults(systems=["hubspot"], rate_limit={"max_requests": 1000, "interval_ms": 1000})
    writer = Writer(settings_for(kafka_settings), cfg)
    await produce(kafka_settings, [command_record(c) for c in commands])
    async with writer_outputs(kafka_settings, writer) as (results, dlq):
        await results.wait_for(count_results(len(commands)), timeout_s=90)
    assert dlq.records == []
    assert {r.outcome.value for r in results_of(results).values()} == {"applied"}
    state: dict[str, Any] = await emulator.state()
    assert emulator_state(state) == comparable(sequential_model(commands))
    return state


async def test_final_emulator_state_equals_sequential_application(
    kafka_settings: KafkaSettings, emulator: Any
) -> None:
    commands = mixed_commands(2000, 100, seed=11)
    cfg = config(emulator.base_url, rate=(1000, 1.0))
    counters = (await apply_sequentially_comparable(kafka_settings, emulator, commands, cfg))["counters"]
    assert counters["writes_by_system"]["hubspot"]["creates"] == 100  # creates == identities
    assert counters["rate_limited"] == 0
    print(f"\nemulator: {counters['requests']} requests for 2000 commands")


@pytest.mark.parametrize("api_version", ["v3", "2026-03", "2026-09"])
async def test_each_hubspot_api_version_applies_the_same_state_through_its_own_paths(
    kafka_settings: KafkaSettings, emulator: Any, api_version: str
) -> None:
    commands = mixed_commands(400, 40, seed=5)
    assert {c.op for c in commands} >= {CommandOp.ADD_NOTE, CommandOp.CREATE_TICKET, CommandOp.ADD_TAGS}
    cfg = config(emulator.base_url, rate=(1000, 1.0), api_version=api_version)
    state = await apply_sequentially_comparable(kafka_settings, emulator, commands, cfg)
    # Every object and association call the writer made went to the version's own path family.
    called = {e for e in state["counters"]["by_endpoint"] if "/objects" in e}
    family = ("/crm/v3/objects/", "/crm/v4/objects/") if api_version == "v3" else ("/crm/objects/{version}/",)
    assert called and all(e.split(" ", 1)[1].startswith(family) for e in called), called
    assert any("/associations/default/" in e for e in called)


async def test_emulator_429s_and_outage_are_ridden_out_within_its_limit(
    kafka_settings: KafkaSettings, emulator: Any
) -> None:
    # The emulator's default HubSpot-like limit: 100 requests per rolling 10 s.
    commands = mixed_commands(400, 40, seed=12, notes=False)
    notes = [
        crm_command(
            i,
            CommandOp.ADD_NOTE,
            f"user{i % 40:04d}@example.com",
            command_id=f"note-{i}",
            tenant="t1",
            connection="hs",
            body=f"note {i}",
            causation_event_id=f"n{i}",
        )
        for i in range(30)
    ]
    writer = Writer(settings_for(kafka_settings), config(emulator.base_url, rate=(100, 10.0)))
    async with writer_outputs(kafka_settings, writer) as (results, dlq):
        await produce(kafka_settings, [command_record(c) for c in commands[:100]])
        await results.wait_for(count_results(100), timeout_s=30)
        await emulator.faults(systems=["hubspot"], error_rates={"429": 1.0}, retry_after_s=1)
        await produce(kafka_settings, [command_record(c) for c in [*commands[100:250], *notes]])
        await asyncio.sleep(2.0)
        await emulator.faults(systems=["hubspot"], clear=True, outage=True)
        await produce(kafka_settings, [command_record(c) for c in commands[250:]])
        async with asyncio.timeout(15):  # the connection's lane holds its commands; fetching goes on
            while writer.circuit_state("t1:hs") is CircuitState.CLOSED or not writer.held().get("t1:hs"):
                await asyncio.sleep(0.05)
        assert not writer.paused_partitions()
        await asyncio.sleep(1.0)
        await emulator.faults(systems=["hubspot"], clear=True)
        await results.wait_for(count_results(len(commands) + len(notes)), timeout_s=60)
    assert dlq.records == []
    assert {r.outcome.value for r in results_of(results).values()} == {"applied"}
    state = await emulator.state()
    counters = state["counters"]
    assert counters["injected_faults"] and counters["outage_rejections"]  # both faults were felt
    assert counters["rate_limited"] == 0  # and the emulator's own limit never had to refuse a request
    expected = comparable(sequential_model([*commands, *notes]))
    actual = emulator_state(state)
    assert {k: (v.properties, v.tags) for k, v in actual.items()} == {
        k: (v.properties, v.tags) for k, v in expected.items()
    }
    assert sorted(n for v in actual.values() for n in v.notes) == sorted(c.body or "" for c in notes)
