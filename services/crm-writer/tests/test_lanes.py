"""The lanes of a partition: a held or flooded connection holds back only its own commands, memory stays
bounded, dropped records come back in order."""

from __future__ import annotations

import random

import pytest

from shopbotly.common.events import CommandOp, CrmCommand
from shopbotly.crm_writer.domain import Envelope
from shopbotly.crm_writer.lanes import PartitionLanes

pytestmark = pytest.mark.unit


def _env(offset: int, connection: str, identity: str, *, ts: int = 1_000) -> Envelope:
    cmd = CrmCommand(
        command_id=f"c{offset}",
        tenant="t",
        connection=connection,
        identity=identity,
        op=CommandOp.ADD_TAGS,
        causation_event_id=f"e{offset}",
        rule_id="r",
        mapping_version="1",
        tags=["x"],
    )
    return Envelope("topic", 0, offset, cmd.key(), cmd.to_json(), (), ts + offset, cmd)


def _never(label: str) -> bool:
    return False


def test_a_held_connection_has_one_identity_out_and_the_others_flow() -> None:
    lanes = PartitionLanes(max_active=8, max_take=10, max_queued=100)
    for i in range(20):
        lanes.admit(_env(i, "bot" if i % 2 else "crm", f"u{i}@x"), now_ms=0)

    def held(label: str) -> bool:
        return label == "t:bot"

    taken = []
    while (t := lanes.take(held)) is not None:
        taken.append(t[0])
    assert taken.count("t:bot") == 1  # the one that waits for (and probes) the circuit
    assert taken.count("t:crm") == 8  # the healthy lane fills its own in-flight bound


def test_a_flooded_lane_does_not_starve_another() -> None:
    lanes = PartitionLanes(max_active=4, max_take=10, max_queued=10_000)
    for i in range(1000):
        lanes.admit(_env(i, "bulk", f"u{i}@x"), now_ms=0)
    lanes.admit(_env(1000, "crm", "late@x"), now_ms=0)
    first_two = [lanes.take(_never), lanes.take(_never)]
    assert {t[0] for t in first_two if t} == {"t:bulk", "t:crm"}  # lanes take turns


def test_a_full_lane_drops_and_takes_back_in_order_while_others_are_kept() -> None:
    lanes = PartitionLanes(max_active=1, max_take=1, max_queued=3)
    kept = [lanes.admit(_env(i, "bot", "same@x"), now_ms=0) for i in range(6)]
    assert kept == [True, True, True, False, False, False]
    assert lanes.admit(_env(6, "crm", "other@x"), now_ms=0)  # another lane is not affected
    held = {"t:bot": True}
    assert lanes.refetch_from(lambda label: held.get(label, False)) is None  # held: nothing to refetch yet
    held["t:bot"] = False
    assert lanes.refetch_from(_never) is None  # no room yet (3 of 3 queued)
    # The lane drains: take and finish its three kept commands.
    drained = 0
    while drained < 3:
        label, key, envs = lanes.take(_never) or ("", b"", [])
        drained += label == "t:bot"
        for e in envs:
            lanes.finished(e)
        lanes.done(label, key)
    assert lanes.refetch_from(_never) == 3
    # While it was dropping, a newer record of the lane is dropped too (never overtakes the dropped ones).
    assert not lanes.admit(_env(7, "bot", "same@x"), now_ms=0)
    # Fetched again, out of turn: only the lane's oldest dropped record is taken back.
    assert not lanes.readmit(_env(4, "bot", "same@x"))
    assert lanes.readmit(_env(3, "bot", "same@x"))
    assert lanes.readmit(_env(4, "bot", "same@x"))
    assert lanes.readmit(_env(5, "bot", "same@x"))
    assert not lanes.readmit(_env(7, "bot", "same@x"))  # full again (3 of 3): stays dropped
    assert lanes.stats()["t:bot"].dropped == 1


def test_per_identity_order_holds_through_drops_and_refetches() -> None:
    """Random arrivals over 3 lanes, tiny buffers, random finishing and refetching: each identity's
    commands are taken in offset order, and every one exactly once."""
    rng = random.Random(5)
    lanes = PartitionLanes(max_active=2, max_take=2, max_queued=4)
    log: list[tuple[str, int]] = []
    records = [_env(i, rng.choice(["a", "b", "c"]), f"u{rng.randrange(5)}@x") for i in range(400)]
    fetched = 0
    position = 0
    out: list[tuple[str, bytes, list[Envelope]]] = []
    while len(log) < len(records):
        if position < len(records) and rng.random() < 0.6:
            env = records[position]
            if position >= fetched:
                lanes.admit(env, now_ms=0)
                fetched = position + 1
            elif lanes.is_dropped(env.offset):
                lanes.readmit(env)
            position += 1
        if (t := lanes.take(_never)) is not None:
            out.append(t)
        if out and rng.random() < 0.5:
            label, key, envs = out.pop(rng.randrange(len(out)))
            for e in envs:
                assert e.command is not None
                log.append((f"{e.command.connection}:{e.command.identity}", e.offset))
                lanes.finished(e)
            lanes.done(label, key)
        if (start := lanes.refetch_from(_never)) is not None and position >= fetched:
            position = start
    assert sorted(o for _, o in log) == list(range(400))  # each exactly once
    by_identity: dict[str, list[int]] = {}
    for who, offset in log:
        by_identity.setdefault(who, []).append(offset)
    assert all(offsets == sorted(offsets) for offsets in by_identity.values())


def test_stats_count_what_is_held_and_its_oldest() -> None:
    lanes = PartitionLanes(max_active=1, max_take=1, max_queued=2)
    for i in range(4):
        lanes.admit(_env(i, "bot", f"u{i}@x", ts=10_000), now_ms=0)
    lanes.admit(_env(9, "crm", "c@x", ts=50_000), now_ms=0)
    stats = lanes.stats()
    assert (stats["t:bot"].held, stats["t:bot"].dropped, stats["t:bot"].oldest_ms) == (4, 2, 10_000)
    assert (stats["t:crm"].held, stats["t:crm"].oldest_ms) == (1, 50_009)
