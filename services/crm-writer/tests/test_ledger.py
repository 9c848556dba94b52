"""The ledger on the real broker: rebuilt from its topic, older ids read back by offset, tombstones kept."""

from __future__ import annotations

from typing import Any

import pytest

from shopbotly.common.config import parse_config
from shopbotly.common.events import CommandResult, LedgerEntry, message_headers
from shopbotly.common.kafka import KafkaSettings, ResilientProducer
from shopbotly.common.topics import Topic
from shopbotly.crm_writer.engine import Writer
from shopbotly.crm_writer.ledger import Ledger
from shopbotly.crm_writer.testing import (
    FakeHubSpot,
    RoutingTransport,
    TopicReader,
    command_record,
    mixed_commands,
    produce,
    running,
    settings_for,
)

pytestmark = pytest.mark.integration


def entry(i: int) -> LedgerEntry:
    return LedgerEntry(
        command_id=f"cmd_{i:05d}", tenant="t1", connection="hs", crm_ids={"contact": str(1000 + i)}
    )


HEADERS = message_headers(event_id="e", tenant="t1", trace_id="t", schema=LedgerEntry.SCHEMA)


async def test_a_rebuilt_ledger_knows_every_applied_id_and_nothing_else(
    kafka_settings: KafkaSettings,
) -> None:
    producer = ResilientProducer(kafka_settings, client_role="test-ledger")
    await producer.start()
    first = Ledger(kafka_settings, producer, recent=16)
    rebuilt: Ledger | None = None
    try:
        await first.start(timeout_s=60)
        for i in range(600):
            await first.record(entry(i), headers=HEADERS)
            # Remembered at once, before the tail has read it back.
            assert await first.get(f"cmd_{i:05d}") == {"contact": str(1000 + i)}
        topic = kafka_settings.topic(Topic.CRM_LEDGER)
        # An operator's tombstone lets cmd_00007 be applied again; cmd_00008 is removed and recorded anew.
        await producer.send_and_wait(topic, None, key=b"cmd_00007")
        await producer.send_and_wait(topic, None, key=b"cmd_00008")
        await first.record(
            LedgerEntry(command_id="cmd_00008", tenant="t1", connection="hs", crm_ids={"contact": "new"}),
            headers=HEADERS,
        )
        await first.caught_up(timeout_s=60)

        # A new replica (or this one after a restart): everything comes from the topic.
        rebuilt = Ledger(kafka_settings, producer, recent=16)
        await rebuilt.start(timeout_s=60)
        for ledger in (first, rebuilt):
            for i in range(600):
                if i in (7, 8):
                    continue
                assert await ledger.get(f"cmd_{i:05d}") == {"contact": str(1000 + i)}, i
            assert await ledger.get("cmd_00007") is None
            assert await ledger.get("cmd_00008") == {"contact": "new"}
            assert await ledger.get("cmd_99999") is None
            assert await ledger.get("never-applied") is None
        # Only the 16 newest ids keep their CRM ids in memory: the others were read back from the topic, and
        # the reader's batch served most of them (one fetch for many neighbouring records).
        assert len(rebuilt._recent) == 16
        assert rebuilt.reads >= 580
        assert len(rebuilt) == 601
    finally:
        await first.stop()
        if rebuilt is not None:
            await rebuilt.stop()
        await producer.stop()


async def test_a_replay_after_a_restart_applies_nothing_twice_and_reports_the_first_crm_ids(
    kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commands applied by one writer are replayed (the same records again) to a new writer that rebuilt
    its ledger from the topic and keeps the CRM ids of only one id in memory: every repeat is a `duplicate`
    with the CRM ids of its first write (read back from the topic), and the CRM sees no request."""
    monkeypatch.setenv("SB_LEDGER_HS_TOKEN", "hs-token")
    config = parse_config(
        {
            "tenants": {
                "t1": {
                    "connections": {
                        "hs": {
                            "kind": "hubspot",
                            "base_url": "https://hubspot.test",
                            "auth": {"kind": "bearer", "token": {"env": "SB_LEDGER_HS_TOKEN"}},
                            "rate_limit": {"requests": 2000, "per_seconds": 1.0},
                        }
                    }
                }
            }
        }
    )
    commands = mixed_commands(300, 30, seed=21)
    fake = FakeHubSpot(limit=None)
    transport = RoutingTransport({"hubspot.test": fake.transport})
    settings = settings_for(kafka_settings, ledger_recent_ids=1)

    def results_at_least(n: int) -> Any:
        return lambda records: len(records) >= n

    async with TopicReader(kafka_settings, kafka_settings.topic(Topic.CRM_RESULTS)) as results:
        await produce(kafka_settings, [command_record(c) for c in commands])
        async with running(Writer(settings, config, transport=transport)):
            await results.wait_for(results_at_least(len(commands)), timeout_s=120)
        first = {r.command_id: r for r in map(CommandResult.from_json, (x.value for x in results.records))}
        assert {r.outcome.value for r in first.values()} == {"applied"}
        requests = fake.requests

        await produce(kafka_settings, [command_record(c) for c in commands])  # the replay
        replayed = Writer(settings, config, transport=transport)
        async with running(replayed):
            await results.wait_for(results_at_least(2 * len(commands)), timeout_s=120)
        again = [CommandResult.from_json(x.value) for x in results.records[len(commands) :]]
    assert fake.requests == requests  # nothing written twice
    assert {r.outcome.value for r in again} == {"duplicate"}
    assert {r.command_id: r.crm_ids for r in again} == {c: r.crm_ids for c, r in first.items()}
    assert replayed._ledger is not None and replayed._ledger.reads > 0  # read back, not remembered
