"""Salesforce REST: Contact and Lead upsert by external id through sObject Collections; notes and cases.

- Upserts: `PATCH /services/data/vXX.X/composite/sobjects/{SObject}/{ExtIdField}` with `allOrNone: false`,
  up to 200 records of many identities per request; results come back per record, in order. A record
  the org refuses fails alone (UNABLE_TO_LOCK_ROW retries; REQUEST_LIMIT_EXCEEDED is an outage; anything
  else is permanent); a request refused as a whole (400) is split in halves to find the culprit.
- Salesforce upserts only touch the fields sent, so no read is needed, except for tags: a multi-select
  picklist (`tags_field`) read once per identity (then cached) and written as the union.
- Notes are Tasks (WhoId = the contact); tickets are Cases (ContactId), upserted on
  `ticket_external_id_field` = command id when configured, so a replay cannot open a second case.
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
from shopbotly.crm_writer.domain import Write, WriteKind, property_text, split_multi, union_tags
from shopbotly.crm_writer.runtime import BatchQueue, ConnectionRuntime, Permit
from shopbotly.crm_writer.verdict import Quota, Verdict, VerdictKind, parse_retry_after

__all__ = ["SalesforceConnector", "classify_salesforce", "item_error", "sforce_quota"]

_KINDS = {
    CommandOp.UPSERT_CONTACT: WriteKind.CONTACT,
    CommandOp.ADD_TAGS: WriteKind.CONTACT,
    CommandOp.UPSERT_LEAD: WriteKind.LEAD,
    CommandOp.ADD_NOTE: WriteKind.NOTE,
    CommandOp.ATTACH_ORDER: WriteKind.ORDER,
    CommandOp.CREATE_TICKET: WriteKind.TICKET,
}
_USAGE = re.compile(r"(?:^|[;,\s])api-usage=(\d+)/(\d+)")
_RETRYABLE_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "ENTITY_IS_LOCKED"})


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


@dataclass(frozen=True)
class _Record:
    identity: str
    fields: dict[str, Any]


class SalesforceConnector(Connector[SalesforceOptions], kind="salesforce"):
    def __init__(self, runtime: ConnectionRuntime) -> None:
        super().__init__(runtime)
        cfg = runtime.config
        o = self.options
        assert cfg.base_url is not None
        self._base_url = cfg.base_url.rstrip("/")
        self.cache = ContactCache(ttl_s=o.state_ttl_s)
        batch = min(cfg.batch_size, 200)
        self._queues: dict[str, BatchQueue[_Record, str]] = {
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
            if write.tags:
                if o.tags_field is None:
                    raise PermanentError("tags given but the Salesforce connection has no tags_field option")
                existing = await self._current_tags(sobject, write.identity, partition)
                merged = union_tags(existing, write.tags)
                fields[o.tags_field] = ";".join(merged)
            record_id = await self._queues[sobject].submit(_Record(write.identity, fields))
            if sobject == o.contact_sobject:
                state = self.cache.get(write.identity) or ContactState(None, {}, partition)
                state.id = record_id
                if write.tags and o.tags_field:
                    state.properties[o.tags_field] = fields[o.tags_field]
                state.partition = partition
                self.cache.put(write.identity, state)
            return {"contact" if write.kind is WriteKind.CONTACT else "lead": record_id}
        contact_id = await self._contact_id(write.identity, partition)
        if write.kind in (WriteKind.NOTE, WriteKind.ORDER):
            text = write.body or ", ".join(f"{k}: {property_text(v)}" for k, v in write.fields.items())
            first = (text.strip().splitlines() or ["Note"])[0][:80]
            task = {"Subject": first, "Description": text, "WhoId": contact_id, "Status": "Completed"}
            note_id = await self._create(o.note_sobject, task, op="create_note")
            return {"contact": contact_id, "note": note_id}
        if write.kind is WriteKind.TICKET:
            case: dict[str, Any] = {
                "Subject": (write.body or "Support request").strip().splitlines()[0][:120]
                or "Support request",
                "Description": write.body or "",
                "ContactId": contact_id,
                "Origin": "ShopBotly",
                **self._map_fields(write.fields, o.ticket_field_map),
            }
            if o.ticket_external_id_field:
                ticket_id = await self._upsert_one(
                    o.ticket_sobject, o.ticket_external_id_field, write.key, case, op="upsert_ticket"
                )
            else:
                ticket_id = await self._create(o.ticket_sobject, case, op="create_ticket")
            return {"contact": contact_id, "ticket": ticket_id}
        raise PermanentError(f"Salesforce connector cannot apply a {write.kind.value} write")

    async def _contact_id(self, identity: str, partition: int) -> str:
        cached = self.cache.get(identity)
        if cached is not None and cached.id is not None:
            return cached.id
        # Upsert by the external id alone: finds the contact, or creates it, and returns its id.
        record_id = await self._queues[self.options.contact_sobject].submit(_Record(identity, {}))
        state = cached or ContactState(None, {}, partition)
        state.id = record_id
        self.cache.put(identity, state)
        return record_id

    async def _current_tags(self, sobject: str, identity: str, partition: int) -> list[str]:
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

    async def _create(self, sobject: str, fields: dict[str, Any], *, op: str) -> str:
        url = f"{self._api()}/sobjects/{sobject}"
        body = orjson.dumps(fields)
        build = self.request("POST", url, body)

        response, verdict = await self.runtime.call(build, op=op, classify=classify_salesforce)
        return _created_id(response, verdict, sobject)

    async def _upsert_one(
        self, sobject: str, field: str, value: str, fields: dict[str, Any], *, op: str
    ) -> str:
        url = f"{self._api()}/sobjects/{sobject}/{field}/{urllib.parse.quote(value, safe='')}"
        body = orjson.dumps(fields)
        build = self.request("PATCH", url, body)

        response, verdict = await self.runtime.call(build, op=op, classify=classify_salesforce)
        if verdict.ok and verdict.status == 204:
            # Before API v46 an update answers 204 without a body: look the record up by its external id.
            return await self._id_by_external_id(sobject, field, value)
        return _created_id(response, verdict, sobject)

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
    ) -> Sequence[str | BaseException]:
        o = self.options
        payload = {
            "allOrNone": False,
            "records": [
                {"attributes": {"type": sobject}, o.external_id_field: it.identity, **it.fields}
                for it in items
            ],
        }
        url = f"{self._api()}/composite/sobjects/{sobject}/{o.external_id_field}"
        body = orjson.dumps(payload)
        build = self.request("PATCH", url, body)

        response, verdict = await self.runtime.call(
            build,
            op="batch_upsert_" + sobject.lower(),
            classify=classify_salesforce,
            permit=permit,
            records=len(items),
        )
        if not verdict.ok:
            if verdict.kind is VerdictKind.PERMANENT and verdict.status == 400 and len(items) > 1:
                mid = len(items) // 2
                left = await self._send_upserts(sobject, await self.runtime.permit(), items[:mid])
                right = await self._send_upserts(sobject, await self.runtime.permit(), items[mid:])
                return [*left, *right]
            return [verdict.error()] * len(items)
        data = json_body(response)
        if not isinstance(data, list) or len(data) != len(items):
            return [
                RetryableError("Salesforce collections answer does not list one result per record")
            ] * len(items)
        out: list[str | BaseException] = []
        for result in data:
            if isinstance(result, dict) and result.get("success") and result.get("id"):
                out.append(str(result["id"]))
            else:
                out.append(item_error(result.get("errors") if isinstance(result, dict) else None))
        return out


def _created_id(response: httpx.Response | None, verdict: Verdict, sobject: str) -> str:
    if not verdict.ok:
        raise verdict.error()
    data = json_body(response)
    if isinstance(data, dict) and data.get("id"):
        if data.get("success") is False:
            raise item_error(data.get("errors"))
        return str(data["id"])
    raise RetryableError(f"Salesforce {sobject} answer has no id")
