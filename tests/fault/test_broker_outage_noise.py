"""A broker outage under light traffic stays readable and cheap: every service backs off its reconnects and
folds repeated Kafka client errors into one line per interval, and no send future is left unretrieved.

Measured on the whole stack (five processes, a private broker): log lines per second and CPU seconds per
second of each service while the broker is stopped, then recovery once it is back.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from shopbotly.cli.demo_cmd import sign_standard_webhook
from tests.stack import (
    SERVICES,
    PrivateKafka,
    Service,
    Stack,
    StackSecrets,
    create_topics,
    free_port,
    stack_env,
    tenants_yaml,
)

pytestmark = pytest.mark.fault

# Longer than the clients' request timeout (15 s) would make the test slower without showing anything new:
# the floods start within a second of the broker going away and run at a steady rate.
BROKER_DOWN_S = 18
TRAFFIC_PER_S = 10
# Bounds, per service, averaged over the outage (docs/operations.md, "Broker outage"). Before the fix the
# services wrote 40-5,700 lines/s each and burned up to half a core (figures in the runbook). A service that
# backs off and folds repeats writes a line per kind of client error per 10 s plus its own state changes: well
# under 3 lines/s. ingest also logs each refused webhook (two lines per 503, its own business), hence an
# allowance per request it answered. The CPU bound is an idle Python service's timers and probes plus a
# reconnect per client per second, with a wide margin for a loaded 2-core machine (measured: under 0.03).
MAX_BACKGROUND_LINES_PER_S = 3.0
LINES_PER_REQUEST = 2.0
MAX_CPU_CORES = 0.15
UNRETRIEVED = "Future exception was never retrieved"


def _cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every process in the process group (a service and any child it forks)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


@dataclass
class Usage:
    """Log lines and CPU time of each service from one moment to another."""

    lines: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)

    @classmethod
    def now(cls, services: dict[str, Service]) -> Usage:
        usage = cls()
        for name, svc in services.items():
            assert svc.proc is not None
            usage.lines[name] = _lines(svc.log_path)
            usage.cpu_s[name] = _cpu_seconds(svc.proc.pid)
        return usage


@dataclass
class Traffic:
    """Signed webhooks to ingest at a steady light rate, answered or not (the answers are counted)."""

    url: str
    secret: str
    rate: float
    answers: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                body = json.dumps(
                    {
                        "type": "lead.qualified",
                        "timestamp": "2026-11-24T10:00:00Z",
                        "data": {
                            "conversation_id": f"conv-{uuid.uuid4().hex[:8]}",
                            "customer": {"email": f"noise-{uuid.uuid4().hex[:8]}@example.com"},
                            "intent_score": 0.9,
                        },
                    }
                ).encode()
                try:
                    answer = str(
                        client.post(
                            self.url, content=body, headers=sign_standard_webhook(self.secret, body)
                        ).status_code
                    )
                except httpx.HTTPError as exc:
                    answer = type(exc).__name__
                self.answers[answer] = self.answers.get(answer, 0) + 1
                self.stop.wait(max(0.0, 1 / self.rate - (time.monotonic() - started)))


@pytest.fixture
def outage_stack(tmp_path: Path) -> Iterator[tuple[Stack, PrivateKafka, StackSecrets]]:
    kafka = PrivateKafka.create(tmp_path / "kafka-run")
    kafka.start()
    stack: Stack | None = None
    try:
        ports = {name: free_port() for name in SERVICES}
        secrets = StackSecrets()
        config = tmp_path / "tenants.yaml"
        config.write_text(tenants_yaml(secrets, emulator_port=ports["crm-emulator"], bot_url=None))
        env = {
            **stack_env(bootstrap=kafka.bootstrap, prefix="noise.", config=config, partitions=3),
            **secrets.env(),
            "SHOPBOTLY_RETRY_AFTER_S": "1",
        }
        create_topics(env)
        stack = Stack.create(tmp_path / "stack", env, ports=ports)
        stack.start()
        yield stack, kafka, secrets
    finally:
        if stack is not None:
            stack.stop()
        kafka.stop()


@pytest.mark.timeout(240)
def test_broker_outage_keeps_logs_readable_and_cpu_low(
    outage_stack: tuple[Stack, PrivateKafka, StackSecrets], capsys: pytest.CaptureFixture[str]
) -> None:
    stack, kafka, secrets = outage_stack
    traffic = Traffic(f"{stack['ingest'].url}/v1/webhooks/alpha/bot", secrets.bot_source, TRAFFIC_PER_S)
    sender = threading.Thread(target=traffic.run, name="light-traffic", daemon=True)
    sender.start()
    try:
        stack.poll(lambda: traffic.answers.get("202", 0) >= 20, timeout=60, what="traffic flowing")
        kafka.stop(hold_ports=True)
        before, answered_before = Usage.now(stack.services), sum(traffic.answers.values())
        time.sleep(BROKER_DOWN_S)
        during, answered = Usage.now(stack.services), sum(traffic.answers.values()) - answered_before
        kafka.start()
        accepted = traffic.answers.get("202", 0)
        stack.poll(
            lambda: traffic.answers.get("202", 0) > accepted + 10,
            timeout=90,
            what="ingest accepting again after the broker came back",
        )
        for name in ("mapper", "crm-writer", "order-reader"):
            stack.poll(stack[name].ready, timeout=90, what=f"{name} ready again")
        # asyncio reports an unretrieved future when it is collected: give that a moment to happen.
        time.sleep(3)
    finally:
        traffic.stop.set()
        sender.join(10)

    seconds = during.at - before.at
    figures: dict[str, dict[str, Any]] = {
        name: {
            "lines_per_s": round((during.lines[name] - before.lines[name]) / seconds, 1),
            "cpu_cores": round((during.cpu_s[name] - before.cpu_s[name]) / seconds, 3),
            "unretrieved_futures": stack[name].log_path.read_text(errors="replace").count(UNRETRIEVED),
        }
        for name in stack.services
    }
    with capsys.disabled():
        print(f"\nbroker down {seconds:.1f}s, answers {traffic.answers}:\n{json.dumps(figures, indent=2)}")

    allowed = {name: MAX_BACKGROUND_LINES_PER_S for name in stack.services}
    allowed["ingest"] += LINES_PER_REQUEST * answered / seconds
    loud = {
        n: (f["lines_per_s"], round(allowed[n], 1))
        for n, f in figures.items()
        if f["lines_per_s"] > allowed[n]
    }
    busy = {n: f["cpu_cores"] for n, f in figures.items() if f["cpu_cores"] > MAX_CPU_CORES}
    unretrieved = {n: f["unretrieved_futures"] for n, f in figures.items() if f["unretrieved_futures"]}
    assert not loud, f"log lines/s (measured, allowed) during the outage: {loud}\n{stack.logs(15)}"
    assert not busy, f"CPU cores over {MAX_CPU_CORES} during the outage: {busy}"
    assert not unretrieved, f"'{UNRETRIEVED}' logged: {unretrieved}\n{stack.logs(15)}"
