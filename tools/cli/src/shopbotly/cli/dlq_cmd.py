"""`shopbotly dlq list|show|redrive`: inspect dead letters and send them back to their origin topic.

Redrive is safe to run twice: each redriven copy carries `redriven_from: <dlq topic>/<partition>/<offset>`
in its origin topic, and redrive skips dead letters whose copy it finds there (docs/cli.md, "Redrive").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from shopbotly.cli._common import console, err_console, kafka_settings, run
from shopbotly.cli._kafka_io import (
    Bound,
    BoundKind,
    Gap,
    Outgoing,
    RangeRead,
    Record,
    TopicNotFoundError,
    assigned_consumer,
    existing_topics,
    format_time,
    parse_partition_offset,
    parse_partition_offsets,
    plan_range,
    read_range,
    read_topic,
    resolve_topic,
    send_all,
    topic_partitions,
)
from shopbotly.cli.ledger_cmd import applied_command_ids
from shopbotly.common.dlq import strip_error_headers
from shopbotly.common.errors import ErrorClass
from shopbotly.common.events import Headers
from shopbotly.common.kafka import KafkaSettings, make_producer
from shopbotly.common.topics import Topic

__all__ = [
    "Decision",
    "RedriveItem",
    "RedriveReport",
    "Selection",
    "plan_redrive",
    "redrive_headers",
    "run_redrive",
    "select_dead_letters",
]

app = typer.Typer(help="Inspect dead letters and redrive them to their origin topic.", no_args_is_help=True)

REDRIVEN_FROM = "redriven_from"
DLQ_TOPICS = (Topic.RAW_EVENTS_DLQ, Topic.CRM_COMMANDS_DLQ)
# How far before a dead letter's own timestamp its redriven copy is looked for: covers clocks that
# disagree between the host that wrote the original and the host that ran the redrive.
_CLOCK_SKEW_MS = 15 * 60 * 1000


def redrive_headers(record: Record, dlq_topic: str) -> Headers:
    """The original headers (error headers stripped) plus `redriven_from` = this dead letter's place."""
    kept = [(k, v) for k, v in strip_error_headers(list(record.headers)) if k != REDRIVEN_FROM]
    return [*kept, (REDRIVEN_FROM, f"{dlq_topic}/{record.partition}/{record.offset}".encode())]


def command_id_of(record: Record) -> str | None:
    value = record.json_value()
    if isinstance(value, dict) and isinstance(value.get("command_id"), str):
        return str(value["command_id"])
    return None


@dataclass(frozen=True)
class Selection:
    """Which dead letters to redrive. `--offsets` and `--class` narrow; `--all` alone means every one."""

    offsets: tuple[tuple[int, int], ...] = ()
    error_class: str | None = None
    everything: bool = False

    def __post_init__(self) -> None:
        if not (self.offsets or self.error_class or self.everything):
            raise ValueError("choose the dead letters: --offsets P:O,..., --class C, or --all")


def select_dead_letters(
    records: Sequence[Record], selection: Selection
) -> tuple[list[Record], list[tuple[int, int]]]:
    """The chosen dead letters in DLQ order, and any `--offsets` the DLQ does not hold."""
    chosen = list(records)
    missing: list[tuple[int, int]] = []
    if selection.offsets:
        by_place = {(r.partition, r.offset): r for r in chosen}
        missing = [place for place in selection.offsets if place not in by_place]
        wanted = set(selection.offsets)
        chosen = [r for r in chosen if (r.partition, r.offset) in wanted]
    if selection.error_class:
        chosen = [r for r in chosen if r.header("error.class") == selection.error_class]
    return chosen, missing


class Decision(StrEnum):
    REDRIVE = "redrive"
    SKIP_APPLIED = "skipped: applied"
    SKIP_REDRIVEN = "skipped: already redriven"
    FAIL = "failed"


@dataclass(frozen=True)
class RedriveItem:
    place: str  # partition:offset in the DLQ
    key: str | None
    decision: Decision
    reason: str = ""
    message: Outgoing | None = None


def plan_redrive(
    dead_letters: Iterable[Record],
    *,
    dlq_topic: str,
    commands_topic: str,
    existing: set[str],
    applied_ids: set[str],
    redriven: set[str],
    force: bool = False,
) -> list[RedriveItem]:
    """What to do with each chosen dead letter, in order of the checks below.

    1. no `origin.topic` header, or the origin topic does not exist: failed;
    2. a crm-command whose command_id the ledger shows as applied: skipped (applied);
    3. a copy with `redriven_from` = this dead letter is in the origin topic (unless force): skipped;
    4. otherwise: redrive to the origin topic with the original key and cleaned headers.
    """
    items: list[RedriveItem] = []
    for record in dead_letters:
        place, key = f"{record.partition}:{record.offset}", record.key_text
        origin = record.header("origin.topic")
        if not origin:
            items.append(RedriveItem(place, key, Decision.FAIL, "no origin.topic header"))
            continue
        if origin not in existing:
            items.append(RedriveItem(place, key, Decision.FAIL, f"origin topic {origin!r} does not exist"))
            continue
        if origin == commands_topic:
            command_id = command_id_of(record)
            if command_id is not None and command_id in applied_ids:
                items.append(RedriveItem(place, key, Decision.SKIP_APPLIED, f"ledger has {command_id}"))
                continue
        marker = f"{dlq_topic}/{record.partition}/{record.offset}"
        if not force and marker in redriven:
            items.append(RedriveItem(place, key, Decision.SKIP_REDRIVEN, f"copy found in {origin}"))
            continue
        message = Outgoing(record, origin, record.key, record.value, redrive_headers(record, dlq_topic))
        items.append(RedriveItem(place, key, Decision.REDRIVE, f"to {origin}", message))
    return items


@dataclass
class RedriveReport:
    dlq_topic: str
    dry_run: bool
    items: list[RedriveItem] = field(default_factory=list)
    redriven: int = 0
    send_failures: list[tuple[str, str]] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)

    def count(self, decision: Decision) -> int:
        return sum(1 for item in self.items if item.decision is decision)

    @property
    def failed(self) -> int:
        return self.count(Decision.FAIL) + len(self.send_failures)


async def redriven_markers(
    settings: KafkaSettings, origins: Iterable[str], since_ms: int
) -> tuple[set[str], list[Gap]]:
    """`redriven_from` values of every message in the origin topics from `since_ms` on."""
    markers: set[str] = set()
    gaps: list[Gap] = []
    since = Bound(BoundKind.TIME, max(0, since_ms - _CLOCK_SKEW_MS))
    for origin in sorted(set(origins)):
        partitions = await topic_partitions(settings, origin)
        async with assigned_consumer(settings, client_role="cli-redrive") as consumer:
            ranges = await plan_range(consumer, origin, partitions, since, Bound(BoundKind.LATEST))
            reader = RangeRead(consumer, origin, ranges)
            # Streamed, keeping only the markers: the origin topic can hold days of traffic.
            async for record in reader.records():
                marker = record.header(REDRIVEN_FROM)
                if marker is not None:
                    markers.add(marker)
        gaps.extend(reader.gaps)
    return markers, gaps


async def run_redrive(
    settings: KafkaSettings,
    *,
    topic: str,
    selection: Selection,
    dry_run: bool = False,
    force: bool = False,
) -> RedriveReport:
    """Choose dead letters in `topic`, decide per `plan_redrive`, publish the redrives (unless dry run)."""
    dlq_topic = resolve_topic(topic, settings)
    records, _, gaps = await read_topic(settings, dlq_topic, client_role="cli-redrive")
    chosen, missing = select_dead_letters(records, selection)
    report = RedriveReport(dlq_topic, dry_run, gaps=gaps)
    report.items.extend(
        RedriveItem(f"{p}:{o}", None, Decision.FAIL, "no such message in the DLQ") for p, o in missing
    )
    origins = {o for r in chosen if (o := r.header("origin.topic"))}
    existing = set(await existing_topics(settings, origins))
    commands_topic = settings.topic(Topic.CRM_COMMANDS)
    needs_ledger = any(r.header("origin.topic") == commands_topic for r in chosen)
    applied = await applied_command_ids(settings) if needs_ledger else set()
    redriven: set[str] = set()
    if chosen and not force:
        redriven, marker_gaps = await redriven_markers(
            settings, existing & origins, min(r.timestamp_ms for r in chosen)
        )
        report.gaps.extend(marker_gaps)
    report.items.extend(
        plan_redrive(
            chosen,
            dlq_topic=dlq_topic,
            commands_topic=commands_topic,
            existing=existing,
            applied_ids=applied,
            redriven=redriven,
            force=force,
        )
    )
    to_send = [item.message for item in report.items if item.message is not None]
    if dry_run or not to_send:
        return report

    def done(message: Outgoing, error: BaseException | None) -> None:
        if error is None:
            report.redriven += 1
        else:
            place = f"{message.source.partition}:{message.source.offset}"
            report.send_failures.append((place, f"{type(error).__name__}: {error}"))

    producer = make_producer(settings, client_role="cli-redrive")
    await producer.start()
    try:
        await send_all(producer, to_send, on_done=done)
    finally:
        await producer.stop()
    return report


def _dlq_topics(settings: KafkaSettings, topic: str | None) -> list[str]:
    if topic:
        return [resolve_topic(topic, settings)]
    return [settings.topic(t) for t in DLQ_TOPICS]


def _say(text: str, *, err: bool = False) -> None:
    (err_console if err else console).print(text, markup=False, highlight=False)


def _short(text: str | None, limit: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _origin(record: Record) -> str:
    topic, partition, offset = (record.header(f"origin.{h}") for h in ("topic", "partition", "offset"))
    service = record.header("origin.service")
    where = f"{topic or '?'}/{partition or '?'}/{offset or '?'}"
    return f"{where} ({service})" if service else where


TopicOption = Annotated[
    str | None,
    typer.Option("--topic", help="DLQ topic: raw-events.dlq.v1, crm-commands.dlq.v1 (logical or full name)"),
]
RequiredTopicOption = Annotated[
    str,
    typer.Option("--topic", help="DLQ topic: raw-events.dlq.v1, crm-commands.dlq.v1 (logical or full name)"),
]


def _read_or_exit(settings: KafkaSettings, topic: str) -> list[Record]:
    try:
        records, _, gaps = run(read_topic(settings, topic, client_role="cli-dlq"))
    except TopicNotFoundError as exc:
        _say(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for gap in gaps:
        _say(f"warning: {topic}: {gap}", err=True)
    return records


@app.command("list")
def list_(
    topic: TopicOption = None,
    error_class: Annotated[
        ErrorClass | None, typer.Option("--class", help="Only dead letters of this error class")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Rows to show (oldest first)")] = 50,
) -> None:
    """A table of dead letters: place, key, error class and message, attempts, origin."""
    settings = kafka_settings()
    for dlq_topic in _dlq_topics(settings, topic):
        records = _read_or_exit(settings, dlq_topic)
        if error_class is not None:
            records = [r for r in records if r.header("error.class") == error_class.value]
        classes = Counter(r.header("error.class") or "?" for r in records)
        if not records:
            _say(f"{dlq_topic}: 0 dead letter(s)")
            continue
        summary = ", ".join(f"{c} {n}" for c, n in sorted(classes.items()))
        table = Table(
            "partition:offset",
            "key",
            "error.class",
            "error.message",
            "attempts",
            "origin",
            title=f"{dlq_topic}: {len(records)} dead letter(s) ({summary}); "
            f"showing {min(limit, len(records))}",
        )
        for record in records[:limit]:
            table.add_row(
                f"{record.partition}:{record.offset}",
                record.key_text or "",
                record.header("error.class") or "",
                _short(record.header("error.message"), 80),
                record.header("error.attempts") or "",
                _origin(record),
            )
        console.print(table)


def _pretty(value: bytes | None) -> str:
    if value is None:
        return "(null: tombstone)"
    try:
        parsed: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.decode("utf-8", "replace")
    return orjson.dumps(parsed, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


@app.command("show")
def show(
    place: Annotated[
        str, typer.Argument(metavar="PARTITION:OFFSET", help="Where the dead letter is, e.g. 0:42")
    ],
    topic: RequiredTopicOption,
) -> None:
    """One dead letter: key, timestamp, every header, and the value pretty-printed."""
    try:
        partition, offset = parse_partition_offset(place)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="PARTITION:OFFSET") from None
    settings = kafka_settings()
    dlq_topic = resolve_topic(topic, settings)
    try:
        records, _, _ = run(
            read_range(
                settings,
                dlq_topic,
                start=Bound(BoundKind.OFFSET, offset),
                stop=Bound(BoundKind.OFFSET, offset + 1),
                partitions=[partition],
                client_role="cli-dlq",
            )
        )
    except TopicNotFoundError as exc:
        _say(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not records:
        _say(f"error: {dlq_topic} holds no message at {partition}:{offset}", err=True)
        raise typer.Exit(1)
    record = records[0]
    _say(f"{dlq_topic} {partition}:{offset}")
    _say(f"key: {record.key_text}")
    _say(f"timestamp: {format_time(record.timestamp_ms)} ({record.timestamp_ms})")
    headers = Table("header", "value", title="headers")
    for name, value in record.headers:
        headers.add_row(name, value.decode("utf-8", "replace"))
    console.print(headers)
    _say("value:")
    _say(_pretty(record.value))


@app.command("redrive")
def redrive(
    topic: RequiredTopicOption,
    error_class: Annotated[
        ErrorClass | None, typer.Option("--class", help="Only dead letters of this error class")
    ] = None,
    offsets: Annotated[
        str | None, typer.Option("--offsets", help="Only these dead letters: PARTITION:OFFSET,...")
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every dead letter in --topic")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; send nothing")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Redrive again even if a redriven copy is in the origin topic")
    ] = False,
    show: Annotated[int, typer.Option("--show", min=0, help="Rows of the per-message table to print")] = 100,
) -> None:
    """Send chosen dead letters back to their origin topic (origin.topic header).

    Keeps key, value and headers (error headers removed, `redriven_from` added).
    Skips crm-commands the ledger shows as applied, and dead letters already redriven.
    Exit 1 if any failed. Reference: docs/cli.md.
    """
    try:
        places = tuple(parse_partition_offsets(offsets)) if offsets is not None else ()
        selection = Selection(places, error_class.value if error_class else None, everything)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = kafka_settings()
    try:
        report = run(run_redrive(settings, topic=topic, selection=selection, dry_run=dry_run, force=force))
    except TopicNotFoundError as exc:
        _say(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for gap in report.gaps:
        _say(f"warning: {gap}", err=True)
    table = Table("partition:offset", "key", "decision", "detail", title=f"redrive from {report.dlq_topic}")
    for item in report.items[:show]:
        table.add_row(item.place, item.key or "", item.decision.value, item.reason)
    console.print(table)
    if len(report.items) > show:
        _say(f"({len(report.items) - show} more not shown; raise --show to see them)")
    for place, reason in report.send_failures:
        _say(f"failed: {place}: {reason}", err=True)
    verb = "would redrive" if dry_run else "redriven"
    done = report.count(Decision.REDRIVE) if dry_run else report.redriven
    _say(
        f"{verb} {done}, skipped as applied {report.count(Decision.SKIP_APPLIED)}, "
        f"skipped as already redriven {report.count(Decision.SKIP_REDRIVEN)}, failed {report.failed}"
    )
    if report.failed:
        raise typer.Exit(1)
