"""Salesforce REST: Contact and Lead upsert by external id through sObject Collections; notes and cases.

- Upserts: `PATCH /services/data/vXX.X/composite/sobjects/{SObject}/{ExtIdField}` with `allOrNone: false`,
  up to 200 records of many identities per request; results come back per record, in order. A record
  the org refuses fails alone (UNABLE_TO_LOCK_ROW retries; REQUEST_LIMIT_EXCEEDED is an outage; anything
  else is permanent); a request refused as a whole (400) is split in halves to find the culprit.
- Salesforce upserts only touch the fields sent, so no read is needed, except for tags: a multi-select
  picklist (`tags_field`) read once per identity (then cached) and written as the union.
- Notes are Tasks (WhoId = the contact); tickets are Cases (ContactId), upserted on
  `ticket_external_id_field` = command id when configured, so a replay cannot open a second case.
- A field the org refuses (400 INVALID_FIELD "No such column 'X'", which refuses a whole collections
  request; INVALID_FIELD_FOR_INSERT_UPDATE; a value not in a restricted picklist) never costs the fields it
  has: with `unknown_properties: drop` (the default) the records are sent again without it, as the HubSpot
  connector does (`RefusedProperties`: counted, logged once, left out for `state_ttl_s`, named in the
  result's `dropped_properties`); tags without a `tags_field` are dropped the same way. `dead_letter` makes
  either permanent.
- A new record missing a field the org requires (REQUIRED_FIELD_MISSING: a Lead's LastName or Company, a
  Contact's LastName) is sent again with `[not provided]` in those fields, as Salesforce's own Web-to-Lead
  does; an existing record is never given the placeholder (its upsert does not need the field).
- Errors: 401 INVALID_SESSION_ID → the token is minted again once; 403/503 REQUEST_LIMIT_EXCEEDED →
  outage (circuit opens); HTTP 300 (several records match the external id) → permanent.
  `Sforce-Limit-Info: api-usage=used/total` is exported as the daily remaining quota.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from shopbotly.common.config.crm_kinds.salesforce import SalesforceOptions
from shopbotly.common.errors import OutageError, PermanentError, RetryableError, ShopbotlyError
from shopbotly.common.events import CommandOp
from shopbotly.crm_writer.connectors.base import Connector, ContactCache, ContactState, json_body, unsupported
from shopbotly.crm_writer.connectors.refused import RefusedProperties
from shopbotly.crm_writer.domain import WRITE_KINDS, Write, WriteKind, property_text, split_multi, union_tags
from shopbotly.crm_writer.runtime import BatchQueue, ConnectionRuntime, Permit
from shopbotly.crm_writer.schema.salesforce import SalesforceSchema
from shopbotly.crm_writer.verdict import Quota, Verdict, VerdictKind, parse_retry_after

__all__ = [
    "PLACEHOLDER",
    "SalesforceConnector",
    "classify_salesforce",
    "item_error",
    "refused_fields",
    "sforce_quota",
]

# What a required field a new record lacks is set to (Salesforce's Web-to-Lead uses the same words).
PLACEHOLDER = "[not provided]"

_KINDS = {op: kind for op, kind in WRITE_KINDS.items() if kind is not WriteKind.NOTIFY}
_USAGE = re.compile(r"(?:^|[;,\s])api-usage=(\d+)/(\d+)")
_RETRYABLE_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "ENTITY_IS_LOCKED"})
# Errors about one field of the record, not the record itself.
_DROPPABLE = frozenset(
    {"INVALID_FIELD", "INVALID_FIELD_FOR_INSERT_UPDATE", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"}
)
_NO_SUCH_COLUMN = re.compile(r"No such column '([^']+)'")
_UNABLE_TO_UPDATE = re.compile(r"Unable to create/update fields: ([^.]+)\.")
_MAX_DROP_ROUNDS = 10  # a collections answer names one unknown column at a time


def sforce_quota(headers: httpx.Headers) -> Quota | None:
    """`Sforce-Limit-Info: api-usage=25/5000` → 4975 requests left for the org's 24-hour window."""
    raw = headers.get("sforce-limit-info")
    if not raw:
        return None
    m = _USAGE.search(raw)
    if not m:
        return None
    used, total = int(m.group(1)), int(m.group(2))
    return Quota(daily_remaining=max(0, total - used))


def _error_codes(body: Any) -> list[tuple[str, str]]:
    """(errorCode, message) pairs of a Salesforce error answer (a JSON list of errors)."""
    items = body if isinstance(body, list) else [body] if isinstance(body, dict) else []
    out = []
    for e in items:
        if isinstance(e, dict):
            out.append((str(e.get("errorCode") or e.get("statusCode") or ""), str(e.get("message") or "")))
    return out


def classify_salesforce(response: httpx.Response) -> Verdict:
    """A Salesforce answer as a delivery verdict (pure: status, headers and body only)."""
    status = response.status_code
    quota = sforce_quota(response.headers)
    retry_after = parse_retry_after(response.headers)
    if 200 <= status < 300:
        return Verdict(VerdictKind.OK, status, quota=quota)
    body = json_body(response)
    codes = _error_codes(body)
    detail = "; ".join(f"{c}: {m}" if m else c for c, m in codes if c or m)
    message = f"Salesforce {status}" + (f": {detail}" if detail else "")
    names = {c for c, _ in codes}
    if "REQUEST_LIMIT_EXCEEDED" in names:
        return Verdict(VerdictKind.OUTAGE, status, message, retry_after=retry_after, quota=quota)
    if status == 300:
        return Verdict(
            VerdictKind.PERMANENT,
            status,
            "Salesforce 300: several records match the external id",
            quota=quota,
        )
    if status == 401:
        return Verdict(VerdictKind.AUTH, status, message, quota=quota)
    if status == 429:
        return Verdict(
            VerdictKind.THROTTLED, status, message, retry_after=retry_after, policy="429", quota=quota
        )
    if status in (408, 409, 425) or status >= 500 or names & _RETRYABLE_CODES:
        return Verdict(VerdictKind.RETRY, status, message, retry_after=retry_after, quota=quota)
    return Verdict(VerdictKind.PERMANENT, status, message, quota=quota)


def item_error(errors: Any) -> ShopbotlyError:
    """One record's `errors[]` from a collections answer as the error class of that record."""
    codes = _error_codes(errors)
    detail = "; ".join(f"{c}: {m}" for c, m in codes) or "no detail"
    message = f"Salesforce refused the record: {detail}"
    names = {c for c, _ in codes}
    if "REQUEST_LIMIT_EXCEEDED" in names:
        return OutageError(message)
    if names & _RETRYABLE_CODES:
        return RetryableError(message)
    return PermanentError(message)


def refused_fields(errors: Any) -> dict[str, str]:
    """The fields a Salesforce error refuses one by one (name → errorCode), from a request-level body
    (`[{errorCode, message, fields}]`) or a record's `errors[]` (`[{statusCode, message, fields}]`)."""
    items = errors if isinstance(errors, list) else [errors] if isinstance(errors, dict) else []
    found: dict[str, str] = {}
    for e in items:
        if not isinstance(e, dict):
            continue
        code = str(e.get("errorCode") or e.get("statusCode") or "")
        if code not in _DROPPABLE:
            continue
        message = str(e.get("message") or "")
        names = [str(f) for f in e.get("fields") or [] if f]
        if not names and (m := _NO_SUCH_COLUMN.search(message)):
            names = [m.group(1)]
        if not names and (m := _UNABLE_TO_UPDATE.search(message)):
            names = [n.strip() for n in m.group(1).split(",") if n.strip()]
        for name in names:
            found.setdefault(name, code)
    return found


def _required_missing(errors: Any) -> list[str]:
    """The fields a REQUIRED_FIELD_MISSING error names (a new record without LastName, Company...)."""
    items = errors if isinstance(errors, list) else []
    return [
        str(f)
        for e in items
        if isinstance(e, dict) and (e.get("statusCode") or e.get("errorCode")) == "REQUIRED_FIELD_MISSING"
        for f in e.get("fields") or []
    ]


@dataclass(frozen=True)
class _Record:
    identity: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class _Upserted:
    id: str
    # Fields left out because the org refused them (unknown_properties: drop).
    dropped: tuple[str, ...] = ()


class SalesforceConnector(Connector[SalesforceOptions], kind="salesforce", schema=SalesforceSchema):
    def __init__(self, runtime: ConnectionRuntime) -> None:
        super().__init__(runtime)
        cfg = runtime.config
        o = self.options
        assert cfg.base_url is not None
        self._base_url = cfg.base_url.rstrip("/")
        self.cache = ContactCache(ttl_s=o.state_ttl_s)
        batch = min(cfg.batch_size, 200)
        self.refused = RefusedProperties(runtime.name, ttl_s=o.state_ttl_s)
        self._queues: dict[str, BatchQueue[_Record, _Upserted]] = {
            sobject: BatchQueue(
                runtime,
                max_batch=batch,
                max_concurrent=o.max_concurrent_requests,
                send=functools.partial(self._send_upserts, sobject),
            )
            for sobject in {o.contact_sobject, o.lead_sobject}
        }

    def kind_of(self, op: CommandOp) -> WriteKind:
        kind = _KINDS.get(op)
        if kind is None:
            raise unsupported("salesforce", op)
        return kind

    def forget_partitions(self, partitions: set[int]) -> None:
        self.cache.forget_partitions(partitions)

    async def aclose(self) -> None:
        for q in self._queues.values():
            await q.aclose()

    def _api(self) -> str:
        base = self._base_url
        if self.options.use_instance_url and self.runtime.tokens.instance_url:
            base = self.runtime.tokens.instance_url.rstrip("/")
        return f"{base}/services/data/{self.options.api_version}"

    def _map_fields(self, fields: dict[str, Any], field_map: dict[str, str]) -> dict[str, Any]:
        """Command fields as the sObject's columns: mapped names, custom `__c` fields as they are."""
        o = self.options
        out: dict[str, Any] = {}
        for name, value in fields.items():
            target = field_map.get(name)
            if target is None:
                if not name.endswith("__c"):
                    continue  # no such column on the sObject: sending it would fail the whole request
                target = name
            if target == o.external_id_field:
                continue  # the identity is the external id; never send a second, different value
            if value is None:
                out[target] = None  # clears the field
            elif isinstance(value, int | float | bool | str):
                out[target] = value
            else:
                out[target] = property_text(value)
        return out

    # -- writes -----------------------------------------------------------------------------------

    async def apply(self, write: Write, *, partition: int) -> dict[str, str]:
        o = self.options
        if write.kind in (WriteKind.CONTACT, WriteKind.LEAD):
            is_contact = write.kind is WriteKind.CONTACT
            sobject = o.contact_sobject if is_contact else o.lead_sobject
            fields = self._map_fields(write.fields, o.contact_field_map if is_contact else o.lead_field_map)
            dropped = self._leave_out_refused(sobject, fields)
            if write.tags:
                tags = await self._merged_tags(sobject, write, partition)
                if tags is None:
                    dropped.append(o.tags_field or "tags")
                else:
                    assert o.tags_field is not None
                    fields[o.tags_field] = tags
            upserted = await self._queues[sobject].submit(_Record(write.identity, fields))
            if sobject == o.contact_sobject:
                state = self.cache.get(write.identity) or ContactState(None, {}, partition)
                state.id = upserted.id
                if o.tags_field and o.tags_field in fields and o.tags_field not in upserted.dropped:
                    state.properties[o.tags_field] = fields[o.tags_field]
                state.partition = partition
                self.cache.put(write.identity, state)
            ids = {"contact" if is_contact else "lead": upserted.id}
            return _with_dropped(ids, [*dropped, *upserted.dropped])
        contact_id = await self._contact_id(write.identity, partition)
        if write.kind in (WriteKind.NOTE, WriteKind.ORDER):
            text = write.body or ", ".join(f"{k}: {property_text(v)}" for k, v in write.fields.items())
            first = (text.strip().splitlines() or ["Note"])[0][:80]
            task = {"Subject": first, "Description": text, "WhoId": contact_id, "Status": "Completed"}
            note = await self._single(o.note_sobject, task, op="create_note")
            return _with_dropped({"contact": contact_id, "note": note.id}, note.dropped)
        if write.kind is WriteKind.TICKET:
            case: dict[str, Any] = {
                "Subject": (write.body or "Support request").strip().splitlines()[0][:120]
                or "Support request",
                "Description": write.body or "",
                "ContactId": contact_id,
                "Origin": "ShopBotly",
                **self._map_fields(write.fields, o.ticket_field_map),
            }
            dropped = self._leave_out_refused(o.ticket_sobject, case)
            if o.ticket_external_id_field:
                key = (o.ticket_external_id_field, write.key)
                ticket = await self._single(o.ticket_sobject, case, op="upsert_ticket", external_id=key)
            else:
                ticket = await self._single(o.ticket_sobject, case, op="create_ticket")
            ids = {"contact": contact_id, "ticket": ticket.id}
            return _with_dropped(ids, [*dropped, *ticket.dropped])
        raise PermanentError(f"Salesforce connector cannot apply a {write.kind.value} write")

    def _leave_out_refused(self, sobject: str, fields: dict[str, Any]) -> list[str]:
        """Fields the org refused lately (policy drop), taken out of `fields` without asking it again."""
        if self.options.unknown_properties != "drop":
            return []
        known = self.refused.known(sobject, list(fields))
        for name in known:
            fields.pop(name, None)
        return known

    def _droppable(self, sobject: str, refused: dict[str, str]) -> dict[str, str]:
        """What the policy lets us leave out of a record: refused fields, never the record's key."""
        if self.options.unknown_properties != "drop":
            return {}
        keys = {self.options.external_id_field.lower(), (self.options.ticket_external_id_field or "").lower()}
        return {n: c for n, c in refused.items() if n.lower() not in keys}

    async def _merged_tags(self, sobject: str, write: Write, partition: int) -> str | None:
        """The record's tags with the write's added (`tags_field`), or None when the tags are dropped: no
        `tags_field` option, or the org refuses the field (policy drop; else PermanentError)."""
        o = self.options
        drop = o.unknown_properties == "drop"
        if o.tags_field is None:
            if not drop:
                raise PermanentError("tags given but the Salesforce connection has no tags_field option")
            self.refused.note(sobject, {"tags": "no tags_field option"})
            return None
        if drop and self.refused.known(sobject, [o.tags_field]):
            return None
        existing = await self._current_tags(sobject, write.identity, partition)
        if existing is None:
            return None
        return ";".join(union_tags(existing, write.tags))

    async def _contact_id(self, identity: str, partition: int) -> str:
        cached = self.cache.get(identity)
        if cached is not None and cached.id is not None:
            return cached.id
        # Upsert by the external id alone: finds the contact, or creates it, and returns its id.
        record_id = (await self._queues[self.options.contact_sobject].submit(_Record(identity, {}))).id
        state = cached or ContactState(None, {}, partition)
        state.id = record_id
        self.cache.put(identity, state)
        return record_id

    async def _current_tags(self, sobject: str, identity: str, partition: int) -> list[str] | None:
        o = self.options
        assert o.tags_field is not None
        cached = self.cache.get(identity) if sobject == o.contact_sobject else None
        if cached is not None and o.tags_field in cached.properties:
            return split_multi(cached.properties[o.tags_field])
        path = f"/sobjects/{sobject}/{o.external_id_field}/{urllib.parse.quote(identity, safe='')}"
        url = f"{self._api()}{path}"
        build = self.request("GET", url, params={"fields": o.tags_field})

        response, verdict = await self.runtime.call(build, op="read_record", classify=classify_salesforce)
        if verdict.status == 404:
            return []
        refused = self._droppable(sobject, refused_fields(json_body(response))) if not verdict.ok else {}
        if any(name.lower() == o.tags_field.lower() for name in refused):
            self.refused.note(sobject, {o.tags_field: "INVALID_FIELD"})
            return None
        if not verdict.ok:
            raise verdict.error()
        data = json_body(response)
        tags = split_multi(data.get(o.tags_field) if isinstance(data, dict) else None)
        if sobject == o.contact_sobject and isinstance(data, dict):
            self.cache.put(
                identity,
                ContactState(
                    str(data["Id"]) if data.get("Id") else None, {o.tags_field: ";".join(tags)}, partition
                ),
            )
        return tags

    async def _single(
        self, sobject: str, fields: dict[str, Any], *, op: str, external_id: tuple[str, str] | None = None
    ) -> _Upserted:
        """Create one record (or upsert it by `external_id`: field, value), sent again without the fields
        the org refuses (policy drop)."""
        dropped: list[str] = []
        for _ in range(_MAX_DROP_ROUNDS):
            if external_id is None:
                url, method = f"{self._api()}/sobjects/{sobject}", "POST"
            else:
                field, value = external_id
                url = f"{self._api()}/sobjects/{sobject}/{field}/{urllib.parse.quote(value, safe='')}"
                method = "PATCH"
            build = self.request(method, url, orjson.dumps(fields))
            response, verdict = await self.runtime.call(build, op=op, classify=classify_salesforce)
            refused = self._droppable(sobject, refused_fields(json_body(response))) if not verdict.ok else {}
            refused = {n: c for n, c in refused.items() if n in fields}
            if verdict.kind is VerdictKind.PERMANENT and refused:
                self.refused.note(sobject, refused)
                fields = {k: v for k, v in fields.items() if k not in refused}
                dropped += refused
                continue
            if external_id is not None and verdict.ok and verdict.status == 204:
                # Before API v46 an update answers 204 without a body: look the record up by its external id.
                return _Upserted(await self._id_by_external_id(sobject, *external_id), tuple(dropped))
            return _Upserted(_created_id(response, verdict, sobject), tuple(dropped))
        raise PermanentError(f"Salesforce refused {_MAX_DROP_ROUNDS} fields of one {sobject} record in a row")

    async def _id_by_external_id(self, sobject: str, field: str, value: str) -> str:
        url = f"{self._api()}/sobjects/{sobject}/{field}/{urllib.parse.quote(value, safe='')}"
        build = self.request("GET", url, params={"fields": "Id"})

        response, verdict = await self.runtime.call(build, op="read_record", classify=classify_salesforce)
        if not verdict.ok:
            raise verdict.error()
        data = json_body(response)
        if isinstance(data, dict) and data.get("Id"):
            return str(data["Id"])
        raise RetryableError(f"Salesforce {sobject} record has no Id")

    async def _send_upserts(
        self, sobject: str, permit: Permit, items: list[_Record]
    ) -> Sequence[_Upserted | BaseException]:
        o = self.options
        dropped: list[list[str]] = [[] for _ in items]
        for _ in range(_MAX_DROP_ROUNDS):
            payload = {
                "allOrNone": False,
                "records": [
                    {"attributes": {"type": sobject}, o.external_id_field: it.identity, **it.fields}
                    for it in items
                ],
            }
            url = f"{self._api()}/composite/sobjects/{sobject}/{o.external_id_field}"
            build = self.request("PATCH", url, orjson.dumps(payload))
            response, verdict = await self.runtime.call(
                build,
                op="batch_upsert_" + sobject.lower(),
                classify=classify_salesforce,
                permit=permit,
                records=len(items),
            )
            if verdict.ok:
                break
            # An unknown column refuses the whole request: send every record again without it.
            refused = self._droppable(sobject, refused_fields(json_body(response)))
            if verdict.kind is VerdictKind.PERMANENT and any(set(refused) & set(it.fields) for it in items):
                self.refused.note(sobject, refused)
                for i, it in enumerate(items):
                    dropped[i] += [n for n in it.fields if n in refused]
                items = [
                    _Record(it.identity, {k: v for k, v in it.fields.items() if k not in refused})
                    for it in items
                ]
                permit = await self.runtime.permit()
                continue
            if verdict.kind is VerdictKind.PERMANENT and verdict.status == 400 and len(items) > 1:
                mid = len(items) // 2
                left = await self._send_upserts(sobject, await self.runtime.permit(), items[:mid])
                right = await self._send_upserts(sobject, await self.runtime.permit(), items[mid:])
                return [_with_more_dropped(r, d) for r, d in zip([*left, *right], dropped, strict=True)]
            return [verdict.error()] * len(items)
        else:
            return [PermanentError(f"Salesforce refused {_MAX_DROP_ROUNDS} fields in a row")] * len(items)
        data = json_body(response)
        if not isinstance(data, list) or len(data) != len(items):
            return [
                RetryableError("Salesforce collections answer does not list one result per record")
            ] * len(items)
        out: list[_Upserted | BaseException] = []
        for it, result, gone in zip(items, data, dropped, strict=True):
            if isinstance(result, dict) and result.get("success") and result.get("id"):
                out.append(_Upserted(str(result["id"]), tuple(gone)))
                continue
            errors = result.get("errors") if isinstance(result, dict) else None
            again = self._record_again(sobject, it, errors)
            if again is None:
                out.append(item_error(errors))
                continue
            retried, newly_dropped = again
            [res] = await self._send_upserts(sobject, await self.runtime.permit(), [retried])
            out.append(_with_more_dropped(res, [*gone, *newly_dropped]))
        return out

    def _record_again(self, sobject: str, record: _Record, errors: Any) -> tuple[_Record, list[str]] | None:
        """The record to send again after its own refusal, and the fields it leaves out: without the fields
        the org refused (policy drop), or, new and lacking a required field, with the placeholder in it."""
        refused = {
            n: c for n, c in self._droppable(sobject, refused_fields(errors)).items() if n in record.fields
        }
        if refused:
            self.refused.note(sobject, refused)
            kept = {k: v for k, v in record.fields.items() if k not in refused}
            return _Record(record.identity, kept), list(refused)
        missing = [f for f in _required_missing(errors) if not record.fields.get(f)]
        if missing:
            return _Record(record.identity, {**record.fields, **dict.fromkeys(missing, PLACEHOLDER)}), []
        return None


def _with_dropped(ids: dict[str, str], dropped: Sequence[str]) -> dict[str, str]:
    if dropped:
        ids["dropped_properties"] = ",".join(sorted(set(dropped)))
    return ids


def _with_more_dropped(
    result: _Upserted | BaseException, dropped: Sequence[str]
) -> _Upserted | BaseException:
    if isinstance(result, _Upserted) and dropped:
        return _Upserted(result.id, tuple(dict.fromkeys([*dropped, *result.dropped])))
    return result


def _created_id(response: httpx.Response | None, verdict: Verdict, sobject: str) -> str:
    if not verdict.ok:
        raise verdict.error()
    data = json_body(response)
    if isinstance(data, dict) and data.get("id"):
        if data.get("success") is False:
            raise item_error(data.get("errors"))
        return str(data["id"])
    raise RetryableError(f"Salesforce {sobject} answer has no id")
