"""HubSpot CRM objects API: contacts by batch upsert on email, notes and tickets associated to the contact.

- API version: the connection's `api_version` (`v3`, or a date version such as `2026-03`) picks the path
  family; every URL comes from `HubSpotPaths` (paths below are v3's, a date version's are
  `/crm/objects/2026-03/...` for objects and associations alike). Requests and answers are the same.
- Contacts: `POST /crm/v3/objects/contacts/batch/upsert` with `idProperty: email`, up to 100 inputs of many
  identities per request. Upserts by email are not partial, so each input carries the contact's full
  property set: what the CRM had (read once per identity with `batch/read`, then cached while this
  replica owns the identity's partition) with the write's fields on top; tags are a multi-select
  property, the union of the old and new values.
- Per-record results: each input carries `objectWriteTraceId`; results and errors (200/207) are matched
  back by it (or by email). A record the CRM refuses fails alone; a batch refused as a whole (400) is
  split in halves until the refused record is found, so the others still go through.
- Notes and tickets are created idempotently: `POST /crm/v3/objects/{notes|tickets}/batch/upsert`
  (inputs of many identities batched, as contacts) keyed by the command id in a unique-valued custom
  property (`command_id_property`, default `shopbotly_command_id`), then associated to the contact (whose
  id comes from the cache, a read, or an upsert) with the v4 default association
  `PUT /crm/v4/objects/{type}/{id}/associations/default/contacts/{contactId}`. Both requests are
  idempotent, so a retry after either (a kill between HubSpot's answer and the ledger ack, a failed
  association) converges on one associated record instead of a second one. A portal without the property
  refuses the upsert (400); that is a permanent error that says how to create the property.
- A contact property the portal refuses (PROPERTY_DOESNT_EXIST, INVALID_OPTION, READ_ONLY_VALUE) never costs
  the fields it has: with `unknown_properties: drop` (the default) the record is sent again without the
  refused properties, which are counted (`shopbotly_crm_writer_dropped_properties_total`), logged once per
  property, remembered for `state_ttl_s` (later writes leave them out without a refusal) and named in the
  result (`crm_ids.dropped_properties`). `dead_letter` makes the refusal permanent instead.
- Limits: `X-HubSpot-RateLimit-Max/-Remaining/-Interval-Milliseconds` feed the limiter; a 429 whose
  `policyName` is TEN_SECONDLY_ROLLING (or SECONDLY) throttles, DAILY is an outage (circuit opens).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import structlog

from shopbotly.common.config.crm_kinds.hubspot import HubSpotOptions, HubSpotPaths
from shopbotly.common.errors import PermanentError, RetryableError, ShopbotlyError
from shopbotly.common.events import CommandOp
from shopbotly.crm_writer.connectors.base import (
    Connector,
    ContactCache,
    ContactState,
    json_body,
    unsupported,
)
from shopbotly.crm_writer.connectors.refused import RefusedProperties
from shopbotly.crm_writer.domain import Write, WriteKind, merged_properties, property_text
from shopbotly.crm_writer.runtime import BatchQueue, ConnectionRuntime, Permit
from shopbotly.crm_writer.schema.hubspot import HubSpotSchema
from shopbotly.crm_writer.verdict import (
    Quota,
    ThrottledError,
    Verdict,
    VerdictKind,
    int_header,
    parse_retry_after,
)

__all__ = ["HubSpotConnector", "classify_hubspot", "hubspot_quota", "record_error", "refused_properties"]

_log = structlog.get_logger("shopbotly.crm_writer.hubspot")
# Property problems that concern one property of the record, not the record itself.
_DROPPABLE = frozenset({"PROPERTY_DOESNT_EXIST", "INVALID_OPTION", "READ_ONLY_VALUE"})

_READ_ONLY = ("hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate", "hs_createdate")
_KINDS = {
    CommandOp.UPSERT_CONTACT: WriteKind.CONTACT,
    # HubSpot has no separate lead object: a lead is a contact (its lifecyclestage says so).
    CommandOp.UPSERT_LEAD: WriteKind.CONTACT,
    CommandOp.ADD_TAGS: WriteKind.CONTACT,
    CommandOp.ADD_NOTE: WriteKind.NOTE,
    CommandOp.ATTACH_ORDER: WriteKind.ORDER,
    CommandOp.CREATE_TICKET: WriteKind.TICKET,
}


def hubspot_quota(headers: httpx.Headers) -> Quota | None:
    max_requests = int_header(headers, "x-hubspot-ratelimit-max")
    remaining = int_header(headers, "x-hubspot-ratelimit-remaining")
    interval_ms = int_header(headers, "x-hubspot-ratelimit-interval-milliseconds")
    daily_remaining = int_header(headers, "x-hubspot-ratelimit-daily-remaining")
    if max_requests is None and remaining is None and daily_remaining is None:
        return None
    return Quota(
        max_requests=max_requests,
        interval_s=interval_ms / 1000 if interval_ms else None,
        remaining=remaining,
        daily_remaining=daily_remaining,
    )


def _message(body: Any, status: int) -> str:
    if isinstance(body, dict):
        parts = [str(body.get(k)) for k in ("category", "message") if body.get(k)]
        if parts:
            return f"HubSpot {status}: " + ": ".join(parts)
    return f"HubSpot answered HTTP {status}"


def classify_hubspot(response: httpx.Response) -> Verdict:
    """A HubSpot answer as a delivery verdict (pure: status, headers and body only)."""
    status = response.status_code
    headers = response.headers
    quota = hubspot_quota(headers)
    retry_after = parse_retry_after(headers)
    if 200 <= status < 300:
        return Verdict(VerdictKind.OK, status, quota=quota)
    body = json_body(response)
    message = _message(body, status)
    if status == 429:
        policy = str(body.get("policyName", "")) if isinstance(body, dict) else ""
        if policy.upper() == "DAILY":
            return Verdict(
                VerdictKind.OUTAGE, status, message, retry_after=retry_after, policy="DAILY", quota=quota
            )
        if retry_after is None and quota is not None and quota.interval_s and quota.max_requests:
            # No Retry-After: wait for about one request's share of the rolling window to free up.
            retry_after = quota.interval_s / quota.max_requests
        return Verdict(
            VerdictKind.THROTTLED,
            status,
            message,
            retry_after=retry_after,
            policy=policy or "UNKNOWN",
            quota=quota,
        )
    if status == 401:
        return Verdict(VerdictKind.AUTH, status, message, quota=quota)
    if status in (408, 409, 423, 425) or status >= 500:
        return Verdict(VerdictKind.RETRY, status, message, retry_after=retry_after, quota=quota)
    return Verdict(VerdictKind.PERMANENT, status, message, quota=quota)


def record_error(error: dict[str, Any]) -> ShopbotlyError:
    """One record's error from a batch answer (207 `errors[]`) as the error class of that record."""
    category = str(error.get("category") or "")
    message = f"HubSpot refused the record: {category}: {error.get('message') or ''}".strip()
    status = str(error.get("status") or "")
    if category.upper().startswith("RATE_LIMIT"):
        return ThrottledError(message, policy=category)
    if category.upper() in ("CONFLICT", "LOCKED", "INTERNAL_ERROR", "TIMEOUT") or status.startswith("5"):
        return RetryableError(message)
    return PermanentError(message)


def refused_properties(error: Any) -> dict[str, str]:
    """The properties a HubSpot error refuses one by one (name → PROPERTY_DOESNT_EXIST, INVALID_OPTION or
    READ_ONLY_VALUE), from its `errors[]` (`code`, `in`) or the JSON list in its message."""
    if not isinstance(error, dict):
        return {}
    found: dict[str, str] = {}
    for e in error.get("errors") or []:
        if isinstance(e, dict) and e.get("code") in _DROPPABLE and e.get("in"):
            found[str(e["in"])] = str(e["code"])
    message = str(error.get("message") or "")
    start = message.find("[")
    if "Property values were not valid" in message and start >= 0:
        try:
            problems = orjson.loads(message[start:])
        except orjson.JSONDecodeError:
            problems = []
        for p in problems if isinstance(problems, list) else []:
            if isinstance(p, dict) and p.get("error") in _DROPPABLE and p.get("name"):
                found.setdefault(str(p["name"]), str(p["error"]))
    return found


@dataclass(frozen=True)
class _UpsertInput:
    identity: str
    properties: dict[str, str]
    trace: str


@dataclass(frozen=True)
class _Upserted:
    id: str
    created: bool
    # Properties left out because the portal refused them (unknown_properties: drop).
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True)
class _EngagementInput:
    """A note or ticket to upsert, keyed by its write's key (the command id) in the unique property."""

    key: str
    properties: dict[str, str]


@dataclass(frozen=True)
class _ReadInput:
    identity: str
    properties: frozenset[str]


def _error_keys(error: dict[str, Any]) -> list[str]:
    """The record references in an error's context (trace ids, ids, emails), lowercased."""
    ctx = error.get("context") or {}
    keys: list[str] = []
    if isinstance(ctx, dict):
        for name in ("objectWriteTraceId", "ids", "id", "email", "emails", "idProperty"):
            value = ctx.get(name)
            values = value if isinstance(value, list) else [value] if value is not None else []
            keys.extend(str(v).lower() for v in values)
    if error.get("objectWriteTraceId"):
        keys.append(str(error["objectWriteTraceId"]).lower())
    return keys


class HubSpotConnector(Connector[HubSpotOptions], kind="hubspot", schema=HubSpotSchema):
    def __init__(self, runtime: ConnectionRuntime) -> None:
        super().__init__(runtime)
        cfg = runtime.config
        assert cfg.base_url is not None
        self._base = cfg.base_url.rstrip("/")
        self.paths = HubSpotPaths(self.options.api_version)
        self.cache = ContactCache(ttl_s=self.options.state_ttl_s)
        # Contact properties the portal refused: left out of writes until `state_ttl_s` passed.
        self.refused = RefusedProperties(runtime.name, ttl_s=self.options.state_ttl_s)
        self._upserts: BatchQueue[_UpsertInput, _Upserted] = BatchQueue(
            runtime,
            max_batch=min(cfg.batch_size, 100),
            max_concurrent=self.options.max_concurrent_requests,
            send=self._send_upserts,
        )
        # Notes and tickets of many identities share upsert requests, as contacts do.
        self._engagements: dict[str, BatchQueue[_EngagementInput, str]] = {
            object_type: BatchQueue(
                runtime,
                max_batch=min(cfg.batch_size, 100),
                max_concurrent=self.options.max_concurrent_requests,
                send=self._engagement_sender(object_type),
            )
            for object_type in ("notes", "tickets")
        }
        self._reads: BatchQueue[_ReadInput, ContactState] = BatchQueue(
            runtime,
            max_batch=min(cfg.batch_size, 100),
            max_concurrent=self.options.max_concurrent_requests,
            send=self._send_reads,
        )

    def kind_of(self, op: CommandOp) -> WriteKind:
        kind = _KINDS.get(op)
        if kind is None:
            raise unsupported("hubspot", op)
        return kind

    def forget_partitions(self, partitions: set[int]) -> None:
        self.cache.forget_partitions(partitions)

    async def aclose(self) -> None:
        await self._upserts.aclose()
        await self._reads.aclose()
        for queue in self._engagements.values():
            await queue.aclose()

    # -- writes -----------------------------------------------------------------------------------

    async def apply(self, write: Write, *, partition: int) -> dict[str, str]:
        if write.kind is WriteKind.CONTACT:
            upserted = await self._upsert_contact(write, partition)
            ids = {"contact": upserted.id}
            if upserted.dropped:
                ids["dropped_properties"] = ",".join(upserted.dropped)
            return ids
        contact_id = await self._contact_id(write.identity, partition)
        if write.kind in (WriteKind.NOTE, WriteKind.ORDER):
            note_id = await self._create(
                "notes",
                {"hs_note_body": _note_text(write), "hs_timestamp": _timestamp(write)},
                contact_id,
                key=write.key,
                op="associate_note",
            )
            return {"contact": contact_id, "note": note_id}
        if write.kind is WriteKind.TICKET:
            props = self._ticket_properties(write)
            props.setdefault("hs_pipeline", self.options.ticket_pipeline)
            props.setdefault("hs_pipeline_stage", self.options.ticket_stage)
            ticket_id = await self._create("tickets", props, contact_id, key=write.key, op="associate_ticket")
            return {"contact": contact_id, "ticket": ticket_id}
        raise PermanentError(f"HubSpot connector cannot apply a {write.kind.value} write")

    def _ticket_properties(self, write: Write) -> dict[str, str]:
        o = self.options
        allowed = set(o.ticket_properties)
        props: dict[str, str] = {}
        extra: list[str] = []
        for name, value in write.fields.items():
            target = o.ticket_field_map.get(name, name)
            if target in allowed:
                props[target] = property_text(value)
            elif value is not None:
                extra.append(f"{name}: {property_text(value)}")
        props.setdefault("subject", _subject(write))
        content = "\n\n".join(part for part in (props.get("content") or write.body, "\n".join(extra)) if part)
        if content:
            props["content"] = content
        return props

    async def _upsert_contact(self, write: Write, partition: int) -> _Upserted:
        identity = write.identity
        mode = self.options.read_before_write
        must_read = mode == "always" or (mode == "when_tags" and bool(write.tags))
        state = await self._state(identity, partition, wanted=set(write.fields), must_read=must_read)
        tags_property = self.options.tags_property
        props = merged_properties(state.properties, write, tags_property=tags_property)
        props["email"] = identity  # the idProperty value; HubSpot keys the contact by it
        known_refused = self._known_refused(props)
        for name in known_refused:
            props.pop(name, None)
        upserted = await self._upserts.submit(_UpsertInput(identity, props, write.key))
        for name in upserted.dropped:
            props.pop(name, None)
        self.cache.put(identity, ContactState(upserted.id, props, partition, read=state.read))
        dropped = tuple(sorted({*known_refused, *upserted.dropped}))
        return _Upserted(upserted.id, upserted.created, dropped)

    def _known_refused(self, props: dict[str, str]) -> list[str]:
        if self.options.unknown_properties != "drop":
            return []
        return self.refused.known("contacts", [n for n in props if n != "email"])

    async def _state(
        self, identity: str, partition: int, *, wanted: set[str], must_read: bool
    ) -> ContactState:
        """What the CRM has for `identity`: the cache, else a (batched) read when needed, else nothing."""
        cached = self.cache.get(identity)
        if cached is not None and (cached.read or not must_read):
            return cached
        if not must_read:
            return ContactState(None, {}, partition)
        names = frozenset({"email", *self.options.contact_properties, self.options.tags_property, *wanted})
        state = await self._reads.submit(_ReadInput(identity, names))
        if cached is not None:
            # Our own earlier writes are newer than nothing, but the read is the CRM's truth.
            state.id = state.id or cached.id
        state.partition = partition
        state.read = True
        self.cache.put(identity, state)
        return state

    async def _contact_id(self, identity: str, partition: int) -> str:
        must_read = self.options.read_before_write != "never"
        state = await self._state(identity, partition, wanted=set(), must_read=must_read)
        if state.id is not None:
            return state.id
        # The contact does not exist yet: create it (keyed by email, so a retry cannot double it).
        props = {**state.properties, "email": identity}
        upserted = await self._upserts.submit(_UpsertInput(identity, props, f"id_{identity}"))
        self.cache.put(identity, ContactState(upserted.id, props, partition, read=state.read))
        return upserted.id

    async def _create(
        self, object_type: str, properties: dict[str, str], contact_id: str, *, key: str, op: str
    ) -> str:
        """Create (or, on a repeat of the same command, update) a note/ticket keyed by `key`, associated."""
        object_id = await self._engagements[object_type].submit(_EngagementInput(key, properties))
        # The default (HUBSPOT_DEFINED) association; PUT of an existing association changes nothing.
        path = self.paths.default_association(object_type, object_id, "contacts", contact_id)
        _, verdict = await self._request("PUT", path, None, op=op)
        if not verdict.ok:
            raise verdict.error()
        return object_id

    async def _request(
        self, method: str, path: str, payload: dict[str, Any] | None, *, op: str
    ) -> tuple[httpx.Response | None, Verdict]:
        body = orjson.dumps(payload) if payload is not None else None
        build = self.request(method, f"{self._base}{path}", body)
        return await self.runtime.call(build, op=op, classify=classify_hubspot)

    # -- batch senders ----------------------------------------------------------------------------

    async def _send_upserts(
        self, permit: Permit, items: list[_UpsertInput]
    ) -> Sequence[_Upserted | BaseException]:
        payload = {
            "inputs": [
                {
                    "idProperty": "email",
                    "id": it.identity,
                    "properties": it.properties,
                    "objectWriteTraceId": it.trace,
                }
                for it in items
            ]
        }
        response, verdict = await self._post(
            permit, self.paths.batch("contacts", "upsert"), payload, op="batch_upsert_contacts", n=len(items)
        )
        if not verdict.ok:
            if verdict.kind is VerdictKind.PERMANENT and len(items) > 1:
                return await self._split(items, self._send_upserts)
            if verdict.kind is VerdictKind.PERMANENT:
                return [await self._without_refused(items[0], json_body(response), verdict.error())]
            return [verdict.error()] * len(items)
        data = json_body(response)
        results: list[Any] = data.get("results", []) if isinstance(data, dict) else []
        errors: list[Any] = data.get("errors", []) if isinstance(data, dict) else []
        by_key: dict[str, dict[str, Any]] = {}
        for r in results:
            if not isinstance(r, dict):
                continue
            if r.get("objectWriteTraceId"):
                by_key[str(r["objectWriteTraceId"]).lower()] = r
            email = (r.get("properties") or {}).get("email")
            if email:
                by_key.setdefault(str(email).lower(), r)
        errors_by_key: dict[str, dict[str, Any]] = {}
        for e in errors:
            if isinstance(e, dict):
                for key in _error_keys(e):
                    errors_by_key.setdefault(key, e)
        out: list[_Upserted | BaseException] = []
        unmatched: list[int] = []
        for i, it in enumerate(items):
            r = by_key.get(it.trace.lower()) or by_key.get(it.identity.lower())
            if r is not None and r.get("id") is not None:
                out.append(_Upserted(str(r["id"]), bool(r.get("new", False))))
                continue
            e = errors_by_key.get(it.trace.lower()) or errors_by_key.get(it.identity.lower())
            if e is not None:
                out.append(await self._without_refused(it, e, record_error(e)))
                continue
            out.append(RetryableError("HubSpot batch answer has no result for this record"))
            unmatched.append(i)
        if unmatched and len(results) == len(items) and not errors:
            # Results without trace ids or emails: HubSpot answers in input order.
            for i in unmatched:
                r = results[i]
                if isinstance(r, dict) and r.get("id") is not None:
                    out[i] = _Upserted(str(r["id"]), bool(r.get("new", False)))
        elif unmatched and errors and len(items) > 1:
            # Errors we cannot attribute: find the refused record(s) by splitting.
            retried = await self._split([items[i] for i in unmatched], self._send_upserts)
            for i, res in zip(unmatched, retried, strict=True):
                out[i] = res
        elif unmatched and errors:
            out[unmatched[0]] = record_error(errors[0]) if isinstance(errors[0], dict) else out[unmatched[0]]
        return out

    async def _without_refused(
        self, item: _UpsertInput, error_body: Any, error: BaseException
    ) -> _Upserted | BaseException:
        """The record sent again without the properties the portal refused (policy `drop`), or `error`."""
        refused = {n: c for n, c in refused_properties(error_body).items() if n != "email"}
        if not refused or self.options.unknown_properties != "drop":
            return error
        kept = {k: v for k, v in item.properties.items() if k not in refused}
        if len(kept) == len(item.properties):
            return error
        self.refused.note("contacts", refused)
        again = await self._send_upserts(
            await self.runtime.permit(), [_UpsertInput(item.identity, kept, item.trace)]
        )
        result = again[0]
        if isinstance(result, _Upserted):
            return _Upserted(result.id, result.created, tuple(sorted({*refused, *result.dropped})))
        return result

    def _engagement_sender(
        self, object_type: str
    ) -> Callable[[Permit, list[_EngagementInput]], Awaitable[Sequence[str | BaseException]]]:
        async def send(permit: Permit, items: list[_EngagementInput]) -> Sequence[str | BaseException]:
            return await self._send_engagements(object_type, permit, items)

        return send

    async def _send_engagements(
        self, object_type: str, permit: Permit, items: list[_EngagementInput]
    ) -> Sequence[str | BaseException]:
        id_property = self.options.command_id_property
        payload = {
            "inputs": [
                {
                    "idProperty": id_property,
                    "id": it.key,
                    "properties": it.properties,
                    "objectWriteTraceId": it.key,
                }
                for it in items
            ]
        }
        response, verdict = await self._post(
            permit,
            self.paths.batch(object_type, "upsert"),
            payload,
            op=f"batch_upsert_{object_type}",
            n=len(items),
        )
        if not verdict.ok:
            if verdict.kind is VerdictKind.PERMANENT and _names_id_property(verdict.message, id_property):
                # The portal lacks the unique property: every record fails the same way, no split.
                return [
                    PermanentError(_missing_property_message(object_type, id_property, verdict.message))
                ] * len(items)
            if verdict.kind is VerdictKind.PERMANENT and len(items) > 1:
                return await self._split(items, self._engagement_sender(object_type))
            return [verdict.error()] * len(items)
        data = json_body(response)
        results: list[Any] = data.get("results", []) if isinstance(data, dict) else []
        errors: list[Any] = data.get("errors", []) if isinstance(data, dict) else []
        by_key: dict[str, str] = {}
        for r in results:
            if not isinstance(r, dict) or r.get("id") is None:
                continue
            key = r.get("objectWriteTraceId") or (r.get("properties") or {}).get(id_property)
            if key:
                by_key[str(key).lower()] = str(r["id"])
        errors_by_key: dict[str, dict[str, Any]] = {}
        for e in errors:
            if isinstance(e, dict):
                for k in _error_keys(e):
                    errors_by_key.setdefault(k, e)
        out: list[str | BaseException] = []
        for it in items:
            found = by_key.get(it.key.lower())
            error = errors_by_key.get(it.key.lower())
            if found is not None:
                out.append(found)
            elif error is not None:
                out.append(record_error(error))
            elif errors and len(items) == 1 and isinstance(errors[0], dict):
                out.append(record_error(errors[0]))
            else:
                out.append(
                    RetryableError(f"HubSpot {object_type} upsert answer has no result for this record")
                )
        return out

    async def _send_reads(
        self, permit: Permit, items: list[_ReadInput]
    ) -> Sequence[ContactState | BaseException]:
        names = sorted(set().union(*(it.properties for it in items)))
        payload = {
            "idProperty": "email",
            "inputs": [{"id": it.identity} for it in items],
            "properties": names,
        }
        response, verdict = await self._post(
            permit, self.paths.batch("contacts", "read"), payload, op="batch_read_contacts", n=len(items)
        )
        if not verdict.ok:
            if verdict.kind is VerdictKind.PERMANENT and len(items) > 1:
                return await self._split(items, self._send_reads)
            return [verdict.error()] * len(items)
        data = json_body(response)
        results: list[Any] = data.get("results", []) if isinstance(data, dict) else []
        found: dict[str, ContactState] = {}
        for r in results:
            if not isinstance(r, dict) or r.get("id") is None:
                continue
            # Unset properties come back as null: they are absent, not empty.
            props = {str(k): str(v) for k, v in (r.get("properties") or {}).items() if v is not None}
            email = props.get("email") or r.get("id")
            # Read-only bookkeeping properties must not be written back.
            for readonly in _READ_ONLY:
                props.pop(readonly, None)
            found[str(email).lower()] = ContactState(str(r["id"]), props)
        # Identities without a result do not exist yet (HubSpot lists them as OBJECT_NOT_FOUND errors).
        return [found.get(it.identity.lower()) or ContactState(None, {}) for it in items]

    async def _post(
        self, permit: Permit, path: str, payload: dict[str, Any], *, op: str, n: int
    ) -> tuple[httpx.Response | None, Verdict]:
        build = self.request("POST", f"{self._base}{path}", orjson.dumps(payload))
        return await self.runtime.call(build, op=op, classify=classify_hubspot, permit=permit, records=n)

    async def _split(self, items: list[Any], send: Any) -> list[Any]:
        mid = len(items) // 2
        left = await send(await self.runtime.permit(), items[:mid])
        right = await send(await self.runtime.permit(), items[mid:])
        return [*left, *right]


def _timestamp(write: Write) -> str:
    cmd = write.commands[-1]
    when = cmd.received_at or cmd.created_at or datetime.now(UTC)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _subject(write: Write) -> str:
    text = (write.body or "").strip().splitlines()
    return text[0][:120] if text else "Support request"


def _note_text(write: Write) -> str:
    if write.body:
        return write.body
    if write.kind is WriteKind.ORDER and write.fields:
        details = ", ".join(f"{k}: {property_text(v)}" for k, v in write.fields.items())
        return f"Order — {details}"
    return ""


def _names_id_property(message: str | None, id_property: str) -> bool:
    text = (message or "").lower()
    return id_property.lower() in text or "non-unique" in text


def _missing_property_message(object_type: str, id_property: str, crm_message: str | None) -> str:
    return (
        f"HubSpot refused to upsert {object_type} by {id_property!r}: the portal needs a {object_type} "
        f"property {id_property!r} with unique values (hasUniqueValue: true). Create it once with "
        f"`shopbotly connections setup --apply` (docs/services/crm-writer.md, 'HubSpot one-time setup'), "
        f"then redrive the DLQ. HubSpot said: {crm_message}"
    )
