"""SQLite persistence of the emulated CRMs: records, per-identity counters, write history, idempotency keys.

One connection guarded by a lock; every public method is one transaction, so concurrent requests (from
the event loop's thread pool) see each other's writes whole. Rules about what is valid come from the
pure modules; this module only looks things up and writes them down.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

from shopbotly.crm_emulator import salesforce_rules as sf
from shopbotly.crm_emulator.domain import (
    IdempotencyOutcome,
    PropertyChange,
    StoredObject,
    System,
    decide_idempotency,
    iso_ms,
    merge_properties,
    salesforce_id,
    split_multi,
)
from shopbotly.crm_emulator.hubspot_rules import ContactInput, EngagementUpsertInput
from shopbotly.crm_emulator.shapes import salesforce_item_error

__all__ = ["IdempotentAnswer", "Store", "UpsertOutcome"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    system TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    identity TEXT,
    properties TEXT NOT NULL,
    associations TEXT NOT NULL DEFAULT '[]',
    extra TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    updates INTEGER NOT NULL DEFAULT 0,
    UNIQUE (system, object_type, object_id)
);
CREATE INDEX IF NOT EXISTS objects_by_identity ON objects (system, object_type, identity);
CREATE TABLE IF NOT EXISTS identities (
    system TEXT NOT NULL,
    object_type TEXT NOT NULL,
    identity TEXT NOT NULL,
    creates INTEGER NOT NULL DEFAULT 0,
    updates INTEGER NOT NULL DEFAULT 0,
    first_created_at REAL,
    last_written_at REAL,
    PRIMARY KEY (system, object_type, identity)
);
CREATE TABLE IF NOT EXISTS writes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    system TEXT NOT NULL,
    object_type TEXT NOT NULL,
    identity TEXT NOT NULL,
    object_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL,
    properties TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    system TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (system, key)
);
CREATE TABLE IF NOT EXISTS sequences (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS schema_definitions (
    system TEXT NOT NULL,
    object_type TEXT NOT NULL,
    name TEXT NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (system, object_type, name)
);
"""


@dataclass(frozen=True)
class UpsertOutcome:
    input: ContactInput
    object: StoredObject
    created: bool
    changes: list[PropertyChange]


@dataclass(frozen=True)
class IdempotentAnswer:
    status: int
    body: dict[str, Any]
    outcome: IdempotencyOutcome


# HubSpot never reuses a webhook eventId, and receivers (ingest, the crm-writer ledger) drop an id they saw
# before as a repeat: this sequence outlives restarts and the admin reset.
_EVENT_ID_SEQUENCE = "hubspot:webhook-events"

# Record types the admin state lists by identity; everything else (notes, tickets) hangs off them.
_PEOPLE = frozenset({"contacts", "leads", "Lead", "Contact"})


def _key(obj: StoredObject) -> str:
    """A person's identity, or `id:<record id>` for one created without (a contact with no e-mail)."""
    return obj.identity if obj.identity is not None else f"id:{obj.object_id}"


def _row_to_object(row: sqlite3.Row) -> StoredObject:
    return StoredObject(
        system=System(row["system"]),
        object_type=row["object_type"],
        object_id=row["object_id"],
        identity=row["identity"],
        properties=json.loads(row["properties"]),
        associations=tuple(json.loads(row["associations"])),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        updates=row["updates"],
        extra=json.loads(row["extra"]),
    )


class Store:
    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        if path != ":memory:":
            # WAL + NORMAL: commits survive a process kill without an fsync per request.
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def ping(self) -> bool:
        with self._lock:
            return bool(self._conn.execute("SELECT 1").fetchone()[0] == 1)

    def reset(self, *, schema: bool = False) -> None:
        """Forget records, counters, idempotency keys; webhook event ids go on (`reserve_event_ids`).
        The account's schema (properties and fields created through the API) stays unless `schema`."""
        with self._tx() as conn:
            for table in ("objects", "identities", "writes", "idempotency"):
                conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            conn.execute("DELETE FROM sequences WHERE name != ?", (_EVENT_ID_SEQUENCE,))
            if schema:
                conn.execute("DELETE FROM schema_definitions")

    def save_definition(
        self, system: System, object_type: str, name: str, definition: Mapping[str, Any]
    ) -> None:
        """A property or field created through the API: it outlives a restart, as it does in the CRM."""
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO schema_definitions (system, object_type, name, definition) "
                "VALUES (?, ?, ?, ?)",
                (system.value, object_type, name, json.dumps(definition)),
            )

    def definitions(self, system: System) -> list[tuple[str, dict[str, Any]]]:
        """(object type, definition) of every property or field created through the API, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT object_type, definition FROM schema_definitions WHERE system = ? ORDER BY rowid",
                (system.value,),
            ).fetchall()
        return [(row["object_type"], json.loads(row["definition"])) for row in rows]

    # ---------------------------------------------------------------------------------------------
    # Building blocks (inside a transaction)

    @staticmethod
    def _next(conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute(
            "INSERT INTO sequences (name, value) VALUES (?, 1) "
            "ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
            (name,),
        ).fetchone()
        return int(row[0])

    def _new_id(self, conn: sqlite3.Connection, system: System, object_type: str) -> str:
        n = self._next(conn, f"{system}:{object_type}")
        if system is System.HUBSPOT:
            return str(1000 + n)
        if system is System.SALESFORCE:
            return salesforce_id(sf.SOBJECTS[object_type].key_prefix, n)
        return f"{object_type.rstrip('s')}_{n:06d}"

    @staticmethod
    def _get(
        conn: sqlite3.Connection, system: System, object_type: str, object_id: str
    ) -> StoredObject | None:
        row = conn.execute(
            "SELECT * FROM objects WHERE system = ? AND object_type = ? AND object_id = ?",
            (system, object_type, object_id),
        ).fetchone()
        return _row_to_object(row) if row else None

    @staticmethod
    def _by_identity(
        conn: sqlite3.Connection, system: System, object_type: str, identity: str
    ) -> list[StoredObject]:
        rows = conn.execute(
            "SELECT * FROM objects WHERE system = ? AND object_type = ? AND identity = ? ORDER BY pk",
            (system, object_type, identity),
        ).fetchall()
        return [_row_to_object(r) for r in rows]

    @staticmethod
    def _by_field(conn: sqlite3.Connection, object_type: str, field: str, value: str) -> list[StoredObject]:
        rows = conn.execute(
            "SELECT * FROM objects WHERE system = 'salesforce' AND object_type = ? "
            "AND lower(json_extract(properties, ?)) = ? ORDER BY pk",
            (object_type, f'$."{field}"', value.strip().lower()),
        ).fetchall()
        return [_row_to_object(r) for r in rows]

    @staticmethod
    def _count_identity(
        conn: sqlite3.Connection, obj: StoredObject, created: bool, now: float, written: Mapping[str, Any]
    ) -> None:
        if obj.identity is None:
            return
        conn.execute(
            "INSERT INTO identities (system, object_type, identity, creates, updates, first_created_at, "
            "last_written_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(system, object_type, identity) DO UPDATE SET "
            "creates = creates + excluded.creates, updates = updates + excluded.updates, "
            "first_created_at = coalesce(first_created_at, excluded.first_created_at), "
            "last_written_at = excluded.last_written_at",
            (
                obj.system,
                obj.object_type,
                obj.identity,
                int(created),
                int(not created),
                now if created else None,
                now,
            ),
        )
        conn.execute(
            "INSERT INTO writes (system, object_type, identity, object_id, kind, at, properties) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                obj.system,
                obj.object_type,
                obj.identity,
                obj.object_id,
                "create" if created else "update",
                now,
                json.dumps(dict(written)),
            ),
        )

    def _insert(
        self,
        conn: sqlite3.Connection,
        system: System,
        object_type: str,
        identity: str | None,
        properties: Mapping[str, str],
        now: float,
        associations: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> StoredObject:
        obj = StoredObject(
            system=system,
            object_type=object_type,
            object_id=self._new_id(conn, system, object_type),
            identity=identity,
            properties=dict(properties),
            associations=tuple(associations),
            created_at=now,
            updated_at=now,
            extra=dict(extra or {}),
        )
        conn.execute(
            "INSERT INTO objects (system, object_type, object_id, identity, properties, associations, extra, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                system,
                object_type,
                obj.object_id,
                identity,
                json.dumps(obj.properties),
                json.dumps(list(associations)),
                json.dumps(obj.extra),
                now,
                now,
            ),
        )
        self._count_identity(conn, obj, True, now, properties)
        return obj

    def _update(
        self,
        conn: sqlite3.Connection,
        obj: StoredObject,
        properties: Mapping[str, str],
        now: float,
        written: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
    ) -> StoredObject:
        updated = StoredObject(
            system=obj.system,
            object_type=obj.object_type,
            object_id=obj.object_id,
            identity=obj.identity,
            properties=dict(properties),
            associations=obj.associations,
            created_at=obj.created_at,
            updated_at=now,
            updates=obj.updates + 1,
            extra=dict(extra if extra is not None else obj.extra),
        )
        conn.execute(
            "UPDATE objects SET properties = ?, extra = ?, updated_at = ?, updates = updates + 1 "
            "WHERE system = ? AND object_type = ? AND object_id = ?",
            (
                json.dumps(updated.properties),
                json.dumps(updated.extra),
                now,
                obj.system,
                obj.object_type,
                obj.object_id,
            ),
        )
        self._count_identity(conn, updated, False, now, written)
        return updated

    # ---------------------------------------------------------------------------------------------
    # Webhook event ids

    def reserve_event_ids(self, count: int, floor: int) -> range:
        """`count` fresh webhook event ids: above every id reserved before, and none below `floor`.

        The reservation is committed before the ids are handed out, so a crash after it loses ids but never
        hands one out twice."""
        if count < 1:
            return range(0)
        with self._tx() as conn:
            row = conn.execute(
                "INSERT INTO sequences (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = max(value, ?) + ? RETURNING value",
                (_EVENT_ID_SEQUENCE, floor - 1 + count, floor - 1, count),
            ).fetchone()
        last = int(row[0])
        return range(last - count + 1, last + 1)

    # ---------------------------------------------------------------------------------------------
    # Reads

    def get(self, system: System, object_type: str, object_id: str) -> StoredObject | None:
        with self._lock:
            return self._get(self._conn, system, object_type, object_id)

    def by_identity(self, system: System, object_type: str, identity: str) -> list[StoredObject]:
        with self._lock:
            return self._by_identity(self._conn, system, object_type, identity)

    def by_field(self, object_type: str, field: str, value: str) -> list[StoredObject]:
        with self._lock:
            return self._by_field(self._conn, object_type, field, value)

    # ---------------------------------------------------------------------------------------------
    # HubSpot

    def hubspot_upsert(self, inputs: Sequence[ContactInput], now: float) -> list[UpsertOutcome]:
        outcomes = []
        with self._tx() as conn:
            for item in inputs:
                existing = self._by_identity(conn, System.HUBSPOT, "contacts", item.id)
                if existing:
                    merged, changes = merge_properties(existing[0].properties, item.properties)
                    obj = self._update(conn, existing[0], merged, now, item.properties)
                    outcomes.append(UpsertOutcome(item, obj, False, changes))
                else:
                    merged, changes = merge_properties({}, item.properties)
                    obj = self._insert(conn, System.HUBSPOT, "contacts", item.id, merged, now)
                    outcomes.append(UpsertOutcome(item, obj, True, changes))
        return outcomes

    def hubspot_create_contact(
        self, properties: Mapping[str, str | None], now: float
    ) -> tuple[StoredObject | None, StoredObject | None]:
        """(created, None), or (None, existing) when the e-mail is taken (HubSpot answers 409)."""
        with self._tx() as conn:
            email = properties.get("email")
            if email:
                existing = self._by_identity(conn, System.HUBSPOT, "contacts", email)
                if existing:
                    return None, existing[0]
            merged, _ = merge_properties({}, properties)
            return self._insert(conn, System.HUBSPOT, "contacts", email or None, merged, now), None

    def create_engagements(
        self,
        system: System,
        object_type: str,
        parent_type: str,
        items: Sequence[tuple[Mapping[str, str], Sequence[str]]],
        now: float,
    ) -> tuple[list[StoredObject], list[str]]:
        """Notes or tickets associated to existing parents, all or none; ([], missing ids) when some
        parent does not exist."""
        with self._tx() as conn:
            wanted = dict.fromkeys(i for _, parents in items for i in parents)
            missing = [i for i in wanted if self._get(conn, system, parent_type, i) is None]
            if missing:
                return [], missing
            created = [
                self._insert(conn, system, object_type, None, properties, now, associations=parents)
                for properties, parents in items
            ]
            return created, []

    def hubspot_upsert_engagements(
        self, object_type: str, inputs: Sequence[EngagementUpsertInput], now: float
    ) -> list[tuple[StoredObject, bool, list[PropertyChange]]]:
        """Notes or tickets created, or updated when a record already has the input's unique value."""
        out = []
        with self._tx() as conn:
            for item in inputs:
                row = conn.execute(
                    "SELECT * FROM objects WHERE system = 'hubspot' AND object_type = ? "
                    "AND json_extract(properties, ?) = ? ORDER BY pk LIMIT 1",
                    (object_type, f'$."{item.id_property}"', item.id),
                ).fetchone()
                if row is None:
                    merged, changes = merge_properties({}, item.properties)
                    obj = self._insert(conn, System.HUBSPOT, object_type, None, merged, now)
                    out.append((obj, True, changes))
                else:
                    existing = _row_to_object(row)
                    merged, changes = merge_properties(existing.properties, item.properties)
                    out.append((self._update(conn, existing, merged, now, item.properties), False, changes))
        return out

    def associate(
        self, system: System, object_type: str, object_id: str, parent_type: str, parent_id: str
    ) -> str | None:
        """Associate a record to a parent (a no-op when it already is); the missing side's type, else None."""
        with self._tx() as conn:
            obj = self._get(conn, system, object_type, object_id)
            if obj is None:
                return object_type
            if self._get(conn, system, parent_type, parent_id) is None:
                return parent_type
            if parent_id not in obj.associations:
                conn.execute(
                    "UPDATE objects SET associations = ? "
                    "WHERE system = ? AND object_type = ? AND object_id = ?",
                    (json.dumps([*obj.associations, parent_id]), system, object_type, object_id),
                )
            return None

    def update_object(
        self,
        system: System,
        object_type: str,
        object_id: str,
        incoming: Mapping[str, str | None],
        now: float,
        reply: Mapping[str, Any] | None = None,
    ) -> tuple[StoredObject, list[PropertyChange]] | None:
        """Merge properties into a record (and append a ticket reply); None when it does not exist."""
        with self._tx() as conn:
            obj = self._get(conn, system, object_type, object_id)
            if obj is None:
                return None
            merged, changes = merge_properties(obj.properties, incoming)
            extra = dict(obj.extra)
            if reply is not None:
                extra["replies"] = [*extra.get("replies", []), dict(reply)]
            return self._update(conn, obj, merged, now, incoming, extra), changes

    # ---------------------------------------------------------------------------------------------
    # Salesforce

    def salesforce_upsert(
        self,
        spec: sf.SObjectSpec,
        ext_field: str,
        all_or_none: bool,
        records: Sequence[sf.SfRecordInput],
        errors: Mapping[int, list[dict[str, Any]]],
        unique_fields: Sequence[str],
        now: float,
    ) -> list[dict[str, Any]]:
        """UpsertResult items in request order; with allOrNone nothing is written when anything fails."""
        results: dict[int, dict[str, Any]] = {i: sf.upsert_failure(e) for i, e in errors.items()}
        with self._tx() as conn:
            planned: list[tuple[sf.SfRecordInput, StoredObject | None, dict[str, str]]] = []
            claimed: dict[tuple[str, str], int] = {}
            for record in records:
                matches = self._by_field(conn, spec.name, ext_field, record.ext_value)
                if len(matches) > 1:
                    ids = ", ".join(m.object_id for m in matches)
                    results[record.index] = sf.upsert_failure(
                        [
                            salesforce_item_error(
                                "DUPLICATE_EXTERNAL_ID",
                                f"{ext_field}: more than one record found for external id field: [{ids}]",
                                [],
                            )
                        ]
                    )
                    continue
                existing = matches[0] if matches else None
                incoming = {k: v for k, v in record.fields.items() if k != "Id"}
                merged, _ = merge_properties(existing.properties if existing else {}, incoming)
                problem = None if existing else sf.required_missing(spec, merged)
                if problem is None:
                    problem = self._unique_conflict(
                        conn, spec, unique_fields, merged, existing, claimed, record.index
                    )
                if problem is not None:
                    results[record.index] = sf.upsert_failure([problem])
                    continue
                planned.append((record, existing, merged))
            if all_or_none and len(planned) < len(records) + len(errors):
                for record, _, _ in planned:
                    results[record.index] = sf.upsert_failure([sf.ROLLED_BACK])
                return [results[i] for i in sorted(results)]
            for record, existing, merged in planned:
                written = {k: v for k, v in record.fields.items() if k != "Id"}
                if existing is None:
                    identity = record.identity if spec.person else None
                    parents = sf.references_of(spec, merged)
                    obj = self._insert(conn, System.SALESFORCE, spec.name, identity, merged, now, parents)
                    results[record.index] = sf.upsert_success(obj.object_id, True)
                else:
                    obj = self._update(conn, existing, merged, now, written)
                    results[record.index] = sf.upsert_success(obj.object_id, False)
        return [results[i] for i in sorted(results)]

    def _unique_conflict(
        self,
        conn: sqlite3.Connection,
        spec: sf.SObjectSpec,
        unique_fields: Sequence[str],
        merged: Mapping[str, str],
        existing: StoredObject | None,
        claimed: dict[tuple[str, str], int],
        index: int,
    ) -> dict[str, Any] | None:
        for field in unique_fields:
            value = merged.get(field)
            if not value:
                continue
            key = (field, value.strip().lower())
            others = [
                o
                for o in self._by_field(conn, spec.name, field, value)
                if existing is None or o.object_id != existing.object_id
            ]
            if others or (key in claimed and claimed[key] != index):
                holder = others[0].object_id if others else "(another record in this request)"
                return salesforce_item_error(
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {field} duplicates value on record with id: {holder}",
                    [],
                )
            claimed[key] = index
        return None

    def salesforce_insert(
        self,
        spec: sf.SObjectSpec,
        fields: Mapping[str, str | None],
        identity: str | None,
        now: float,
        associations: Sequence[str] = (),
    ) -> StoredObject:
        """A plain create (POST /sobjects/X, or the admin seed): no matching, duplicates allowed."""
        with self._tx() as conn:
            merged, _ = merge_properties({}, fields)
            return self._insert(conn, System.SALESFORCE, spec.name, identity, merged, now, associations)

    def salesforce_upsert_one(
        self,
        spec: sf.SObjectSpec,
        ext_field: str,
        ext_value: str,
        fields: Mapping[str, str | None],
        now: float,
    ) -> tuple[str, Any]:
        """("created"|"updated", StoredObject) | ("multiple", [ids]) | ("invalid", item error)."""
        with self._tx() as conn:
            matches = self._by_field(conn, spec.name, ext_field, ext_value)
            if len(matches) > 1:
                return "multiple", [m.object_id for m in matches]
            existing = matches[0] if matches else None
            incoming = {**fields, ext_field: ext_value}
            merged, _ = merge_properties(existing.properties if existing else {}, incoming)
            if existing is None:
                problem = sf.required_missing(spec, merged)
                if problem is not None:
                    return "invalid", problem
                identity = ext_value.strip().lower() if spec.person else None
                parents = sf.references_of(spec, merged)
                return "created", self._insert(
                    conn, System.SALESFORCE, spec.name, identity, merged, now, parents
                )
            return "updated", self._update(conn, existing, merged, now, incoming)

    # ---------------------------------------------------------------------------------------------
    # Generic REST CRM (idempotency keys)

    def idempotent(
        self,
        system: System,
        key: str | None,
        fingerprint: str,
        now: float,
        apply: Callable[[sqlite3.Connection], tuple[int, dict[str, Any]]],
    ) -> IdempotentAnswer:
        """Run `apply` at most once per key; a repeat gets the first answer, a different body a mismatch."""
        with self._tx() as conn:
            stored = None
            if key is not None:
                stored = conn.execute(
                    "SELECT fingerprint, status, body FROM idempotency WHERE system = ? AND key = ?",
                    (system, key),
                ).fetchone()
            outcome = decide_idempotency(stored["fingerprint"] if stored else None, fingerprint)
            if outcome is IdempotencyOutcome.REPLAY:
                assert stored is not None
                return IdempotentAnswer(stored["status"], json.loads(stored["body"]), outcome)
            if outcome is IdempotencyOutcome.MISMATCH:
                return IdempotentAnswer(422, {}, outcome)
            status, body = apply(conn)
            # Only answers that had an effect are remembered: a 4xx may be retried once corrected.
            if key is not None and 200 <= status < 300:
                conn.execute(
                    "INSERT INTO idempotency (system, key, fingerprint, status, body, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (system, key, fingerprint, status, json.dumps(body), now),
                )
            return IdempotentAnswer(status, body, outcome)

    def generic_upsert_lead(
        self, conn: sqlite3.Connection, identity: str, fields: Mapping[str, str | None], now: float
    ) -> tuple[StoredObject, bool]:
        existing = self._by_identity(conn, System.GENERIC, "leads", identity)
        if existing:
            merged, _ = merge_properties(existing[0].properties, fields)
            return self._update(conn, existing[0], merged, now, fields), False
        merged, _ = merge_properties({}, fields)
        return self._insert(conn, System.GENERIC, "leads", identity, merged, now), True

    def generic_add_note(
        self, conn: sqlite3.Connection, identity: str, body: str, now: float
    ) -> StoredObject | None:
        lead = self._by_identity(conn, System.GENERIC, "leads", identity)
        if not lead:
            return None
        return self._insert(
            conn, System.GENERIC, "notes", None, {"body": body}, now, associations=[lead[0].object_id]
        )

    # Generic CRM without upsert (the self-hosted flavour, `/api/leads/`): unique e-mail, update by id.

    def generic_create_lead(
        self, identity: str, fields: Mapping[str, str | None], now: float
    ) -> StoredObject | None:
        """A new lead, or None when one with this e-mail exists (checked and inserted in one transaction)."""
        with self._tx() as conn:
            if self._by_identity(conn, System.GENERIC, "leads", identity):
                return None
            merged, _ = merge_properties({}, fields)
            return self._insert(conn, System.GENERIC, "leads", identity, merged, now)

    def generic_update_lead(
        self, object_id: str, fields: Mapping[str, str | None], identity: str | None, now: float
    ) -> StoredObject | Literal["not_found", "taken"]:
        """Fields written on the lead with this id; a new e-mail must be free (`taken` otherwise)."""
        with self._tx() as conn:
            lead = self._get(conn, System.GENERIC, "leads", object_id)
            if lead is None:
                return "not_found"
            if identity is not None and identity != lead.identity:
                if self._by_identity(conn, System.GENERIC, "leads", identity):
                    return "taken"
                conn.execute(
                    "UPDATE objects SET identity = ? WHERE system = ? AND object_type = ? AND object_id = ?",
                    (identity, System.GENERIC, "leads", object_id),
                )
                lead = replace(lead, identity=identity)
            merged, _ = merge_properties(lead.properties, fields)
            return self._update(conn, lead, merged, now, fields)

    def generic_note_on(self, lead_id: str, body: str, now: float) -> StoredObject | None:
        with self._tx() as conn:
            if self._get(conn, System.GENERIC, "leads", lead_id) is None:
                return None
            return self._insert(
                conn, System.GENERIC, "notes", None, {"body": body}, now, associations=[lead_id]
            )

    def generic_tags(self) -> list[StoredObject]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM objects WHERE system = ? AND object_type = 'tags' ORDER BY pk",
                (System.GENERIC,),
            ).fetchall()
        return [_row_to_object(r) for r in rows]

    def generic_create_tag(self, name: str, now: float) -> StoredObject | None:
        """A new tag, or None when the name is taken."""
        with self._tx() as conn:
            taken = conn.execute(
                "SELECT 1 FROM objects WHERE system = ? AND object_type = 'tags' "
                "AND json_extract(properties, '$.name') = ?",
                (System.GENERIC, name),
            ).fetchone()
            if taken:
                return None
            return self._insert(conn, System.GENERIC, "tags", None, {"name": name}, now)

    # ---------------------------------------------------------------------------------------------
    # Admin view

    def totals(self) -> dict[str, dict[str, int]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT system, sum(creates) AS creates, sum(updates) AS updates "
                "FROM identities GROUP BY system"
            ).fetchall()
        return {r["system"]: {"creates": int(r["creates"]), "updates": int(r["updates"])} for r in rows}

    def record_totals(self) -> dict[str, dict[str, dict[str, int]]]:
        """Records (so creates: nothing is deleted) and their updates, per system and object type."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT system, object_type, count(*) AS creates, sum(updates) AS updates "
                "FROM objects GROUP BY system, object_type"
            ).fetchall()
        out: dict[str, dict[str, dict[str, int]]] = {}
        for r in rows:
            out.setdefault(r["system"], {})[r["object_type"]] = {
                "creates": int(r["creates"]),
                "updates": int(r["updates"]),
            }
        return out

    def state(self, system: System | None, history: bool, tag_fields: Mapping[System, str]) -> dict[str, Any]:
        """Records by identity (with notes and tickets attached), every ticket, and per-identity counters."""
        with self._lock:
            # One system, or all of them when `system` is None.
            args = (system, system)
            objects = [
                _row_to_object(r)
                for r in self._conn.execute(
                    "SELECT * FROM objects WHERE ? IS NULL OR system = ? ORDER BY pk", args
                )
            ]
            counters = {
                (r["system"], r["object_type"], r["identity"]): r
                for r in self._conn.execute("SELECT * FROM identities WHERE ? IS NULL OR system = ?", args)
            }
            writes: dict[tuple[str, str], list[dict[str, Any]]] = {}
            if history:
                for r in self._conn.execute(
                    "SELECT * FROM writes WHERE ? IS NULL OR system = ? ORDER BY seq", args
                ):
                    writes.setdefault((r["system"], r["identity"]), []).append(
                        {
                            "seq": r["seq"],
                            "kind": r["kind"],
                            "at": iso_ms(r["at"]),
                            "object_id": r["object_id"],
                            "properties": json.loads(r["properties"]),
                        }
                    )
        records: dict[str, dict[str, Any]] = {s.value: {} for s in System if system in (None, s)}
        tickets: dict[str, list[dict[str, Any]]] = {s.value: [] for s in System if system in (None, s)}
        owner_of: dict[tuple[System, str], dict[str, Any]] = {}
        for obj in objects:
            if obj.object_type not in _PEOPLE:
                continue
            entry = records[obj.system].get(key := _key(obj))
            if entry is None:
                c = counters.get((obj.system, obj.object_type, obj.identity))
                entry = {
                    "object": obj.object_type,
                    "record_ids": [],
                    # Records without identity are not counted per identity: they are one record each.
                    "creates": int(c["creates"]) if c else 1,
                    "updates": int(c["updates"]) if c else obj.updates,
                    "notes": [],
                    "tickets": [],
                }
                if history:
                    entry["history"] = writes.get((obj.system, obj.identity or ""), [])
                records[obj.system][key] = entry
            # With duplicates (Salesforce allows them) the most recently written record is shown.
            if not entry["record_ids"] or obj.updated_at >= entry["updated_at_ts"]:
                tag_field = tag_fields.get(obj.system, "")
                entry.update(
                    id=obj.object_id,
                    properties=obj.properties,
                    tags=sorted(split_multi(obj.properties.get(tag_field))),
                    created_at=iso_ms(obj.created_at),
                    updated_at=iso_ms(obj.updated_at),
                    updated_at_ts=obj.updated_at,
                )
            entry["record_ids"].append(obj.object_id)
            owner_of[(obj.system, obj.object_id)] = entry
        for obj in objects:
            if obj.object_type in _PEOPLE:
                continue
            view = {
                "id": obj.object_id,
                "object": obj.object_type,
                "properties": obj.properties,
                "associations": list(obj.associations),
                "created_at": iso_ms(obj.created_at),
                "updated_at": iso_ms(obj.updated_at),
                "updates": obj.updates,
            }
            if obj.object_type in ("tickets", "Case"):
                view["replies"] = obj.extra.get("replies", [])
                tickets[obj.system].append(view)
            for parent in obj.associations:
                owner = owner_of.get((obj.system, parent))
                if owner is not None:
                    owner["tickets" if obj.object_type in ("tickets", "Case") else "notes"].append(view)
        for by_identity in records.values():
            for entry in by_identity.values():
                entry.pop("updated_at_ts", None)
        return {"records": records, "tickets": tickets}
