"""What a replica decides when partitions are revoked and assigned (no broker: the callbacks are called
directly, as aiokafka calls them): cached CRM state and the rate-limit share follow ownership."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition

from shopbotly.common.config import parse_config
from shopbotly.common.events import CommandOp, CrmCommand
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic
from shopbotly.crm_writer.clients import HttpClients
from shopbotly.crm_writer.connectors.base import ContactState
from shopbotly.crm_writer.connectors.hubspot import HubSpotConnector
from shopbotly.crm_writer.domain import Envelope
from shopbotly.crm_writer.engine import Writer, _Partition
from shopbotly.crm_writer.lanes import PartitionLanes
from shopbotly.testkit.crm_writer import settings_for

pytestmark = pytest.mark.unit


class _CaughtUpLedger:
    async def caught_up(self, *, timeout_s: float) -> None:
        return None


def _writer(monkeypatch: pytest.MonkeyPatch) -> tuple[Writer, HubSpotConnector, str]:
    monkeypatch.setenv("SB_RB_TOKEN", "t")
    config = parse_config(
        {
            "tenants": {
                "t1": {
                    "connections": {
                        "hs": {
                            "kind": "hubspot",
                            "base_url": "https://hubspot.test",
                            "auth": {"kind": "bearer", "token": {"env": "SB_RB_TOKEN"}},
                        }
                    }
                }
            }
        }
    )
    kafka = KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="rb.", partitions=3)
    writer = Writer(settings_for(kafka), config)
    writer._ledger = _CaughtUpLedger()  # type: ignore[assignment]
    writer._clients = HttpClients(
        limits=httpx.Limits(), transport=httpx.MockTransport(lambda r: httpx.Response(500))
    )
    writer._router.clients = writer._clients
    cmd = CrmCommand(
        command_id="c1",
        tenant="t1",
        connection="hs",
        identity="a@example.com",
        op=CommandOp.ADD_TAGS,
        causation_event_id="e1",
        rule_id="r",
        mapping_version="1",
        trace_id="t",
        received_at=None,
        tags=["x"],
    )
    route = writer._router.route(cmd)
    assert isinstance(route.connector, HubSpotConnector)
    return writer, route.connector, kafka.topic(Topic.CRM_COMMANDS)


async def test_a_partition_lost_and_regained_is_read_again_and_its_share_follows_ownership(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer, connector, topic = _writer(monkeypatch)
    tps = {TopicPartition(topic, p) for p in range(3)}
    await writer._on_assigned(tps)
    assert writer.share == 1.0
    connector.cache.put("a@example.com", ContactState("1", {"shopbotly_tags": "x"}, partition=0, read=True))

    # Thrown out and given the same partitions back (another replica wrote them in between): aiokafka
    # calls revoked, then assigned with the same set.
    await writer._on_revoked(tps)
    assert writer.share == 0.0 and writer.owned_partitions == set()
    assert connector.runtime.limit.share == pytest.approx(1e-6)
    assert connector.cache.get("a@example.com") is None  # the next tag merge starts from a fresh read

    connector.cache.put("a@example.com", ContactState("1", {}, partition=0, read=True))  # a late put
    await writer._on_assigned(tps)
    assert connector.cache.get("a@example.com") is None  # gained again: dropped once more
    assert writer.share == 1.0 and connector.runtime.limit.share == 1.0
    assert writer._clients is not None
    await writer._clients.aclose()


async def test_keeping_some_partitions_keeps_their_cache_and_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer, connector, topic = _writer(monkeypatch)
    await writer._on_assigned({TopicPartition(topic, p) for p in range(3)})
    connector.cache.put("kept@example.com", ContactState("1", {}, partition=0, read=True))
    connector.cache.put("moved@example.com", ContactState("2", {}, partition=2, read=True))
    await writer._on_revoked({TopicPartition(topic, 2)})
    assert writer.owned_partitions == {0, 1}
    assert writer.share == pytest.approx(2 / 3)
    assert connector.cache.get("kept@example.com") is not None
    assert connector.cache.get("moved@example.com") is None
    assert writer._clients is not None
    await writer._clients.aclose()


async def test_shares_of_three_replicas_never_add_up_to_more_than_the_whole_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """6 partitions over three writers, split 4/1/1, then 3/2/1 (a partition moves), then 5/1 (one leaves).
    aiokafka's eager protocol revokes before it assigns; the shares are checked after every callback."""
    writers = [_writer(monkeypatch) for _ in range(3)]
    topic = writers[0][2]
    for writer, _, _ in writers:
        writer._total_partitions = 6  # what the consumer's metadata says of crm-commands
    owned: list[set[TopicPartition]] = [set(), set(), set()]

    def total() -> float:
        limits = [connector.runtime.limit.share for _, connector, _ in writers]
        return sum(s for s in limits if s > 1e-5)  # a replica without partitions keeps 1e-6 (routing.py)

    async def rebalance(split: list[list[int]]) -> None:
        for i, (writer, _, _) in enumerate(writers):
            if owned[i]:
                await writer._on_revoked(owned[i])
                owned[i] = set()
                assert total() <= 1.0 + 1e-9
        for i, (writer, _, _) in enumerate(writers):
            mine = {TopicPartition(topic, p) for p in split[i]}
            if mine:
                await writer._on_assigned(mine)
                owned[i] = mine
            assert total() <= 1.0 + 1e-9

    await rebalance([[0, 1, 2, 3], [4], [5]])
    assert [w.share for w, _, _ in writers] == pytest.approx([4 / 6, 1 / 6, 1 / 6])
    await rebalance([[0, 1, 2], [3, 4], [5]])
    assert [w.share for w, _, _ in writers] == pytest.approx([3 / 6, 2 / 6, 1 / 6])
    await rebalance([[0, 1, 2, 3, 5], [4], []])
    assert [w.share for w, _, _ in writers] == pytest.approx([5 / 6, 1 / 6, 0.0])
    assert total() == pytest.approx(1.0)
    for writer, _, _ in writers:
        assert writer._clients is not None
        await writer._clients.aclose()


async def test_a_draining_partition_stops_on_a_write_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Revoked while an identity's writes are under way: the write in flight completes, the next ones are
    not started (left unfinished for the next owner) rather than cut off by the grace's cancel mid-request."""
    writer, connector, topic = _writer(monkeypatch)
    writer._ledger = _NoLedger()  # type: ignore[assignment]
    applied: list[list[str]] = []

    class _Outcomes:
        async def applied(self, write: Any, members: Any, delivery: Any) -> None:
            applied.append([c.command_id for c in write.commands])

    writer._outcomes = _Outcomes()  # type: ignore[assignment]
    part = _Partition(TopicPartition(topic, 0), PartitionLanes(max_active=4, max_take=10, max_queued=10))
    sent: list[str] = []

    async def apply(write: Any, *, partition: int) -> dict[str, str]:
        sent.append(write.commands[0].command_id)
        part.closing = True  # the revoke arrives while the first write is in flight
        return {"contact": "1"}

    monkeypatch.setattr(connector, "apply", apply)
    # Tags, a note, tags: three writes (only neighbours of one kind merge).
    ops = [CommandOp.ADD_TAGS, CommandOp.ADD_NOTE, CommandOp.ADD_TAGS]
    envs = [_envelope(topic, offset, op) for offset, op in enumerate(ops)]
    for env in envs:  # fetched and queued, as the consumer loop does
        part.tracker.add(env.offset)
        assert part.lanes.admit(env, now_ms=0)
    assert part.lanes.take(lambda label: False) is not None
    finished: set[int] = set()
    left = await writer._process(part, envs, finished)
    assert sent == ["c0"] and applied == [["c0"]]
    assert finished == {0} and [e.offset for e in left] == [1, 2]


class _NoLedger:
    async def get(self, command_id: str) -> None:
        return None


def _envelope(topic: str, offset: int, op: CommandOp) -> Envelope:
    extra: dict[str, Any] = {"tags": ["x"]} if op is CommandOp.ADD_TAGS else {"body": "hello"}
    cmd = CrmCommand(
        command_id=f"c{offset}",
        tenant="t1",
        connection="hs",
        identity="a@example.com",
        op=op,
        causation_event_id=f"e{offset}",
        rule_id="r",
        mapping_version="1",
        **extra,
    )
    return Envelope(topic, 0, offset, cmd.key(), cmd.to_json(), (), None, cmd)
