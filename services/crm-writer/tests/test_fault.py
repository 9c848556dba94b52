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

from shopbotly.cli.demo_cmd import BotReceiver
from shopbotly.common.events import CommandOp
from shopbotly.common.kafka import KafkaSettings
from shopbotly.testkit.crm_emulator import free_port
from shopbotly.testkit.crm_writer import (
    command_record,
    count_results,
    crm_command,
    mixed_commands,
    produce,
    results_of,
    sequential_model,
    writer_outputs,
)

pytestmark = pytest.mark.fault


def _config_file(tmp_path: Path, emulator: Any, bot_webhook: Any = None, **connections: Any) -> Path:
    """One tenant whose `hs` connection is the emulator's HubSpot (1,000 requests a second), with more
    `connections` and the tenant's `bot_webhook` if given."""
    hubspot = {
        "kind": "hubspot",
        "base_url": emulator.base_url,
        "auth": {"kind": "bearer", "token": {"env": "SB_FAULT_HS_TOKEN"}},
        "rate_limit": {"requests": 1000, "per_seconds": 1},
    }
    tenant: dict[str, Any] = {"connections": {"hs": hubspot, **connections}}
    if bot_webhook is not None:
        tenant["bot_webhook"] = bot_webhook
    path = tmp_path / "shopbotly.yaml"
    path.write_text(yaml.safe_dump({"tenants": {"t1": tenant}}))
    return path


async def test_ten_thousand_commands_with_a_kill_9_mid_run(
    kafka_settings: KafkaSettings, emulator: Any, tmp_path: Path, writer_process: Any
) -> None:
    await emulator.faults(systems=["hubspot"], rate_limit={"max_requests": 1000, "interval_ms": 1000})
    config = _config_file(tmp_path, emulator)
    commands = mixed_commands(10_000, 500, seed=21)
    env = {"SB_FAULT_HS_TOKEN": "emulator-hubspot-token"}
    started = time.monotonic()
    await produce(kafka_settings, [command_record(c) for c in commands])
    async with writer_outputs(kafka_settings) as (results, dlq):
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


async def test_a_kill_9_while_a_connection_is_held_back_loses_and_doubles_nothing(
    kafka_settings: KafkaSettings, emulator: Any, tmp_path: Path, writer_process: Any
) -> None:
    """The bot endpoint is down (nothing listens): its notifications are held back in their lane while every
    HubSpot write lands. The writer is SIGKILLed with the notifications still held, the endpoint comes up,
    a new writer starts: every notification is delivered once, in order per identity, nothing is
    dead-lettered, and HubSpot holds exactly the writes of the commands, one create per identity."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    bot_port = free_port()  # nothing listens here until the endpoint starts
    config = _config_file(
        tmp_path,
        emulator,
        bot={"kind": "bot_webhook", "max_attempts": 3, "timeout_s": 2},
        bot_webhook={"url": f"http://127.0.0.1:{bot_port}/hook", "secret": {"env": "SB_FAULT_BOT_SECRET"}},
    )
    await emulator.faults(systems=["hubspot"], rate_limit={"max_requests": 1000, "interval_ms": 1000})
    env = {"SB_FAULT_HS_TOKEN": "emulator-hubspot-token", "SB_FAULT_BOT_SECRET": secret}
    crm = mixed_commands(400, 80, seed=31, notes=False)
    notify = [
        crm_command(
            i,
            CommandOp.NOTIFY_BOT,
            f"b{i % 8}@example.com",
            command_id=f"held_{i:03d}",
            tenant="t1",
            connection="bot",
            fields={"seq": i},
            body=f"status {i}",
            causation_event_id=f"eh{i}",
            rule_id="fault",
        )
        for i in range(48)
    ]
    await produce(kafka_settings, [command_record(c) for c in [*notify[:24], *crm, *notify[24:]]])
    bot = BotReceiver(secret, bot_port, "/hook")  # the demo's receiver: verifies with standardwebhooks
    async with writer_outputs(kafka_settings) as (results, dlq):
        first = await writer_process(config, name="first", **env)
        crm_ids = {c.command_id for c in crm}
        await results.wait_for(lambda _: crm_ids <= set(results_of(results)), timeout_s=120)
        held = None
        async with asyncio.timeout(30):  # the gauges are refreshed every commit interval
            while held != len(notify):
                await asyncio.sleep(0.2)
                held = await first.metric("shopbotly_crm_writer_held_commands", connection="t1:bot")
        first.signal(signal.SIGKILL)
        await first.proc.wait()
        bot.start()
        try:
            second = await writer_process(config, name="second", **env)
            await results.wait_for(count_results(len(crm) + len(notify)), timeout_s=120)
            await asyncio.sleep(1.0)  # a repeat would arrive now
        finally:
            bot.stop()
        second.signal(signal.SIGTERM)
        await second.proc.wait()
    ids = [n.webhook_id for n in bot.notifications()]
    print(f"\nheld back at the kill: {held}; delivered after restart: {len(ids)}")
    assert held == len(notify)
    assert dlq.records == [] and bot.rejected == []
    assert sorted(ids) == sorted(c.command_id for c in notify)  # each once
    seqs: dict[str, list[int]] = {}
    for note in bot.notifications():
        seqs.setdefault(note.data["identity"], []).append(note.data["seq"])
    assert all(s == sorted(s) for s in seqs.values())
    state = await emulator.state()
    assert state["counters"]["writes_by_system"]["hubspot"]["creates"] == len(sequential_model(crm))
    records = state["records"]["hubspot"]
    for who, exp in sequential_model(crm).items():
        props = {k: v for k, v in records[who]["properties"].items() if k not in ("email", "shopbotly_tags")}
        assert props == {k: v for k, v in exp.properties.items() if v != ""}
        assert [
            t for t in (records[who]["properties"].get("shopbotly_tags") or "").split(";") if t
        ] == exp.tags
