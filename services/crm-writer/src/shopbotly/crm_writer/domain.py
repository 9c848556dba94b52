"""Pure delivery logic: reading records into commands, coalescing one identity's queue into CRM writes.

No I/O here. The engine hands in the commands taken for one identity (in offset order); connectors say
which kind of CRM write an op is and whether that kind may merge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

import orjson
from pydantic import JsonValue, ValidationError

from shopbotly.common.events import CommandOp, CrmCommand

__all__ = [
    "WRITE_KINDS",
    "Envelope",
    "Write",
    "WriteKind",
    "coalesce",
    "merged_properties",
    "parse_record",
    "property_text",
    "split_multi",
    "union_tags",
]


class WriteKind(StrEnum):
    """What a write does in the CRM. Only kinds that are upserts of one record may merge."""

    CONTACT = "contact"  # upsert of the identity's contact (fields, tags)
    LEAD = "lead"  # upsert of the identity's lead, where the CRM has a separate lead object
    NOTE = "note"  # a new note/activity on the contact
    ORDER = "order"  # an order attached to the contact
    TICKET = "ticket"  # a new support ticket for the contact
    NOTIFY = "notify"  # a signed notification to the tenant's bot

    @property
    def mergeable(self) -> bool:
        # Two notes are two notes: merging them would change the CRM's final state.
        return self in (WriteKind.CONTACT, WriteKind.LEAD)


# The write each op becomes on a CRM that has an object for each (connectors of CRMs that lack one map it
# otherwise: HubSpot's leads are contacts).
WRITE_KINDS: Mapping[CommandOp, WriteKind] = {
    CommandOp.UPSERT_CONTACT: WriteKind.CONTACT,
    CommandOp.ADD_TAGS: WriteKind.CONTACT,
    CommandOp.UPSERT_LEAD: WriteKind.LEAD,
    CommandOp.ADD_NOTE: WriteKind.NOTE,
    CommandOp.ATTACH_ORDER: WriteKind.ORDER,
    CommandOp.CREATE_TICKET: WriteKind.TICKET,
    CommandOp.NOTIFY_BOT: WriteKind.NOTIFY,
}


@dataclass(frozen=True)
class Envelope:
    """One consumed record and the command in it, or why there is none (the record is then dead-lettered)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None
    command: CrmCommand | None
    error: str | None = None


def parse_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]] | None,
    timestamp_ms: int | None,
) -> Envelope:
    """Read a crm-commands record. A record that is not a valid CrmCommand keeps its reason in `error`."""
    base = Envelope(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        headers=tuple(headers or ()),
        timestamp_ms=timestamp_ms,
        command=None,
    )
    if value is None:
        return replace(base, error="empty record value (tombstone) is not a command")
    try:
        command = CrmCommand.from_json(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(value)"
        return replace(
            base,
            error=f"not a {CrmCommand.SCHEMA} value: {where}: {first['msg']} ({exc.error_count()} error(s))",
        )
    expected_key = command.key()
    if key is not None and key != expected_key:
        # The key decides the partition and so the order; a command under someone else's key could be
        # applied out of order with its real identity's other commands.
        return replace(base, error="record key does not match the command's tenant:connection:identity")
    return replace(base, command=command)


@dataclass
class Write:
    """One CRM write: one command, or several of one identity merged (last write wins, tags as a union).

    `handles` are the caller's references to the merged commands (same order as `commands`).
    """

    kind: WriteKind
    tenant: str
    connection: str
    identity: str
    commands: list[CrmCommand] = field(default_factory=list)
    handles: list[int] = field(default_factory=list)
    fields: dict[str, JsonValue] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)

    @property
    def op(self) -> CommandOp:
        return self.commands[-1].op

    @property
    def body(self) -> str | None:
        return self.commands[-1].body

    @property
    def key(self) -> str:
        """The write's idempotency key: the command id, or a digest of the merged ids (stable per set)."""
        if len(self.commands) == 1:
            return self.commands[0].command_id
        digest = hashlib.sha256("\x00".join(c.command_id for c in self.commands).encode()).hexdigest()
        return f"cw_{digest[:32]}"

    def absorb(self, command: CrmCommand, handle: int) -> None:
        self.commands.append(command)
        self.handles.append(handle)
        self.fields.update(command.fields)
        self.tags = union_tags(self.tags, command.tags)

    def single(self, index: int) -> Write:
        """The write of just one of the merged commands (used to find which one the CRM refuses)."""
        command, handle = self.commands[index], self.handles[index]
        w = Write(self.kind, self.tenant, self.connection, self.identity)
        w.absorb(command, handle)
        return w


def coalesce(
    items: Sequence[tuple[int, CrmCommand]],
    kind_of: Callable[[CommandOp], WriteKind],
    *,
    max_merge: int,
    group_of: Callable[[CommandOp], Hashable] | None = None,
) -> list[Write]:
    """Merge consecutive mergeable commands of the same identity and kind into one write each.

    Only neighbours merge, so the writes keep the commands' order: [upsert, note, upsert] stays three
    writes, and the note is written after the first upsert and before the second, as it was queued.
    `group_of` narrows merging further (e.g. a generic CRM whose ops go to different endpoints).
    """
    writes: list[Write] = []
    groups: list[Hashable] = []
    for handle, command in items:
        kind = kind_of(command.op)
        group = group_of(command.op) if group_of is not None else kind
        last = writes[-1] if writes else None
        if (
            last is not None
            and kind.mergeable
            and last.kind == kind
            and groups[-1] == group
            and len(last.commands) < max_merge
            and (last.tenant, last.connection, last.identity)
            == (command.tenant, command.connection, command.identity)
        ):
            last.absorb(command, handle)
            continue
        write = Write(kind, command.tenant, command.connection, command.identity)
        write.absorb(command, handle)
        writes.append(write)
        groups.append(group)
    return writes


def union_tags(existing: Iterable[str], new: Iterable[str]) -> list[str]:
    """Tags of both, first-seen order, no blanks or repeats (case-sensitive, as CRMs compare them)."""
    out: list[str] = []
    seen: set[str] = set()
    for tag in (*existing, *new):
        t = tag.strip()
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    return out


def split_multi(value: object) -> list[str]:
    """Values of a multi-select property as the CRM stores them (`a;b;c`)."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value if str(v).strip()]
    return [v for v in str(value).split(";") if v.strip()]


def property_text(value: JsonValue) -> str:
    """A command field value as a CRM property string (HubSpot and Salesforce text semantics).

    None clears the property (empty string); lists become multi-select values.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(property_text(v) for v in value)
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def merged_properties(
    current: Mapping[str, str], write: Write, *, tags_property: str | None
) -> dict[str, str]:
    """The full property set after applying a write on top of what the CRM has (read-modify-write)."""
    props = dict(current)
    for name, value in write.fields.items():
        props[name] = property_text(value)
    if write.tags:
        if tags_property is None:
            raise ValueError("tags given but the connection has no tags property")
        props[tags_property] = ";".join(union_tags(split_multi(current.get(tags_property)), write.tags))
    return props
