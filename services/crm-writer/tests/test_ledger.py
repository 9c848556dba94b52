"""The ledger on the real broker: rebuilt from its topic, older ids read back by offset, tombstones kept."""

from __future__ import annotations

import pytest

from shopbotly.common.events import LedgerEntry, message_headers
from shopbotly.common.kafka import KafkaSettings, ResilientProducer
from shopbotly.common.topics import Topic
from shopbotly.crm_writer.ledger import Ledger

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
