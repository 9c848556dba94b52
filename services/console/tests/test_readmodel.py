"""The read model: joins across topics in any arrival order, outcomes, search, tenant scope, retention."""

from __future__ import annotations

import pytest

from shopbotly.common.events import CommandOp, CommandOutcome, CrmCommand, RawEvent
from shopbotly.console.readmodel import EventQuery, Outcome, ReadModel, Record, TopicRole
from shopbotly.testkit.console import NOW, command, dead_letter_headers_of, headers_of, raw_event, result

pytestmark = pytest.mark.unit

RAW, CMD, RES, RAW_DLQ, CMD_DLQ = "raw", "cmd", "res", "raw.dlq", "cmd.dlq"
ROLES = {
    RAW: TopicRole.RAW_EVENTS,
    CMD: TopicRole.COMMANDS,
    RES: TopicRole.RESULTS,
    RAW_DLQ: TopicRole.RAW_EVENTS_DLQ,
    CMD_DLQ: TopicRole.COMMANDS_DLQ,
}
T0 = int(NOW.timestamp() * 1000)


class Log:
    """Appends records to pretend topics (one partition each) with increasing offsets."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}

    def record(self, topic: str, value: bytes, headers: list[tuple[str, bytes]], ts: int = T0) -> Record:
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        return Record(topic, 0, offset, ts, b"k", value, tuple(headers))

    def event(self, event: RawEvent, ts: int = T0) -> Record:
        return self.record(RAW, event.to_json(), headers_of(event.id, event.tenant, RawEvent.SCHEMA), ts)

    def command(self, cmd: CrmCommand, extra: list[tuple[str, bytes]] | None = None) -> Record:
        headers = [*headers_of(cmd.causation_event_id, cmd.tenant, CrmCommand.SCHEMA), *(extra or [])]
        return self.record(CMD, cmd.to_json(), headers)


def model(**kwargs: int) -> ReadModel:
    return ReadModel(ROLES, **kwargs)  # type: ignore[arg-type]


def test_an_event_joins_its_commands_results_and_dead_letters_in_any_order() -> None:
    log = Log()
    event = raw_event("e1", "jane@example.com")
    ok, bad = command(event, 0), command(event, 1, op=CommandOp.NOTIFY_BOT)
    records = [
        log.record(RES, result(ok, CommandOutcome.APPLIED, crm_ids={"contact": "101"}).to_json(), []),
        log.record(CMD_DLQ, bad.to_json(), dead_letter_headers_of(bad, CMD)),
        log.command(ok),
        log.command(bad),
        log.event(event),  # the raw event read last: joins wait for it
    ]
    m = model()
    m.apply(records, now_ms=T0)
    found = m.event("demo", "e1")
    assert found is not None
    commands = m.commands_of(found)
    assert [c.command_id for c in commands] == ["e1:r0", "e1:r1"]
    assert commands[0].outcome is Outcome.APPLIED and commands[0].results[0].crm_ids == {"contact": "101"}
    assert (
        commands[1].dead_letters == [(CMD_DLQ, 0, 0)] and found.dead_letters == []
    )  # the command's, not the event's
    assert m.outcome(found) is Outcome.FAILED


def test_a_redriven_then_applied_command_turns_the_event_applied() -> None:
    log = Log()
    event = raw_event("e1", "jane@example.com")
    cmd = command(event)
    m = model()
    m.apply(
        [
            log.event(event),
            log.command(cmd),
            log.record(RES, result(cmd, CommandOutcome.DEAD_LETTERED, error_class="permanent").to_json(), []),
            log.record(CMD_DLQ, cmd.to_json(), dead_letter_headers_of(cmd, CMD)),
        ],
        now_ms=T0,
    )
    letter = m.dead_letters[(CMD_DLQ, 0, 0)]
    assert m.letter_state(letter) == "open"
    found = m.event("demo", "e1")
    assert found is not None and m.outcome(found) is Outcome.FAILED
    m.apply([log.command(cmd, [("redriven_from", f"{CMD_DLQ}/0/0".encode())])], now_ms=T0)
    assert m.letter_state(letter) == "redriven"
    assert m.outcome(found) is Outcome.PENDING
    m.apply([log.record(RES, result(cmd, CommandOutcome.APPLIED).to_json(), [])], now_ms=T0)
    assert m.letter_state(letter) == "applied"
    assert m.outcome(found) is Outcome.APPLIED
    assert len(m.commands_of(found)) == 1  # the redriven copy is the same command, not a second one


def test_search_by_customer_email_outcome_time_and_tenant_scope() -> None:
    log = Log()
    jane, bob = raw_event("e1", "jane@example.com"), raw_event("e2", "bob@example.com", type="order.paid")
    other = raw_event("e3", "jane@example.com", tenant="acme")
    m = model()
    m.apply([log.event(jane, T0), log.event(bob, T0 + 1000), log.event(other, T0 + 2000)], now_ms=T0)
    assert [e.event_id for e in m.search(EventQuery(email="JANE@example.com"))] == ["e3", "e1"]
    assert [e.event_id for e in m.search(EventQuery(email="jane", tenants={"demo"}))] == ["e1"]
    assert [e.event_id for e in m.search(EventQuery(type="order"))] == ["e2"]
    assert [e.event_id for e in m.search(EventQuery(since_ms=T0 + 500, until_ms=T0 + 1500))] == ["e2"]
    assert [e.event_id for e in m.search(EventQuery(outcome=Outcome.RECEIVED, limit=1))] == ["e3"]
    m.apply([log.command(command(bob))], now_ms=T0)
    assert [e.event_id for e in m.search(EventQuery(outcome=Outcome.PENDING))] == ["e2"]
    assert m.letters(tenants={"acme"}) == []


def test_retention_drops_the_oldest_by_age_and_by_count() -> None:
    log = Log()
    m = model(max_events=100)
    m.max_age_ms = 60_000
    m.apply(
        [log.event(raw_event(f"e{i}", f"c{i}@example.com"), T0 + i * 1000) for i in range(150)], now_ms=T0
    )
    assert len(m.events) == 100 and m.event("demo", "e49") is None and m.event("demo", "e50") is not None
    m.prune(now_ms=T0 + 180_000)  # a 60 s window: e120 (at +120 s) and later stay
    assert min(e.timestamp_ms for e in m.events.values()) == T0 + 120_000


def test_records_that_are_not_json_or_not_the_contract_are_ignored() -> None:
    log = Log()
    m = model()
    m.apply([log.record(RAW, b"not json", []), log.record(CMD, b'{"x": 1}', [])], now_ms=T0)
    assert not m.events and not m.commands
