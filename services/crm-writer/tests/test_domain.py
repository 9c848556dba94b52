"""Reading records and coalescing one identity's commands (pure)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopbotly.common.events import CommandOp, CrmCommand
from shopbotly.crm_writer.domain import (
    Write,
    WriteKind,
    coalesce,
    merged_properties,
    parse_record,
    property_text,
    split_multi,
    union_tags,
)
from shopbotly.testkit.crm_writer import crm_command

pytestmark = pytest.mark.unit

KINDS = {
    CommandOp.UPSERT_CONTACT: WriteKind.CONTACT,
    CommandOp.ADD_TAGS: WriteKind.CONTACT,
    CommandOp.UPSERT_LEAD: WriteKind.LEAD,
    CommandOp.ADD_NOTE: WriteKind.NOTE,
    CommandOp.CREATE_TICKET: WriteKind.TICKET,
}


def cmd(i: int, op: CommandOp = CommandOp.UPSERT_CONTACT, identity: str = "a@x.io", **kw: Any) -> CrmCommand:
    return crm_command(i, op, identity, connection="hs", **kw)


def test_last_write_wins_per_field_and_tags_are_a_union() -> None:
    items = [
        (0, cmd(0, fields={"firstname": "Ann", "phone": "1"}, tags=["vip"])),
        (1, cmd(1, CommandOp.ADD_TAGS, tags=["new", "vip"])),
        (2, cmd(2, fields={"firstname": "Anna", "lastname": "Lee"})),
    ]
    [write] = coalesce(items, KINDS.__getitem__, max_merge=10)
    assert write.fields == {"firstname": "Anna", "phone": "1", "lastname": "Lee"}
    assert write.tags == ["vip", "new"]
    assert write.handles == [0, 1, 2]
    assert (
        write.key.startswith("cw_") and write.key == coalesce(items, KINDS.__getitem__, max_merge=10)[0].key
    )


def test_only_neighbours_merge_so_order_is_kept() -> None:
    items = [
        (0, cmd(0)),
        (1, cmd(1, CommandOp.ADD_NOTE, body="hello")),
        (2, cmd(2)),
        (3, cmd(3, CommandOp.ADD_NOTE, body="second")),
        (4, cmd(4, CommandOp.ADD_NOTE, body="third")),
    ]
    writes = coalesce(items, KINDS.__getitem__, max_merge=10)
    assert [(w.kind, w.handles) for w in writes] == [
        (WriteKind.CONTACT, [0]),
        (WriteKind.NOTE, [1]),
        (WriteKind.CONTACT, [2]),
        (WriteKind.NOTE, [3]),  # two notes are two notes
        (WriteKind.NOTE, [4]),
    ]
    assert writes[0].key == "c0"  # a single command keeps its own id as the idempotency key


def test_merge_limits_kinds_groups_and_identities() -> None:
    items = [(i, cmd(i)) for i in range(5)]
    assert [w.handles for w in coalesce(items, KINDS.__getitem__, max_merge=2)] == [[0, 1], [2, 3], [4]]
    mixed = [(0, cmd(0)), (1, cmd(1, CommandOp.UPSERT_LEAD)), (2, cmd(2, identity="b@x.io"))]
    assert len(coalesce(mixed, KINDS.__getitem__, max_merge=10)) == 3
    tags = [(0, cmd(0)), (1, cmd(1, CommandOp.ADD_TAGS, tags=["x"]))]
    assert len(coalesce(tags, KINDS.__getitem__, max_merge=10, group_of=lambda op: op)) == 2


def test_single_splits_a_merged_write() -> None:
    [write] = coalesce(
        [(7, cmd(0, fields={"a": 1})), (9, cmd(1, fields={"b": 2}, tags=["t"]))],
        KINDS.__getitem__,
        max_merge=5,
    )
    one = write.single(1)
    assert (one.handles, one.fields, one.tags, one.key) == ([9], {"b": 2}, ["t"], "c1")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([CommandOp.UPSERT_CONTACT, CommandOp.ADD_TAGS, CommandOp.ADD_NOTE]),
            st.dictionaries(
                st.sampled_from(["firstname", "lastname", "phone"]), st.text(max_size=3), max_size=3
            ),
            st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=3),
        ),
        min_size=1,
        max_size=30,
    ),
    st.integers(min_value=1, max_value=8),
)
def test_coalesced_writes_reach_the_same_state_as_sequential_commands(
    spec: list[tuple[CommandOp, dict[str, str], list[str]]], max_merge: int
) -> None:
    commands = [
        cmd(
            i,
            op,
            fields=f if op is not CommandOp.ADD_NOTE else {},
            tags=t if op is not CommandOp.ADD_NOTE else [],
            body=f"n{i}" if op is CommandOp.ADD_NOTE else None,
        )
        for i, (op, f, t) in enumerate(spec)
    ]

    def apply(state: dict[str, Any], fields: dict[str, Any], tags: list[str], note: str | None) -> None:
        state["fields"].update(fields)
        state["tags"] = union_tags(state["tags"], tags)
        if note is not None:
            state["notes"].append(note)

    sequential: dict[str, Any] = {"fields": {}, "tags": [], "notes": []}
    for c in commands:
        apply(sequential, c.fields, c.tags, c.body if c.op is CommandOp.ADD_NOTE else None)
    merged: dict[str, Any] = {"fields": {}, "tags": [], "notes": []}
    for w in coalesce(list(enumerate(commands)), KINDS.__getitem__, max_merge=max_merge):
        apply(merged, w.fields, w.tags, w.body if w.kind is WriteKind.NOTE else None)
    assert merged == sequential


def record(value: bytes | None, key: bytes | None = b"t:hs:a@x.io") -> Any:
    return parse_record(
        topic="c", partition=0, offset=3, key=key, value=value, headers=[("tenant", b"t")], timestamp_ms=1
    )


def test_records_that_are_not_commands_keep_their_reason() -> None:
    assert record(None).error and "tombstone" in record(None).error
    bad = record(b'{"command_id": ""}')
    assert bad.command is None and bad.error and "crm-command/1" in bad.error
    assert record(b"not json").command is None
    good = cmd(0).to_json()
    assert record(good).command is not None
    moved = record(good, key=b"t:hs:other@x.io")
    assert moved.command is None and "key does not match" in (moved.error or "")


def test_property_text_and_multi_select() -> None:
    assert [property_text(v) for v in (None, True, 3, 2.5, ["a", "b"], "x")] == [
        "",
        "true",
        "3",
        "2.5",
        "a;b",
        "x",
    ]
    assert orjson.loads(property_text({"k": 1})) == {"k": 1}
    assert split_multi("a;;b;") == ["a", "b"] and split_multi(None) == []
    assert union_tags(["a", " b "], ["b", "", "c"]) == ["a", "b", "c"]


def test_merged_properties_keeps_what_the_crm_has() -> None:
    w = Write(WriteKind.CONTACT, "t", "hs", "a@x.io")
    w.absorb(cmd(0, fields={"phone": None, "firstname": "Z"}, tags=["b", "c"]), 0)
    props = merged_properties({"lastname": "L", "tags": "a;b", "phone": "1"}, w, tags_property="tags")
    assert props == {"lastname": "L", "tags": "a;b;c", "phone": "", "firstname": "Z"}
    with pytest.raises(ValueError, match="tags"):
        merged_properties({}, w, tags_property=None)
