"""`ledger check` logic: the ledger as compaction means it, and each kind of disagreement with crm-results."""

from datetime import UTC, datetime

import pytest

from shopbotly.cli._kafka_io import PartitionRange, Record
from shopbotly.cli.ledger_cmd import check_ledger, latest_ledger, results_horizon
from shopbotly.common.events import CommandOutcome, LedgerEntry
from shopbotly.testkit.crm_writer import command_result

pytestmark = pytest.mark.unit

T0 = datetime(2024, 5, 1, 10, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
_offsets: dict[str, int] = {}


def _at(topic: str, key: bytes | None, value: bytes | None, partition: int = 0, ts: int = T0_MS) -> Record:
    offset = _offsets[topic] = _offsets.get(topic, -1) + 1
    return Record(topic, partition, offset, ts, key, value)


def ledger(cid: str, tenant: str = "acme", connection: str = "hubspot", at: datetime = T0) -> Record:
    entry = LedgerEntry(command_id=cid, tenant=tenant, connection=connection, applied_at=at)
    return _at("ledger", cid.encode(), entry.to_json())


def result(
    cid: str,
    outcome: CommandOutcome = CommandOutcome.APPLIED,
    tenant: str = "acme",
    coalesced: tuple[str, ...] = (),
) -> Record:
    res = command_result(cid, tenant, outcome, coalesced_with=list(coalesced))
    return _at("results", f"{tenant}:hubspot:jane@example.com".encode(), res.to_json())


def test_compaction_semantics_last_entry_wins_and_tombstones_remove() -> None:
    records = [ledger("a"), ledger("b"), _at("ledger", b"b", None), ledger("c", tenant="other")]
    entries, writes, unreadable = latest_ledger(records)
    assert set(entries) == {"a", "c"} and unreadable == []
    entries, _, _ = latest_ledger(records, tenant="acme")
    assert set(entries) == {"a"}
    assert writes["b"] == 1


def test_unreadable_ledger_records_are_named() -> None:
    bad = [_at("ledger", b"x", b"{not json"), _at("ledger", None, b"{}"), ledger("k")]
    mismatched = Record("ledger", 0, 99, T0_MS, b"other", bad[2].value)
    _, _, unreadable = latest_ledger([*bad, mismatched])
    assert len(unreadable) == 3
    assert "no key" in unreadable[1] and "key 'other' but command_id 'k'" in unreadable[2]


def test_a_consistent_ledger() -> None:
    report = check_ledger(
        [ledger("a"), ledger("b"), ledger("c", connection="salesforce"), ledger("d")],
        [
            result("a"),
            result("b", coalesced=("d",)),  # d was coalesced into b's write
            result("c"),
            result("c", CommandOutcome.DUPLICATE),  # a redelivery the writer skipped
            result("x", CommandOutcome.DEAD_LETTERED),
        ],
    )
    assert report.consistent
    assert report.applied == 4
    assert report.per_connection == {("acme", "hubspot"): 3, ("acme", "salesforce"): 1}


def test_each_inconsistency_is_found() -> None:
    report = check_ledger(
        [ledger("a"), ledger("b"), ledger("dup"), ledger("dup"), ledger("twice")],
        [result("a"), result("missing"), result("dup"), result("twice"), result("twice")],
    )
    assert not report.consistent
    assert report.applied_results_missing_from_ledger == ["missing"]
    assert report.ledger_without_result == ["b"]
    assert report.ledger_duplicates == {"dup": 2}
    assert report.result_duplicates == {"twice": 2}


def test_tenant_scope() -> None:
    records = [ledger("a"), ledger("z", tenant="other")]
    results = [result("a"), result("y", tenant="other")]
    assert check_ledger(records, results, tenant="acme").consistent
    other = check_ledger(records, results, tenant="other")
    assert other.applied_results_missing_from_ledger == ["y"] and other.ledger_without_result == ["z"]


def test_entries_older_than_the_results_retention_are_counted_not_flagged() -> None:
    old = datetime(2024, 4, 1, tzinfo=UTC)
    report = check_ledger([ledger("old", at=old), ledger("new")], [], horizon_ms=T0_MS - 1)
    assert report.ledger_without_result == ["new"]
    assert report.beyond_results_retention == 1


def test_results_horizon_comes_only_from_partitions_that_lost_records() -> None:
    records = [
        _at("results", b"k", b"{}", partition=0, ts=100),
        _at("results", b"k", b"{}", partition=1, ts=500),
        _at("results", b"k", b"{}", partition=1, ts=900),
        _at("results", b"k", b"{}", partition=2, ts=700),
    ]
    fresh = [PartitionRange(0, 0, 1), PartitionRange(1, 0, 2), PartitionRange(2, 0, 1)]
    assert results_horizon(records, fresh) is None
    truncated = [PartitionRange(0, 0, 1), PartitionRange(1, 40, 42), PartitionRange(2, 3, 4)]
    assert results_horizon(records, truncated) == 700
