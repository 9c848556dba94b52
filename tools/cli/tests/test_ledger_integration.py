"""`shopbotly ledger check` against the real broker: a consistent tenant, and one with planted problems."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from shopbotly.common.events import CommandOp, CommandOutcome, LedgerEntry
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic
from shopbotly.testkit.crm_writer import command_result

pytestmark = pytest.mark.integration

Produce = Callable[[str, list[dict[str, Any]]], Awaitable[list[tuple[int, int]]]]
Cli = Callable[..., Awaitable[Any]]


def _entry(cid: str, tenant: str, connection: str = "hubspot") -> dict[str, Any]:
    return {
        "key": cid.encode(),
        "value": LedgerEntry(command_id=cid, tenant=tenant, connection=connection).to_json(),
    }


def _result(cid: str, tenant: str, outcome: CommandOutcome = CommandOutcome.APPLIED) -> dict[str, Any]:
    result = command_result(cid, tenant, outcome, op=CommandOp.ADD_NOTE)
    return {"key": f"{tenant}:hubspot:jane@example.com".encode(), "value": result.to_json()}


async def test_ledger_check_passes_a_consistent_tenant_and_finds_planted_problems(
    kafka_settings: KafkaSettings, produce: Produce, cli: Cli
) -> None:
    ledger = kafka_settings.topic(Topic.CRM_LEDGER)
    results = kafka_settings.topic(Topic.CRM_RESULTS)
    await produce(
        ledger,
        [
            _entry("good_1", "good"),
            _entry("good_2", "good", "salesforce"),
            _entry("bad_recorded", "bad"),
            _entry("bad_no_result", "bad"),
            _entry("bad_twice", "bad"),
            _entry("bad_twice", "bad"),
        ],
    )
    await produce(
        results,
        [
            _result("good_1", "good"),
            _result("good_2", "good"),
            _result("good_2", "good", CommandOutcome.DUPLICATE),
            _result("bad_recorded", "bad"),
            _result("bad_unrecorded", "bad"),
            _result("bad_twice", "bad"),
        ],
    )

    good = await cli("ledger", "check", "--tenant", "good")

    assert good.exit_code == 0, good.output
    assert "applied: 2 command id(s) for tenant good" in good.output
    assert re.search(r"good\s+│\s+hubspot\s+│\s+1\s", good.output)
    assert re.search(r"good\s+│\s+salesforce\s+│\s+1\s", good.output)
    assert good.output.rstrip().endswith("consistent")

    everyone = await cli("ledger", "check")

    assert everyone.exit_code == 1, everyone.output
    assert "applied: 6 command id(s)" not in everyone.output  # bad_twice counts once
    assert "applied: 5 command id(s)" in everyone.output
    assert "applied results missing from the ledger: 1 (bad_unrecorded)" in everyone.output
    assert "ledger entries without a result: 1 (bad_no_result)" in everyone.output
    assert "applied twice (ledger written twice): 1 (bad_twice x2)" in everyone.output
    assert "applied twice (two applied results): 0" in everyone.output
    assert everyone.output.rstrip().endswith("INCONSISTENT")

    bad = await cli("ledger", "check", "--tenant", "bad")
    assert bad.exit_code == 1
