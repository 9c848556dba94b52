"""`shopbotly ledger check`: the applied-command ledger against crm-results, and what disagrees."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from shopbotly.cli._common import console, err_console, kafka_settings, run
from shopbotly.cli._kafka_io import Gap, PartitionRange, Record, format_time, read_topic
from shopbotly.common.events import CommandOutcome, CommandResult, LedgerEntry
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic

__all__ = ["LedgerReport", "applied_command_ids", "check_ledger", "latest_ledger", "results_horizon"]

app = typer.Typer(help="Check the applied-command ledger against crm-results.", no_args_is_help=True)

_SHOWN = 20  # ids printed per finding; the counts are always complete


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass
class LedgerReport:
    """What `ledger check` found. Consistent when every list and mapping of problems is empty."""

    tenant: str | None
    applied: int = 0
    per_connection: Counter[tuple[str, str]] = field(default_factory=Counter)
    applied_results_missing_from_ledger: list[str] = field(default_factory=list)
    ledger_without_result: list[str] = field(default_factory=list)
    ledger_duplicates: dict[str, int] = field(default_factory=dict)
    result_duplicates: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    beyond_results_retention: int = 0
    results_horizon_ms: int | None = None
    ledger_records: int = 0
    result_records: int = 0

    @property
    def consistent(self) -> bool:
        return not (
            self.applied_results_missing_from_ledger
            or self.ledger_without_result
            or self.ledger_duplicates
            or self.result_duplicates
            or self.unreadable
        )


def latest_ledger(
    records: Sequence[Record], *, tenant: str | None = None
) -> tuple[dict[str, LedgerEntry], Counter[str], list[str]]:
    """The ledger as the compacted topic means it: the last entry per command id (a tombstone removes it).

    Returns (entries by command id, entry records per command id, unreadable record coordinates).
    Records are expected in offset order per partition; one key lives in one partition.
    """
    latest: dict[str, LedgerEntry] = {}
    writes: Counter[str] = Counter()
    unreadable: list[str] = []
    for record in records:
        command_id = record.key_text
        if command_id is None:
            unreadable.append(f"{record.coordinates}: no key (the ledger is keyed by command_id)")
            continue
        if record.value is None:
            latest.pop(command_id, None)
            continue
        try:
            entry = LedgerEntry.from_json(record.value)
        except ValidationError as exc:
            unreadable.append(f"{record.coordinates}: not a LedgerEntry ({exc.error_count()} error(s))")
            continue
        if entry.command_id != command_id:
            unreadable.append(f"{record.coordinates}: key {command_id!r} but command_id {entry.command_id!r}")
            continue
        if tenant is not None and entry.tenant != tenant:
            continue
        latest[command_id] = entry
        writes[command_id] += 1
    return latest, writes, unreadable


def results_horizon(records: Sequence[Record], ranges: Sequence[PartitionRange]) -> int | None:
    """The time before which crm-results may have lost records to retention, or None if nothing was deleted.

    Only partitions whose log no longer starts at offset 0 lost records; the latest first-retained
    timestamp among them is the horizon.
    """
    first_ts: dict[int, int] = {}
    for record in records:
        first_ts.setdefault(record.partition, record.timestamp_ms)
    truncated = [first_ts[r.partition] for r in ranges if r.start > 0 and r.partition in first_ts]
    return max(truncated) if truncated else None


def check_ledger(
    ledger: Sequence[Record],
    results: Sequence[Record],
    *,
    tenant: str | None = None,
    horizon_ms: int | None = None,
) -> LedgerReport:
    """Compare the ledger with crm-results.

    - an `applied` result whose command_id has no ledger entry: the writer applied without recording it,
      so a replay would apply it again;
    - a ledger entry that no result mentions (as command_id or in coalesced_with, outcome applied or
      duplicate): the outcome was lost; entries applied before `horizon_ms` are only counted, since
      their results may have been deleted by retention;
    - the same command_id written to the ledger twice, or with two `applied` results: applied twice.
    """
    report = LedgerReport(tenant=tenant, results_horizon_ms=horizon_ms)
    report.ledger_records = len(ledger)
    report.result_records = len(results)
    entries, writes, unreadable = latest_ledger(ledger, tenant=tenant)
    report.unreadable.extend(unreadable)
    report.applied = len(entries)
    for entry in entries.values():
        report.per_connection[(entry.tenant, entry.connection)] += 1
    report.ledger_duplicates = {cid: n for cid, n in writes.items() if n > 1}

    applied_results: Counter[str] = Counter()
    mentioned: set[str] = set()
    for record in results:
        if record.value is None:
            continue
        try:
            result = CommandResult.from_json(record.value)
        except ValidationError as exc:
            report.unreadable.append(
                f"{record.coordinates}: not a CommandResult ({exc.error_count()} error(s))"
            )
            continue
        if tenant is not None and result.tenant != tenant:
            continue
        if result.outcome is CommandOutcome.APPLIED:
            applied_results[result.command_id] += 1
        if result.outcome in (CommandOutcome.APPLIED, CommandOutcome.DUPLICATE):
            mentioned.add(result.command_id)
            mentioned.update(result.coalesced_with)

    report.result_duplicates = {cid: n for cid, n in applied_results.items() if n > 1}
    report.applied_results_missing_from_ledger = sorted(cid for cid in applied_results if cid not in entries)
    for cid, entry in sorted(entries.items()):
        if cid in mentioned:
            continue
        if horizon_ms is not None and _epoch_ms(entry.applied_at) < horizon_ms:
            report.beyond_results_retention += 1
        else:
            report.ledger_without_result.append(cid)
    return report


async def applied_command_ids(settings: KafkaSettings) -> set[str]:
    """The command ids the ledger shows as applied now."""
    records, _, _ = await read_topic(settings, settings.topic(Topic.CRM_LEDGER), client_role="cli-ledger")
    entries, _, _ = latest_ledger(records)
    return set(entries)


async def run_check(settings: KafkaSettings, *, tenant: str | None = None) -> tuple[LedgerReport, list[Gap]]:
    ledger, _, ledger_gaps = await read_topic(
        settings, settings.topic(Topic.CRM_LEDGER), client_role="cli-ledger"
    )
    results, ranges, result_gaps = await read_topic(
        settings, settings.topic(Topic.CRM_RESULTS), client_role="cli-ledger"
    )
    report = check_ledger(ledger, results, tenant=tenant, horizon_ms=results_horizon(results, ranges))
    return report, [*ledger_gaps, *result_gaps]


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOWN])
    return shown + (f", ... ({len(ids) - _SHOWN} more)" if len(ids) > _SHOWN else "")


def _print_report(report: LedgerReport, settings: KafkaSettings) -> None:
    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False)

    scope = f" for tenant {report.tenant}" if report.tenant else ""
    say(
        f"ledger {settings.topic(Topic.CRM_LEDGER)}: {report.ledger_records} record(s); "
        f"results {settings.topic(Topic.CRM_RESULTS)}: {report.result_records} record(s)"
    )
    say(f"applied: {report.applied} command id(s){scope}")
    if report.per_connection:
        table = Table("tenant", "connection", "applied", title="applied per connection")
        for (tenant, connection), count in sorted(report.per_connection.items()):
            table.add_row(tenant, connection, str(count))
        console.print(table)
    findings = [
        ("applied results missing from the ledger", report.applied_results_missing_from_ledger),
        ("ledger entries without a result", report.ledger_without_result),
        (
            "applied twice (ledger written twice)",
            [f"{cid} x{n}" for cid, n in sorted(report.ledger_duplicates.items())],
        ),
        (
            "applied twice (two applied results)",
            [f"{cid} x{n}" for cid, n in sorted(report.result_duplicates.items())],
        ),
        ("unreadable records", report.unreadable),
    ]
    for title, ids in findings:
        say(f"{title}: {len(ids)}" + (f" ({_ids(ids)})" if ids else ""))
    if report.beyond_results_retention:
        horizon = format_time(report.results_horizon_ms or 0)
        say(
            f"not checked: {report.beyond_results_retention} ledger entr(y/ies) applied before {horizon}, "
            "older than what crm-results still holds"
        )
    say("consistent" if report.consistent else "INCONSISTENT")


@app.command("check")
def check(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's commands")] = None,
) -> None:
    """Compare the ledger with crm-results; exit 1 when they disagree."""
    settings = kafka_settings()
    report, gaps = run(run_check(settings, tenant=tenant))
    for gap in gaps:
        err_console.print(f"warning: {gap}", markup=False, highlight=False)
    _print_report(report, settings)
    if not report.consistent:
        raise typer.Exit(1)
