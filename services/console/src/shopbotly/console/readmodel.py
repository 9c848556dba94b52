"""The console's read model: raw events, commands, results and dead letters joined in memory (no I/O).

Joined by `(tenant, event_id)` (an event, the commands it caused, its dead letters), by `command_id` (a
command, its results, its dead letters) and by customer identity (the event's subject and its commands'
identity). Bounded: entries older than `max_age_s` or beyond the `max_*` counts are dropped, oldest first.
Rebuilt from the topics at every start (see materializer.py), like the order table.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from shopbotly.common.events import ATTEMPTS_HEADER

__all__ = [
    "CommandView",
    "DeadLetterView",
    "EventQuery",
    "EventView",
    "Outcome",
    "ReadModel",
    "Record",
    "ResultView",
    "TopicRole",
]

REDRIVEN_FROM = "redriven_from"  # the CLI's marker header on a redriven copy (shopbotly.cli.dlq_cmd)
EventKey = tuple[str, str]  # (tenant, event_id)
Place = tuple[str, int, int]  # (topic, partition, offset)


class TopicRole(StrEnum):
    RAW_EVENTS = "raw_events"
    COMMANDS = "commands"
    RESULTS = "results"
    RAW_EVENTS_DLQ = "raw_events_dlq"
    COMMANDS_DLQ = "commands_dlq"


class Outcome(StrEnum):
    """Where an event stands, as an operator asks it: did it reach the CRM?"""

    RECEIVED = "received"  # no command seen (yet): nothing mapped, or the mapper is behind
    PENDING = "pending"  # commands without a final result
    APPLIED = "applied"  # every command applied (or found already there)
    FAILED = "failed"  # a dead letter that is neither redriven nor later applied


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record, as the read model needs it (decoupled from aiokafka for tests)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def header_dict(self) -> dict[str, str]:
        return {k: (v or b"").decode("utf-8", "replace") for k, v in self.headers}

    @property
    def place(self) -> Place:
        return (self.topic, self.partition, self.offset)


@dataclass(slots=True)
class ResultView:
    outcome: str
    attempts: int
    crm_ids: dict[str, str]
    error_class: str | None
    error_message: str | None
    finished_at: str
    timestamp_ms: int
    coalesced_with: list[str] = field(default_factory=list)
    tries: list[dict[str, Any]] = field(default_factory=list)  # crm-writer's log of the write's tries
    tries_omitted: int = 0


def _tries(header: str | None) -> tuple[list[dict[str, Any]], int]:
    """The `crm.attempts` header of a result: each try's time, latency, outcome, status and CRM answer."""
    value = _json(header.encode()) if header else None
    if not isinstance(value, dict) or not isinstance(value.get("tries"), list):
        return [], 0
    omitted = value.get("omitted")
    return [t for t in value["tries"] if isinstance(t, dict)], omitted if isinstance(omitted, int) else 0


@dataclass(slots=True)
class DeadLetterView:
    place: Place
    tenant: str
    event_id: str | None
    command_id: str | None
    key: str | None
    error_class: str
    error_message: str
    attempts: str
    origin: str
    origin_topic: str | None
    timestamp_ms: int
    headers: dict[str, str]
    value: Any

    @property
    def marker(self) -> str:
        return f"{self.place[0]}/{self.place[1]}/{self.place[2]}"

    @property
    def place_text(self) -> str:
        return f"{self.place[1]}:{self.place[2]}"


@dataclass(slots=True)
class CommandView:
    command_id: str
    tenant: str
    event_id: str
    connection: str
    identity: str
    op: str
    rule_id: str
    body: dict[str, Any]
    timestamp_ms: int
    results: list[ResultView] = field(default_factory=list)
    dead_letters: list[Place] = field(default_factory=list)
    redriven: int = 0  # copies of it seen again on the commands topic after a redrive

    @property
    def outcome(self) -> Outcome:
        if any(r.outcome in ("applied", "duplicate") for r in self.results):
            return Outcome.APPLIED
        if self.results and self.results[-1].outcome == "dead_lettered" and self.redriven == 0:
            return Outcome.FAILED
        return Outcome.PENDING


@dataclass(slots=True)
class EventView:
    tenant: str
    event_id: str
    source: str
    type: str
    subject: str | None
    received_at: str
    timestamp_ms: int
    place: Place | None
    headers: dict[str, str]
    data: Any
    envelope: dict[str, Any]  # the raw event as on the topic (the mapping playground starts from it)
    command_ids: list[str] = field(default_factory=list)
    dead_letters: list[Place] = field(default_factory=list)


@dataclass(frozen=True)
class EventQuery:
    """Event search. Every field narrows; `tenants` None means every tenant."""

    tenants: Collection[str] | None = None
    tenant: str | None = None
    source: str | None = None
    type: str | None = None
    email: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    outcome: Outcome | None = None
    limit: int = 100


def _json(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.decode("utf-8", "replace")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def iso(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


class ReadModel:
    """Everything the console shows, in memory, bounded. Not thread-safe: one event loop owns it."""

    def __init__(
        self,
        topics: dict[str, TopicRole],
        *,
        max_age_s: float = 7 * 24 * 3600,
        max_events: int = 100_000,
        max_dead_letters: int = 100_000,
    ) -> None:
        self._roles = topics
        self.max_age_ms = int(max_age_s * 1000)
        self.max_events = max_events
        self.max_commands = max_events * 4
        self.max_dead_letters = max_dead_letters
        self.events: OrderedDict[EventKey, EventView] = OrderedDict()
        self.commands: OrderedDict[str, CommandView] = OrderedDict()
        self.dead_letters: OrderedDict[Place, DeadLetterView] = OrderedDict()
        # Joins that arrive before the record they join to (topics are read side by side).
        self._commands_of: dict[EventKey, list[str]] = {}
        self._results_of: dict[str, list[ResultView]] = {}
        self._letters_of_event: dict[EventKey, list[Place]] = {}
        self._letters_of_command: dict[str, list[Place]] = {}
        self.redriven: set[str] = set()  # `redriven_from` markers seen on origin topics
        self.version = 0  # bumped on every change: pages poll it to refresh only when something moved

    # --- applying records ---------------------------------------------------------------------------

    def apply(self, records: Iterable[Record], *, now_ms: int | None = None) -> None:
        for record in records:
            role = self._roles.get(record.topic)
            if role is None:
                continue
            if role is TopicRole.RAW_EVENTS:
                self._raw_event(record)
            elif role is TopicRole.COMMANDS:
                self._command(record)
            elif role is TopicRole.RESULTS:
                self._result(record)
            else:
                self._dead_letter(record)
            self.version += 1
        self.prune(now_ms)

    def _note_redrive(self, headers: dict[str, str]) -> bool:
        marker = headers.get(REDRIVEN_FROM)
        if marker:
            self.redriven.add(marker)
        return bool(marker)

    def _raw_event(self, record: Record) -> None:
        headers = record.header_dict()
        self._note_redrive(headers)
        value = _json(record.value)
        if not isinstance(value, dict) or not value.get("id") or not value.get("tenant"):
            return
        key = (str(value["tenant"]), str(value["id"]))
        if key in self.events:  # a redriven or replayed copy: the first receipt stays
            return
        self.events[key] = EventView(
            tenant=key[0],
            event_id=key[1],
            source=_text(value.get("sourcename")),
            type=_text(value.get("type")),
            subject=value.get("subject") if isinstance(value.get("subject"), str) else None,
            received_at=_text(value.get("receivedat")) or iso(record.timestamp_ms),
            timestamp_ms=record.timestamp_ms,
            place=record.place,
            headers=headers,
            data=value.get("data"),
            envelope=value,
            command_ids=self._commands_of.pop(key, []),
            dead_letters=self._letters_of_event.pop(key, []),
        )

    def _command(self, record: Record) -> None:
        headers = record.header_dict()
        redrive = self._note_redrive(headers)
        value = _json(record.value)
        if not isinstance(value, dict) or not isinstance(value.get("command_id"), str):
            return
        command_id = value["command_id"]
        known = self.commands.get(command_id)
        if known is not None:
            if redrive:
                known.redriven += 1
            return
        tenant = _text(value.get("tenant"))
        event_id = _text(value.get("causation_event_id"))
        command = CommandView(
            command_id=command_id,
            tenant=tenant,
            event_id=event_id,
            connection=_text(value.get("connection")),
            identity=_text(value.get("identity")),
            op=_text(value.get("op")),
            rule_id=_text(value.get("rule_id")),
            body=value,
            timestamp_ms=record.timestamp_ms,
            results=self._results_of.pop(command_id, []),
            dead_letters=self._letters_of_command.pop(command_id, []),
            redriven=1 if redrive else 0,
        )
        self.commands[command_id] = command
        event = self.events.get((tenant, event_id))
        if event is not None:
            event.command_ids.append(command_id)
        else:
            self._commands_of.setdefault((tenant, event_id), []).append(command_id)

    def _result(self, record: Record) -> None:
        value = _json(record.value)
        if not isinstance(value, dict) or not isinstance(value.get("command_id"), str):
            return
        tries, omitted = _tries(record.header_dict().get(ATTEMPTS_HEADER))
        result = ResultView(
            outcome=_text(value.get("outcome")),
            attempts=int(value.get("attempts") or 1),
            crm_ids={str(k): str(v) for k, v in (value.get("crm_ids") or {}).items()},
            error_class=value.get("error_class"),
            error_message=value.get("error_message"),
            finished_at=_text(value.get("finished_at")) or iso(record.timestamp_ms),
            timestamp_ms=record.timestamp_ms,
            coalesced_with=[c for c in value.get("coalesced_with") or () if isinstance(c, str)],
            tries=tries,
            tries_omitted=omitted,
        )
        # crm-writer writes one result per command, also when it coalesced several into one CRM write.
        command_id = value["command_id"]
        command = self.commands.get(command_id)
        if command is not None:
            command.results.append(result)
        else:
            self._results_of.setdefault(command_id, []).append(result)

    def _dead_letter(self, record: Record) -> None:
        headers = record.header_dict()
        value = _json(record.value)
        command_id = value.get("command_id") if isinstance(value, dict) else None
        tenant = headers.get("tenant") or (_text(value.get("tenant")) if isinstance(value, dict) else "")
        event_id = headers.get("event_id") or None
        if event_id is None and isinstance(value, dict):
            event_id = _text(value.get("causation_event_id") or value.get("id")) or None
        topic, partition, offset = (headers.get(f"origin.{h}") for h in ("topic", "partition", "offset"))
        letter = DeadLetterView(
            place=record.place,
            tenant=tenant,
            event_id=event_id,
            command_id=command_id if isinstance(command_id, str) else None,
            key=record.key.decode("utf-8", "replace") if record.key is not None else None,
            error_class=headers.get("error.class", "?"),
            error_message=headers.get("error.message", ""),
            attempts=headers.get("error.attempts", ""),
            origin=f"{topic or '?'}/{partition or '?'}/{offset or '?'}",
            origin_topic=topic,
            timestamp_ms=record.timestamp_ms,
            headers=headers,
            value=value,
        )
        self.dead_letters[record.place] = letter
        if event_id and not letter.command_id:  # a command's dead letter belongs to that command
            event = self.events.get((tenant, event_id))
            if event is not None:
                event.dead_letters.append(record.place)
            else:
                self._letters_of_event.setdefault((tenant, event_id), []).append(record.place)
        if letter.command_id:
            command = self.commands.get(letter.command_id)
            if command is not None:
                command.dead_letters.append(record.place)
            else:
                self._letters_of_command.setdefault(letter.command_id, []).append(record.place)

    # --- retention ----------------------------------------------------------------------------------

    def prune(self, now_ms: int | None = None) -> None:
        now_ms = now_ms if now_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
        cutoff = now_ms - self.max_age_ms
        while self.events:
            key, event = next(iter(self.events.items()))
            if event.timestamp_ms >= cutoff and len(self.events) <= self.max_events:
                break
            del self.events[key]
        while self.commands:
            command_id, command = next(iter(self.commands.items()))
            if command.timestamp_ms >= cutoff and len(self.commands) <= self.max_commands:
                break
            del self.commands[command_id]
        while self.dead_letters:
            place, letter = next(iter(self.dead_letters.items()))
            if letter.timestamp_ms >= cutoff and len(self.dead_letters) <= self.max_dead_letters:
                break
            del self.dead_letters[place]
        # Joins still waiting for their record cannot grow without bound either.
        for pending in (
            self._commands_of,
            self._results_of,
            self._letters_of_event,
            self._letters_of_command,
        ):
            while len(pending) > self.max_events:
                del pending[next(iter(pending))]  # type: ignore[arg-type]

    # --- reading ------------------------------------------------------------------------------------

    def letter_state(self, letter: DeadLetterView) -> str:
        """open, redriven, or applied (a later result shows the command reached the CRM)."""
        if letter.command_id:
            command = self.commands.get(letter.command_id)
            if command is not None and command.outcome is Outcome.APPLIED:
                return "applied"
        return "redriven" if letter.marker in self.redriven else "open"

    def outcome(self, event: EventView) -> Outcome:
        if any(self.letter_state(self.dead_letters[p]) == "open" for p in event.dead_letters if p in self):
            return Outcome.FAILED
        commands = [self.commands[c] for c in event.command_ids if c in self.commands]
        if not commands:
            return Outcome.RECEIVED
        outcomes = {self.command_outcome(c) for c in commands}
        if Outcome.FAILED in outcomes:
            return Outcome.FAILED
        if Outcome.PENDING in outcomes:
            return Outcome.PENDING
        return Outcome.APPLIED

    def command_outcome(self, command: CommandView) -> Outcome:
        """Its results, and an open dead letter (one neither redriven nor applied since) as failed."""
        outcome = command.outcome
        if outcome is Outcome.PENDING and any(
            self.letter_state(self.dead_letters[p]) == "open" for p in command.dead_letters if p in self
        ):
            return Outcome.FAILED
        return outcome

    def __contains__(self, item: object) -> bool:
        return item in self.dead_letters

    def sizes(self) -> dict[str, int]:
        """Entries held, by kind (for the read-model gauge)."""
        return {
            "events": len(self.events),
            "commands": len(self.commands),
            "dead_letters": len(self.dead_letters),
        }

    def identities(self, event: EventView) -> set[str]:
        found = {event.subject.lower()} if event.subject else set()
        found |= {self.commands[c].identity.lower() for c in event.command_ids if c in self.commands}
        return found

    def search(self, query: EventQuery) -> list[EventView]:
        """Newest first, at most `query.limit`."""
        email = query.email.strip().lower() if query.email else None
        hits: list[EventView] = []
        for event in reversed(self.events.values()):
            if query.tenants is not None and event.tenant not in query.tenants:
                continue
            if query.tenant and event.tenant != query.tenant:
                continue
            if query.source and event.source != query.source:
                continue
            if query.type and query.type.lower() not in event.type.lower():
                continue
            if query.since_ms is not None and event.timestamp_ms < query.since_ms:
                continue
            if query.until_ms is not None and event.timestamp_ms > query.until_ms:
                continue
            if email and not any(email in identity for identity in self.identities(event)):
                continue
            if query.outcome is not None and self.outcome(event) is not query.outcome:
                continue
            hits.append(event)
            if len(hits) >= query.limit:
                break
        return hits

    def event(self, tenant: str, event_id: str) -> EventView | None:
        return self.events.get((tenant, event_id))

    def commands_of(self, event: EventView) -> list[CommandView]:
        return [self.commands[c] for c in event.command_ids if c in self.commands]

    def letters(
        self,
        *,
        tenants: Collection[str] | None,
        tenant: str | None = None,
        topic: str | None = None,
        error_class: str | None = None,
        state: str | None = None,
        limit: int | None = 200,
        until_ms: int | None = None,
    ) -> list[DeadLetterView]:
        """Dead letters, newest first; `limit` None for every match, `until_ms` for those read by then."""
        hits: list[DeadLetterView] = []
        for letter in reversed(self.dead_letters.values()):
            if until_ms is not None and letter.timestamp_ms > until_ms:
                continue
            if tenants is not None and letter.tenant not in tenants:
                continue
            if tenant and letter.tenant != tenant:
                continue
            if topic and letter.place[0] != topic:
                continue
            if error_class and letter.error_class != error_class:
                continue
            if state and self.letter_state(letter) != state:
                continue
            hits.append(letter)
            if limit is not None and len(hits) >= limit:
                break
        return hits

    def tenants_seen(self) -> list[str]:
        return sorted(
            {e.tenant for e in self.events.values()} | {d.tenant for d in self.dead_letters.values()}
        )
