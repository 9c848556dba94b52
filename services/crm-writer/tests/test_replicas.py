"""Several crm-writer replicas as real processes, through rebalances, against the CRM emulator.

Regression tests for what an outside multi-replica chaos run found: a replica thrown out of the group and
given the same partitions back wrote from its cached copy of contacts and removed the tags (and reverted
the properties) another replica had written meanwhile; and after a SIGKILL, the survivors missed the
rebalance deadline while draining, so two of them owned every partition at once, each with a full share
of the rate limit, and HubSpot answered 429.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.partitioner import DefaultPartitioner

from shopbotly.common.events import CommandOp, CrmCommand
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic
from shopbotly.testkit.crm_writer import (
    TopicReader,
    command_record,
    count_results,
    crm_command,
    produce,
    results_of,
    sequential_model,
    writer_outputs,
)

pytestmark = pytest.mark.fault

TOKEN_ENV = {
    "SB_REPLICAS_HS_TOKEN": "emulator-hubspot-token",
    "SB_REPLICAS_BOT_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}
ASSIGNED = "shopbotly_crm_writer_assigned_partitions"
ASSIGNMENTS = "shopbotly_crm_writer_partition_assignments_total"


def _config(
    tmp_path: Path, base_url: str, *, requests: int, per_seconds: float, bot_url: str | None = None
) -> Path:
    path = tmp_path / "shopbotly.yaml"
    connection = {
        "kind": "hubspot",
        "base_url": base_url,
        "auth": {"kind": "bearer", "token": {"env": "SB_REPLICAS_HS_TOKEN"}},
        "rate_limit": {"requests": requests, "per_seconds": per_seconds},
    }
    tenant: dict[str, Any] = {"connections": {"hs": connection}}
    if bot_url is not None:
        # A hung write (30 s timeout) outlasts the revoke grace; whoever owns it next delivers it.
        tenant["connections"]["bot"] = {"kind": "bot_webhook", "timeout_s": 30, "max_attempts": 5}
        tenant["bot_webhook"] = {"url": bot_url, "secret": {"env": "SB_REPLICAS_BOT_SECRET"}}
    path.write_text(yaml.safe_dump({"tenants": {"t1": tenant}}))
    return path


def _command(tag: str, who: str, op: CommandOp, **kw: Any) -> CrmCommand:
    return crm_command(
        tag,
        op,
        who,
        command_id=f"cmd_{tag}_{who}",
        tenant="t1",
        connection="hs",
        causation_event_id=f"evt_{tag}_{who}",
        rule_id="replicas",
        trace_id=f"trace_{tag}",
        received_at=None,
        **kw,
    )


async def _until(check: Callable[[], Awaitable[bool]], *, timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: object = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            if await check():
                return
        except Exception as exc:  # a replica may be between processes or not yet serving its metrics
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not reached after {timeout_s:g} s (last error: {last!r})")


def _check_state(state: dict[str, Any], commands: list[CrmCommand]) -> tuple[int, int]:
    """(customers with a tag lost, customers with a property reverted) against sequential application."""
    records = state["records"]["hubspot"]
    lost_tags = reverted = 0
    for who, expected in sequential_model(commands).items():
        props = records[who]["properties"]
        tags = set((props.get("shopbotly_tags") or "").split(";")) - {""}
        lost_tags += not set(expected.tags) <= tags
        reverted += any(props.get(k) != v for k, v in expected.properties.items())
    return lost_tags, reverted


def _three_rounds(people: list[str]) -> list[list[CrmCommand]]:
    """r1 sets both names and tag r1; r2 changes only the last name, adds r2; r3 the first name, adds r3."""
    r1 = {"firstname": "F1", "lastname": "L1"}
    return [
        [_command("r1", p, CommandOp.UPSERT_CONTACT, fields=r1, tags=["r1"]) for p in people],
        [_command("r2", p, CommandOp.UPSERT_CONTACT, fields={"lastname": "L2"}, tags=["r2"]) for p in people],
        [
            _command("r3", p, CommandOp.UPSERT_CONTACT, fields={"firstname": "F3"}, tags=["r3"])
            for p in people
        ],
    ]


def _on_partition(prefix: str, partition: int, count: int, *, connection: str = "hs") -> list[str]:
    """`count` e-mails whose command key (t1:<connection>:<email>) the producer puts on `partition`."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        email = f"{prefix}{i:04d}@example.com"
        if DefaultPartitioner()(f"t1:{connection}:{email}".encode(), [0, 1, 2], [0, 1, 2]) == partition:
            out.append(email)
        i += 1
    return out


class _HangOnce:
    """A bot endpoint whose first request hangs (a write that cannot finish within the revoke grace); every
    later one is answered 204 at once."""

    def __init__(self) -> None:
        self.requests = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> _HangOnce:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.requests += 1
                if self.requests == 1:
                    await asyncio.sleep(60)
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_a_partition_that_moves_away_and_back_keeps_what_the_other_replica_wrote(
    kafka_settings: KafkaSettings, emulator: Any, tmp_path: Path, writer_process: Any
) -> None:
    """(a) Replicas A and B own partitions {0, 2} and {1} (client ids make round-robin deterministic), and A
    has read and cached its customers. A third replica joins while A waits on a write that hangs, so A
    drains for its full revoke grace. If the group does not wait for A, B takes partition 0 meanwhile and
    adds a tag and a property to its customers; A then gets partition 0 back. A writes another tag to
    them: nothing B wrote may be lost, so A must not merge from what it cached before the gap."""
    await emulator.faults(systems=["hubspot"], rate_limit={"max_requests": 1000, "interval_ms": 1000})
    people = _on_partition("moving", 0, 30) + _on_partition("moving", 2, 30)
    rounds = _three_rounds(people)
    async with (
        _HangOnce() as bot,
        TopicReader(kafka_settings, kafka_settings.topic(Topic.CRM_RESULTS)) as results,
    ):
        config = _config(
            tmp_path,
            emulator.base_url,
            requests=1000,
            per_seconds=1,
            bot_url=f"http://127.0.0.1:{bot.port}/hook",
        )
        a = await writer_process(config, name="a", SHOPBOTLY_KAFKA_CLIENT_ID="a", **TOKEN_ENV)
        b = await writer_process(config, name="b", SHOPBOTLY_KAFKA_CLIENT_ID="b", **TOKEN_ENV)
        await _until(
            lambda: _all(_metric_is(a, ASSIGNED, 2), _metric_is(b, ASSIGNED, 1)),
            timeout_s=40,
            what="A owns 2 partitions and B 1",
        )
        await produce(kafka_settings, [command_record(c) for c in rounds[0]])
        await results.wait_for(count_results(60), timeout_s=60)  # A has read and cached its customers

        stuck = _command(
            "hang", _on_partition("bot", 0, 1, connection="bot")[0], CommandOp.NOTIFY_BOT, body="hi"
        )
        await produce(kafka_settings, [command_record(stuck.model_copy(update={"connection": "bot"}))])
        await _until(lambda: _is(bot.requests >= 1), timeout_s=30, what="A is stuck on the bot write")
        c = await writer_process(config, name="c", SHOPBOTLY_KAFKA_CLIENT_ID="c", **TOKEN_ENV)
        # Once the group has placed C, whoever owns partition 0 now writes round 2.
        await _until(lambda: _metric_above(c, ASSIGNED, 0), timeout_s=60, what="C owns a partition")
        await produce(kafka_settings, [command_record(x) for x in rounds[1]])
        await results.wait_for(count_results(121), timeout_s=90)  # r2 for everyone, and the bot note
        await _until(
            lambda: _all(*(_metric_is(r, ASSIGNED, 1) for r in (a, b, c))),
            timeout_s=60,
            what="A, B and C own one partition each",
        )
        await produce(kafka_settings, [command_record(x) for x in rounds[2]])
        await results.wait_for(count_results(181), timeout_s=60)

    outcome = results_of(results)
    assert {r.outcome.value for r in outcome.values()} <= {"applied", "duplicate"}
    lost_tags, reverted = _check_state(await emulator.state(), [c for r in rounds for c in r])
    print(f"\npartition away and back: {lost_tags} customers lost a tag, {reverted} had a property reverted")
    assert (lost_tags, reverted) == (0, 0)


async def test_a_frozen_replica_thrown_out_of_the_group_keeps_what_the_other_replica_wrote(
    kafka_settings: KafkaSettings, emulator: Any, tmp_path: Path, writer_process: Any
) -> None:
    """Replica A is frozen (SIGSTOP) past its session timeout, B takes A's partitions and adds tags and a
    property to A's customers, A comes back, learns it was fenced, and is given the same partitions again;
    then more tags: nothing B wrote is lost, also from what A writes before it learns it was fenced."""
    await emulator.faults(systems=["hubspot"], rate_limit={"max_requests": 1000, "interval_ms": 1000})
    config = _config(tmp_path, emulator.base_url, requests=1000, per_seconds=1)
    people = [f"frozen{i:03d}@example.com" for i in range(60)]
    rounds = _three_rounds(people)
    async with TopicReader(kafka_settings, kafka_settings.topic(Topic.CRM_RESULTS)) as results:
        a = await writer_process(config, name="a", SHOPBOTLY_KAFKA_CLIENT_ID="a", **TOKEN_ENV)
        await _until(lambda: _metric_is(a, ASSIGNED, 3), timeout_s=30, what="A owns all 3 partitions")
        await produce(kafka_settings, [command_record(c) for c in rounds[0]])
        await results.wait_for(count_results(60), timeout_s=60)
        b = await writer_process(config, name="b", SHOPBOTLY_KAFKA_CLIENT_ID="b", **TOKEN_ENV)
        await _until(
            lambda: _all(_metric_is(a, ASSIGNED, 2), _metric_is(b, ASSIGNED, 1)),
            timeout_s=40,
            what="A owns 2 partitions and B 1",
        )
        a_assignments = await a.metric(ASSIGNMENTS)
        a.signal(signal.SIGSTOP)  # no heartbeat: the group throws A out after its session timeout
        await _until(lambda: _metric_is(b, ASSIGNED, 3), timeout_s=40, what="B took A's partitions")
        await produce(kafka_settings, [command_record(c) for c in rounds[1]])
        await results.wait_for(count_results(120), timeout_s=60)
        a.signal(signal.SIGCONT)  # A writes what it fetched until it learns it was fenced, then rejoins
        await _until(
            lambda: _all(
                _metric_is(b, ASSIGNED, 1),
                _metric_is(a, ASSIGNED, 2),
                _metric_above(a, ASSIGNMENTS, a_assignments),
            ),
            timeout_s=60,
            what="A has its partitions back",
        )
        await produce(kafka_settings, [command_record(c) for c in rounds[2]])
        await results.wait_for(count_results(180), timeout_s=60)
        fenced = await a.metric("shopbotly_crm_writer_fenced_total")

    lost_tags, reverted = _check_state(await emulator.state(), [c for r in rounds for c in r])
    print(f"\nfrozen replica: {lost_tags} lost a tag, {reverted} had a property reverted, fenced {fenced}")
    assert (lost_tags, reverted) == (0, 0)
    assert fenced == 1


async def test_sigkill_of_one_of_three_replicas_keeps_the_rate_limit_and_every_write(
    kafka_settings: KafkaSettings, emulator: Any, tmp_path: Path, writer_process: Any
) -> None:
    """(b) Three replicas share a connection limited to 50 requests per rolling 10 s (the CRM's own limit),
    with more work queued than the limit lets through; one is SIGKILLed. The survivors drain and rejoin
    within the rebalance deadline, so no two own a partition at once: no 429, and nothing lost or reverted."""
    limit = 50
    await emulator.faults(systems=["hubspot"], rate_limit={"max_requests": limit, "interval_ms": 10_000})
    config = _config(tmp_path, emulator.base_url, requests=limit, per_seconds=10)
    people = [f"killed{i:03d}@example.com" for i in range(150)]
    commands: list[CrmCommand] = []
    names = ("firstname", "lastname")
    for n in range(3):
        commands += [
            _command(f"c{n}", p, CommandOp.UPSERT_CONTACT, fields={names[n % 2]: f"v{n}"}, tags=[f"t{n}"])
            for p in people
        ]
        # Each note is an upsert (batched) plus an association request of its own: the limit binds.
        commands += [_command(f"n{n}", p, CommandOp.ADD_NOTE, body=f"note {n} of {p}") for p in people[:60]]
    await produce(kafka_settings, [command_record(c) for c in commands])
    async with writer_outputs(kafka_settings) as (results, dlq):
        replicas = await asyncio.gather(
            *(writer_process(config, name=n, SHOPBOTLY_KAFKA_CLIENT_ID=n, **TOKEN_ENV) for n in "abc")
        )
        await _until(
            lambda: _all(*(_metric_is(r, ASSIGNED, 1) for r in replicas)),
            timeout_s=60,
            what="each of the three replicas owns one partition",
        )
        await results.wait_for(count_results(len(commands) // 4), timeout_s=120)
        replicas[2].signal(signal.SIGKILL)
        await replicas[2].proc.wait()
        await results.wait_for(count_results(len(commands)), timeout_s=300)
        fenced = [await r.metric("shopbotly_crm_writer_fenced_total") for r in replicas[:2]]
    state = await emulator.state()
    outcome = results_of(results)
    lost_tags, reverted = _check_state(state, commands)
    counters = state["counters"]
    throttled = counters["rate_limited"]
    peak = counters["rate_window_peak"]["hubspot"]
    print(
        f"\nSIGKILL 1 of 3 writers, limit {limit}/10 s: {throttled} x 429, peak {peak} requests in a rolling "
        f"10 s, {lost_tags} customers lost a tag, {reverted} had a property reverted, fenced {fenced}"
    )
    assert {r.outcome.value for r in outcome.values()} <= {"applied", "duplicate"}
    assert dlq.records == []
    assert throttled == 0
    assert peak <= limit
    assert (lost_tags, reverted) == (0, 0)
    notes = sum(len(r.get("notes", [])) for r in state["records"]["hubspot"].values())
    assert notes == 180  # every note once: a repeat after the kill upserts the same note


async def _metric_is(writer: Any, name: str, value: float) -> bool:
    return bool(await writer.metric(name) == value)


async def _metric_above(writer: Any, name: str, value: float | None) -> bool:
    current = await writer.metric(name)
    return current is not None and current > (value or 0)


async def _is(value: bool) -> bool:
    return value


async def _all(*checks: Awaitable[bool]) -> bool:
    return all(await asyncio.gather(*checks))
