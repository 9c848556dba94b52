"""mapper benchmark: events/s of one mapper process on realistic chatbot events with three rules.

Two figures, each next to a baseline measured in the same run:
- pure: `map_event` (parse, validate the envelope, three rules, build and serialize the commands) in a
  loop, against a baseline that only parses and re-serializes each event with orjson;
- through Kafka: the real worker (`python -m shopbotly.mapper`, one process) on N events pre-loaded into
  raw-events, from its first output to its last (the record timestamps the broker stores), against a
  baseline aiokafka consumer → producer that copies the same events to another topic with the same
  producer guarantees (idempotent, acks=all, acknowledged per batch).

Topics get a private prefix (created here, deleted at the end), on the broker at
SHOPBOTLY_KAFKA_BOOTSTRAP. Nothing is asserted; figures come back as a dict.

    python -m shopbotly.bench.mapper [--events 20000] [--batch-max 500] [--batch-within-ms 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil  # type: ignore[import-untyped]
import yaml
from aiokafka import TopicPartition

from shopbotly.bench.targets import target
from shopbotly.common.kafka import KafkaSettings, make_admin, make_consumer, make_producer
from shopbotly.common.topics import Topic, ensure_topics

__all__ = ["BENCH_CONFIG", "bench_mapper", "main", "make_events"]

TENANT = "bench"
# The per-process target (issue 22; docs/services/mapper.md): scale beyond it with worker processes.
TARGET_EVENTS_PER_S = 10_000
# Three rules, as a shop would write them: every event goes through all three triggers (no `types`
# prefilter), so the figure includes three `when` evaluations per event.
BENCH_CONFIG: dict[str, Any] = {
    "version": 1,
    "tenants": {
        TENANT: {
            "sources": {"bot": {"kind": "shopbotly", "secrets": [{"env": "SHOPBOTLY_BENCH_BOT_SECRET"}]}},
            "connections": {"hubspot": {"kind": "hubspot", "base_url": "http://127.0.0.1:8090"}},
            "mapping": {
                "version": "bench",
                "default_connection": "hubspot",
                "rules": [
                    {
                        "id": "contact-on-message",
                        "when": "type == 'message.received' && data.data.customer.email",
                        "identity": {"expr": "data.data.customer.email", "transforms": ["email"]},
                        "commands": [
                            {
                                "op": "upsert_contact",
                                "fields": {
                                    "email": {"expr": "data.data.customer.email", "transforms": ["email"]},
                                    "firstname": {
                                        "expr": "data.data.customer.name",
                                        "transforms": ["first_name"],
                                    },
                                    "lastname": {
                                        "expr": "data.data.customer.name",
                                        "transforms": ["last_name"],
                                    },
                                    "phone": {
                                        "expr": "data.data.customer.phone",
                                        "transforms": [{"e164": {"on_invalid": "keep"}}],
                                    },
                                    "shopbotly_last_message_at": {
                                        "expr": "data.timestamp",
                                        "transforms": ["iso_date"],
                                    },
                                },
                            }
                        ],
                    },
                    {
                        "id": "lead-on-score",
                        "when": "type == 'lead.qualified' && data.data.intent_score > `0.7`",
                        "identity": {"expr": "data.data.customer.email", "transforms": ["email"]},
                        "commands": [
                            {
                                "op": "upsert_lead",
                                "fields": {
                                    "email": {"expr": "data.data.customer.email", "transforms": ["email"]},
                                    "lifecyclestage": {"value": "lead"},
                                    "shopbotly_intent_score": "data.data.intent_score",
                                },
                            },
                            {"op": "add_tags", "tags": ["bot-lead"], "tags_from": "data.data.tags"},
                        ],
                    },
                    {
                        "id": "transcript-on-close",
                        "when": "type == 'conversation.closed'",
                        "identity": {"expr": "data.data.customer.email", "transforms": ["email"]},
                        "commands": [
                            {
                                "op": "add_note",
                                "body": {
                                    "template": "Chat {data.data.conversation_id}\n"
                                    "{join(`\"\\n\"`, data.data.transcript[*].join(': ', [role, text]))}"
                                },
                            }
                        ],
                    },
                ],
            },
        }
    },
}


def make_events(n: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of n raw events: 80% messages, 10% qualified leads, 10% closed conversations, 500
    customers; payloads of 0.6-1.6 KB like the bot's real ones."""
    transcript = [
        {"role": "customer", "text": "Hi, is the Aeron chair in stock in graphite?"},
        {"role": "bot", "text": "Yes, 12 in stock. Delivery takes 3-5 days to most of the US."},
        {"role": "customer", "text": "Can I get a bulk discount for 20 chairs for our new office?"},
        {"role": "bot", "text": "I can connect you with our B2B team. May I have your company name?"},
    ]
    kinds = ["message.received"] * 8 + ["lead.qualified", "conversation.closed"]
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        email = f"customer{i % 500}@example.com"
        data: dict[str, Any] = {
            "conversation_id": f"conv_{i // 10}",
            "customer": {"email": email, "name": f"Customer {i % 500} Example", "phone": "+1 415 555 0134"},
        }
        if kind == "message.received":
            data["message"] = {"id": f"m{i}", "role": "customer", "text": "Do you ship to Canada? " * 3}
        elif kind == "lead.qualified":
            data.update(intent_score=0.91, tags=["bulk-order", "office"], transcript=transcript)
        else:
            data.update(transcript=transcript, closed_by="customer")
        event = {
            "specversion": "1.0",
            "id": f"msg_{uuid.uuid4().hex}",
            "source": f"/tenants/{TENANT}/sources/bot",
            "type": kind,
            "subject": email,
            "data": {"type": kind, "timestamp": "2026-03-02T10:15:30Z", "data": data},
            "tenant": TENANT,
            "sourcename": "bot",
            "traceid": uuid.uuid4().hex,
            "receivedat": datetime.now(UTC).isoformat(),
        }
        out.append((f"{TENANT}:{email}".encode(), orjson.dumps(event)))
    return out


def bench_pure(events: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    from shopbotly.common.config import parse_config
    from shopbotly.mapper.domain import Mappings, Status, map_event
    from shopbotly.mapper.state import StateStore

    mappings = Mappings.from_config(parse_config(BENCH_CONFIG))
    store = StateStore()
    now = datetime.now(UTC)
    started = time.perf_counter()
    commands = 0
    for _, value in events:
        outcome = map_event(value, mappings, store, now=now)
        if outcome.status != Status.MAPPED:
            raise RuntimeError(f"bench event not mapped: {outcome.reason}")
        for command in outcome.commands:
            command.to_json()
            commands += 1
    mapped_s = time.perf_counter() - started
    started = time.perf_counter()
    for _, value in events:
        orjson.dumps(orjson.loads(value))
    baseline_s = time.perf_counter() - started
    return {
        "events": len(events),
        "commands": commands,
        "events_per_s": round(len(events) / mapped_s),
        "us_per_event": round(mapped_s / len(events) * 1e6, 1),
        "baseline_parse_serialize_events_per_s": round(len(events) / baseline_s),
    }


async def _create_topics(kafka: KafkaSettings) -> None:
    admin = make_admin(kafka, client_role="bench")
    await admin.start()
    try:
        await ensure_topics(admin, kafka.topics().values())
    finally:
        await admin.close()


async def _delete_topics(kafka: KafkaSettings) -> None:
    admin = make_admin(kafka, client_role="bench")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        names = [s.name for s in kafka.topics().values()]
        await admin.delete_topics([n for n in names if n in existing])
    finally:
        await admin.close()


async def _produce(kafka: KafkaSettings, topic: str, events: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(kafka, client_role="bench", linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _output_span(
    kafka: KafkaSettings, topic: str, expected: int, timeout_s: float
) -> tuple[int, float]:
    """Read `expected` records of `topic`; (count, seconds from the first record's timestamp to the last)."""
    consumer = make_consumer(kafka, group_id=None, client_role="bench-out")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        first, last, count = float("inf"), 0.0, 0
        deadline = time.monotonic() + timeout_s
        while count < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for record in records:
                    count += 1
                    first, last = min(first, record.timestamp), max(last, record.timestamp)
        return count, (last - first) / 1000 if count else 0.0
    finally:
        await consumer.stop()


async def _baseline_copy(kafka: KafkaSettings, source: str, target: str, n: int, batch: int) -> float:
    """Consume n events and copy them to `target`, acknowledged per batch before committing; seconds."""
    consumer = make_consumer(
        kafka, source, group_id=f"{kafka.topic_prefix}bench-copy", client_role="bench-copy"
    )
    producer = make_producer(kafka, client_role="bench-copy")
    await consumer.start()
    await producer.start()
    try:
        copied, started = 0, None
        while copied < n:
            records = await consumer.getmany(timeout_ms=1000, max_records=batch)
            if started is None and records:
                started = time.perf_counter()
            futures = [
                await producer.send(target, r.value, key=r.key, headers=list(r.headers))
                for rs in records.values()
                for r in rs
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
            copied += len(futures)
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        await producer.stop()
        await consumer.stop()


async def bench_mapper(
    events: int = 20_000, bootstrap: str | None = None, *, batch_max: int = 500, batch_within_ms: int = 20
) -> dict[str, Any]:
    """Measure the mapper: pure mapping and through Kafka, each with its baseline."""
    from shopbotly.mapper.process import MapperProcess  # the mapper is only needed when measuring it

    sample = make_events(events)
    pure = bench_pure(sample)
    base = KafkaSettings() if bootstrap is None else KafkaSettings(bootstrap=bootstrap)
    kafka = KafkaSettings(
        bootstrap=base.bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.", partitions=6
    )
    copy_topic = kafka.topic(Topic.CRM_COMMANDS_DLQ)  # any registry topic the mapper does not touch
    raw_topic = kafka.topic(Topic.RAW_EVENTS)
    await _create_topics(kafka)
    work = Path(tempfile.mkdtemp(prefix="shopbotly-bench-mapper-"))
    config = work / "shopbotly.yaml"
    config.write_text(yaml.safe_dump(BENCH_CONFIG, sort_keys=False))
    proc = MapperProcess(
        config=config,
        kafka=kafka,
        workdir=work,
        env={
            "SHOPBOTLY_MAPPER_BATCH_MAX": str(batch_max),
            "SHOPBOTLY_MAPPER_BATCH_WITHIN_MS": str(batch_within_ms),
        },
    )
    try:
        await _produce(kafka, raw_topic, sample)
        started = time.perf_counter()
        await asyncio.to_thread(proc.start, 120.0)
        startup_s = time.perf_counter() - started
        assert proc.proc is not None
        worker = psutil.Process(proc.proc.pid)
        cpu_before = sum(worker.cpu_times()[:2])
        count, span_s = await _output_span(
            kafka, kafka.topic(Topic.CRM_COMMANDS), pure["commands"], timeout_s=max(120.0, events / 200)
        )
        wall_s = time.perf_counter() - started
        # CPU the worker spent on the run (its idle timers are negligible next to it): the figure that
        # does not depend on what else this machine is running.
        cpu_s = sum(worker.cpu_times()[:2]) - cpu_before
        await asyncio.to_thread(proc.stop)
        copy_s = await _baseline_copy(kafka, raw_topic, copy_topic, events, batch=500)
    finally:
        proc.kill()
        await _delete_topics(kafka)
    kafka_rate = round(events / span_s) if span_s and count >= pure["commands"] else None
    baseline_rate = round(events / copy_s) if copy_s else None
    return {
        "events": events,
        "rules": 3,
        "pure": pure,
        "kafka": {
            "events_per_s": kafka_rate,
            "commands_seen": count,
            "commands_expected": pure["commands"],
            "first_to_last_output_s": round(span_s, 3),
            "start_to_last_output_s": round(wall_s, 2),
            "worker_startup_s": round(startup_s, 2),
            "worker_cpu_us_per_event": round(cpu_s / events * 1e6, 1),
            "events_per_cpu_s": round(events / cpu_s) if cpu_s else None,
            "baseline_copy_events_per_s": baseline_rate,
            "ratio_to_baseline": round(kafka_rate / baseline_rate, 2)
            if kafka_rate and baseline_rate
            else None,
        },
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "partitions": kafka.partitions,
        "batch_max": batch_max,
        "batch_within_ms": batch_within_ms,
        "targets": {
            "events_per_s": target(
                kafka_rate,
                ">=",
                TARGET_EVENTS_PER_S,
                unit="events/s",
                what="events/s through Kafka, one worker process (first to last output)",
            ),
            "commands_complete": target(
                count,
                "==",
                pure["commands"],
                unit="commands",
                what="commands on crm-commands vs commands the events map to",
            ),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-max", type=int, default=500)
    parser.add_argument("--batch-within-ms", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = asyncio.run(
        bench_mapper(args.events, batch_max=args.batch_max, batch_within_ms=args.batch_within_ms)
    )
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
