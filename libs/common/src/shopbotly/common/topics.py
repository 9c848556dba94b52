"""The topic registry of DESIGN.md and an idempotent create-or-verify that reports config drift."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

__all__ = [
    "DAY_MS",
    "Topic",
    "TopicDrift",
    "TopicSpec",
    "ensure_topics",
    "registry",
]

DAY_MS = 24 * 60 * 60 * 1000


class Topic(StrEnum):
    """Logical topic names; the physical name is `<prefix><logical>`."""

    RAW_EVENTS = "raw-events.v1"
    CRM_COMMANDS = "crm-commands.v1"
    ORDERS = "orders.v1"
    TICKETS = "tickets.v1"
    CRM_RESULTS = "crm-results.v1"
    CRM_LEDGER = "crm-ledger.v1"
    RAW_EVENTS_DLQ = "raw-events.dlq.v1"
    CRM_COMMANDS_DLQ = "crm-commands.dlq.v1"
    LEAD_IDEMPOTENCY = "lead-idempotency.v1"


@dataclass(frozen=True)
class TopicSpec:
    logical: Topic
    name: str
    key: str
    value: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)

    def new_topic(self, replication_factor: int) -> NewTopic:
        return NewTopic(self.name, self.partitions, replication_factor, topic_configs=dict(self.configs))


def _delete(days: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(days * DAY_MS)}


def _compact(min_days: int = 0) -> dict[str, str]:
    cfg = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": str(DAY_MS)}
    if min_days:
        # Keep every record for at least this long before compaction may drop an older version.
        cfg["min.compaction.lag.ms"] = str(min_days * DAY_MS)
    return cfg


def registry(
    prefix: str = "shopbotly.", *, partitions: int = 6, min_insync_replicas: int | None = None
) -> dict[Topic, TopicSpec]:
    """Every topic with its key, value, partition count and configs.

    `min_insync_replicas` is set in production (2, with replication factor 3); locally it stays 1.
    """
    rows: list[tuple[Topic, str, str, dict[str, str]]] = [
        (Topic.RAW_EVENTS, "{tenant}:{subject}", "CloudEvents 1.0 envelope", _delete(7)),
        (Topic.CRM_COMMANDS, "{tenant}:{connection}:{identity}", "CrmCommand", _delete(7)),
        (Topic.ORDERS, "{tenant}:{order_id}", "Order (latest state)", _compact()),
        (Topic.TICKETS, "{tenant}:{ticket_id}", "Ticket (latest state)", _compact()),
        (Topic.CRM_RESULTS, "command key", "CommandResult", _delete(30)),
        (Topic.CRM_LEDGER, "command_id", "LedgerEntry", _compact(30)),
        (Topic.RAW_EVENTS_DLQ, "original key", "original value + error headers", _delete(30)),
        (Topic.CRM_COMMANDS_DLQ, "original key", "original value + error headers", _delete(30)),
        # Not compacted: the first record of a key decides (ingest's idempotency.py), and compaction keeps the
        # last. Retention bounds SHOPBOTLY_IDEMPOTENCY_TTL_S (at most 7 d).
        (
            Topic.LEAD_IDEMPOTENCY,
            "{tenant}:{idempotency key}",
            "IdempotencyRecord (fingerprint, event id, first seen, stored)",
            _delete(7),
        ),
    ]
    specs: dict[Topic, TopicSpec] = {}
    for logical, key, value, configs in rows:
        if min_insync_replicas is not None:
            configs = {**configs, "min.insync.replicas": str(min_insync_replicas)}
        specs[logical] = TopicSpec(logical, f"{prefix}{logical.value}", key, value, partitions, configs)
    return specs


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, expected: dict[str, int], timeout_s: float = 15.0
) -> None:
    """Wait until new topics have every partition with a leader, so callers can use them at once."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        meta = await admin.describe_topics(list(expected))
        ready = {
            t["topic"]
            for t in meta
            if t.get("error_code", 0) == 0
            and len(t["partitions"]) == expected.get(t["topic"], -1)
            and all(p["leader"] >= 0 for p in t["partitions"])
        }
        if ready >= set(expected):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"topics without leaders after {timeout_s}s: {sorted(set(expected) - ready)}")
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class TopicDrift:
    """A difference between the declared and the actual state of a topic."""

    topic: str
    setting: str
    declared: str
    actual: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.setting} is {self.actual!r}, declared {self.declared!r}"


async def ensure_topics(
    admin: AIOKafkaAdminClient,
    specs: Iterable[TopicSpec],
    *,
    replication_factor: int = 1,
) -> tuple[list[str], list[TopicDrift]]:
    """Create the topics that are missing; report drift in those that exist. Safe to run any number of times.

    Returns (created topic names, drift). Drift is reported, never silently "fixed": changing a
    production topic's retention or partitions is an operator's decision.
    """
    specs = list(specs)
    existing = set(await admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    created: list[str] = []
    if missing:
        try:
            result = await admin.create_topics([s.new_topic(replication_factor) for s in missing])
            for name, code, *_ in getattr(result, "topic_errors", []):
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise RuntimeError(f"could not create topic {name}: error code {code}")
        except TopicAlreadyExistsError:
            pass  # created concurrently by another process
        created = [s.name for s in missing]
        await _wait_for_leaders(admin, {s.name: s.partitions for s in missing})
    drift: list[TopicDrift] = []
    present = [s for s in specs if s.name not in created]
    if present:
        meta = await admin.describe_topics([s.name for s in present])
        partitions = {t["topic"]: len(t["partitions"]) for t in meta}
        resources = [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in present]
        actual_configs: dict[str, dict[str, str]] = {}
        for response in await admin.describe_configs(resources):
            for resource in response.resources:
                name, entries = resource[3], resource[4]
                actual_configs[name] = {e[0]: e[1] for e in entries}
        for s in present:
            if partitions.get(s.name, s.partitions) != s.partitions:
                drift.append(TopicDrift(s.name, "partitions", str(s.partitions), str(partitions[s.name])))
            actual = actual_configs.get(s.name, {})
            for key, value in s.configs.items():
                if actual.get(key) != value:
                    drift.append(TopicDrift(s.name, key, value, str(actual.get(key))))
    return created, drift
