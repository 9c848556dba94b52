"""`shopbotly dlq list|show|redrive` against the real broker, dead letters written by the DLQ publisher."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from shopbotly.common.dlq import ERROR_HEADERS, DeadLetter, publish_dead_letter
from shopbotly.common.errors import ErrorClass
from shopbotly.common.events import CommandOp, CrmCommand, LedgerEntry, message_headers
from shopbotly.common.kafka import KafkaSettings, make_producer
from shopbotly.common.topics import Topic

pytestmark = pytest.mark.integration

Produce = Callable[[str, list[dict[str, Any]]], Awaitable[list[tuple[int, int]]]]
ReadAll = Callable[[str], Awaitable[list[Any]]]
Cli = Callable[..., Awaitable[Any]]


def _command(n: int) -> CrmCommand:
    return CrmCommand(
        command_id=f"cmd_{n}",
        tenant="acme",
        connection="hubspot",
        identity=f"user{n}@example.com",
        op=CommandOp.UPSERT_CONTACT,
        fields={"firstname": f"User {n}"},
        causation_event_id=f"e{n}",
        rule_id="contact",
        mapping_version="1",
    )


async def _dead_letters(
    settings: KafkaSettings, dlq: str, origin: str, items: list[tuple[bytes, bytes, str, ErrorClass, str]]
) -> None:
    """(key, value, event_id, class, message) → dead letters as the services write them."""
    producer = make_producer(settings, client_role="test")
    await producer.start()
    try:
        for offset, (key, value, event_id, error_class, message) in enumerate(items):
            await publish_dead_letter(
                producer,
                dlq,
                key=key,
                value=value,
                headers=message_headers(event_id=event_id, tenant="acme", trace_id="tr", schema="s/1"),
                timestamp_ms=None,
                letter=DeadLetter(error_class, message, 3, origin, 0, offset, "crm-writer"),
            )
    finally:
        await producer.stop()


def _place(records: list[Any], event_id: str) -> str:
    found = [r for r in records if dict(r.headers)["event_id"] == event_id.encode()]
    assert len(found) == 1
    return f"{found[0].partition}:{found[0].offset}"


@pytest.fixture
async def command_dlq(kafka_settings: KafkaSettings) -> list[CrmCommand]:
    """Three dead-lettered crm-commands: cmd_0 and cmd_1 permanent, cmd_2 retryable."""
    commands = [_command(n) for n in range(3)]
    classes = [ErrorClass.PERMANENT, ErrorClass.PERMANENT, ErrorClass.RETRYABLE]
    await _dead_letters(
        kafka_settings,
        kafka_settings.topic(Topic.CRM_COMMANDS_DLQ),
        kafka_settings.topic(Topic.CRM_COMMANDS),
        [
            (c.key(), c.to_json(), f"e{n}", cls, f"HTTP 422: property firstname invalid ({n})")
            for n, (c, cls) in enumerate(zip(commands, classes, strict=True))
        ],
    )
    return commands


async def test_list_and_show(
    kafka_settings: KafkaSettings, command_dlq: list[CrmCommand], read_all: ReadAll, cli: Cli
) -> None:
    dlq = kafka_settings.topic(Topic.CRM_COMMANDS_DLQ)

    listed = await cli("dlq", "list", "--topic", "crm-commands.dlq.v1")

    assert listed.exit_code == 0, listed.output
    assert "3 dead letter(s) (permanent 2, retryable 1)" in listed.output
    for n in range(3):
        assert f"acme:hubspot:user{n}@example.com" in listed.output
        assert f"property firstname invalid ({n})" in listed.output
    assert f"{kafka_settings.topic(Topic.CRM_COMMANDS)}/0/2 (crm-writer)" in listed.output

    only = await cli("dlq", "list", "--topic", dlq, "--class", "retryable")
    assert "1 dead letter(s) (retryable 1)" in only.output
    assert "user2@example.com" in only.output and "user0@example.com" not in only.output

    both = await cli("dlq", "list", "--limit", "1")
    assert both.exit_code == 0, both.output
    assert f"{kafka_settings.topic(Topic.RAW_EVENTS_DLQ)}: 0 dead letter(s)\n" in both.output
    assert f"{dlq}: 3 dead letter(s) (permanent 2, retryable 1); showing 1" in both.output

    place = _place(await read_all(dlq), "e1")
    shown = await cli("dlq", "show", place, "--topic", "crm-commands.dlq.v1")

    assert shown.exit_code == 0, shown.output
    assert "key: acme:hubspot:user1@example.com" in shown.output
    for header in ("event_id", "tenant", "error.class", "error.attempts", "origin.topic", "origin.service"):
        assert header in shown.output
    assert '"command_id": "cmd_1"' in shown.output  # pretty JSON
    assert '  "fields": {\n    "firstname": "User 1"\n  }' in shown.output

    nothing = await cli("dlq", "show", "0:999", "--topic", "crm-commands.dlq.v1")
    assert nothing.exit_code == 1
    assert "holds no message at 0:999" in nothing.output


async def test_redrive_returns_commands_skips_applied_and_never_doubles(
    kafka_settings: KafkaSettings,
    command_dlq: list[CrmCommand],
    produce: Produce,
    read_all: ReadAll,
    cli: Cli,
) -> None:
    dlq = kafka_settings.topic(Topic.CRM_COMMANDS_DLQ)
    commands_topic = kafka_settings.topic(Topic.CRM_COMMANDS)
    applied = LedgerEntry(command_id="cmd_0", tenant="acme", connection="hubspot")
    await produce(kafka_settings.topic(Topic.CRM_LEDGER), [{"key": b"cmd_0", "value": applied.to_json()}])
    dead = await read_all(dlq)

    first = await cli("dlq", "redrive", "--topic", "crm-commands.dlq.v1", "--all")

    assert first.exit_code == 0, first.output
    assert "redriven 2, skipped as applied 1, skipped as already redriven 0, failed 0" in first.output
    back = await read_all(commands_topic)
    assert sorted(orjson.loads(r.value)["command_id"] for r in back) == ["cmd_1", "cmd_2"]
    for record in back:
        original = next(d for d in dead if d.value == record.value)
        assert record.key == original.key
        names = [k for k, _ in record.headers]
        assert not set(names) & set(ERROR_HEADERS)
        assert record.headers == [
            *[(k, v) for k, v in original.headers if k not in ERROR_HEADERS],
            ("redriven_from", f"{dlq}/{original.partition}/{original.offset}".encode()),
        ]

    second = await cli("dlq", "redrive", "--topic", "crm-commands.dlq.v1", "--all")

    assert second.exit_code == 0, second.output
    assert "redriven 0, skipped as applied 1, skipped as already redriven 2, failed 0" in second.output
    assert len(await read_all(commands_topic)) == 2

    forced = await cli("dlq", "redrive", "--topic", "crm-commands.dlq.v1", "--all", "--force", "--dry-run")
    assert "would redrive 2, skipped as applied 1" in forced.output
    assert len(await read_all(commands_topic)) == 2


async def test_redrive_by_class_and_offsets_reports_failures(
    kafka_settings: KafkaSettings, produce: Produce, read_all: ReadAll, cli: Cli
) -> None:
    dlq = kafka_settings.topic(Topic.RAW_EVENTS_DLQ)
    raw = kafka_settings.topic(Topic.RAW_EVENTS)
    await _dead_letters(
        kafka_settings,
        dlq,
        raw,
        [
            (b"acme:a@example.com", b'{"id": "r0"}', "r0", ErrorClass.PERMANENT, "mapping error"),
            (b"acme:b@example.com", b'{"id": "r1"}', "r1", ErrorClass.RETRYABLE, "timeout"),
        ],
    )
    # A message in the DLQ without dead-letter headers: redrive cannot know where it came from.
    await produce(dlq, [{"key": b"acme:c@example.com", "value": b"{}", "headers": [("event_id", b"r2")]}])
    dead = await read_all(dlq)

    dry = await cli("dlq", "redrive", "--topic", "raw-events.dlq.v1", "--class", "retryable", "--dry-run")

    assert dry.exit_code == 0, dry.output
    assert "would redrive 1, skipped as applied 0, skipped as already redriven 0, failed 0" in dry.output
    assert await read_all(raw) == []

    chosen = ",".join([_place(dead, "r0"), _place(dead, "r2"), "2:999"])
    result = await cli("dlq", "redrive", "--topic", "raw-events.dlq.v1", "--offsets", chosen)

    assert result.exit_code == 1, result.output
    assert "redriven 1, skipped as applied 0, skipped as already redriven 0, failed 2" in result.output
    assert "no origin.topic header" in result.output
    assert "no such message in the DLQ" in result.output
    back = await read_all(raw)
    assert [(r.key, r.value) for r in back] == [(b"acme:a@example.com", b'{"id": "r0"}')]

    refused = await cli("dlq", "redrive", "--topic", "raw-events.dlq.v1")
    assert refused.exit_code == 2
    assert "--all" in refused.output
