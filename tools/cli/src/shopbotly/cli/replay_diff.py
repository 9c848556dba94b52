"""`shopbotly replay --dry-run --mapping FILE`: the commands a range of raw events would become under a
mapping, as a diff against the commands produced for them before. Reads only, sends nothing.

Reads, each with a group-less consumer (docs/cli.md, "Diff against a new mapping"):
1. the range of `--topic` (raw events), filtered; an event id met again (a replayed copy) is compared once;
2. `crm-commands.v1` from `--commands-from` (default: 15 minutes before the earliest event of the range) to
   its end, keeping the commands caused by those events (`causation_event_id`);
3. `raw-events.dlq.v1` over the same window: which events were dead-lettered before;
4. `orders.v1` and `tickets.v1`, whole, keeping only the keys the mapping asks for, so each event is mapped
   with the order and ticket state it was first mapped with (mapping_diff.RecordedState).
Mapping is the mapper's own code (`shopbotly.mapper.domain.map_event`), as in `shopbotly map`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
import typer

from shopbotly.cli._common import console, err_console, kafka_settings, run_with_progress
from shopbotly.cli._kafka_io import (
    Bound,
    BoundKind,
    FilterError,
    Gap,
    PartitionNotFoundError,
    RangeRead,
    Record,
    RecordFilter,
    TopicNotFoundError,
    assigned_consumer,
    existing_topics,
    plan_range,
    resolve_topic,
)
from shopbotly.cli.mapping_diff import (
    DiffReport,
    KeyCollector,
    ProducedCommand,
    RecordedState,
    ReplayedEvent,
    StateRecord,
    compare_event,
    first_per_command_id,
    render_json,
    render_text,
)
from shopbotly.common.config import load_config
from shopbotly.common.errors import ConfigError
from shopbotly.common.events import CrmCommand, utcnow
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic
from shopbotly.mapper.domain import Mappings, map_event

__all__ = ["COMMANDS_MARGIN_MS", "event_of", "mapping_diff", "run_mapping_diff"]

# How long before the earliest event of the range its commands are looked for. Commands are written after
# their event; the margin covers clocks that disagree between the hosts that stamped the two.
COMMANDS_MARGIN_MS = 15 * 60 * 1000


def event_of(record: Record) -> ReplayedEvent:
    """What a raw-events record is: its envelope id (the commands' `causation_event_id`) and type.

    A value that is not an envelope falls back to the `event_id` header, then to its coordinates.
    """
    value = record.json_value()
    envelope = value if isinstance(value, dict) else {}
    envelope_id = envelope.get("id")
    event_id = envelope_id if isinstance(envelope_id, str) and envelope_id else None
    kind = envelope.get("type")
    tenant = envelope.get("tenant")
    return ReplayedEvent(
        event_id=event_id or record.header("event_id") or record.coordinates,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp_ms,
        key=record.key_text,
        event_type=kind if isinstance(kind, str) else None,
        tenant=tenant if isinstance(tenant, str) else record.header("tenant"),
    )


@dataclass(frozen=True)
class _Event:
    record: Record
    info: ReplayedEvent


async def _scan(
    settings: KafkaSettings,
    topic: str,
    partitions: Sequence[int],
    start: Bound,
    *,
    keep: Callable[[Record], None],
) -> list[Gap]:
    """Every record of `topic` from `start` to its end now, handed to `keep` one at a time."""
    async with assigned_consumer(settings, client_role="cli-replay-diff") as consumer:
        ranges = await plan_range(consumer, topic, partitions, start, Bound(BoundKind.LATEST))
        reader = RangeRead(consumer, topic, ranges)
        async for record in reader.records():
            keep(record)
    return reader.gaps


def _incomplete(topic: str, gaps: Sequence[Gap]) -> list[str]:
    return [f"{topic}: {gap}" for gap in gaps]


async def run_mapping_diff(
    settings: KafkaSettings,
    mappings: Mappings,
    *,
    config_label: str,
    topic: str,
    start: Bound,
    stop: Bound,
    partitions: Sequence[int] | None = None,
    record_filter: RecordFilter | None = None,
    commands_from: Bound | None = None,
    now: datetime | None = None,
    on_plan: Callable[[int], None] | None = None,
    on_scanned: Callable[[int], None] | None = None,
) -> DiffReport:
    """Map the events of `[start, stop)` of `topic` through `mappings` and diff against crm-commands.

    Raises TopicNotFoundError when the source or crm-commands is missing, PartitionNotFoundError for a
    partition the source lacks.
    """
    source = resolve_topic(topic, settings)
    commands_topic = settings.topic(Topic.CRM_COMMANDS)
    dlq_topic = settings.topic(Topic.RAW_EVENTS_DLQ)
    orders_topic, tickets_topic = settings.topic(Topic.ORDERS), settings.topic(Topic.TICKETS)
    found = await existing_topics(settings, {source, commands_topic, dlq_topic, orders_topic, tickets_topic})
    for name in (source, commands_topic):
        if name not in found:
            raise TopicNotFoundError(name)
    chosen = sorted(set(partitions)) if partitions else found[source]
    missing = sorted(set(chosen) - set(found[source]))
    if missing:
        raise PartitionNotFoundError(source, missing, found[source])
    now = now or utcnow()

    # 1. The events of the range, once per event id (the earliest copy).
    events: dict[str, _Event] = {}
    filter_errors: list[str] = []
    async with assigned_consumer(settings, client_role="cli-replay-diff") as consumer:
        ranges = await plan_range(consumer, source, chosen, start, stop)
        report = DiffReport(source, ranges, config_label, commands_topic)
        reader = RangeRead(consumer, source, ranges)
        if on_plan:
            on_plan(reader.total)
        async for record in reader.records():
            report.scanned += 1
            if on_scanned:
                on_scanned(1)
            try:
                if record_filter is not None and not record_filter.matches(record):
                    continue
            except FilterError as exc:
                filter_errors.append(str(exc))
                continue
            report.matched += 1
            info = event_of(record)
            known = events.get(info.event_id)
            if known is not None:
                report.repeated += 1
                if (known.info.timestamp_ms, known.info.partition, known.info.offset) <= (
                    info.timestamp_ms,
                    info.partition,
                    info.offset,
                ):
                    continue
            events[info.event_id] = _Event(record, info)
    report.incomplete += _incomplete(source, reader.gaps)
    if filter_errors:
        report.incomplete.append(
            f"{len(filter_errors)} message(s) could not be evaluated by the filter and were not compared; "
            f"first: {filter_errors[0]}"
        )
    if not events:
        return report

    # 2. Which order and ticket keys the mapping reads (ids come from the event alone, not from state).
    asked = KeyCollector()
    for event in events.values():
        map_event(event.record.value, mappings, asked, now=now)

    # 3. What was produced before: commands, dead letters, and the order/ticket history of those keys.
    window = commands_from or Bound(
        BoundKind.TIME, max(0, min(e.info.timestamp_ms for e in events.values()) - COMMANDS_MARGIN_MS)
    )
    report.commands_from = str(window)
    produced: list[ProducedCommand] = []
    unreadable: list[str] = []

    def keep_command(record: Record) -> None:
        report.commands_read += 1
        header = record.header("event_id")
        if header is not None and header not in events:
            return  # the mapper stamps each command with its event's id: no need to parse the others
        try:
            command = CrmCommand.from_json(record.value or b"")
        except ValueError as exc:
            unreadable.append(f"{record.coordinates}: {type(exc).__name__}")
            return
        if command.causation_event_id in events:
            produced.append(ProducedCommand(command, record.timestamp_ms, record.partition, record.offset))

    gaps = await _scan(settings, commands_topic, found[commands_topic], window, keep=keep_command)
    report.incomplete += _incomplete(commands_topic, gaps)
    if unreadable:
        report.warnings.append(
            f"{len(unreadable)} record(s) of {commands_topic} are not CRM commands and were left out; "
            f"first: {unreadable[0]}"
        )

    dead_lettered: set[str] = set()
    if dlq_topic in found:

        def keep_dead_letter(record: Record) -> None:
            event_id = record.header("event_id") or event_of(record).event_id
            if event_id in events:
                dead_lettered.add(event_id)

        gaps = await _scan(settings, dlq_topic, found[dlq_topic], window, keep=keep_dead_letter)
        report.incomplete += _incomplete(dlq_topic, gaps)
    else:
        report.warnings.append(f"{dlq_topic} does not exist: no event is known to be dead-lettered before")

    histories: dict[str, dict[str, list[StateRecord]]] = {}
    for state_topic, keys in ((orders_topic, asked.orders), (tickets_topic, asked.tickets)):
        history: dict[str, list[StateRecord]] = defaultdict(list)
        histories[state_topic] = history
        if not keys:
            continue
        if state_topic not in found:
            report.warnings.append(f"{state_topic} does not exist: events are mapped with no prior state")
            continue

        def keep_state(
            record: Record, keys: set[str] = keys, history: dict[str, list[StateRecord]] = history
        ) -> None:
            key = record.key_text
            if key in keys:
                history[key].append(
                    StateRecord(record.offset, record.timestamp_ms, record.header("event_id"), record.value)
                )

        gaps = await _scan(
            settings, state_topic, found[state_topic], Bound(BoundKind.EARLIEST), keep=keep_state
        )
        # State is best effort anyway (compaction removes history): a short read is worth a warning only.
        report.warnings += _incomplete(state_topic, gaps)
    recorded = RecordedState(histories[orders_topic], histories[tickets_topic])

    # When each event was first mapped: its earliest output (commands, state), else its own timestamp.
    mapped_at = {event_id: e.info.timestamp_ms for event_id, e in events.items()}
    first_output: dict[str, int] = {}
    for item in produced:
        event_id = item.command.causation_event_id
        first_output[event_id] = min(first_output.get(event_id, item.timestamp_ms), item.timestamp_ms)
    for history in histories.values():
        for records in history.values():
            for state in records:
                if state.event_id in events:
                    earliest = first_output.get(state.event_id, state.timestamp_ms)
                    first_output[state.event_id] = min(earliest, state.timestamp_ms)
    mapped_at.update(first_output)

    # 4. Map each event with the state it was first mapped with, and compare.
    before: dict[str, list[CrmCommand]] = defaultdict(list)
    for item in first_per_command_id(produced):
        before[item.command.causation_event_id].append(item.command)
        report.versions_before[item.command.mapping_version] += 1
    for event in sorted(events.values(), key=lambda e: (e.info.partition, e.info.offset)):
        event_id = event.info.event_id
        view = recorded.as_mapped(event_id, mapped_at[event_id])
        outcome = map_event(event.record.value, mappings, view, now=now)
        report.events.append(
            compare_event(
                event.info,
                before[event_id],
                outcome,
                dead_lettered_before=event_id in dead_lettered,
                state_unknown=view.unknown,
            )
        )
        tenant = event.info.tenant
        if tenant is not None and tenant in mappings.tenants:
            report.versions_after[tenant] = mappings.tenants[tenant].version
    return report


def mapping_diff(
    *,
    config: Path,
    topic: str,
    start: Bound,
    stop: Bound,
    partitions: Sequence[int] | None,
    record_filter: RecordFilter | None,
    commands_from: Bound | None,
    as_json: bool,
    show: int | None,
) -> None:
    """The `replay --dry-run --mapping` command: print the diff, exit 0 (same), 1 (differs) or 2."""
    try:
        mappings = Mappings.from_config(load_config(config))
    except (ConfigError, ValueError) as exc:
        err_console.print(f"error: --mapping: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    settings = kafka_settings()
    report = run_with_progress(
        "map",
        lambda on_plan, on_scanned: run_mapping_diff(
            settings,
            mappings,
            config_label=str(config),
            topic=topic,
            start=start,
            stop=stop,
            partitions=partitions,
            record_filter=record_filter,
            commands_from=commands_from,
            on_plan=on_plan,
            on_scanned=on_scanned,
        ),
    )
    for warning in report.warnings:
        err_console.print(f"warning: {warning}", markup=False, highlight=False)
    for reason in report.incomplete:
        err_console.print(f"incomplete: {reason}", markup=False, highlight=False)
    if as_json:
        typer.echo(orjson.dumps(render_json(report), option=orjson.OPT_INDENT_2).decode())
    else:
        for text, style in render_text(report, show=show):
            console.print(text, style=style or None, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(report.exit_code)
