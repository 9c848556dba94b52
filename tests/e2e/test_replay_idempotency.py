"""Replaying raw events is safe: the same range replayed twice changes nothing in the CRM, and the mapping
diff (`replay --dry-run --mapping`) of the running mapping against what it produced is empty.

The stack is this module's own (tests/e2e/conftest.py): its topics hold only what these tests send, so a
time range from before the first webhook to after the last effect is everything they caused.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import TopicPartition

from shopbotly.common.kafka import KafkaSettings, make_admin, make_consumer
from shopbotly.common.topics import Topic
from tests.e2e.e2e_stack import E2EStack, iso_now, unique
from tests.stack import REPO_ROOT, VENV_BIN, run_cli

pytestmark = pytest.mark.e2e

# Who consumes what: the mapper (faust app id `<prefix>mapper`) and crm-writer (SHOPBOTLY_CONSUMER_GROUP).
CONSUMERS = {
    "mapper": (Topic.RAW_EVENTS, Topic.CRM_RESULTS),
    "crm-writer": (Topic.CRM_COMMANDS,),
}


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


async def _positions(settings: KafkaSettings, groups: Mapping[str, str]) -> dict[str, Any]:
    """Per consumer: lag (end minus committed offsets, summed) and the end offsets it was measured at."""
    admin = make_admin(settings, client_role="e2e-lag")
    consumer = make_consumer(settings, group_id=None, client_role="e2e-lag")
    await admin.start()
    await consumer.start()
    try:
        out: dict[str, Any] = {}
        for name, group in groups.items():
            tps = [
                TopicPartition(settings.topic(t), p)
                for t in CONSUMERS[name]
                for p in range(settings.partitions)
            ]
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            done = {tp: max(0, committed[tp].offset) if tp in committed else 0 for tp in tps}
            out[name] = {
                "lag": sum(ends[tp] - done[tp] for tp in tps),
                "ends": sorted((tp.topic, tp.partition, ends[tp]) for tp in tps),
            }
        return out
    finally:
        await consumer.stop()
        await admin.close()


def _settings(e2e: E2EStack) -> KafkaSettings:
    return KafkaSettings(
        bootstrap=e2e.bootstrap,
        topic_prefix=e2e.prefix,
        partitions=int(e2e.env["SHOPBOTLY_KAFKA_PARTITIONS"]),
    )


def _crm(e2e: E2EStack) -> dict[str, Any]:
    """What the CRM holds (every record with its properties, tags, notes, tickets and create/update counts),
    and what reached it or the bot at all."""
    state = e2e.hubspot_state()
    return {
        "records": state["records"],
        "tickets": state["tickets"],
        "creates": state["counters"]["creates"],
        "updates": state["counters"]["updates"],
        "crm_requests": state["counters"]["requests"],
        "crm_webhooks_emitted": state["webhooks"].get("events_emitted"),
        "bot_notifications": sorted(n.webhook_id for n in e2e.bot.notifications()),
    }


def _settle(e2e: E2EStack, *, timeout: float = 120.0, quiet_s: float = 3.0) -> dict[str, Any]:
    """Wait until the mapper and crm-writer have committed everything on their topics, and neither the topics
    nor the CRM changed for `quiet_s` (the CRM's own webhooks back into ingest are part of the flow).
    Returns the CRM as it is then."""
    groups = {"mapper": f"{e2e.prefix}mapper", "crm-writer": e2e.env["SHOPBOTLY_CONSUMER_GROUP"]}
    settings = _settings(e2e)
    deadline = time.monotonic() + timeout
    seen: tuple[Any, Any] | None = None
    since = time.monotonic()
    while True:
        positions = asyncio.run(_positions(settings, groups))
        crm = _crm(e2e)
        now = (positions, crm)
        caught_up = all(p["lag"] == 0 for p in positions.values())
        if not caught_up or now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return crm
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not settled after {timeout:g}s: {json.dumps(positions)}\n\n{e2e.stack.logs()}"
            )
        time.sleep(0.5)


def _order(order_id: int, email: str, **changes: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "id": order_id,
        "name": f"#{order_id % 100000}",
        "order_number": order_id % 100000,
        "email": email,
        "created_at": "2026-11-20T09:15:00-05:00",
        "updated_at": "2026-11-20T09:15:00-05:00",
        "currency": "usd",
        "total_price": "49.00",
        "financial_status": "paid",
        "fulfillment_status": None,
        "cancelled_at": None,
        "customer": {"id": 7002, "email": email, "first_name": "Ada", "last_name": "Moreau"},
        "line_items": [{"title": "Desk lamp", "sku": "LMP-01", "quantity": 1, "price": "49.00"}],
        "fulfillments": [],
    }
    order.update(changes)
    return order


def _traffic(e2e: E2EStack) -> dict[str, str]:
    """Every kind of effect: a lead with tags, a handoff (contact, ticket, tags), an agent's reply and a
    closed ticket (CRM → bot), a Shopify order created and fulfilled (contact, order notes), a Shopify
    customer, and a lead through the API. Returns the e-mail addresses used."""
    emails = {name: f"{unique(name)}@example.com" for name in ("lead", "handoff", "buyer", "shopper", "api")}
    customer = {"email": emails["lead"], "name": "Rosa Diaz", "phone": "+1 415 555 0100"}
    lead = {
        "type": "lead.qualified",
        "timestamp": iso_now(),
        "data": {"conversation_id": unique("conv"), "customer": customer, "tags": ["Bulk", "VIP"]},
    }
    assert e2e.send_bot(lead)[0].status_code == 202
    handoff = {
        "type": "handoff.requested",
        "timestamp": iso_now(),
        "data": {
            "conversation_id": unique("conv"),
            "customer": {"email": emails["handoff"], "name": "Ken Ito"},
            "reason": "broken armrest",
            "priority": "urgent",
            "transcript": [{"role": "customer", "text": "It arrived broken."}],
        },
    }
    assert e2e.send_bot(handoff)[0].status_code == 202
    order_id = int(time.time() * 1000) % 10**12
    assert e2e.send_shopify("orders/create", _order(order_id, emails["buyer"]))[0].status_code == 202
    fulfilled = _order(
        order_id,
        emails["buyer"],
        updated_at="2026-11-21T10:00:00-05:00",
        fulfillment_status="fulfilled",
        fulfillments=[{"tracking_numbers": ["1Z999"], "tracking_url": "https://ups.example/1Z999"}],
    )
    assert e2e.send_shopify("orders/updated", fulfilled)[0].status_code == 202
    shopper = {
        "id": 9_200_000 + int(time.time()) % 100_000,
        "email": emails["shopper"],
        "first_name": "Lea",
        "last_name": "Vogel",
        "tags": "Wholesale",
    }
    assert e2e.send_shopify("customers/create", shopper)[0].status_code == 202
    api_lead = {"email": emails["api"], "first_name": "Sam", "tags": ["newsletter"]}
    assert e2e.ingest.post("/api/v1/leads", json=api_lead, headers=e2e.api_key()).status_code == 202

    e2e.wait_contact(emails["lead"], lambda c: "vip" in (c.get("tags") or []), "the lead's tags")
    contact = e2e.wait_contact(emails["handoff"], lambda c: bool(c.get("tickets")), "the handoff's ticket")
    ticket_id = str(contact["tickets"][0]["id"])
    e2e.wait_lookup(
        f"/api/v1/tickets/{ticket_id}",
        lambda t: t.get("customer_email") == emails["handoff"],
        "the ticket's customer in the lookup",
    )
    e2e.emulator.post(
        f"/_emulator/tickets/{ticket_id}",
        json={"reply": {"text": "A new armrest ships today.", "author": "Al"}},
    ).raise_for_status()
    e2e.emulator.post(f"/_emulator/tickets/{ticket_id}", json={"hs_pipeline_stage": "4"}).raise_for_status()
    e2e.stack.poll(
        lambda: len(e2e.bot.notifications(lambda n: n.data.get("ticket_id") == ticket_id)) >= 2,
        timeout=60,
        what="the reply and the closing at the bot",
    )
    e2e.wait_contact(
        emails["buyer"],
        lambda c: sum(str(order_id) in json.dumps(n) for n in c.get("notes") or []) >= 1,
        "the order on the buyer's contact",
    )
    e2e.wait_contact(
        emails["shopper"], lambda c: "wholesale" in (c.get("tags") or []), "the Shopify customer"
    )
    e2e.wait_contact(emails["api"], lambda c: "newsletter" in (c.get("tags") or []), "the API lead")
    return emails


def _values(e2e: E2EStack, logical: Topic) -> list[dict[str, Any]]:
    return [orjson.loads(m.value) for m in e2e.topic(logical) if m.value]


def test_replaying_the_same_range_twice_changes_nothing_in_the_crm(e2e: E2EStack) -> None:
    start = time.time() - 1
    emails = _traffic(e2e)
    crm_before = _settle(e2e)
    end = time.time()
    assert all(email in crm_before["records"]["hubspot"] for email in emails.values())
    assert crm_before["tickets"]["hubspot"] and crm_before["bot_notifications"]
    raw_before = e2e.topic(Topic.RAW_EVENTS)
    commands_before = _values(e2e, Topic.CRM_COMMANDS)

    for attempt in (1, 2):
        done = run_cli(
            "replay", "--topic", "raw-events.v1", "--from", _iso(start), "--to", _iso(end), env=e2e.env
        )
        assert f"sent {len(raw_before)} of {len(raw_before)} matching message(s)" in done.stdout, done.stdout
        crm_after = _settle(e2e)
        assert crm_after == crm_before, f"replay #{attempt} changed the CRM"

    # The replays did go through the flow: both copies of every event were mapped again, to the same
    # command ids and nothing else, and crm-writer answered each copy of a command as a duplicate.
    assert len(e2e.topic(Topic.RAW_EVENTS)) == 3 * len(raw_before)
    commands_after = _values(e2e, Topic.CRM_COMMANDS)
    ids = {c["command_id"] for c in commands_before}
    assert {c["command_id"] for c in commands_after} == ids
    assert len(commands_after) == 3 * len(commands_before)
    outcomes: dict[str, Counter[str]] = {}
    for result in _values(e2e, Topic.CRM_RESULTS):
        outcomes.setdefault(result["command_id"], Counter())[result["outcome"]] += 1
    assert set(outcomes) == ids
    not_once = {cid: dict(o) for cid, o in outcomes.items() if o != Counter(applied=1, duplicate=2)}
    assert not not_once, f"command ids not applied exactly once and skipped twice: {not_once}"


def _mapping_diff(e2e: E2EStack, config: Path | str, *extra: str) -> tuple[int, dict[str, Any]]:
    done = run_cli_status(
        "replay",
        "--topic",
        "raw-events.v1",
        "--from",
        "earliest",
        "--to",
        "latest",
        "--dry-run",
        "--mapping",
        str(config),
        "--json",
        *extra,
        env=e2e.env,
    )
    return done[0], orjson.loads(done[1])


def run_cli_status(*args: str, env: Mapping[str, str]) -> tuple[int, str, str]:
    """`shopbotly ARGS` with its exit status (tests.stack.run_cli fails on anything but 0)."""
    done = subprocess.run(
        [str(VENV_BIN / "shopbotly"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
    )
    return done.returncode, done.stdout, done.stderr


def _with_rule(config: Path, out: Path, rule: Mapping[str, Any]) -> Path:
    document = yaml.safe_load(config.read_text())
    mapping = document["tenants"]["alpha"]["mapping"]
    mapping["version"] = f"{mapping['version']}-next"
    mapping["rules"] = [*mapping.get("rules", []), dict(rule)]
    out.write_text(yaml.safe_dump(document, sort_keys=False))
    return out


def test_the_running_mapping_diffs_empty_and_a_new_rule_shows_as_added(e2e: E2EStack, tmp_path: Path) -> None:
    _traffic(e2e)
    _settle(e2e)
    config = Path(e2e.env["SHOPBOTLY_CONFIG"])

    code, report = _mapping_diff(e2e, config)

    assert code == 0, json.dumps(report, indent=2)[:4000]
    summary = report["summary"]
    assert summary["events"] > 0 and summary["commands_unchanged"] > 0
    assert summary["events_with_differences"] == 0

    segment: dict[str, Any] = {
        "id": "alpha-segment",
        "types": ["lead.qualified"],
        "identity": {"expr": "data.data.customer.email", "transforms": ["email"]},
        "commands": [{"op": "upsert_contact", "fields": {"shopbotly_segment": {"value": "vip"}}}],
    }
    code, report = _mapping_diff(e2e, _with_rule(config, tmp_path / "next.yaml", segment))

    assert code == 1
    leads = [e for e in report["events"] if e["type"] == "lead.qualified"]
    assert leads and len(leads) == len(report["events"])
    for event in leads:
        (change,) = event["commands"]
        assert change["change"] == "added" and change["after"]["rule_id"] == "alpha-segment"
        assert change["after"]["fields"] == {"shopbotly_segment": "vip"}
