"""The pure half of `replay --dry-run --mapping`: matching and comparing commands, the state an event was
mapped with, and the report (text, JSON, exit code)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from shopbotly.cli._kafka_io import PartitionRange
from shopbotly.cli.mapping_diff import (
    MISSING,
    ChangeKind,
    DiffReport,
    EventDiff,
    FieldChange,
    KeyCollector,
    ProducedCommand,
    RecordedState,
    ReplayedEvent,
    StateRecord,
    compare_event,
    diff_commands,
    field_changes,
    first_per_command_id,
    render_json,
    render_text,
)
from shopbotly.common.config import parse_config
from shopbotly.common.events import CommandOp, CrmCommand, Ticket
from shopbotly.common.ids import ticket_key
from shopbotly.mapper.domain import Mappings, Status, map_event
from shopbotly.mapper.presets import sample_events

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 3, 9, 8, 30, tzinfo=UTC)


def _command(**changes: Any) -> CrmCommand:
    base: dict[str, Any] = {
        "command_id": "cmd_1",
        "tenant": "demo",
        "connection": "hubspot",
        "identity": "jane@example.com",
        "op": CommandOp.UPSERT_CONTACT,
        "fields": {"email": "jane@example.com", "firstname": "Jane", "score": 1},
        "tags": ["a", "b"],
        "causation_event_id": "evt_1",
        "rule_id": "r1",
        "mapping_version": "v1+aaaa",
        "created_at": NOW,
    }
    return CrmCommand.model_validate({**base, **changes})


def _config(segment: str = "standard", *, extra_rules: Sequence[dict[str, Any]] = ()) -> Mappings:
    """The demo tenant with every preset, a bot webhook, and one own rule writing `shopbotly_segment`."""
    rules = [
        {
            "id": "demo-segment",
            "types": ["lead.qualified"],
            "identity": {"expr": "data.data.customer.email", "transforms": ["email"]},
            "commands": [{"op": "upsert_contact", "fields": {"shopbotly_segment": {"value": segment}}}],
        },
        *extra_rules,
    ]
    document = {
        "version": 1,
        "tenants": {
            "demo": {
                "sources": {
                    "shopbotly": {"kind": "shopbotly", "secrets": [{"env": "BOT_SECRET"}]},
                    "shopify": {"kind": "shopify", "secrets": [{"env": "SHOP_SECRET"}]},
                    "hubspot": {"kind": "hubspot", "secrets": [{"env": "HUBSPOT_APP_SECRET"}]},
                },
                "connections": {
                    "hubspot": {
                        "kind": "hubspot",
                        "base_url": "http://127.0.0.1:8090",
                        "auth": {"kind": "bearer", "token": {"env": "HUBSPOT_TOKEN"}},
                    }
                },
                "bot_webhook": {"url": "http://127.0.0.1:8099/bot", "secret": {"env": "BOT_NOTIFY"}},
                "mapping": {
                    "version": "2026-03",
                    "default_connection": "hubspot",
                    "presets": ["shopbotly", "shopify", "hubspot"],
                    "rules": rules,
                },
            }
        },
    }
    return Mappings.from_config(parse_config(document))


def _info(event: dict[str, Any], *, offset: int = 0) -> ReplayedEvent:
    return ReplayedEvent(event["id"], 0, offset, 1_772_446_530_123, "demo:x", event["type"], "demo")


# --- comparing two commands ---------------------------------------------------------------------------


def test_time_of_mapping_and_mapping_version_are_not_differences() -> None:
    before = _command()
    after = _command(created_at=LATER, mapping_version="v2+bbbb", tags=["b", "a"])
    assert field_changes(before, after) == []


def test_fields_are_compared_one_by_one_with_absent_distinct_from_null() -> None:
    before = _command(fields={"email": "jane@example.com", "firstname": "Jane", "old": "x", "score": 1})
    after = _command(fields={"email": "jane@example.com", "firstname": "JANE", "new": None, "score": 1})
    assert field_changes(before, after) == [
        FieldChange("fields.firstname", "Jane", "JANE"),
        FieldChange("fields.new", MISSING, None),
        FieldChange("fields.old", "x", MISSING),
    ]


def test_json_types_matter_one_is_not_true_and_tags_are_a_set() -> None:
    before = _command(fields={"flag": 1})
    assert field_changes(before, _command(fields={"flag": True})) == [FieldChange("fields.flag", 1, True)]
    assert field_changes(before, _command(fields={"flag": 1.0})) == [FieldChange("fields.flag", 1, 1.0)]
    changed = field_changes(_command(tags=["a", "b"]), _command(tags=["c", "a"]))
    assert changed == [FieldChange("tags", ["a", "b"], ["a", "c"])]


def test_identity_body_and_rule_are_compared() -> None:
    before = _command(op=CommandOp.ADD_NOTE, body="hello", fields={})
    after = _command(op=CommandOp.ADD_NOTE, body="hello!", fields={}, identity="j@example.com")
    assert [c.path for c in field_changes(before, after)] == ["identity", "body"]


# --- matching commands of one event ---------------------------------------------------------------------


def test_commands_match_by_id_then_by_target_and_the_rest_are_added_or_removed() -> None:
    kept = _command(command_id="cmd_kept")
    changed_before = _command(command_id="cmd_changed", op=CommandOp.ADD_TAGS, fields={}, tags=["x"])
    changed_after = changed_before.model_copy(update={"tags": ["x", "y"], "mapping_version": "v2"})
    renamed_before = _command(command_id="cmd_old_rule", op=CommandOp.UPSERT_LEAD, rule_id="lead")
    renamed_after = renamed_before.model_copy(
        update={"command_id": "cmd_new_rule", "rule_id": "lead-v2", "fields": {"lifecyclestage": "customer"}}
    )
    gone = _command(command_id="cmd_gone", op=CommandOp.ADD_NOTE, body="n", fields={})
    new = _command(command_id="cmd_new", op=CommandOp.CREATE_TICKET, body="t", fields={"subject": "s"})

    changes, unchanged = diff_commands(
        [kept, changed_before, renamed_before, gone], [kept, changed_after, renamed_after, new]
    )

    assert unchanged == 1
    assert [(c.kind, c.command.command_id) for c in changes] == [
        (ChangeKind.CHANGED, "cmd_changed"),
        (ChangeKind.CHANGED, "cmd_new_rule"),
        (ChangeKind.ADDED, "cmd_new"),
        (ChangeKind.REMOVED, "cmd_gone"),
    ]
    assert changes[0].differences == (FieldChange("tags", ["x"], ["x", "y"]),)
    assert changes[0].keeps_command_id and not changes[1].keeps_command_id
    assert [d.path for d in changes[1].differences] == [
        "command_id",
        "rule_id",
        "fields.email",
        "fields.firstname",
        "fields.lifecyclestage",
        "fields.score",
    ]


def test_nothing_before_means_everything_is_added_and_nothing_after_means_removed() -> None:
    a, b = _command(command_id="cmd_a"), _command(command_id="cmd_b", op=CommandOp.ADD_TAGS)
    added, _ = diff_commands([], [a, b])
    removed, _ = diff_commands([a, b], [])
    assert [c.kind for c in added] == [ChangeKind.ADDED] * 2
    assert [c.kind for c in removed] == [ChangeKind.REMOVED] * 2
    assert diff_commands([a, b], [b, a]) == ([], 2)


def test_the_first_copy_of_a_command_id_is_the_one_compared() -> None:
    original = _command(fields={"v": "original"})
    replayed = _command(fields={"v": "replayed"}, created_at=LATER)
    other = _command(command_id="cmd_2")
    kept = first_per_command_id(
        [
            ProducedCommand(replayed, 5_000, 1, 40),
            ProducedCommand(original, 1_000, 1, 7),
            ProducedCommand(other, 3_000, 0, 2),
        ]
    )
    assert [(p.command.command_id, p.command.fields.get("v")) for p in kept] == [
        ("cmd_1", "original"),
        ("cmd_2", None),
    ]


# --- the state an event was mapped with -----------------------------------------------------------------


def _ticket_state(offset: int, ts: int, event_id: str, **values: Any) -> StateRecord:
    ticket = Ticket(tenant="demo", ticket_id="T1", **values)
    return StateRecord(offset, ts, event_id, ticket.to_json())


def test_the_state_before_an_event_is_the_record_before_its_own_first_record() -> None:
    key = "demo:T1"
    history = [
        _ticket_state(0, 100, "evt_seed", customer_email="jane@example.com"),
        _ticket_state(1, 200, "evt_reply", customer_email="jane@example.com", last_reply="hi"),
        _ticket_state(2, 300, "evt_close", customer_email="jane@example.com", status="closed"),
        _ticket_state(3, 900, "evt_reply", customer_email="jane@example.com", status="closed"),  # a replay
    ]
    recorded = RecordedState(tickets={key: history})

    before_reply = recorded.as_mapped("evt_reply", mapped_at_ms=200).ticket(key)
    assert before_reply is not None and before_reply.last_reply is None and before_reply.status == "open"
    before_close = recorded.as_mapped("evt_close", mapped_at_ms=300).ticket(key)
    assert before_close is not None and before_close.last_reply == "hi"
    first = recorded.as_mapped("evt_seed", mapped_at_ms=100)
    assert first.ticket(key) is None and first.unknown == []


def test_without_an_own_record_the_last_one_written_by_then_counts_and_gaps_are_named() -> None:
    key = "demo:T1"
    tombstone = StateRecord(4, 500, "evt_gone", None)
    unreadable = StateRecord(2, 260, "evt_bad", b"{not json")
    history = [
        _ticket_state(0, 100, "evt_seed", customer_email="jane@example.com"),
        unreadable,
        _ticket_state(3, 400, "evt_late", subject="late"),
        tombstone,
    ]
    recorded = RecordedState(tickets={key: history})

    at_300 = recorded.as_mapped("evt_new", mapped_at_ms=300)
    found = at_300.ticket(key)
    assert found is not None and found.customer_email == "jane@example.com"  # unreadable one skipped
    assert recorded.as_mapped("evt_new", mapped_at_ms=600).ticket(key) is None  # deleted by then
    compacted = RecordedState(tickets={key: [_ticket_state(9, 5_000, "evt_later", subject="now")]})
    view = compacted.as_mapped("evt_old", mapped_at_ms=1_000)
    assert view.ticket(key) is None
    assert view.unknown == [f"ticket {key}"]
    assert view.order("demo:nothing-known") is None and view.unknown == [f"ticket {key}"]


def test_the_recorded_state_changes_what_a_ticket_event_becomes() -> None:
    """A HubSpot reply carries neither customer nor subject: they come from the ticket's state."""
    mappings = _config()
    reply = sample_events("hubspot")["ticket.propertyChange.reply"]
    reply["tenant"] = "demo"
    value = orjson.dumps(reply)
    asked = KeyCollector()
    map_event(value, mappings, asked, now=NOW)
    (key,) = asked.tickets
    assert asked.orders == set()
    seeded = Ticket(tenant="demo", ticket_id=key.split(":", 1)[1], customer_email="jane@example.com")
    recorded = RecordedState(tickets={key: [StateRecord(0, 10, "evt_handoff", seeded.to_json())]})

    with_state = map_event(value, mappings, recorded.as_mapped(reply["id"], 20), now=NOW)
    without = map_event(value, mappings, RecordedState().as_mapped(reply["id"], 20), now=NOW)

    assert [c.identity for c in with_state.commands] == ["jane@example.com"]
    assert [c.identity for c in without.commands] == [key.split(":", 1)[1]]
    assert key == ticket_key("demo", seeded.ticket_id).decode()


# --- one event, through the mapper's own code ----------------------------------------------------------


def _lead() -> dict[str, Any]:
    event = copy.deepcopy(sample_events("shopbotly")["lead.qualified"])
    return event


def test_an_event_mapped_by_the_same_mapping_shows_no_difference() -> None:
    mappings = _config()
    event = _lead()
    before = map_event(orjson.dumps(event), mappings, KeyCollector(), now=NOW).commands
    again = map_event(orjson.dumps(event), _config(), KeyCollector(), now=LATER)

    diff = compare_event(_info(event), before, again, dead_lettered_before=False)

    assert not diff.differs and diff.unchanged == len(before) == 3


def test_a_changed_property_is_the_only_difference() -> None:
    event = _lead()
    before = map_event(orjson.dumps(event), _config("standard"), KeyCollector(), now=NOW).commands
    after = map_event(orjson.dumps(event), _config("vip"), KeyCollector(), now=LATER)

    diff = compare_event(_info(event), before, after, dead_lettered_before=False)

    (change,) = diff.changes
    assert change.kind is ChangeKind.CHANGED and change.keeps_command_id
    assert change.command.rule_id == "demo-segment"
    assert change.differences == (FieldChange("fields.shopbotly_segment", "standard", "vip"),)
    assert diff.unchanged == 2


def test_a_rule_that_fails_under_the_new_mapping_is_a_dead_letter_and_its_commands_removed() -> None:
    event = _lead()
    failing = {
        "id": "demo-score",
        "types": ["lead.qualified"],
        "identity": {"expr": "data.data.customer.email", "transforms": ["email"]},
        "commands": [{"op": "add_note", "body": {"expr": "data.data.no_such_field", "required": True}}],
    }
    before = map_event(orjson.dumps(event), _config(), KeyCollector(), now=NOW).commands
    after = map_event(orjson.dumps(event), _config(extra_rules=[failing]), KeyCollector(), now=NOW)
    assert after.status is Status.DEAD_LETTERED

    diff = compare_event(_info(event), before, after, dead_lettered_before=False)
    assert diff.differs and diff.changes == () and diff.dead_lettered_after
    assert "rule demo-score" in diff.errors[0]
    same = compare_event(_info(event), before, after, dead_lettered_before=True)
    assert not same.differs

    removed = compare_event(
        _info(event), before, map_event(b"{}", _config(), KeyCollector(), now=NOW), dead_lettered_before=False
    )
    assert [c.kind for c in removed.changes] == [ChangeKind.REMOVED] * 3


# --- the report -----------------------------------------------------------------------------------------


def _report(*diffs: Any, incomplete: Sequence[str] = ()) -> DiffReport:
    report = DiffReport(
        "p.raw-events.v1", [PartitionRange(0, 0, 5), PartitionRange(1, 3, 3)], "new.yaml", "p.crm-commands.v1"
    )
    report.events = list(diffs)
    report.versions_after = {"demo": "2026-03+bbbb"}
    report.versions_before["2026-03+aaaa"] = 3
    report.commands_from = "2026-03-02T10:00:00.000+00:00"
    report.incomplete = list(incomplete)
    return report


def test_report_text_json_and_exit_codes() -> None:
    event = _lead()
    before = map_event(orjson.dumps(event), _config("standard"), KeyCollector(), now=NOW).commands
    changed = compare_event(
        _info(event, offset=4),
        before,
        map_event(orjson.dumps(event), _config("vip"), KeyCollector(), now=NOW),
        dead_lettered_before=False,
    )
    same = compare_event(
        _info({**event, "id": "evt_same"}, offset=5),
        before,
        map_event(orjson.dumps(event), _config("standard"), KeyCollector(), now=NOW),
        dead_lettered_before=False,
    )

    report = _report(changed, same)
    text = [line for line, _ in render_text(report)]

    assert report.exit_code == 1
    assert text[0] == "source p.raw-events.v1: p0 [0, 5), p1 [3, 3)"
    assert text[1] == "mapping before: 2026-03+aaaa (3); after: new.yaml: demo 2026-03+bbbb"
    assert f"event {event['id']} (p0:4 lead.qualified at 2026-03-02T10:15:30.123+00:00, key demo:x)" in text
    (head,) = [line for line in text if line.startswith("  ~ ")]
    assert head.startswith("  ~ upsert_contact hubspot/jane.doe@example.com cmd_")
    assert head.endswith("(rule demo-segment)")
    assert '      fields.shopbotly_segment: "standard" → "vip"' in text
    assert "  = 2 command(s) unchanged" in text
    assert "1 event(s) unchanged" in text
    assert any(line.startswith("note: 1 changed command(s) keep their command_id") for line in text)
    assert text[-1] == (
        "compared 2 event(s): 1 with differences, 1 unchanged; commands: 0 added, 0 removed, 1 changed, "
        "5 unchanged; dead-lettered: 0 before, 0 with the new mapping"
    )

    document = orjson.loads(orjson.dumps(render_json(report)))
    assert document["exit_code"] == 1
    assert document["summary"]["events_with_differences"] == 1
    assert document["summary"]["commands_changed"] == 1
    (only,) = document["events"]
    assert only["event_id"] == event["id"]
    (command,) = only["commands"]
    assert command["change"] == "changed"
    assert command["differences"] == [
        {"path": "fields.shopbotly_segment", "before": "standard", "after": "vip"}
    ]
    assert command["before"]["fields"]["shopbotly_segment"] == "standard"
    assert command["after"]["fields"]["shopbotly_segment"] == "vip"

    assert _report(same).exit_code == 0
    assert _report(same, incomplete=["p.crm-commands.v1: partition 0: no messages"]).exit_code == 2
    limited = [line for line, _ in render_text(_report(changed, changed, same), show=1)]
    assert "... and 1 more event(s) with differences (--show)" in limited


def test_added_and_removed_commands_print_their_content() -> None:
    note = _command(command_id="cmd_note", op=CommandOp.ADD_NOTE, fields={}, tags=[], body="hello")
    tags = _command(command_id="cmd_tags", op=CommandOp.ADD_TAGS, fields={}, tags=["vip"])
    changes, _ = diff_commands([note], [tags])
    assert [c.kind for c in changes] == [ChangeKind.ADDED, ChangeKind.REMOVED]
    diff = EventDiff(_info({"id": "evt_1", "type": "t"}), tuple(changes), 0, False, False)
    text = [line for line, _ in render_text(_report(diff))]
    assert "  + add_tags hubspot/jane@example.com cmd_tags (rule r1)" in text
    assert '      tags: ["vip"]' in text
    assert "  - add_note hubspot/jane@example.com cmd_note (rule r1)" in text
    assert '      body: "hello"' in text
