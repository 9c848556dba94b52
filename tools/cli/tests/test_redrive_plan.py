"""Pure parts of replay and redrive: header rewriting, dead-letter selection and the redrive decisions."""

import orjson
import pytest

from shopbotly.cli._kafka_io import Record
from shopbotly.cli.dlq_cmd import Decision, Selection, plan_redrive, redrive_headers, select_dead_letters
from shopbotly.cli.replay_cmd import outgoing_for, replay_headers
from shopbotly.common.dlq import ERROR_HEADERS

pytestmark = pytest.mark.unit

DLQ = "p.crm-commands.dlq.v1"
COMMANDS = "p.crm-commands.v1"
RAW = "p.raw-events.v1"


def _dead(
    offset: int,
    *,
    partition: int = 0,
    error_class: str = "permanent",
    origin: str | None = COMMANDS,
    command_id: str | None = None,
    extra: tuple[tuple[str, bytes], ...] = (),
) -> Record:
    headers: list[tuple[str, bytes]] = [("event_id", b"e-%d" % offset), ("tenant", b"acme"), *extra]
    headers += [("error.class", error_class.encode()), ("error.message", b"boom"), ("error.attempts", b"3")]
    if origin is not None:
        headers += [("origin.topic", origin.encode()), ("origin.partition", b"1"), ("origin.offset", b"9")]
    value = orjson.dumps({"command_id": command_id}) if command_id else b'{"id": "x"}'
    return Record(DLQ, partition, offset, 1000 + offset, b"acme:crm:jane", value, tuple(headers))


def test_replay_headers_keep_the_originals_and_name_the_source_once() -> None:
    record = Record(
        RAW, 2, 41, 5, b"k", b"{}", (("event_id", b"e"), ("replayed_from", b"old/0/1"), ("tenant", b"a"))
    )
    assert replay_headers(record) == [
        ("event_id", b"e"),
        ("tenant", b"a"),
        ("replayed_from", b"p.raw-events.v1/2/41"),
    ]


def test_replay_keeps_the_partition_of_keyless_messages_only() -> None:
    keyed = Record(RAW, 2, 1, 5, b"k", b"{}")
    keyless = Record(RAW, 2, 1, 5, None, b"{}")
    assert outgoing_for(keyed, "t", [0, 1, 2]).partition is None  # the key decides, as for the services
    assert outgoing_for(keyless, "t", [0, 1, 2]).partition == 2
    assert outgoing_for(keyless, "t", [0, 1]).partition is None


def test_redrive_headers_drop_error_headers_and_earlier_redrive_marks() -> None:
    record = _dead(4, partition=2, extra=(("redriven_from", b"p.crm-commands.dlq.v1/0/0"),))
    headers = redrive_headers(record, DLQ)
    names = [k for k, _ in headers]
    assert not set(names) & set(ERROR_HEADERS)
    assert headers == [
        ("event_id", b"e-4"),
        ("tenant", b"acme"),
        ("redriven_from", b"p.crm-commands.dlq.v1/2/4"),
    ]


def test_selection_needs_an_explicit_choice() -> None:
    with pytest.raises(ValueError, match="--all"):
        Selection()


def test_selection_by_offsets_and_class_narrows_and_reports_missing_offsets() -> None:
    records = [_dead(0), _dead(1, error_class="retryable"), _dead(2), _dead(0, partition=1)]
    chosen, missing = select_dead_letters(records, Selection(everything=True))
    assert chosen == records and missing == []
    chosen, missing = select_dead_letters(records, Selection(error_class="retryable", everything=True))
    assert [(r.partition, r.offset) for r in chosen] == [(0, 1)]
    chosen, missing = select_dead_letters(records, Selection(offsets=((1, 0), (0, 2), (5, 5))))
    assert [(r.partition, r.offset) for r in chosen] == [(0, 2), (1, 0)]  # DLQ order, not argument order
    assert missing == [(5, 5)]
    chosen, _ = select_dead_letters(records, Selection(offsets=((0, 0), (0, 1)), error_class="permanent"))
    assert [(r.partition, r.offset) for r in chosen] == [(0, 0)]


def test_redrive_decisions() -> None:
    records = [
        _dead(0, command_id="cmd_applied"),
        _dead(1, command_id="cmd_new"),
        _dead(2, command_id="cmd_again"),
        _dead(3, origin=None),
        _dead(4, origin="p.gone.v1"),
        _dead(5, origin=RAW, command_id="cmd_applied"),  # not a command: the ledger does not apply
    ]
    items = plan_redrive(
        records,
        dlq_topic=DLQ,
        commands_topic=COMMANDS,
        existing={COMMANDS, RAW},
        applied_ids={"cmd_applied"},
        redriven={f"{DLQ}/0/2"},
    )
    assert [(i.place, i.decision) for i in items] == [
        ("0:0", Decision.SKIP_APPLIED),
        ("0:1", Decision.REDRIVE),
        ("0:2", Decision.SKIP_REDRIVEN),
        ("0:3", Decision.FAIL),
        ("0:4", Decision.FAIL),
        ("0:5", Decision.REDRIVE),
    ]
    assert items[3].reason == "no origin.topic header"
    assert "does not exist" in items[4].reason
    sent = items[1].message
    assert sent is not None
    assert (sent.topic, sent.key, sent.value) == (COMMANDS, b"acme:crm:jane", records[1].value)
    assert items[5].message is not None and items[5].message.topic == RAW


def test_force_redrives_what_was_redriven_but_never_what_the_ledger_applied() -> None:
    records = [_dead(0, command_id="cmd_applied"), _dead(2, command_id="cmd_again")]
    items = plan_redrive(
        records,
        dlq_topic=DLQ,
        commands_topic=COMMANDS,
        existing={COMMANDS},
        applied_ids={"cmd_applied"},
        redriven={f"{DLQ}/0/2"},
        force=True,
    )
    assert [i.decision for i in items] == [Decision.SKIP_APPLIED, Decision.REDRIVE]
