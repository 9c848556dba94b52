"""`shopbotly replay`: re-publish a range of a topic (optionally filtered) with its keys and headers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from shopbotly.cli._common import console, err_console, kafka_settings, run_with_progress
from shopbotly.cli._kafka_io import (
    Bound,
    FilterError,
    Gap,
    Outgoing,
    PartitionNotFoundError,
    PartitionRange,
    RangeRead,
    Record,
    RecordFilter,
    TopicNotFoundError,
    assigned_consumer,
    existing_topics,
    format_time,
    parse_bound,
    plan_range,
    resolve_topic,
    send_all,
)
from shopbotly.cli.replay_diff import mapping_diff
from shopbotly.common.events import Headers
from shopbotly.common.kafka import KafkaSettings, make_producer

__all__ = ["ReplayReport", "replay", "replay_headers", "run_replay"]

REPLAYED_FROM = "replayed_from"


def replay_headers(record: Record) -> Headers:
    """The original headers, with `replayed_from` = `topic/partition/offset` of this copy's source."""
    kept = [(k, v) for k, v in record.headers if k != REPLAYED_FROM]
    return [*kept, (REPLAYED_FROM, record.coordinates.encode())]


def outgoing_for(record: Record, target: str, target_partitions: Sequence[int]) -> Outgoing:
    # A keyed message goes where its key hashes (as the services publish it); a keyless one keeps its
    # partition number when the target has it, so per-partition order survives the replay.
    partition = record.partition if record.key is None and record.partition in target_partitions else None
    return Outgoing(record, target, record.key, record.value, replay_headers(record), partition)


@dataclass
class ReplayReport:
    source: str
    target: str
    ranges: list[PartitionRange]
    dry_run: bool
    sample_size: int = 10
    scanned: int = 0
    matched: int = 0
    sent: int = 0
    by_key: Counter[str] = field(default_factory=Counter)
    sample: list[Outgoing] = field(default_factory=list)
    filter_errors: list[str] = field(default_factory=list)
    failed: list[tuple[Record, str]] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.filter_errors or self.failed)

    def add_match(self, message: Outgoing) -> None:
        self.matched += 1
        self.by_key[message.source.key_text or "(no key)"] += 1
        if len(self.sample) < self.sample_size:
            self.sample.append(message)


async def run_replay(
    settings: KafkaSettings,
    *,
    topic: str,
    start: Bound,
    stop: Bound,
    partitions: Sequence[int] | None = None,
    record_filter: RecordFilter | None = None,
    into: str | None = None,
    dry_run: bool = False,
    sample_size: int = 10,
    on_plan: Callable[[int], None] | None = None,
    on_scanned: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Read `[start, stop)` of `topic` per partition, keep what the filter matches, publish it to `into`.

    Raises TopicNotFoundError for a missing source or target, PartitionNotFoundError for a partition
    the source lacks.
    """
    source = resolve_topic(topic, settings)
    target = resolve_topic(into, settings) if into else source
    found = await existing_topics(settings, {source, target})
    for name in (source, target):
        if name not in found:
            raise TopicNotFoundError(name)
    chosen = sorted(set(partitions)) if partitions else found[source]
    missing = sorted(set(chosen) - set(found[source]))
    if missing:
        raise PartitionNotFoundError(source, missing, found[source])

    async with assigned_consumer(settings, client_role="cli-replay") as consumer:
        ranges = await plan_range(consumer, source, chosen, start, stop)
        report = ReplayReport(source, target, ranges, dry_run, sample_size)
        reader = RangeRead(consumer, source, ranges)
        if on_plan:
            on_plan(reader.total)

        def done(message: Outgoing, error: BaseException | None) -> None:
            if error is None:
                report.sent += 1
            else:
                report.failed.append((message.source, f"{type(error).__name__}: {error}"))

        producer = None if dry_run else make_producer(settings, client_role="cli-replay")
        if producer is not None:
            await producer.start()
        try:
            # Published a chunk at a time, so a large range never sits in memory as a whole.
            chunk: list[Outgoing] = []
            async for record in reader.records():
                report.scanned += 1
                if on_scanned:
                    on_scanned(1)
                try:
                    keep = record_filter is None or record_filter.matches(record)
                except FilterError as exc:
                    report.filter_errors.append(str(exc))
                    keep = False
                if keep:
                    message = outgoing_for(record, target, found[target])
                    report.add_match(message)
                    if producer is not None:
                        chunk.append(message)
                if producer is not None and len(chunk) >= 1000:
                    await send_all(producer, chunk, on_done=done)
                    chunk = []
            if producer is not None:
                await send_all(producer, chunk, on_done=done)
        finally:
            if producer is not None:
                await producer.stop()
        report.gaps = reader.gaps
    return report


def _print_report(report: ReplayReport) -> None:
    ranges = ", ".join(f"p{r.partition} [{r.start}, {r.stop})" for r in report.ranges)
    console.print(f"source {report.source}: {ranges or 'no partitions'}", markup=False, highlight=False)
    for gap in report.gaps:
        err_console.print(f"warning: {gap}", markup=False, highlight=False)
    if report.dry_run:
        console.print(
            f"dry run: {report.matched} of {report.scanned} message(s) would be sent to {report.target}",
            markup=False,
            highlight=False,
        )
        keys = Table("key", "messages", title="by key")
        for key, count in report.by_key.most_common():
            keys.add_row(key, str(count))
        if report.by_key:
            console.print(keys)
        first = Table("source", "key", "timestamp", "value", title=f"first {len(report.sample)}")
        for message in report.sample:
            value = (message.value or b"").decode("utf-8", "replace")
            first.add_row(
                message.source.coordinates,
                message.source.key_text or "",
                format_time(message.source.timestamp_ms),
                value if len(value) <= 120 else value[:117] + "...",
            )
        if report.sample:
            console.print(first)
    else:
        console.print(
            f"sent {report.sent} of {report.matched} matching message(s) ({report.scanned} read) "
            f"to {report.target}; {len(report.failed)} failed",
            markup=False,
            highlight=False,
        )
    for record, reason in report.failed:
        err_console.print(f"failed: {record.coordinates}: {reason}", markup=False, highlight=False)
    if report.filter_errors:
        err_console.print(
            f"{len(report.filter_errors)} message(s) could not be evaluated by the filter and were not "
            f"replayed; first: {report.filter_errors[0]}",
            markup=False,
            highlight=False,
        )


def _bound(text: str, option: str) -> Bound:
    try:
        return parse_bound(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def replay(
    topic: Annotated[
        str, typer.Option("--topic", help="Topic to read: logical (raw-events.v1) or full name")
    ],
    from_: Annotated[
        str,
        typer.Option("--from", help="First offset, or ISO 8601 time, or 'earliest' (inclusive)"),
    ],
    to: Annotated[
        str,
        typer.Option("--to", help="End offset, or ISO 8601 time, or 'latest' (exclusive)"),
    ],
    partition: Annotated[
        list[int] | None, typer.Option("--partition", help="Only this partition (repeatable); default all")
    ] = None,
    filter_: Annotated[
        str | None,
        typer.Option(
            "--filter", help="JMESPath over {topic, partition, offset, timestamp, key, headers, value}"
        ),
    ] = None,
    into: Annotated[str | None, typer.Option("--into", help="Topic to publish to; default: --topic")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be sent; send nothing")
    ] = False,
    show: Annotated[
        int | None,
        typer.Option(
            "--show",
            min=0,
            help="With --dry-run: how many messages to print (default 10); "
            "with --mapping: how many events with differences (default all)",
        ),
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(
            "--mapping",
            help="With --dry-run: map the raw events through this tenants config and print the commands "
            "as a diff against those produced before (exit 0 same, 1 different, 2 error)",
        ),
    ] = None,
    commands_from: Annotated[
        str | None,
        typer.Option(
            "--commands-from",
            help="With --mapping: where reading crm-commands.v1 starts (offset, ISO time, earliest); "
            "default 15 minutes before the earliest event of the range",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="With --mapping: the diff as JSON")] = False,
) -> None:
    """Re-publish messages [--from, --to) of --topic, per partition, with their keys and headers.

    Each copy gets a `replayed_from` header (topic/partition/offset).
    With --dry-run --mapping FILE: send nothing; print what the events would become under that mapping,
    as a diff against the commands produced for them before.
    Reads with a group-less consumer. Reference: docs/cli.md.
    """
    start, stop = _bound(from_, "--from"), _bound(to, "--to")
    try:
        record_filter = RecordFilter.compile(filter_) if filter_ else None
    except FilterError as exc:
        raise typer.BadParameter(str(exc), param_hint="--filter") from None
    if mapping is None:
        for given, option in ((commands_from, "--commands-from"), (as_json or None, "--json")):
            if given is not None:
                raise typer.BadParameter("only applies with --mapping", param_hint=option)
    else:
        if not dry_run:
            raise typer.BadParameter(
                "--mapping compares and never sends: add --dry-run", param_hint="--mapping"
            )
        if into is not None:
            raise typer.BadParameter("--mapping compares, nothing is sent anywhere", param_hint="--into")
        mapping_diff(
            config=mapping,
            topic=topic,
            start=start,
            stop=stop,
            partitions=partition,
            record_filter=record_filter,
            commands_from=_bound(commands_from, "--commands-from") if commands_from else None,
            as_json=as_json,
            show=show,
        )
        return
    settings = kafka_settings()
    report = run_with_progress(
        "replay",
        lambda on_plan, on_scanned: run_replay(
            settings,
            topic=topic,
            start=start,
            stop=stop,
            partitions=partition,
            record_filter=record_filter,
            into=into,
            dry_run=dry_run,
            sample_size=10 if show is None else show,
            on_plan=on_plan,
            on_scanned=on_scanned,
        ),
    )
    _print_report(report)
    if not report.ok:
        raise typer.Exit(1)
