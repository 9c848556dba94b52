"""Fault injection across the whole stack, on a private broker.

During a continuous stream of 5,000 unique signed events (lead.qualified for ~1,000 customers, plus a few
poisoned ones the mapper must dead-letter): kill -9 the mapper, kill -9 the crm-writer, stop and restart the
Kafka broker, a CRM outage and a 429 storm through the emulator's fault switch. After recovery the CRM holds
exactly the expected records (properties of each customer's last event, tags the union of all its events,
one create per customer), the DLQs hold only the poisoned events, and every event ingest answered 2xx for
is on raw-events.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from shopbotly.common.topics import Topic
from tests.fault.scenario import FaultRun, lead_contact, lead_qualified, wait_progress
from tests.fault.sender import Event, Sender
from tests.stack import (
    SERVICES,
    PrivateKafka,
    Stack,
    StackSecrets,
    create_topics,
    free_port,
    gauge_values,
    poll,
    stack_env,
    tenants_yaml,
)

pytestmark = pytest.mark.fault

CUSTOMERS = 998
EVENTS_PER_CUSTOMER = 5
POISONED = 10  # 998 x 5 + 10 = 5,000 events
SCORES = (0.15, 0.35, 0.55, 0.75, 0.95)
# Longer than the clients' request timeout (SHOPBOTLY_KAFKA_REQUEST_TIMEOUT_MS, 15 s): requests in flight when
# the broker went away time out, as they do in a real broker restart or a network partition.
BROKER_DOWN_S = 20


def _email(i: int) -> str:
    return f"fault-{i:04d}@example.com"


def _lead(i: int, seq: int) -> dict[str, Any]:
    return lead_qualified(
        _email(i),
        first_name=f"F{i}",
        last_name=f"L{i}-{seq}",
        conversation_id=f"conv-{i}-{seq}",
        score=SCORES[seq],
        tags=[f"round-{seq}"],
    )


def _expected(i: int) -> dict[str, Any]:
    last = EVENTS_PER_CUSTOMER - 1
    return lead_contact(
        _email(i),
        first_name=f"F{i}",
        last_name=f"L{i}-{last}",
        conversation_id=f"conv-{i}-{last}",
        score=SCORES[last],
    )


EXPECTED_TAGS = sorted(["shopbotly-lead", *(f"round-{s}" for s in range(EVENTS_PER_CUSTOMER))])


def _poison(n: int) -> Event:
    # The bot sent a malformed e-mail: the lead rule's e-mail transform fails, so the mapper dead-letters it.
    body = _lead(10_000 + n, 0)
    body["data"]["customer"]["email"] = f"poison-{n}.example.com"
    return Event(f"poison-{n}-{uuid.uuid4().hex[:6]}", body)


@dataclass
class FaultStack(FaultRun):
    env: dict[str, str] = field(default_factory=dict)

    def faults(self, **changes: Any) -> None:
        response = httpx.post(
            f"{self.stack['crm-emulator'].url}/_emulator/faults", json={"systems": ["hubspot"], **changes}
        )
        response.raise_for_status()


@pytest.fixture
def fault_stack(tmp_path: Path) -> Iterator[FaultStack]:
    kafka = PrivateKafka.create(tmp_path / "kafka-run")
    kafka.start()
    stack: Stack | None = None
    try:
        prefix = "fault."
        ports = {name: free_port() for name in SERVICES}
        secrets = StackSecrets()
        config = tmp_path / "tenants.yaml"
        config.write_text(tenants_yaml(secrets, emulator_port=ports["crm-emulator"], bot_url=None))
        env = {
            **stack_env(bootstrap=kafka.bootstrap, prefix=prefix, config=config, partitions=3),
            **secrets.env(),
            # ingest: a short Retry-After on 503, so the sender's retries follow the broker's return closely.
            "SHOPBOTLY_RETRY_AFTER_S": "1",
            # crm-writer: the circuit's longest open period bounds how long recovery after the outage takes.
            "SHOPBOTLY_CIRCUIT_MAX_OPEN_S": "8",
        }
        create_topics(env)
        stack = Stack.create(tmp_path / "stack", env, ports=ports)
        stack.start()
        yield FaultStack(stack, kafka, prefix, secrets, env=env)
    finally:
        if stack is not None:
            stack.stop()
        kafka.stop()


def _crm_diff(state: dict[str, Any]) -> list[str]:
    """What differs between the CRM and the expected records (empty when they match)."""
    records = state.get("records", {}).get("hubspot", {})
    problems = []
    expected_ids = {_email(i) for i in range(CUSTOMERS)}
    extra = sorted(set(records) - expected_ids)
    if extra:
        problems.append(f"{len(extra)} unexpected record(s), e.g. {extra[:3]}")
    for i in range(CUSTOMERS):
        record = records.get(_email(i))
        if record is None:
            problems.append(f"{_email(i)}: missing")
            continue
        props = record.get("properties", {})
        wrong = {k: (props.get(k), v) for k, v in _expected(i).items() if props.get(k) != v}
        if wrong:
            problems.append(f"{_email(i)}: (actual, expected) {wrong}")
        if sorted(record.get("tags") or []) != EXPECTED_TAGS:
            problems.append(f"{_email(i)}: tags {record.get('tags')}")
        if record.get("creates") != 1:
            problems.append(f"{_email(i)}: creates {record.get('creates')}")
    return problems


@pytest.mark.timeout(540)
def test_no_loss_no_duplicate_effect_under_crashes_broker_restart_outage_and_429s(
    fault_stack: FaultStack, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    fs = fault_stack
    stack = fs.stack
    rng = random.Random(7)
    lanes = [
        [Event(f"lead-{i}-{s}", _lead(i, s)) for s in range(EVENTS_PER_CUSTOMER)] for i in range(CUSTOMERS)
    ]
    lanes += [[_poison(n)] for n in range(POISONED)]
    rng.shuffle(lanes)
    poison_ids = {lane[0].event_id for lane in lanes if lane[0].event_id.startswith("poison-")}
    sender = Sender(f"{stack['ingest'].url}/v1/webhooks/alpha/bot", fs.secrets.bot_source, lanes, rate=55)
    assert sender.total == 5000

    fs.note("stream starts")
    sender.start()

    wait_progress([sender], 0.10, fs, timeout=120)
    stack["mapper"].kill9()
    fs.note("mapper killed (SIGKILL)")
    stack.restart("mapper")
    fs.note("mapper ready again")

    wait_progress([sender], 0.25, fs, timeout=120)
    stack["crm-writer"].kill9()
    fs.note("crm-writer killed (SIGKILL)")
    stack.restart("crm-writer")
    fs.note("crm-writer ready again")

    wait_progress([sender], 0.35, fs, timeout=120)
    fs.faults(outage=True, retry_after_s=2)
    fs.note("CRM outage on")
    time.sleep(8)
    fs.faults(outage=False)
    fs.note("CRM outage off")
    # The storm must meet a closed circuit, not the outage's half-open probes.
    poll(
        lambda: gauge_values(stack["crm-writer"].metrics(), "shopbotly_crm_writer_circuit_state") == [0.0],
        timeout=60,
        what="crm-writer's circuit closed again after the outage",
        context=fs.logs,
    )
    fs.note("circuit closed")

    wait_progress([sender], 0.45, fs, timeout=120)
    fs.faults(error_rates={"429": 0.7}, retry_after_s=1)
    fs.note("429 storm on (70% of requests, Retry-After 1 s)")
    time.sleep(10)
    fs.faults(clear=True)
    fs.note("429 storm off")

    wait_progress([sender], 0.65, fs, timeout=120)
    fs.kafka.stop(hold_ports=True)
    fs.note("broker stopped")
    time.sleep(BROKER_DOWN_S)
    fs.kafka.start()
    fs.note("broker started")

    poll(
        sender.done.is_set,
        timeout=150,
        what="the sender to finish",
        context=lambda: f"stream at {sender.progress:.1%}, answers {dict(sender.answers)}\n{fs.logs()}",
    )
    fs.note("stream done")
    assert sender.error is None, repr(sender.error)
    assert sender.refused == [], sender.refused[:5]
    assert len(sender.accepted) == sender.total

    # Recovery: the CRM converges to the expected records.
    emulator = stack["crm-emulator"]
    last_diff: list[str] = []

    def converged() -> dict[str, Any] | None:
        nonlocal last_diff
        state: dict[str, Any] = httpx.get(f"{emulator.url}/_emulator/state?system=hubspot", timeout=30).json()
        last_diff = _crm_diff(state)
        return None if last_diff else state

    def diff_and_logs() -> str:
        return f"{len(last_diff)} difference(s), first: {last_diff[:5]}\n{fs.logs()}"

    poll(
        converged, timeout=180, what="the CRM to hold the expected records", interval=1, context=diff_and_logs
    )
    fs.note("CRM converged")

    # Nothing is left in flight: both consumers report no lag (their gauges refresh every few seconds).
    def drained(service: str, gauge: str) -> Callable[[], bool]:
        return lambda: (
            all(v == 0 for v in gauge_values(stack[service].metrics(), gauge))
            and bool(gauge_values(stack[service].metrics(), gauge))
        )

    poll(
        drained("mapper", "shopbotly_mapper_consumer_lag_messages"),
        timeout=60,
        what="mapper lag 0",
        context=fs.logs,
    )
    poll(
        drained("crm-writer", "shopbotly_crm_writer_consumer_lag_messages"),
        timeout=60,
        what="crm-writer lag 0",
        context=fs.logs,
    )
    fs.note("consumers drained")

    # Still exactly right once everything is drained: no late write changed a record.
    state = httpx.get(f"{emulator.url}/_emulator/state?system=hubspot", timeout=30).json()
    assert _crm_diff(state) == []
    counters = state["counters"]
    assert counters["writes_by_system"]["hubspot"]["creates"] == CUSTOMERS  # creates == unique identities
    # The faults really happened.
    assert sum(counters["outage_rejections"].values()) > 0, counters
    assert counters["injected_faults"].get("hubspot:429", 0) > 0, counters
    assert sender.answers["503"] > 0, sender.answers  # ingest refused while the broker was down

    # The DLQs hold only the poisoned events.
    raw_dlq = fs.topic(Topic.RAW_EVENTS_DLQ)
    assert {m.headers["event_id"] for m in raw_dlq} == poison_ids
    assert all(m.headers["error.class"] == "permanent" for m in raw_dlq)
    commands_dlq = fs.topic(Topic.CRM_COMMANDS_DLQ)
    assert [(m.key, m.headers.get("error.message")) for m in commands_dlq] == []

    # Durable accept: every event ingest answered 2xx for is on raw-events.
    stored = {m.headers.get("event_id") for m in fs.topic(Topic.RAW_EVENTS)}
    missing = sorted(set(sender.accepted) - stored)
    assert missing == [], f"{len(missing)} event(s) answered 2xx but not on raw-events: {missing[:10]}"
    fs.note("checks done")

    report = {
        "runtime_s": round(time.monotonic() - fs.started, 1),
        "events": sender.total,
        "customers": CUSTOMERS,
        "poisoned": POISONED,
        "answers": dict(sender.answers),
        "timeline": fs.timeline,
        "emulator_counters": {k: counters[k] for k in ("requests", "rate_limited", "injected_faults")},
        "emulator_requests_by_endpoint": counters["by_endpoint"],
        "outage_rejections": counters["outage_rejections"],
        "raw_events_stored": len(stored),
    }
    out = tmp_path_factory.getbasetemp() / "fault_report.json"
    out.write_text(json.dumps(report, indent=2))
    with capsys.disabled():
        print(f"\nfault run ({out}):\n{json.dumps(report, indent=2)}")
