"""What a mapping change does to the CRM commands of past events: the pure half of `replay --mapping`.

Commands are matched by `command_id` (derived from event id, rule id and command index, never from the mapping
version), then, among those left over, by what they act on (tenant, connection, identity, op), so a rule that
was given a new id shows as changed rather than as removed plus added. They are compared on their content:
`created_at` (the time of mapping) and `mapping_version` differ by construction and are left out; tags are a
union in the CRM, so their order is ignored. No I/O here (replay_diff.py reads the topics).
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, TypeVar

import orjson

from shopbotly.cli._kafka_io import PartitionRange, format_time
from shopbotly.common.events import CrmCommand, Order, Ticket
from shopbotly.mapper.domain import Outcome, Status

__all__ = [
    "COMPARED",
    "MISSING",
    "ChangeKind",
    "CommandChange",
    "DiffReport",
    "EventDiff",
    "FieldChange",
    "KeyCollector",
    "ProducedCommand",
    "RecordedState",
    "ReplayedEvent",
    "StateRecord",
    "compare_event",
    "diff_commands",
    "field_changes",
    "first_per_command_id",
    "render_json",
    "render_text",
]


class _Missing:
    """A field one side of a comparison does not have (not the same as a JSON null)."""

    def __repr__(self) -> str:
        return "(absent)"


MISSING: Final = _Missing()

# What a command does, and to whom. Left out: command_id (the match key; shown when a pair's ids differ),
# mapping_version and created_at (differ between any two mappings or runs), schema_version.
COMPARED: tuple[str, ...] = (
    "tenant",
    "connection",
    "identity",
    "op",
    "rule_id",
    "event_type",
    "fields",
    "tags",
    "body",
    "causation_event_id",
    "trace_id",
    "received_at",
)


def _canonical(value: Any) -> bytes:
    # JSON text with sorted keys: `1`, `1.0` and `true` stay different, as they are to a CRM.
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _same(a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING:
        return a is b
    return _canonical(a) == _canonical(b)


@dataclass(frozen=True)
class FieldChange:
    """One difference between two matched commands: `fields.<name>`, `tags`, `body`, `identity`, ..."""

    path: str
    before: Any
    after: Any

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path}
        if self.before is not MISSING:
            out["before"] = self.before
        if self.after is not MISSING:
            out["after"] = self.after
        return out


def _content(command: CrmCommand) -> dict[str, Any]:
    return command.model_dump(mode="json", include=set(COMPARED))


def field_changes(before: CrmCommand, after: CrmCommand) -> list[FieldChange]:
    """The differences in content between two commands, `fields` key by key; empty when they match."""
    changes: list[FieldChange] = []
    if before.command_id != after.command_id:
        changes.append(FieldChange("command_id", before.command_id, after.command_id))
    old, new = _content(before), _content(after)
    for name in COMPARED:
        if name == "fields":
            for key in sorted(old["fields"].keys() | new["fields"].keys()):
                was = old["fields"].get(key, MISSING)
                now = new["fields"].get(key, MISSING)
                if not _same(was, now):
                    changes.append(FieldChange(f"fields.{key}", was, now))
        elif name == "tags":
            if set(old["tags"]) != set(new["tags"]):
                changes.append(FieldChange("tags", sorted(set(old["tags"])), sorted(set(new["tags"]))))
        elif not _same(old.get(name), new.get(name)):
            changes.append(FieldChange(name, old.get(name), new.get(name)))
    return changes


class ChangeKind(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True)
class CommandChange:
    """A command the new mapping adds, one it no longer produces, or one it produces differently."""

    kind: ChangeKind
    before: CrmCommand | None
    after: CrmCommand | None
    differences: tuple[FieldChange, ...] = ()

    @property
    def command(self) -> CrmCommand:
        found = self.after or self.before
        assert found is not None
        return found

    @property
    def keeps_command_id(self) -> bool:
        """Changed under the same id: crm-writer's ledger skips an id it already applied."""
        return (
            self.kind is ChangeKind.CHANGED
            and self.before is not None
            and self.after is not None
            and self.before.command_id == self.after.command_id
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "change": self.kind.value,
            "command_id": self.command.command_id,
            "op": self.command.op.value,
            "connection": self.command.connection,
            "identity": self.command.identity,
            "before": None if self.before is None else orjson.loads(self.before.to_json()),
            "after": None if self.after is None else orjson.loads(self.after.to_json()),
            "differences": [d.as_json() for d in self.differences],
        }


def _target(command: CrmCommand) -> tuple[str, str, str, str]:
    return (command.tenant, command.connection, command.identity, command.op.value)


def diff_commands(
    before: Sequence[CrmCommand], after: Sequence[CrmCommand]
) -> tuple[list[CommandChange], int]:
    """(changes in the order of `after`, then removals in the order of `before`; count of unchanged)."""
    before_by_id = {c.command_id: c for c in before}
    after_ids = {c.command_id for c in after}
    leftover: dict[tuple[str, str, str, str], deque[CrmCommand]] = defaultdict(deque)
    for command in before:
        if command.command_id not in after_ids:
            leftover[_target(command)].append(command)
    changes: list[CommandChange] = []
    unchanged = 0
    for command in after:
        old = before_by_id.get(command.command_id)
        if old is None and leftover[_target(command)]:
            old = leftover[_target(command)].popleft()
        if old is None:
            changes.append(CommandChange(ChangeKind.ADDED, None, command))
            continue
        differences = field_changes(old, command)
        if differences:
            changes.append(CommandChange(ChangeKind.CHANGED, old, command, tuple(differences)))
        else:
            unchanged += 1
    removed = {id(c) for queue in leftover.values() for c in queue}
    changes += [CommandChange(ChangeKind.REMOVED, c, None) for c in before if id(c) in removed]
    return changes, unchanged


@dataclass(frozen=True)
class ProducedCommand:
    """A command as read from crm-commands, with where and when it was written."""

    command: CrmCommand
    timestamp_ms: int
    partition: int
    offset: int


def first_per_command_id(produced: Iterable[ProducedCommand]) -> list[ProducedCommand]:
    """The earliest copy of each command id, in time order.

    Later copies come from replays, redrives and redeliveries; crm-writer applied the first one it got and
    its ledger skipped the others, so the first is what the CRM saw.
    """
    first: dict[str, ProducedCommand] = {}
    for item in produced:
        known = first.get(item.command.command_id)
        if known is None or (item.timestamp_ms, item.partition, item.offset) < (
            known.timestamp_ms,
            known.partition,
            known.offset,
        ):
            first[item.command.command_id] = item
    return sorted(first.values(), key=lambda p: (p.timestamp_ms, p.partition, p.offset))


# --- the order and ticket state an event was mapped with -------------------------------------------------


@dataclass(frozen=True)
class StateRecord:
    """One record of the orders or tickets topic: its value (None: tombstone) and the event that wrote it."""

    offset: int
    timestamp_ms: int
    event_id: str | None
    value: bytes | None


M = TypeVar("M", Order, Ticket)


def _state_before(
    history: Sequence[StateRecord], parse: Callable[[bytes], M], *, event_id: str, mapped_at_ms: int
) -> tuple[M | None, bool]:
    """(the state of one key just before `event_id` was first mapped, whether that moment was found).

    The moment is the event's own first record of the key (the mapper wrote it when it mapped the event);
    without one, the last record stamped at or before `mapped_at_ms`. Unreadable records are skipped, as
    the mapper's state store skips them.
    """
    own = next((i for i, r in enumerate(history) if r.event_id == event_id), None)
    prior = history[:own] if own is not None else [r for r in history if r.timestamp_ms <= mapped_at_ms]
    found = own is not None or bool(prior) or not history
    for record in reversed(prior):
        if record.value is None:
            return None, found
        try:
            return parse(record.value), found
        except ValueError:
            continue
    return None, found


class RecordedState:
    """Order and ticket history by message key, read back from the compacted state topics.

    `as_mapped(event)` is the mapper's StateView as it was when the event was first mapped, so the new
    mapping sees the state the old one saw and only the mapping differs.
    """

    def __init__(
        self,
        orders: Mapping[str, Sequence[StateRecord]] | None = None,
        tickets: Mapping[str, Sequence[StateRecord]] | None = None,
    ) -> None:
        self.orders = {k: sorted(v, key=lambda r: r.offset) for k, v in (orders or {}).items()}
        self.tickets = {k: sorted(v, key=lambda r: r.offset) for k, v in (tickets or {}).items()}

    def as_mapped(self, event_id: str, mapped_at_ms: int) -> _StateAsMapped:
        return _StateAsMapped(self, event_id, mapped_at_ms)


class _StateAsMapped:
    """StateView (shopbotly.mapper.domain) for one event; `unknown` names keys whose history is gone."""

    def __init__(self, recorded: RecordedState, event_id: str, mapped_at_ms: int) -> None:
        self._recorded = recorded
        self._event_id = event_id
        self._mapped_at_ms = mapped_at_ms
        self.unknown: list[str] = []

    def order(self, key: str) -> Order | None:
        value, found = _state_before(
            self._recorded.orders.get(key, ()),
            Order.from_json,
            event_id=self._event_id,
            mapped_at_ms=self._mapped_at_ms,
        )
        if not found:
            self.unknown.append(f"order {key}")
        return value

    def ticket(self, key: str) -> Ticket | None:
        value, found = _state_before(
            self._recorded.tickets.get(key, ()),
            Ticket.from_json,
            event_id=self._event_id,
            mapped_at_ms=self._mapped_at_ms,
        )
        if not found:
            self.unknown.append(f"ticket {key}")
        return value


@dataclass
class KeyCollector:
    """A StateView that knows nothing and remembers what was asked: which state keys a mapping reads.

    Rules compute an order or ticket id from the event alone, so the keys do not depend on the state.
    """

    orders: set[str] = field(default_factory=set)
    tickets: set[str] = field(default_factory=set)

    def order(self, key: str) -> Order | None:
        self.orders.add(key)
        return None

    def ticket(self, key: str) -> Ticket | None:
        self.tickets.add(key)
        return None


# --- per event and the whole report ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayedEvent:
    """Where one raw event of the range was, and what it is."""

    event_id: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    event_type: str | None
    tenant: str | None


@dataclass(frozen=True)
class EventDiff:
    event: ReplayedEvent
    changes: tuple[CommandChange, ...]
    unchanged: int
    dead_lettered_before: bool
    dead_lettered_after: bool
    errors: tuple[str, ...] = ()  # why the new mapping dead-letters it
    state_unknown: tuple[str, ...] = ()  # state keys whose history before the event is gone

    @property
    def differs(self) -> bool:
        return bool(self.changes) or self.dead_lettered_before != self.dead_lettered_after

    def count(self, kind: ChangeKind) -> int:
        return sum(1 for c in self.changes if c.kind is kind)

    def as_json(self) -> dict[str, Any]:
        e = self.event
        return {
            "event_id": e.event_id,
            "partition": e.partition,
            "offset": e.offset,
            "timestamp": format_time(e.timestamp_ms),
            "key": e.key,
            "type": e.event_type,
            "tenant": e.tenant,
            "dead_lettered": {"before": self.dead_lettered_before, "after": self.dead_lettered_after},
            "errors": list(self.errors),
            "state_unknown": list(self.state_unknown),
            "unchanged_commands": self.unchanged,
            "commands": [c.as_json() for c in self.changes],
        }


def compare_event(
    event: ReplayedEvent,
    before: Sequence[CrmCommand],
    outcome: Outcome,
    *,
    dead_lettered_before: bool,
    state_unknown: Sequence[str] = (),
) -> EventDiff:
    """The new mapping's outcome for one event against the commands produced for it before.

    A dead-lettered outcome still counts its commands: the mapper publishes what the working rules made.
    """
    changes, unchanged = diff_commands(before, outcome.commands)
    dead = outcome.status is Status.DEAD_LETTERED
    return EventDiff(
        event,
        tuple(changes),
        unchanged,
        dead_lettered_before,
        dead,
        tuple(outcome.errors) if dead else (),
        tuple(state_unknown),
    )


@dataclass
class DiffReport:
    source: str
    ranges: list[PartitionRange]
    config: str
    commands_topic: str
    versions_after: dict[str, str] = field(default_factory=dict)  # tenant -> mapping version
    versions_before: Counter[str] = field(default_factory=Counter)  # mapping version -> commands
    commands_from: str | None = None  # where the read of commands_topic started (a bound, as text)
    commands_read: int = 0
    scanned: int = 0
    matched: int = 0
    repeated: int = 0  # copies of an event id already compared (replays of it inside the range)
    events: list[EventDiff] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)  # why the comparison cannot be trusted

    @property
    def differing(self) -> list[EventDiff]:
        return [e for e in self.events if e.differs]

    def total(self, kind: ChangeKind) -> int:
        return sum(e.count(kind) for e in self.events)

    @property
    def unchanged_commands(self) -> int:
        return sum(e.unchanged for e in self.events)

    @property
    def kept_ids(self) -> int:
        return sum(1 for e in self.events for c in e.changes if c.keeps_command_id)

    def dead_lettered(self, *, after: bool) -> int:
        return sum(1 for e in self.events if (e.dead_lettered_after if after else e.dead_lettered_before))

    @property
    def exit_code(self) -> int:
        """As diff(1): 0 the same, 1 differences, 2 the comparison could not be completed."""
        if self.incomplete:
            return 2
        return 1 if self.differing else 0

    def summary(self) -> str:
        differing = len(self.differing)
        repeated = f" ({self.repeated} repeated event id(s) not compared again)" if self.repeated else ""
        return (
            f"compared {len(self.events)} event(s){repeated}: {differing} with differences, "
            f"{len(self.events) - differing} unchanged; commands: {self.total(ChangeKind.ADDED)} added, "
            f"{self.total(ChangeKind.REMOVED)} removed, {self.total(ChangeKind.CHANGED)} changed, "
            f"{self.unchanged_commands} unchanged; dead-lettered: {self.dead_lettered(after=False)} before, "
            f"{self.dead_lettered(after=True)} with the new mapping"
        )


def _show(value: Any, limit: int = 160) -> str:
    if value is MISSING:
        return "(absent)"
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _content_lines(command: CrmCommand) -> list[str]:
    lines = [f"fields.{k}: {_show(v)}" for k, v in sorted(command.fields.items())]
    if command.tags:
        lines.append(f"tags: {_show(command.tags)}")
    if command.body is not None:
        lines.append(f"body: {_show(command.body)}")
    return lines


_MARK = {ChangeKind.ADDED: "+", ChangeKind.REMOVED: "-", ChangeKind.CHANGED: "~"}
_STYLE = {ChangeKind.ADDED: "green", ChangeKind.REMOVED: "red", ChangeKind.CHANGED: "yellow"}

Line = tuple[str, str]  # (text, rich style)


def _event_lines(diff: EventDiff) -> list[Line]:
    e = diff.event
    where = f"p{e.partition}:{e.offset} {e.event_type or '(no type)'} at {format_time(e.timestamp_ms)}"
    lines: list[Line] = [(f"event {e.event_id} ({where}, key {e.key})", "bold")]
    for change in diff.changes:
        c = change.command
        target = f"{c.op.value} {c.connection}/{c.identity}"
        head = f"  {_MARK[change.kind]} {target} {c.command_id} (rule {c.rule_id})"
        lines.append((head, _STYLE[change.kind]))
        if change.kind is ChangeKind.CHANGED:
            lines += [
                (f"      {d.path}: {_show(d.before)} → {_show(d.after)}", "") for d in change.differences
            ]
        else:
            lines += [(f"      {text}", "") for text in _content_lines(c)]
    if diff.dead_lettered_after and not diff.dead_lettered_before:
        lines.append((f"  ! the new mapping dead-letters it: {'; '.join(diff.errors)}", "red"))
    elif diff.dead_lettered_before and not diff.dead_lettered_after:
        lines.append(("  ! dead-lettered before (raw-events.dlq), mapped by the new mapping", "green"))
    if diff.unchanged:
        lines.append((f"  = {diff.unchanged} command(s) unchanged", "dim"))
    if diff.state_unknown:
        lines.append(
            (
                f"  ? no state recorded before this event for {', '.join(diff.state_unknown)} (compacted "
                "away?): mapped with none, values taken from it may differ for that reason alone",
                "dim",
            )
        )
    return lines


def render_text(report: DiffReport, *, show: int | None = None) -> list[Line]:
    """The readable diff: where it read, each event with differences (up to `show`), a summary line."""
    ranges = ", ".join(f"p{r.partition} [{r.start}, {r.stop})" for r in report.ranges) or "no partitions"
    lines: list[Line] = [(f"source {report.source}: {ranges}", "")]
    after = ", ".join(f"{t} {v}" for t, v in sorted(report.versions_after.items())) or "(no tenant)"
    before = ", ".join(f"{v} ({n})" for v, n in report.versions_before.most_common()) or "(no commands)"
    lines.append((f"mapping before: {before}; after: {report.config}: {after}", ""))
    lines.append(
        (
            f"commands before: {report.commands_topic} from {report.commands_from or '-'} to its end "
            f"({report.commands_read} read)",
            "",
        )
    )
    differing = report.differing
    for diff in differing[: show if show is not None else len(differing)]:
        lines += _event_lines(diff)
    if show is not None and len(differing) > show:
        lines.append((f"... and {len(differing) - show} more event(s) with differences (--show)", "dim"))
    unchanged = len(report.events) - len(differing)
    if unchanged:
        lines.append((f"{unchanged} event(s) unchanged", "dim"))
    if report.kept_ids:
        lines.append(
            (
                f"note: {report.kept_ids} changed command(s) keep their command_id (same event, rule and "
                "index): crm-writer skips ids its ledger already holds, so a replay does not apply these "
                "changes; give the changed rule a new id to have them applied "
                "(docs/operations.md#bad-mapping)",
                "yellow",
            )
        )
    lines.append((report.summary(), "bold"))
    return lines


def render_json(report: DiffReport) -> dict[str, Any]:
    """The same report for scripts: every event with differences in full, and the counts."""
    return {
        "source": report.source,
        "ranges": [{"partition": r.partition, "start": r.start, "stop": r.stop} for r in report.ranges],
        "config": report.config,
        "mapping_versions": {"before": dict(report.versions_before), "after": report.versions_after},
        "commands_topic": report.commands_topic,
        "commands_from": report.commands_from,
        "commands_read": report.commands_read,
        "summary": {
            "read": report.scanned,
            "matched": report.matched,
            "events": len(report.events),
            "repeated": report.repeated,
            "events_with_differences": len(report.differing),
            "events_unchanged": len(report.events) - len(report.differing),
            "commands_added": report.total(ChangeKind.ADDED),
            "commands_removed": report.total(ChangeKind.REMOVED),
            "commands_changed": report.total(ChangeKind.CHANGED),
            "commands_unchanged": report.unchanged_commands,
            "changed_keeping_command_id": report.kept_ids,
            "dead_lettered_before": report.dead_lettered(after=False),
            "dead_lettered_after": report.dead_lettered(after=True),
        },
        "events": [e.as_json() for e in report.differing],
        "warnings": report.warnings,
        "incomplete": report.incomplete,
        "exit_code": report.exit_code,
    }
