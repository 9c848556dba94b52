"""`shopbotly replay` against the real broker: ranges by offset and by time, filters, dry runs."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from shopbotly.common.events import message_headers
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic

pytestmark = pytest.mark.integration

Produce = Callable[[str, list[dict[str, Any]]], Awaitable[list[tuple[int, int]]]]
ReadAll = Callable[[str], Awaitable[list[Any]]]
Cli = Callable[..., Awaitable[Any]]


def _event(i: int, *, timestamp_ms: int | None = None) -> dict[str, Any]:
    kind = "order.created" if i % 2 == 0 else "order.paid"
    return {
        "key": f"acme:customer{i % 8}@example.com".encode(),
        "value": orjson.dumps({"type": kind, "n": i}),
        "headers": message_headers(event_id=f"e{i}", tenant="acme", trace_id=f"t{i}", schema="raw/1"),
        "timestamp_ms": timestamp_ms,
    }


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat()


def _by_partition(records: list[Any]) -> dict[int, list[tuple[bytes, bytes]]]:
    out: dict[int, list[tuple[bytes, bytes]]] = {}
    for r in records:
        out.setdefault(r.partition, []).append((r.key, r.value))
    return out


async def test_replay_an_offset_range_with_a_filter_into_another_topic(
    kafka_settings: KafkaSettings, produce: Produce, read_all: ReadAll, cli: Cli, scratch_topic: str
) -> None:
    source = kafka_settings.topic(Topic.RAW_EVENTS)
    await produce(source, [_event(i) for i in range(48)])
    original = await read_all(source)

    result = await cli(
        "replay",
        "--topic",
        "raw-events.v1",
        "--from",
        "2",
        "--to",
        "9",
        "--filter",
        "value.type == 'order.created' && headers.tenant == 'acme'",
        "--into",
        scratch_topic,
    )

    assert result.exit_code == 0, result.output
    expected = [r for r in original if 2 <= r.offset < 9 and orjson.loads(r.value)["type"] == "order.created"]
    assert expected and len(expected) < len(original)
    assert f"sent {len(expected)} of {len(expected)} matching message(s)" in result.output
    copies = await read_all(scratch_topic)
    # Same keys, same partitions (the key decides), same order within each partition.
    assert _by_partition(copies) == _by_partition(expected)
    source_of = {(r.key, r.value): r for r in expected}
    for copy in copies:
        origin = source_of[(copy.key, copy.value)]
        assert copy.headers == [
            *origin.headers,
            ("replayed_from", f"{source}/{origin.partition}/{origin.offset}".encode()),
        ]


async def test_replay_a_time_window_of_some_partitions(
    kafka_settings: KafkaSettings, produce: Produce, read_all: ReadAll, cli: Cli, scratch_topic: str
) -> None:
    source = kafka_settings.topic(Topic.RAW_EVENTS)
    hour = 3_600_000
    t0 = (int(time.time() * 1000) // hour - 3) * hour  # three whole hours ago
    batches = [(t0, range(0, 12)), (t0 + hour, range(12, 24)), (t0 + 2 * hour, range(24, 36))]
    await produce(source, [_event(i, timestamp_ms=ts) for ts, numbers in batches for i in numbers])

    result = await cli(
        "replay",
        "--topic",
        source,
        "--from",
        _iso(t0 + hour // 2),
        "--to",
        _iso(t0 + hour + hour // 2),
        "--partition",
        "0",
        "--partition",
        "2",
        "--into",
        scratch_topic,
    )

    assert result.exit_code == 0, result.output
    stored = await read_all(source)
    middle = [r for r in stored if r.timestamp_ms == t0 + hour and r.partition in (0, 2)]
    assert middle
    assert any(r.timestamp_ms == t0 + hour and r.partition == 1 for r in stored)  # left out by --partition
    copies = await read_all(scratch_topic)
    assert _by_partition(copies) == _by_partition(middle)


async def test_dry_run_sends_nothing_then_replay_into_the_same_topic(
    kafka_settings: KafkaSettings, produce: Produce, read_all: ReadAll, cli: Cli
) -> None:
    source = kafka_settings.topic(Topic.RAW_EVENTS)
    await produce(source, [_event(i) for i in range(6)])

    dry = await cli("replay", "--topic", "raw-events.v1", "--from", "earliest", "--to", "latest", "--dry-run")

    assert dry.exit_code == 0, dry.output
    assert "dry run: 6 of 6 message(s) would be sent" in dry.output
    assert "acme:customer5@example.com" in dry.output  # by key and in the first N
    assert len(await read_all(source)) == 6

    real = await cli("replay", "--topic", "raw-events.v1", "--from", "earliest", "--to", "latest")

    assert real.exit_code == 0, real.output
    after = await read_all(source)
    assert len(after) == 12  # the range was fixed when the replay started: its own copies are not re-read
    copies = [r for r in after if dict(r.headers).get("replayed_from")]
    assert sorted(orjson.loads(c.value)["n"] for c in copies) == list(range(6))


async def test_unknown_topic_and_bad_filter_are_refused(cli: Cli) -> None:
    missing = await cli("replay", "--topic", "no-such-topic", "--from", "0", "--to", "latest")
    assert missing.exit_code == 2
    assert "topic 'no-such-topic' does not exist" in missing.output
    bad = await cli("replay", "--topic", "raw-events.v1", "--from", "0", "--to", "5", "--filter", "value.[")
    assert bad.exit_code == 2
    assert "invalid JMESPath filter" in bad.output
    wrong = await cli("replay", "--topic", "raw-events.v1", "--from", "today", "--to", "5")
    assert wrong.exit_code == 2
    assert "is not an offset" in wrong.output
