"""`shopbotly replay --dry-run --mapping` against the real broker.

The "before" is made the way production makes it: raw events on raw-events, mapped by the mapper's own
Kafka edge (`shopbotly.mapper.pipeline.Pipeline`, one event at a time, with its state store), which writes
commands, order and ticket state with their headers. Then the diff runs through a second mapping.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from shopbotly.common.config import parse_config
from shopbotly.common.events import RawEvent, Ticket, message_headers
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.logging import get_logger
from shopbotly.common.topics import Topic
from shopbotly.mapper.domain import Mappings
from shopbotly.mapper.pipeline import BatchProducer, Pipeline
from shopbotly.mapper.presets import sample_events
from shopbotly.mapper.state import StateKind, StateStore

pytestmark = pytest.mark.integration

Produce = Callable[[str, Sequence[dict[str, Any]]], Awaitable[list[tuple[int, int]]]]
ReadAll = Callable[[str], Awaitable[list[Any]]]
Cli = Callable[..., Awaitable[Any]]

TICKET_ID = "9876543"  # objectId of the HubSpot reply sample


def _tenant_config(segment: str) -> dict[str, Any]:
    """The demo tenant (presets, HubSpot, a bot webhook) and one own rule writing `shopbotly_segment`."""
    return {
        "version": 1,
        "tenants": {
            "demo": {
                "sources": {
                    "shopbotly": {"kind": "shopbotly", "secrets": [{"env": "BOT_SECRET"}]},
                    "shopify": {"kind": "shopify", "secrets": [{"env": "SHOP_SECRET"}]},
                    "hubspot": {"kind": "hubspot", "secrets": [{"env": "HUBSPOT_APP_SECRET"}]},
                },
                "connections": {
                    "hubspot": {
                        "kind": "hubspot",
                        "base_url": "http://127.0.0.1:8090",
                        "auth": {"kind": "bearer", "token": {"env": "HUBSPOT_TOKEN"}},
                    }
                },
                "bot_webhook": {"url": "http://127.0.0.1:8099/bot", "secret": {"env": "BOT_NOTIFY"}},
                "mapping": {
                    "version": f"segment-{segment}",
                    "default_connection": "hubspot",
                    "presets": ["shopbotly", "shopify", "hubspot"],
                    "rules": [
                        {
                            "id": "demo-segment",
                            "types": ["lead.qualified"],
                            "identity": {"expr": "data.data.customer.email", "transforms": ["email"]},
                            "commands": [
                                {
                                    "op": "upsert_contact",
                                    "fields": {"shopbotly_segment": {"value": segment}},
                                }
                            ],
                        }
                    ],
                },
            }
        },
    }


def _write_config(folder: Path, segment: str) -> Path:
    path = folder / f"shopbotly-{segment}.yaml"
    path.write_text(yaml.safe_dump(_tenant_config(segment), sort_keys=False))
    return path


def _events() -> list[dict[str, Any]]:
    """A lead, an order created then updated twice, and an agent's reply on a ticket.

    Commands of the last three depend on state: the second update is partial (no total, no creation time:
    they come from the order's state), and the reply's recipient is the ticket's customer (state seeded from
    a crm-result). The state now (fulfilled) is not what the first events were mapped with.
    """
    samples = {**sample_events("shopbotly"), **sample_events("shopify"), **sample_events("hubspot")}
    lead = copy.deepcopy(samples["lead.qualified"])
    created = copy.deepcopy(samples["orders.create"])
    updated = copy.deepcopy(samples["orders.updated"])
    fulfilled = copy.deepcopy(samples["orders.updated"])
    fulfilled["data"].update(updated_at="2026-03-05T09:00:00-05:00", fulfillment_status="fulfilled")
    for partial in ("total_price", "created_at", "name", "order_number", "currency"):
        del fulfilled["data"][partial]
    reply = copy.deepcopy(samples["ticket.propertyChange.reply"])
    events = [lead, created, updated, fulfilled, reply]
    for event in events:
        event["id"] = f"{event['type']}-{uuid.uuid4().hex[:12]}"
        event["tenant"] = "demo"
    return events


def _raw(event: dict[str, Any], *, extra: Sequence[tuple[str, bytes]] = ()) -> dict[str, Any]:
    headers = message_headers(
        event_id=event["id"], tenant="demo", trace_id=event.get("traceid"), schema=RawEvent.SCHEMA
    )
    return {
        "key": f"demo:{event.get('subject') or event['id']}".encode(),
        "value": orjson.dumps(event),
        "headers": [*headers, *extra],
    }


@dataclass(frozen=True)
class Consumed:
    """What the mapper's pipeline reads of a consumed message (faust's Message has the same attributes)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: float


@dataclass
class Stage:
    """The topics after the mapper (mapping `segment-standard`) handled the events, and the two configs."""

    events: list[dict[str, Any]]
    old_config: Path
    new_config: Path
    started_at: float


@pytest.fixture
async def stage(kafka_settings: KafkaSettings, produce: Produce, read_all: ReadAll, tmp_path: Path) -> Stage:
    started_at = time.time()
    old_config, new_config = _write_config(tmp_path, "standard"), _write_config(tmp_path, "vip")
    mappings = Mappings.from_config(parse_config(yaml.safe_load(old_config.read_text())))
    raw = kafka_settings.topic(Topic.RAW_EVENTS)
    events = _events()

    # The ticket the reply is about, as the mapper seeded it from crm-writer's result of a create_ticket.
    store = StateStore()
    seed = Ticket(tenant="demo", ticket_id=TICKET_ID, customer_email="jane.doe@example.com", subject="Help")
    ticket_key = f"demo:{TICKET_ID}"
    seed_headers = message_headers(event_id="evt-handoff", tenant="demo", trace_id=None, schema=Ticket.SCHEMA)
    ((_, seed_offset),) = await produce(
        kafka_settings.topic(Topic.TICKETS),
        [{"key": ticket_key.encode(), "value": seed.to_json(), "headers": seed_headers}],
    )
    store.apply_record(StateKind.TICKET, ticket_key, seed.to_json(), seed_offset, on_invalid=print)

    producer = BatchProducer(kafka_settings, client_role="test-mapper", linger_ms=0)
    await producer.start()
    try:
        pipeline = Pipeline(
            kafka=kafka_settings, mappings=mappings, store=store, producer=producer, log=get_logger("test")
        )

        patches = kafka_settings.topic(Topic.STATE_PATCHES)
        merged: set[tuple[int, int]] = set()

        async def merge_patches() -> None:
            """Stage 2, as the `merge` agent: the patches an event's stage 1 sent, merged in order."""
            for r in sorted(await read_all(patches), key=lambda r: (r.partition, r.offset)):
                if (r.partition, r.offset) not in merged:
                    merged.add((r.partition, r.offset))
                    await pipeline.handle(
                        [
                            Consumed(
                                patches,
                                r.partition,
                                r.offset,
                                r.key,
                                r.value,
                                r.headers,
                                r.timestamp_ms / 1000,
                            )
                        ]
                    )

        async def map_as_the_mapper(messages: list[dict[str, Any]]) -> None:
            placed = await produce(raw, messages)
            stored = {(r.partition, r.offset): r for r in await read_all(raw)}
            for partition, offset in placed:  # one event per batch, in the order they were accepted
                r = stored[(partition, offset)]
                await pipeline.handle(
                    [Consumed(raw, partition, offset, r.key, r.value, r.headers, r.timestamp_ms / 1000)]
                )
                await merge_patches()

        await map_as_the_mapper([_raw(e) for e in events])
        # The lead replayed once already: a copy in raw-events, mapped again to the same command ids.
        await map_as_the_mapper([_raw(events[0], extra=[("replayed_from", f"{raw}/0/0".encode())])])
    finally:
        await producer.stop()
    return Stage(events, old_config, new_config, started_at)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


async def test_the_diff_shows_exactly_the_changed_property_and_none_for_the_same_mapping(
    stage: Stage, cli: Cli
) -> None:
    lead = stage.events[0]
    args = ["replay", "--topic", "raw-events.v1", "--from", "earliest", "--to", "latest", "--dry-run"]

    changed = await cli(*args, "--mapping", str(stage.new_config))

    assert changed.exit_code == 1, changed.output
    out = changed.stdout.splitlines()
    differing = [line for line in out if line.startswith("event ")]
    assert len(differing) == 1 and differing[0].startswith(f"event {lead['id']} (")
    (head,) = [line for line in out if line.startswith(("  ~ ", "  + ", "  - ", "  ! "))]
    assert head.startswith("  ~ upsert_contact hubspot/jane.doe@example.com cmd_")
    assert head.endswith("(rule demo-segment)")
    details = [line.strip() for line in out if line.startswith("      ")]
    assert details == ['fields.shopbotly_segment: "standard" → "vip"']
    assert "4 event(s) unchanged" in out
    assert out[-1] == (
        "compared 5 event(s) (1 repeated event id(s) not compared again): 1 with differences, 4 unchanged; "
        "commands: 0 added, 0 removed, 1 changed, 7 unchanged; dead-lettered: 0 before, 0 with the new "
        "mapping"
    )
    assert any(line.startswith("mapping before: segment-standard+") for line in out)

    same = await cli(*args, "--mapping", str(stage.old_config))

    assert same.exit_code == 0, same.output
    assert same.stdout.splitlines()[-1] == (
        "compared 5 event(s) (1 repeated event id(s) not compared again): 0 with differences, 5 unchanged; "
        "commands: 0 added, 0 removed, 0 changed, 8 unchanged; dead-lettered: 0 before, 0 with the new "
        "mapping"
    )
    assert not [line for line in same.stdout.splitlines() if line.startswith("event ")]


async def test_json_for_a_time_range_and_a_filter(
    stage: Stage, cli: Cli, kafka_settings: KafkaSettings
) -> None:
    lead = stage.events[0]
    result = await cli(
        "replay",
        "--topic",
        kafka_settings.topic(Topic.RAW_EVENTS),
        "--from",
        _iso(stage.started_at - 1),
        "--to",
        "latest",
        "--filter",
        "value.type == 'lead.qualified' || value.type == 'orders/create'",
        "--dry-run",
        "--mapping",
        str(stage.new_config),
        "--json",
    )

    assert result.exit_code == 1, result.output
    report = orjson.loads(result.stdout)
    assert report["exit_code"] == 1
    assert report["summary"] | {"read": 0} == {
        "read": 0,
        "matched": 3,
        "events": 2,
        "repeated": 1,
        "events_with_differences": 1,
        "events_unchanged": 1,
        "commands_added": 0,
        "commands_removed": 0,
        "commands_changed": 1,
        "commands_unchanged": 4,
        "changed_keeping_command_id": 1,
        "dead_lettered_before": 0,
        "dead_lettered_after": 0,
    }
    (event,) = report["events"]
    assert event["event_id"] == lead["id"]
    (command,) = event["commands"]
    assert command["change"] == "changed"
    assert command["differences"] == [
        {"path": "fields.shopbotly_segment", "before": "standard", "after": "vip"}
    ]
    assert command["before"]["mapping_version"].startswith("segment-standard+")
    assert command["after"]["mapping_version"].startswith("segment-vip+")
    assert report["mapping_versions"]["after"]["demo"].startswith("segment-vip+")


async def test_commands_outside_the_window_count_as_added(stage: Stage, cli: Cli) -> None:
    """--commands-from after the commands were written: nothing was produced before, as far as it reads."""
    result = await cli(
        "replay",
        "--topic",
        "raw-events.v1",
        "--from",
        "earliest",
        "--to",
        "latest",
        "--dry-run",
        "--mapping",
        str(stage.old_config),
        "--commands-from",
        "latest",
        "--json",
    )
    assert result.exit_code == 1, result.output
    summary = orjson.loads(result.stdout)["summary"]
    assert (summary["commands_added"], summary["commands_unchanged"]) == (8, 0)


async def test_usage_errors_exit_2(cli: Cli, tmp_path: Path) -> None:
    config = _write_config(tmp_path, "standard")
    base = ["replay", "--topic", "raw-events.v1", "--from", "earliest", "--to", "latest"]

    no_dry_run = await cli(*base, "--mapping", str(config))
    assert no_dry_run.exit_code == 2 and "add --dry-run" in no_dry_run.output
    json_alone = await cli(*base, "--dry-run", "--json")
    assert json_alone.exit_code == 2 and "only applies with --mapping" in json_alone.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\ntenants:\n  demo:\n    mapping: {presets: [nope]}\n")
    bad_config = await cli(*base, "--dry-run", "--mapping", str(broken))
    assert bad_config.exit_code == 2 and "error: --mapping:" in bad_config.output
    missing = await cli(*base, "--dry-run", "--mapping", str(tmp_path / "nowhere.yaml"))
    assert missing.exit_code == 2 and "cannot read config file" in missing.output
