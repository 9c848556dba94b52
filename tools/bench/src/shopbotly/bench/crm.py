"""crm-writer benchmark: contacts applied per second under a HubSpot-like rate limit.

The CRM emulator (tools/crm-emulator, its own process) enforces HubSpot's 100 requests per rolling 10 s
and 100 inputs per batch; the writer (`python -m shopbotly.crm_writer`, one process, its own limit
configured to the same 100 / 10 s) applies N `upsert_contact` commands for N distinct identities, so no
coalescing flatters the figure. The ceiling is limit times batch size = 10 requests/s x 100 = 1,000
contacts/s; the figure is the steady-state rate (from 10 % to 90 % of the contacts applied, read from the
writer's own /metrics) against that ceiling, with the share of requests the emulator refused with 429.
Targets (issue 5): ratio ≥ 0.8, 429s ≤ 1 % of requests. Nothing is asserted.

A second figure, `bench_bot_latency`, times the writer's leg of issue 11: notify_bot commands published
at 100/s until the bot endpoint (a local server verifying each Standard Webhooks signature) has them.

Topics get a private prefix on the broker at SHOPBOTLY_KAFKA_BOOTSTRAP (created here, deleted at the end).

    python -m shopbotly.bench.crm [--contacts 30000] [--partitions 6] [--bot-rate 100] [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import uvicorn
import yaml
from fastapi import FastAPI, Request, Response
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shopbotly.bench.targets import target
from shopbotly.common.events import CommandOp, CrmCommand, message_headers
from shopbotly.common.kafka import KafkaSettings, make_admin, make_producer
from shopbotly.common.topics import Topic, ensure_topics

__all__ = ["bench_bot_latency", "bench_crm", "main"]

TENANT = "bench"
HUBSPOT_TOKEN = "emulator-hubspot-token"  # noqa: S105 - the emulator's public default test token


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


async def _wait_http(url: str, proc: asyncio.subprocess.Process, log: Path, timeout_s: float = 60.0) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(timeout_s):
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"{url}: process exited ({proc.returncode}); see {log}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)


async def _spawn(args: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(*args, env={**os.environ, **env}, stdout=out, stderr=out)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _topics(kafka: KafkaSettings, *, create: bool) -> None:
    admin = make_admin(kafka, client_role="bench-admin")
    await admin.start()
    try:
        if create:
            await ensure_topics(admin, kafka.topics().values())
        else:
            await admin.delete_topics([s.name for s in kafka.topics().values()])
    finally:
        await admin.close()


async def _produce(kafka: KafkaSettings, n: int) -> float:
    """N upsert_contact commands for N distinct identities; returns the seconds it took."""
    producer = make_producer(kafka, client_role="bench-producer", linger_ms=20)
    await producer.start()
    started = time.monotonic()
    try:
        topic = kafka.topic(Topic.CRM_COMMANDS)
        now = datetime.now(UTC)
        futures = []
        for i in range(n):
            cmd = CrmCommand(
                command_id=f"cmd_bench_{i:07d}",
                tenant=TENANT,
                connection="hubspot",
                identity=f"contact{i:07d}@bench.example",
                op=CommandOp.UPSERT_CONTACT,
                fields={"firstname": f"First{i}", "lastname": "Bench", "lifecyclestage": "lead"},
                causation_event_id=f"evt_bench_{i}",
                rule_id="bench",
                mapping_version="bench",
                received_at=now,
            )
            headers = message_headers(
                event_id=cmd.causation_event_id, tenant=TENANT, trace_id=None, schema=cmd.SCHEMA
            )
            futures.append(await producer.send(topic, cmd.to_json(), key=cmd.key(), headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - started


def _steady_rate(samples: list[tuple[float, float]], total: int, lo: float = 0.1, hi: float = 0.9) -> float:
    """Contacts/s between the moments `lo` and `hi` of the total were applied (interpolated)."""

    def when(target: float) -> float:
        for (t0, v0), (t1, v1) in itertools.pairwise(samples):
            if v1 >= target:
                return t0 if v1 == v0 else t0 + (t1 - t0) * (target - v0) / (v1 - v0)
        return samples[-1][0]

    t_lo, t_hi = when(total * lo), when(total * hi)
    return (hi - lo) * total / (t_hi - t_lo) if t_hi > t_lo else float("nan")


async def bench_crm(
    contacts: int = 30_000,
    *,
    partitions: int = 6,
    limit: int = 100,
    interval_s: float = 10.0,
    batch_size: int = 100,
    bootstrap: str | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Run the writer against the emulator's HubSpot-like limit; figures as a dict (see the module doc)."""
    kafka = KafkaSettings(
        bootstrap=bootstrap or os.environ.get("SHOPBOTLY_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        partitions=partitions,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-crm-"))
    emulator_port, writer_port = _free_port(), _free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    config = work / "shopbotly.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "tenants": {
                    TENANT: {
                        "connections": {
                            "hubspot": {
                                "kind": "hubspot",
                                "base_url": emulator_url,
                                "auth": {"kind": "bearer", "token": {"env": "SHOPBOTLY_BENCH_HUBSPOT_TOKEN"}},
                                "rate_limit": {"requests": limit, "per_seconds": interval_s},
                                "batch_size": batch_size,
                            }
                        }
                    }
                }
            }
        )
    )
    await _topics(kafka, create=True)
    emulator = await _spawn(
        [sys.executable, "-m", "shopbotly.crm_emulator"],
        {
            "SHOPBOTLY_EMULATOR_PORT": str(emulator_port),
            "SHOPBOTLY_EMULATOR_HUBSPOT_RATE_LIMIT_MAX": str(limit),
            "SHOPBOTLY_EMULATOR_HUBSPOT_RATE_LIMIT_INTERVAL_MS": str(int(interval_s * 1000)),
            "SHOPBOTLY_EMULATOR_HUBSPOT_DAILY_LIMIT": str(10_000_000),
            "SHOPBOTLY_LOG_LEVEL": "warning",
        },
        work / "emulator.log",
    )
    writer: asyncio.subprocess.Process | None = None
    try:
        await _wait_http(f"{emulator_url}/readyz", emulator, work / "emulator.log")
        produce_s = await _produce(kafka, contacts)
        writer = await _spawn(
            [sys.executable, "-m", "shopbotly.crm_writer"],
            {
                "SHOPBOTLY_CONFIG": str(config),
                "SHOPBOTLY_PORT": str(writer_port),
                "SHOPBOTLY_KAFKA_BOOTSTRAP": kafka.bootstrap,
                "SHOPBOTLY_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
                "SHOPBOTLY_CONSUMER_GROUP": f"{kafka.topic_prefix}crm-writer",
                "SHOPBOTLY_BENCH_HUBSPOT_TOKEN": HUBSPOT_TOKEN,
                "SHOPBOTLY_LOG_LEVEL": "warning",
            },
            work / "writer.log",
        )
        await _wait_http(f"http://127.0.0.1:{writer_port}/readyz", writer, work / "writer.log")
        cpu = psutil.Process(writer.pid)
        cpu_start = sum(cpu.cpu_times()[:2])
        samples: list[tuple[float, float]] = []
        started = time.monotonic()
        text = ""
        async with httpx.AsyncClient() as client, asyncio.timeout(timeout_s):
            while True:
                text = (await client.get(f"http://127.0.0.1:{writer_port}/metrics")).text
                applied = _metric_sum(text, "shopbotly_crm_writer_commands_total", outcome="applied")
                samples.append((time.monotonic() - started, applied))
                if applied >= contacts:
                    break
                await asyncio.sleep(0.25)
            emulator_metrics = (await client.get(f"{emulator_url}/metrics")).text
        writer_cpu_s = sum(cpu.cpu_times()[:2]) - cpu_start
        first = next(t for t, v in samples if v > 0)
        total_s = samples[-1][0] - first
        steady = _steady_rate(samples, contacts)
        ceiling = limit / interval_s * batch_size
        requests = _metric_sum(emulator_metrics, "shopbotly_crm_emulator_requests_total", system="hubspot")
        refused = _metric_sum(
            emulator_metrics, "shopbotly_crm_emulator_requests_total", system="hubspot", status="429"
        )
        upserts = _metric_sum(text, "shopbotly_crm_writer_requests_total", op="batch_upsert_contacts")
        batch_sum = _metric_sum(text, "shopbotly_crm_writer_batch_records_sum", op="batch_upsert_contacts")
        e2e_count = _metric_sum(text, "shopbotly_crm_writer_e2e_latency_seconds_count")
        req_sum = _metric_sum(
            text, "shopbotly_crm_writer_request_duration_seconds_sum", op="batch_upsert_contacts"
        )
        req_count = _metric_sum(
            text, "shopbotly_crm_writer_request_duration_seconds_count", op="batch_upsert_contacts"
        )
        return {
            "contacts": contacts,
            "partitions": partitions,
            "limit": f"{limit} requests / {interval_s:g} s",
            "batch_size": batch_size,
            "ceiling_contacts_per_s": ceiling,
            "steady_contacts_per_s": round(steady, 1) if steady == steady else None,
            "ratio_to_ceiling": round(steady / ceiling, 3) if steady == steady else None,
            "overall_contacts_per_s": round(contacts / total_s, 1) if total_s > 0 else None,
            "first_to_last_applied_s": round(total_s, 2),
            "crm_requests": int(requests),
            "crm_429s": int(refused),
            "share_429": round(refused / requests, 4) if requests else None,
            "mean_batch_records": round(batch_sum / upserts, 1) if upserts else None,
            "mean_crm_request_ms": round(1000 * req_sum / req_count, 1) if req_count else None,
            "machine_load_1m": round(os.getloadavg()[0], 2),
            "writer_cpu_s": round(writer_cpu_s, 2),
            "writer_cpu_ms_per_1000_contacts": round(1000 * writer_cpu_s / contacts * 1000, 1),
            "e2e_samples": int(e2e_count),
            "produce_s": round(produce_s, 2),
            "targets": {
                "ratio_to_ceiling": target(
                    None if steady != steady else round(steady / ceiling, 3),  # NaN: too few samples
                    ">=",
                    0.8,
                    what=f"steady contacts/s ÷ ceiling ({limit} req / {interval_s:g} s, batch {batch_size})",
                ),
                "share_429": target(
                    round(100 * refused / requests, 2) if requests else None,
                    "<=",
                    1,
                    unit="%",
                    what="share of CRM requests answered 429",
                ),
            },
        }
    finally:
        if writer is not None:
            await _stop(writer)
        await _stop(emulator)
        await _topics(kafka, create=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m shopbotly.bench.crm", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--contacts", type=int, default=30_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--bot-rate", type=int, default=100, help="notifications/s for the bot latency run")
    parser.add_argument("--bot-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = {
        "crm": asyncio.run(bench_crm(args.contacts, partitions=args.partitions)),
        "bot_latency": asyncio.run(
            bench_bot_latency(args.bot_rate, args.bot_seconds, partitions=args.partitions)
        ),
    }
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


class _BotEndpoint:
    """A bot's webhook endpoint: verifies each notification (Standard Webhooks) and notes when it came."""

    def __init__(self, secret: str) -> None:
        self.webhook = Webhook(secret)
        self.arrivals: dict[str, float] = {}
        self.rejected = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            try:
                self.webhook.verify(body, dict(request.headers))
            except WebhookVerificationError:
                self.rejected += 1
                return Response(status_code=400)
            self.arrivals[request.headers["webhook-id"]] = time.time()
            return Response(status_code=204)

        return app


async def bench_bot_latency(
    rate: int = 100, seconds: float = 20.0, *, bootstrap: str | None = None, partitions: int = 6
) -> dict[str, Any]:
    """crm-writer's leg of issue 11: notify_bot command published → bot notified, at `rate` per second.

    Each command's `received_at` is set when it is published to crm-commands; the local bot endpoint
    records when the signed notification arrives (both clocks are this machine's wall clock).
    """
    secret = "whsec_" + "QmVuY2hCb3RTZWNyZXRGb3JTaG9wQm90bHkx"
    kafka = KafkaSettings(
        bootstrap=bootstrap or os.environ.get("SHOPBOTLY_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        topic_prefix=f"benchbot{uuid.uuid4().hex[:8]}.",
        partitions=partitions,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-bot-"))
    bot_port, writer_port = _free_port(), _free_port()
    config = work / "shopbotly.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "tenants": {
                    TENANT: {
                        # The bot endpoint's own limit: well above the offered rate, so the figure is the
                        # writer's latency, not a queue behind a limiter (undeclared, it is 100/s).
                        "connections": {
                            "bot": {
                                "kind": "bot_webhook",
                                "rate_limit": {"requests": 4 * rate, "per_seconds": 1},
                            }
                        },
                        "bot_webhook": {
                            "url": f"http://127.0.0.1:{bot_port}/hook",
                            "secret": {"env": "SHOPBOTLY_BENCH_BOT_SECRET"},
                        },
                    }
                }
            }
        )
    )
    endpoint = _BotEndpoint(secret)
    server = uvicorn.Server(
        uvicorn.Config(endpoint.app(), host="127.0.0.1", port=bot_port, log_config=None, access_log=False)
    )
    server_task = asyncio.create_task(server._serve())
    await _topics(kafka, create=True)
    writer: asyncio.subprocess.Process | None = None
    sent: dict[str, float] = {}
    try:
        writer = await _spawn(
            [sys.executable, "-m", "shopbotly.crm_writer"],
            {
                "SHOPBOTLY_CONFIG": str(config),
                "SHOPBOTLY_PORT": str(writer_port),
                "SHOPBOTLY_KAFKA_BOOTSTRAP": kafka.bootstrap,
                "SHOPBOTLY_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
                "SHOPBOTLY_CONSUMER_GROUP": f"{kafka.topic_prefix}crm-writer",
                "SHOPBOTLY_BENCH_BOT_SECRET": secret,
                "SHOPBOTLY_LOG_LEVEL": "warning",
            },
            work / "writer.log",
        )
        await _wait_http(f"http://127.0.0.1:{writer_port}/readyz", writer, work / "writer.log")
        writer_proc = psutil.Process(writer.pid)
        cpu_start = sum(writer_proc.cpu_times()[:2])
        producer = make_producer(kafka, client_role="bench-producer")
        await producer.start()
        try:
            topic = kafka.topic(Topic.CRM_COMMANDS)
            total = int(rate * seconds)
            start = time.monotonic()
            for i in range(total):
                # Paced: event i goes out at start + i / rate (open loop, as webhooks would arrive).
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = datetime.now(UTC)
                cmd = CrmCommand(
                    command_id=f"cmd_bot_{i:07d}",
                    tenant=TENANT,
                    connection="bot",
                    identity=f"customer{i % 500:04d}@bench.example",
                    op=CommandOp.NOTIFY_BOT,
                    fields={"ticket_id": f"T{i}", "status": "waiting_on_contact"},
                    body="An agent replied to your ticket.",
                    event_type="ticket.updated",
                    causation_event_id=f"evt_bot_{i}",
                    rule_id="bench",
                    mapping_version="bench",
                    received_at=now,
                )
                sent[cmd.command_id] = now.timestamp()
                await producer.send(topic, cmd.to_json(), key=cmd.key())
            await producer.flush()
        finally:
            await producer.stop()
        async with asyncio.timeout(60):
            while len(endpoint.arrivals) < len(sent):  # noqa: ASYNC110 - polling a dict filled by requests
                await asyncio.sleep(0.1)
        writer_cpu_s = sum(writer_proc.cpu_times()[:2]) - cpu_start
        by_order = [endpoint.arrivals[k] - sent[k] for k in sent]
        latencies = sorted(by_order)
        slow = [i for i, v in enumerate(by_order) if v > 0.1]

        def pct(p: float) -> float:
            return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1)

        return {
            "rate_per_s": rate,
            "notifications": len(latencies),
            "rejected_signatures": endpoint.rejected,
            "over_100ms": len(slow),
            "writer_cpu_ms_per_notification": round(1000 * writer_cpu_s / len(sent), 2),
            "machine_load_1m": round(os.getloadavg()[0], 2),
            "latency_ms": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": pct(1.0)},
            "scope": "command published to crm-commands -> signed notification received by the bot",
            "target_end_to_end": "p99 <= 250 ms from CRM webhook accepted (ingest + mapper + this leg)",
        }
    finally:
        if writer is not None:
            await _stop(writer)
        server.should_exit = True
        await server_task
        await _topics(kafka, create=False)


if __name__ == "__main__":
    main()
