"""crm-writer with the real Kafka broker and an in-memory HubSpot: order, restarts, outages, poison, 429s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from shopbotly.common.config import ShopbotlyConfig, parse_config
from shopbotly.common.dlq import strip_error_headers
from shopbotly.common.events import CommandOp, CommandResult, CrmCommand, decode_headers, message_headers
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic
from shopbotly.crm_writer import metrics
from shopbotly.crm_writer.circuit import CircuitState
from shopbotly.crm_writer.engine import Writer
from shopbotly.crm_writer.settings import Settings
from shopbotly.testkit.crm_writer import (
    BotReceiver,
    FakeHubSpot,
    RoutingTransport,
    TopicReader,
    actual_state,
    command_record,
    count_results,
    crm_command,
    max_in_window,
    mixed_commands,
    produce,
    results_of,
    running,
    sequential_model,
    settings_for,
    writer_outputs,
)

pytestmark = pytest.mark.integration

BOT_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_IT_HS_TOKEN", "hs-token")
    monkeypatch.setenv("SB_IT_BOT_SECRET", BOT_SECRET)


def config(*, rate: tuple[int, float] = (2000, 1.0), bot_attempts: int = 3) -> ShopbotlyConfig:
    return parse_config(
        {
            "tenants": {
                "t1": {
                    "connections": {
                        "hs": {
                            "kind": "hubspot",
                            "base_url": "https://hubspot.test",
                            "auth": {"kind": "bearer", "token": {"env": "SB_IT_HS_TOKEN"}},
                            "rate_limit": {"requests": rate[0], "per_seconds": rate[1]},
                            "max_attempts": 4,
                        },
                        "bot": {"kind": "bot_webhook", "max_attempts": bot_attempts},
                    },
                    "bot_webhook": {"url": "https://bot.test/hook", "secret": {"env": "SB_IT_BOT_SECRET"}},
                }
            }
        }
    )


async def test_many_commands_end_in_the_same_state_as_sequential_application(
    kafka_settings: KafkaSettings,
) -> None:
    commands = mixed_commands(2000, 100, seed=1)
    fake = FakeHubSpot(limit=None)
    writer = Writer(
        settings_for(kafka_settings), config(), transport=RoutingTransport({"hubspot.test": fake.transport})
    )
    await produce(kafka_settings, [command_record(c) for c in commands])
    started = time.monotonic()
    async with writer_outputs(kafka_settings, writer) as (results, dlq):
        await results.wait_for(count_results(len(commands)), timeout_s=60)
        elapsed = time.monotonic() - started
    outcome = results_of(results)
    assert {r.outcome.value for r in outcome.values()} == {"applied"} and len(outcome) == 2000
    assert dlq.records == []
    assert actual_state(fake) == sequential_model(commands)  # fields, tags, and notes/tickets in order
    assert fake.creates == 100  # one create per identity, every later write an update
    tickets = [outcome[c.command_id] for c in commands if c.op is CommandOp.CREATE_TICKET]
    assert tickets and all(r.crm_ids.get("ticket") for r in tickets)
    merged = sum(1 for r in outcome.values() if r.coalesced_with)
    assert merged > 0  # queued commands of one identity went out as one write
    print(
        f"\n2000 commands/100 identities: {elapsed:.1f}s, {fake.requests} HTTP requests, {merged} coalesced"
    )


async def test_restart_mid_run_loses_nothing_and_creates_nothing_twice(kafka_settings: KafkaSettings) -> None:
    commands = mixed_commands(2000, 100, seed=2)
    fake = FakeHubSpot(limit=None, latency_s=0.003)
    transport = RoutingTransport({"hubspot.test": fake.transport})
    s = settings_for(kafka_settings, commit_interval_s=0.5)
    await produce(kafka_settings, [command_record(c) for c in commands])
    async with writer_outputs(kafka_settings) as (results, dlq):
        first = Writer(s, config(), transport=transport)
        task = asyncio.create_task(first.run())
        await results.wait_for(count_results(700), timeout_s=60)
        task.cancel()  # abrupt: in-flight writes are abandoned, nothing more is committed
        await asyncio.gather(task, return_exceptions=True)
        cut = len(results_of(results))
        second = Writer(s, config(), transport=transport)
        async with running(second):
            await results.wait_for(count_results(len(commands)), timeout_s=60)
    outcome = results_of(results)
    assert 700 <= cut < 2000 and len(outcome) == 2000
    # Every command has an outcome; "duplicate" means the first writer applied it (the ledger says so)
    # but was killed before its own result was acknowledged.
    assert {r.outcome.value for r in outcome.values()} <= {"applied", "duplicate"}
    assert dlq.records == []
    expected, actual = sequential_model(commands), actual_state(fake)
    assert fake.creates == 100  # creates == identities
    assert {k: (v.properties, v.tags) for k, v in actual.items()} == {
        k: (v.properties, v.tags) for k, v in expected.items()
    }
    # Notes and tickets are upserted by their command id: none is lost, and one in flight at the moment of
    # the kill is applied again as an update of the record it created, never as a second record.
    for who, exp in expected.items():
        assert set(actual[who].notes) == set(exp.notes) and set(actual[who].tickets) == set(exp.tickets)
    repeats = sum(
        len(actual[w].notes) - len(e.notes) + len(actual[w].tickets) - len(e.tickets)
        for w, e in expected.items()
    )
    assert repeats == 0
    assert fake.engagement_creates == sum(len(e.notes) + len(e.tickets) for e in expected.values())
    duplicates = sum(
        1 for r in results.records if CommandResult.from_json(r.value).outcome.value == "duplicate"
    )
    print(
        f"\nrestart after {cut} results: {duplicates} ledger duplicates skipped, {repeats} repeated creates, "
        f"{fake.engagement_updates} note/ticket upserts repeated"
    )


async def test_a_slow_commit_holds_back_no_fetching(
    kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The periodic commit runs beside the consume loop: while the group coordinator has not answered a
    commit, commands produced meanwhile are fetched and applied all the same (issue 22: awaited in the loop,
    every commit held fetching back by its round trip)."""
    fake = FakeHubSpot(limit=None, latency_s=0.001)
    transport = RoutingTransport({"hubspot.test": fake.transport})
    writer = Writer(settings_for(kafka_settings), config(), transport=transport)
    first = mixed_commands(40, 10, seed=31, notes=False)
    second = mixed_commands(40, 10, seed=32, notes=False)
    async with (
        TopicReader(kafka_settings, kafka_settings.topic(Topic.CRM_RESULTS)) as results,
        running(writer),
    ):
        await produce(kafka_settings, [command_record(c) for c in first])
        await results.wait_for(count_results(40), timeout_s=60)
        consumer = writer._consumer
        assert consumer is not None
        commit = consumer.commit
        asked, answered = asyncio.Event(), asyncio.Event()

        async def late_commit(*args: Any, **kwargs: Any) -> None:
            asked.set()
            await answered.wait()  # the coordinator answers late
            await commit(*args, **kwargs)

        monkeypatch.setattr(consumer, "commit", late_commit)
        await asyncio.wait_for(asked.wait(), timeout=10)
        await produce(kafka_settings, [command_record(c) for c in second])
        await results.wait_for(count_results(80), timeout_s=30)
        answered.set()
        # Once the coordinator answers, the low watermark of everything is committed.
        async with asyncio.timeout(15):
            while sum([(await consumer.committed(tp)) or 0 for tp in consumer.assignment()]) < 80:
                await asyncio.sleep(0.1)
    assert {r.outcome.value for r in results_of(results).values()} == {"applied"}


async def test_crm_outage_opens_the_circuit_holds_its_lane_and_resumes_without_dead_letters(
    kafka_settings: KafkaSettings,
) -> None:
    commands = mixed_commands(600, 60, seed=3, notes=False)
    fake = FakeHubSpot(limit=None, latency_s=0.002)
    writer = Writer(
        settings_for(kafka_settings, max_in_flight_per_partition=4, max_coalesce=2),
        config(),
        transport=RoutingTransport({"hubspot.test": fake.transport}),
    )
    async with writer_outputs(kafka_settings, writer) as (results, dlq):
        await produce(kafka_settings, [command_record(c) for c in commands[:100]])
        await results.wait_for(count_results(100), timeout_s=30)
        fake.outage = True
        await produce(kafka_settings, [command_record(c) for c in commands[100:]])
        async with asyncio.timeout(15):
            while writer.circuit_state("t1:hs") is not CircuitState.OPEN:
                await asyncio.sleep(0.05)
        during = len(results_of(results))
        await asyncio.sleep(2.0)  # several probe periods: probes fail, nothing is given up
        assert len(results_of(results)) == during
        held, oldest = writer.held()["t1:hs"]
        assert held == 600 - during and oldest is not None and oldest > 1.0  # visible, with its age
        assert not writer.paused_partitions()  # the lane holds its commands; the partitions keep flowing
        fake.outage = False
        await results.wait_for(count_results(600), timeout_s=30)
        assert writer.held()["t1:hs"] == (0, None)
    assert dlq.records == []
    assert {r.outcome.value for r in results_of(results).values()} == {"applied"}
    assert actual_state(fake) == sequential_model(commands)


async def test_poison_commands_go_to_the_dlq_with_headers_and_the_rest_is_applied(
    kafka_settings: KafkaSettings,
) -> None:
    commands = mixed_commands(300, 30, seed=4)
    invalid_email = commands[0].model_copy(update={"command_id": "poison-email", "identity": "not-an-email"})
    unknown_conn = commands[1].model_copy(update={"command_id": "poison-conn", "connection": "nope"})
    bot_upsert = commands[2].model_copy(update={"command_id": "poison-bot-op", "connection": "bot"})
    garbage = (
        b"t1:hs:user0001@example.com",
        b"{not json",
        message_headers(event_id="evt-garbage", tenant="t1", trace_id=None, schema="x/1"),
    )
    records = [command_record(c) for c in commands[:150]]
    records += [
        command_record(invalid_email),
        garbage,
        command_record(unknown_conn),
        command_record(bot_upsert),
    ]
    records += [command_record(c) for c in commands[150:]]
    fake = FakeHubSpot(limit=None)
    writer = Writer(
        settings_for(kafka_settings), config(), transport=RoutingTransport({"hubspot.test": fake.transport})
    )
    await produce(kafka_settings, records)
    async with (
        TopicReader(kafka_settings, kafka_settings.topic(Topic.CRM_RESULTS)) as results,
        TopicReader(kafka_settings, kafka_settings.topic(Topic.CRM_COMMANDS_DLQ)) as dlq,
        TopicReader(kafka_settings, kafka_settings.topic(Topic.CRM_COMMANDS)) as sent,
        running(writer),
    ):
        await sent.wait_for(lambda r: len(r) == len(records), timeout_s=30)
        await results.wait_for(count_results(303), timeout_s=60)
        await dlq.wait_for(lambda r: len(r) >= 4, timeout_s=30)
    outcome = results_of(results)
    dead = {k for k, r in outcome.items() if r.outcome.value == "dead_lettered"}
    assert dead == {"poison-email", "poison-conn", "poison-bot-op"}
    assert "invalid" in (outcome["poison-email"].error_message or "")
    assert "no connection 'nope'" in (outcome["poison-conn"].error_message or "")
    assert actual_state(fake) == sequential_model(commands)  # the others are unaffected
    by_value = {r.value: r for r in dlq.records}
    assert set(by_value) == {
        invalid_email.to_json(),
        b"{not json",
        unknown_conn.to_json(),
        bot_upsert.to_json(),
    }
    letter = by_value[b"{not json"]
    h = decode_headers(letter.headers)
    assert letter.key == b"t1:hs:user0001@example.com" and h["event_id"] == "evt-garbage"  # a carbon copy
    assert h["error.class"] == "permanent" and "crm-command/1" in h["error.message"]
    assert (
        h["origin.topic"] == kafka_settings.topic(Topic.CRM_COMMANDS) and h["origin.service"] == "crm-writer"
    )
    original = [
        r
        for r in sent.records
        if (r.partition, r.offset) == (int(h["origin.partition"]), int(h["origin.offset"]))
    ]
    assert [r.value for r in original] == [b"{not json"]  # origin.* points at the original record
    email_letter = decode_headers(by_value[invalid_email.to_json()].headers)
    assert email_letter["error.attempts"] == "1" and email_letter["trace_id"] == commands[0].trace_id


async def test_a_429_storm_is_ridden_out_within_the_limit(kafka_settings: KafkaSettings) -> None:
    commands = [
        c.model_copy(update={"op": CommandOp.ADD_NOTE, "body": f"n{i}", "fields": {}, "tags": []})
        for i, c in enumerate(mixed_commands(70, 30, seed=5))
    ]
    fake = FakeHubSpot(limit=20, interval_s=2.0)
    writer = Writer(
        settings_for(kafka_settings),
        config(rate=(20, 2.0)),
        transport=RoutingTransport({"hubspot.test": fake.transport}),
    )
    async with writer_outputs(kafka_settings, writer) as (results, dlq):
        await produce(kafka_settings, [command_record(c) for c in commands[:10]])
        await results.wait_for(count_results(10), timeout_s=30)
        fake.storm_until = time.monotonic() + 2.5  # every request refused for 2.5 s, Retry-After: 1
        await produce(kafka_settings, [command_record(c) for c in commands[10:]])
        await results.wait_for(count_results(len(commands)), timeout_s=60)
    assert dlq.records == []
    assert {r.outcome.value for r in results_of(results).values()} == {"applied"}
    assert fake.throttled > 0  # the storm was felt...
    # ...but the writer never sent more than the limit in any rolling window, refused requests included,
    # so the CRM's own limit never had to refuse anything.
    assert max_in_window(fake.arrived_at, 2.0) <= 20
    assert fake.throttled_by_limit == 0
    assert actual_state(fake) == sequential_model(commands)
    print(f"\n429 storm: {fake.throttled} throttled answers of {fake.requests} requests")


async def test_bot_notifications_are_signed_retried_dead_lettered_and_redrivable(
    kafka_settings: KafkaSettings,
) -> None:
    bot = BotReceiver(BOT_SECRET)
    notes = [
        crm_command(
            i,
            CommandOp.NOTIFY_BOT,
            f"c{i % 4}@example.com",
            command_id=f"note_{i}",
            tenant="t1",
            connection="bot",
            fields={"ticket_id": f"T{i}", "seq": i},
            body=f"reply {i}",
            event_type="ticket.updated",
        )
        for i in range(23)
    ]
    writer = Writer(
        settings_for(kafka_settings, circuit_failure_threshold=50),
        config(bot_attempts=3),
        transport=RoutingTransport({"bot.test": bot.transport}),
    )
    async with writer_outputs(kafka_settings, writer) as (results, dlq):
        await produce(kafka_settings, [command_record(c) for c in notes[:20]])
        await results.wait_for(count_results(20), timeout_s=30)
        assert bot.rejected == 0 and sorted(bot.ids) == sorted(c.command_id for c in notes[:20])
        for who in {c.identity for c in notes[:20]}:  # one identity's notifications arrive in order
            seqs = [p["data"]["seq"] for p in bot.received if p["data"]["identity"] == who]
            assert seqs == sorted(seqs)
        bot.fail_with = 503  # the bot is down: retries, then the DLQ
        await produce(kafka_settings, [command_record(c) for c in notes[20:]])
        await dlq.wait_for(lambda r: len(r) >= 3, timeout_s=30)
        assert {decode_headers(r.headers)["error.attempts"] for r in dlq.records} == {"3"}
        bot.fail_with = None  # back up: redrive the dead letters into the flow
        await produce(kafka_settings, [(r.key, r.value, strip_error_headers(r.headers)) for r in dlq.records])
        await results.wait_for(
            lambda recs: (
                sum(1 for r in recs if CommandResult.from_json(r.value).outcome.value == "applied") >= 23
            ),
            timeout_s=30,
        )
    assert sorted(bot.ids) == sorted(c.command_id for c in notes) and bot.rejected == 0
    assert bot.received[-1]["type"] == "ticket.updated"
    assert orjson.loads(orjson.dumps(bot.received[0]))["data"]["body"].startswith("reply")


async def test_a_second_replica_takes_partitions_mid_run_and_the_limit_is_shared(
    kafka_settings: KafkaSettings,
) -> None:
    commands = mixed_commands(1500, 90, seed=6)
    fake = FakeHubSpot(limit=None, latency_s=0.002)
    transport = RoutingTransport({"hubspot.test": fake.transport})
    s = settings_for(kafka_settings)
    first, second = Writer(s, config(), transport=transport), Writer(s, config(), transport=transport)
    await produce(kafka_settings, [command_record(c) for c in commands])
    async with writer_outputs(kafka_settings, first) as (results, dlq):
        await results.wait_for(count_results(300), timeout_s=30)
        assert first.share == 1.0
        async with running(second):  # joins the group: a rebalance while the first is mid-run
            async with asyncio.timeout(30):
                while not (first.owned_partitions and second.owned_partitions):
                    await asyncio.sleep(0.05)
            assert first.owned_partitions | second.owned_partitions == {0, 1, 2}
            assert not first.owned_partitions & second.owned_partitions
            assert first.share + second.share == pytest.approx(1.0)  # together within one limit
            await results.wait_for(count_results(len(commands)), timeout_s=60)
    outcome = results_of(results)
    assert len(outcome) == 1500 and {r.outcome.value for r in outcome.values()} <= {"applied", "duplicate"}
    assert dlq.records == []
    assert actual_state(fake) == sequential_model(commands)  # revocation finished in-flight work: no repeats
    assert fake.creates == 90


def _notifications(n: int, identities: int) -> list[CrmCommand]:
    return [
        crm_command(
            i,
            CommandOp.NOTIFY_BOT,
            f"b{i % identities:03d}@example.com",
            command_id=f"bot_{i:04d}",
            tenant="t1",
            connection="bot",
            fields={"seq": i},
            body=f"status {i}",
            event_type="lead.qualified",
            causation_event_id=f"eb{i}",
        )
        for i in range(n)
    ]


async def test_a_down_bot_endpoint_holds_back_only_its_own_lane(kafka_settings: KafkaSettings) -> None:
    """The bot endpoint answers 503 for a while; every HubSpot write still lands meanwhile (fetching never
    pauses), the notifications wait in their lane (small lane buffers: most of them stay in Kafka and are
    fetched again), and once the endpoint is back each is delivered once, in order per identity, and
    nothing is dead-lettered."""
    notify = _notifications(120, 12)
    crm = mixed_commands(600, 120, seed=9, notes=False)
    fake = FakeHubSpot(limit=None, latency_s=0.002)
    bot = BotReceiver(BOT_SECRET, fail_with=503)
    writer = Writer(
        settings_for(kafka_settings, max_buffered_per_connection=10, max_in_flight_per_partition=8),
        config(),
        transport=RoutingTransport({"hubspot.test": fake.transport, "bot.test": bot.transport}),
    )
    refetches = metrics.REFETCHES._value.get()
    await produce(kafka_settings, [command_record(c) for c in [*notify[:60], *crm, *notify[60:]]])
    async with writer_outputs(kafka_settings, writer) as (results, dlq):
        ids = {c.command_id for c in crm}
        await results.wait_for(lambda rs: ids <= set(results_of(results)), timeout_s=30)
        assert writer.circuit_state("t1:bot") is not CircuitState.CLOSED
        assert not writer.paused_partitions()
        held, oldest = writer.held()["t1:bot"]
        assert held == 120 and oldest is not None
        assert not {c.command_id for c in notify} & set(results_of(results))
        bot.fail_with = None
        await results.wait_for(count_results(720), timeout_s=60)
    assert dlq.records == []
    assert metrics.REFETCHES._value.get() > refetches  # the lane dropped records and fetched them again
    assert sorted(bot.ids) == sorted(c.command_id for c in notify)  # each delivered once
    seqs: dict[str, list[int]] = {}
    for payload in bot.received:
        seqs.setdefault(payload["data"]["identity"], []).append(payload["data"]["seq"])
    assert all(s == sorted(s) for s in seqs.values())  # in order per identity
    assert actual_state(fake) == sequential_model(crm)


class _Broken(httpx.AsyncBaseTransport):
    """A peer whose requests fail with something that is not an HTTP answer nor a transport error: a bug."""

    def __init__(self) -> None:
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        raise RuntimeError("connector bug")


async def test_an_error_that_is_not_a_crm_answer_is_dead_lettered_and_holds_nothing(
    kafka_settings: KafkaSettings,
) -> None:
    """A bug in one connection's path (here: the transport raises RuntimeError) is tried a few times, then
    dead-lettered with its reason; the partition does not retry it for ever and other connections flow."""
    notify = _notifications(4, 2)
    crm = mixed_commands(100, 20, seed=10, notes=False)
    fake = FakeHubSpot(limit=None)
    broken = _Broken()
    writer = Writer(
        settings_for(kafka_settings),
        config(),
        transport=RoutingTransport({"hubspot.test": fake.transport, "bot.test": broken}),
    )
    await produce(kafka_settings, [command_record(c) for c in [*notify, *crm]])
    async with writer_outputs(kafka_settings, writer) as (results, dlq):
        await results.wait_for(count_results(104), timeout_s=60)
        await dlq.wait_for(lambda records: len(records) >= 4, timeout_s=10)
    outcome = results_of(results)
    assert {outcome[c.command_id].outcome.value for c in notify} == {"dead_lettered"}
    assert {outcome[c.command_id].outcome.value for c in crm} == {"applied"}
    headers = decode_headers(dlq.records[0].headers)
    assert headers["error.class"] == "permanent" and "RuntimeError: connector bug" in headers["error.message"]
    assert broken.calls <= 4 * 3  # tried a bounded number of times


async def test_after_a_long_outage_writes_resume_within_5_s_and_probes_stay_sparse(
    kafka_settings: KafkaSettings,
) -> None:
    """With the default circuit settings, a 25 s CRM outage is probed with single requests at most every
    few seconds (not a request storm, not an open period doubling to minutes), and writing resumes within
    5 s of the CRM's return."""
    defaults = Settings()
    commands = mixed_commands(200, 40, seed=12, notes=False)
    fake = FakeHubSpot(limit=None, latency_s=0.002)
    writer = Writer(
        settings_for(
            kafka_settings,
            circuit_open_s=defaults.circuit_open_s,
            circuit_max_open_s=defaults.circuit_max_open_s,
            circuit_failure_threshold=defaults.circuit_failure_threshold,
        ),
        config(),
        transport=RoutingTransport({"hubspot.test": fake.transport}),
    )
    async with (
        TopicReader(kafka_settings, kafka_settings.topic(Topic.CRM_RESULTS)) as results,
        running(writer),
    ):
        await produce(kafka_settings, [command_record(c) for c in commands[:100]])
        await results.wait_for(count_results(100), timeout_s=30)
        fake.outage = True
        await produce(kafka_settings, [command_record(c) for c in commands[100:]])
        async with asyncio.timeout(15):
            while writer.circuit_state("t1:hs") is CircuitState.CLOSED:
                await asyncio.sleep(0.05)
        before = fake.requests
        await asyncio.sleep(25)
        probes = fake.requests - before
        fake.outage = False
        back = time.monotonic()
        await results.wait_for(count_results(200), timeout_s=30)
        resumed_after = time.monotonic() - back
    print(f"\n25 s outage: {probes} probes; all written {resumed_after:.1f} s after the CRM came back")
    assert 3 <= probes <= 25 / defaults.circuit_max_open_s + 3
    assert resumed_after <= 5.0


async def test_a_replay_after_a_restart_applies_nothing_twice_and_reports_the_first_crm_ids(
    kafka_settings: KafkaSettings,
) -> None:
    """Commands applied by one writer are replayed (the same records again) to a new writer that rebuilt
    its ledger from the topic and keeps the CRM ids of only one id in memory: every repeat is a `duplicate`
    with the CRM ids of its first write (read back from the topic), and the CRM sees no request."""
    commands = mixed_commands(300, 30, seed=21)
    fake = FakeHubSpot(limit=None)
    transport = RoutingTransport({"hubspot.test": fake.transport})
    settings = settings_for(kafka_settings, ledger_recent_ids=1)

    def results_at_least(n: int) -> Callable[[list[Any]], bool]:
        return lambda records: len(records) >= n

    async with TopicReader(kafka_settings, kafka_settings.topic(Topic.CRM_RESULTS)) as results:
        await produce(kafka_settings, [command_record(c) for c in commands])
        async with running(Writer(settings, config(), transport=transport)):
            await results.wait_for(results_at_least(len(commands)), timeout_s=120)
        first = {r.command_id: r for r in map(CommandResult.from_json, (x.value for x in results.records))}
        assert {r.outcome.value for r in first.values()} == {"applied"}
        requests = fake.requests

        await produce(kafka_settings, [command_record(c) for c in commands])  # the replay
        replayed = Writer(settings, config(), transport=transport)
        async with running(replayed):
            await results.wait_for(results_at_least(2 * len(commands)), timeout_s=120)
        again = [CommandResult.from_json(x.value) for x in results.records[len(commands) :]]
    assert fake.requests == requests  # nothing written twice
    assert {r.outcome.value for r in again} == {"duplicate"}
    assert {r.command_id: r.crm_ids for r in again} == {c: r.crm_ids for c, r in first.items()}
    assert replayed._ledger is not None and replayed._ledger.reads > 0  # read back, not remembered
