"""The issue's full scale, with a real kill -9: 10,000 commands over 500 identities, the writer as a
separate process SIGKILLed mid-run and started again, against the CRM emulator and the real broker."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic
from shopbotly.crm_writer.testing import (
    TopicReader,
    command_record,
    count_results,
    mixed_commands,
    produce,
    results_of,
    sequential_model,
)

pytestmark = pytest.mark.fault


async def test_ten_thousand_commands_with_a_kill_9_mid_run(
    kafka_settings: KafkaSettings, emulator: Any, tmp_path: Path, writer_process: Any
) -> None:
    await emulator.faults(systems=["hubspot"], rate_limit={"max_requests": 1000, "interval_ms": 1000})
    config = tmp_path / "shopbotly.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "tenants": {
                    "t1": {
                        "connections": {
                            "hs": {
                                "kind": "hubspot",
                                "base_url": emulator.base_url,
                                "auth": {"kind": "bearer", "token": {"env": "SB_FAULT_HS_TOKEN"}},
                                "rate_limit": {"requests": 1000, "per_seconds": 1},
                            }
                        }
                    }
                }
            }
        )
    )
    commands = mixed_commands(10_000, 500, seed=21)
    env = {"SB_FAULT_HS_TOKEN": "emulator-hubspot-token"}
    started = time.monotonic()
    await produce(kafka_settings, [command_record(c) for c in commands])
    async with (
        TopicReader(kafka_settings, kafka_settings.topic(Topic.CRM_RESULTS)) as results,
        TopicReader(kafka_settings, kafka_settings.topic(Topic.CRM_COMMANDS_DLQ)) as dlq,
    ):
        first = await writer_process(config, name="first", **env)
        await results.wait_for(count_results(3000), timeout_s=120)
        first.signal(signal.SIGKILL)  # kill -9: no drain, no commit, no leaving the group
        await first.proc.wait()
        cut = len(results_of(results))
        second = await writer_process(config, name="second", **env)
        try:
            await results.wait_for(count_results(len(commands)), timeout_s=240)
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"{second.url}/metrics")).text
        finally:
            second.signal(signal.SIGTERM)
            await asyncio.wait_for(second.proc.wait(), 30)
    elapsed = time.monotonic() - started
    assert second.proc.returncode == 0  # a graceful stop on SIGTERM
    assert (
        "shopbotly_crm_writer_commands_total" in metrics
        and "shopbotly_crm_writer_e2e_latency_seconds" in metrics
    )
    outcome = results_of(results)
    assert len(outcome) == 10_000 and {r.outcome.value for r in outcome.values()} <= {"applied", "duplicate"}
    assert dlq.records == []
    state = await emulator.state()
    assert state["counters"]["writes_by_system"]["hubspot"]["creates"] == 500  # creates == identities
    expected = sequential_model(commands)
    records = state["records"]["hubspot"]
    assert set(records) == set(expected)
    repeats = 0
    for who, exp in expected.items():
        props = {k: v for k, v in records[who]["properties"].items() if k not in ("email", "shopbotly_tags")}
        tags = [t for t in (records[who]["properties"].get("shopbotly_tags") or "").split(";") if t]
        assert (props, tags) == ({k: v for k, v in exp.properties.items() if v != ""}, exp.tags)
        notes = [n["properties"]["hs_note_body"] for n in records[who].get("notes", [])]
        tickets = [t["properties"]["subject"] for t in records[who].get("tickets", [])]
        assert set(notes) == set(exp.notes) and set(tickets) == set(exp.tickets)  # no lost effect
        repeats += len(notes) - len(exp.notes) + len(tickets) - len(exp.tickets)
    # Notes and tickets are upserted by their command id: one applied again after the kill updates the
    # record it created instead of creating a second one.
    assert repeats == 0
    engagements = state["counters"]["records_by_type"]["hubspot"]
    expected_engagements = sum(len(e.notes) + len(e.tickets) for e in expected.values())
    assert engagements["notes"]["creates"] + engagements["tickets"]["creates"] == expected_engagements
    print(
        f"\n10,000/500 with kill -9 after {cut} results: {elapsed:.1f}s total, "
        f"{repeats} repeated note/ticket creates, "
        f"{engagements['notes']['updates'] + engagements['tickets']['updates']} note/ticket upserts repeated"
    )
