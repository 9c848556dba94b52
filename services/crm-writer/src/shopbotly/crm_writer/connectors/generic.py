"""Generic REST: a CRM targeted by configuration alone, with or without an upsert endpoint.

Per op: one HTTP call (method, path, body templates, success codes, where the record id is), or a short
recipe for CRMs without upsert: find the identity's record, then update it by id or create it, then
follow-up steps (a note on the found id). Record ids found or created are remembered per identity while
this replica owns its partition. Per connection, response rules say which answers mean "already exists"
(converge on the record), "bad credentials" (re-read the secret once) and where the CRM's reason is, so
it reaches dead letters verbatim. An idempotency header carries each write's key for CRMs that honour one.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Hashable, Mapping
from typing import Any

import httpx
import jmespath
import orjson
from jmespath.parser import ParsedResult
from pydantic import JsonValue

from shopbotly.common.config._mapping import template_parts
from shopbotly.common.config.crm_kinds.generic import (
    GenericOperation,
    GenericOptions,
    GenericRequest,
    GenericResponses,
    ResponseOutcome,
)
from shopbotly.common.errors import ErrorClass, PermanentError, RetryableError, classify_http_status
from shopbotly.common.events import CommandOp
from shopbotly.common.expressions import truthy
from shopbotly.crm_writer.connectors.base import Connector, ContactCache, ContactState, json_body
from shopbotly.crm_writer.domain import WRITE_KINDS, Write, WriteKind, property_text
from shopbotly.crm_writer.runtime import ConnectionRuntime
from shopbotly.crm_writer.verdict import Quota, Verdict, VerdictKind, int_header, parse_retry_after

__all__ = ["GenericConnector", "classify_generic", "crm_reason", "render", "template_context"]

_OUTCOMES: dict[ResponseOutcome, VerdictKind] = {
    "applied": VerdictKind.OK,
    "duplicate": VerdictKind.DUPLICATE,
    "retryable": VerdictKind.RETRY,
    "permanent": VerdictKind.PERMANENT,
    "auth": VerdictKind.AUTH,
}
_MAX_REASON = 1000

# The main call of an operation and its steps share these fields.
_Call = GenericOperation | GenericRequest


@functools.lru_cache(maxsize=1024)
def _compiled(expression: str) -> ParsedResult:
    return jmespath.compile(expression)


def _search(expression: str, data: Any) -> Any:
    return _compiled(expression).search(data)


def template_context(write: Write) -> dict[str, JsonValue]:
    cmd = write.commands[-1]
    return {
        "command_id": write.key,
        "op": write.op.value,
        "identity": write.identity,
        "tenant": write.tenant,
        "connection": write.connection,
        "body": write.body,
        "tags": list(write.tags),
        "fields": dict(write.fields),
        "event_type": cmd.event_type,
        "record_id": None,
        "steps": {},
    }


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def render(template: JsonValue, context: Mapping[str, Any], *, url: bool = False) -> JsonValue:
    """Fill a template whose `{…}` placeholders are JMESPath expressions over `context`.

    A string that is exactly one placeholder takes the value with its JSON type; inside text, its text
    (null as empty text; URL-encoded when `url`). In an object, a key whose placeholder gives null is left
    out, so a command without an optional field sends no such key.
    """
    if isinstance(template, str):
        parts = template_parts(template)
        if len(parts) == 1 and parts[0][1] and not url:
            value: JsonValue = _search(parts[0][0], context)
            return value
        out: list[str] = []
        for part, is_expression in parts:
            if not is_expression:
                out.append(part)
                continue
            text = _text(_search(part, context))
            out.append(urllib.parse.quote(text, safe="") if url else text)
        return "".join(out)
    if isinstance(template, list):
        return [render(v, context) for v in template]
    if isinstance(template, dict):
        rendered: dict[str, JsonValue] = {}
        for key, value in template.items():
            filled = render(value, context)
            if filled is None and isinstance(value, str):
                continue
            rendered[key] = filled
        return rendered
    return template


def crm_reason(body: Any, expression: str | None = None) -> str:
    """The CRM's own reason for an error answer, as text (JSON text when it is structured).

    `expression` says where the reason is; when it finds nothing (another error shape, e.g. a 403's
    `detail`), the usual places are tried.
    """
    found = _search(expression, body) if expression is not None else None
    if found not in (None, "", [], {}):
        pass
    elif isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and (err.get("code") or err.get("message")):
            # {"error": {"code": ..., "message": ...}}
            return ": ".join(str(err[k]) for k in ("code", "message") if err.get(k))[:_MAX_REASON]
        found = next(
            (
                v
                for v in (body.get("message"), body.get("errors"), err, body.get("detail"))
                if v not in (None, "", [], {})
                and not isinstance(v, bool)  # {"error": true}: a flag, no reason
            ),
            None,
        )
    else:
        found = body if isinstance(body, str | list) else None
    if found is None or isinstance(found, bool):
        return ""
    return _text(found)[:_MAX_REASON]


def _rule_outcome(status: int, body: Any, responses: GenericResponses | None) -> ResponseOutcome | None:
    for rule in responses.rules if responses is not None else ():
        if status in rule.status and (rule.when is None or truthy(_search(rule.when, body))):
            return rule.outcome
    return None


def classify_generic(
    response: httpx.Response, success_codes: frozenset[int], responses: GenericResponses | None = None
) -> Verdict:
    status = response.status_code
    headers = response.headers
    remaining = int_header(headers, "ratelimit-remaining")
    if remaining is None:
        remaining = int_header(headers, "x-ratelimit-remaining")
    quota = Quota(remaining=remaining) if remaining is not None else None
    body = json_body(response)
    outcome = _rule_outcome(status, body, responses)
    if outcome == "applied" or (outcome is None and status in success_codes):
        return Verdict(VerdictKind.OK, status, quota=quota)
    retry_after = parse_retry_after(headers)
    detail = crm_reason(body, responses.message if responses is not None else None)
    message = f"CRM answered {status}" + (f": {detail}" if detail else "")
    if outcome is not None:
        return Verdict(_OUTCOMES[outcome], status, message, retry_after=retry_after, quota=quota)
    if status == 429:
        return Verdict(
            VerdictKind.THROTTLED, status, message, retry_after=retry_after, policy="429", quota=quota
        )
    cls = classify_http_status(status)
    if cls is None:
        # A 2xx the operation does not list as success (e.g. 202 where 201 is expected): refuse, loudly.
        return Verdict(VerdictKind.PERMANENT, status, f"{message} (not among the success codes)", quota=quota)
    kind = {
        ErrorClass.AUTH: VerdictKind.AUTH,
        ErrorClass.RETRYABLE: VerdictKind.RETRY,
        ErrorClass.OUTAGE: VerdictKind.OUTAGE,
        ErrorClass.PERMANENT: VerdictKind.PERMANENT,
    }[cls]
    return Verdict(kind, status, message, retry_after=retry_after, quota=quota)


def _uses_record_id(call: _Call) -> bool:
    return "record_id" in orjson.dumps([call.path, call.query, call.body]).decode()


class GenericConnector(Connector[GenericOptions], kind="generic", schema=None):
    def __init__(self, runtime: ConnectionRuntime) -> None:
        super().__init__(runtime)
        cfg = runtime.config
        assert cfg.base_url is not None
        self._base = cfg.base_url.rstrip("/")
        self.max_merge = 1_000_000 if self.options.coalesce else 1
        # Record ids per (find path, identity): valid while this replica owns the identity's partition.
        self._record_ids = ContactCache(ttl_s=self.options.record_id_ttl_s)

    def _operation(self, op: CommandOp) -> GenericOperation | None:
        ops = self.options.operations
        return ops.get(op.value) or ops.get("default")

    def kind_of(self, op: CommandOp) -> WriteKind:
        if self._operation(op) is None:
            raise PermanentError(f"generic connection has no operation for {op.value} (and no default)")
        return WRITE_KINDS[op]

    def group_of(self, op: CommandOp) -> Hashable:
        # Ops sent to different endpoints must not merge, even when both are contact upserts.
        return (WRITE_KINDS[op], id(self._operation(op)))

    def forget_partitions(self, partitions: set[int]) -> None:
        self._record_ids.forget_partitions(partitions)

    async def apply(self, write: Write, *, partition: int) -> dict[str, str]:
        operation = self._operation(write.op)
        if operation is None:
            raise PermanentError(f"generic connection has no operation for {write.op.value}")
        if operation.noop:
            return {}  # declared: the CRM has no equivalent of this op
        context = template_context(write)
        _map_values(operation, context)
        find = operation.find
        memo_key = f"{find.path}\x00{write.identity}" if find is not None else ""
        remembered = self._record_ids.get(memo_key) if find is not None else None
        record_id = remembered.id if remembered is not None else None
        needs_id = _uses_record_id(operation)
        if record_id is None and find is not None and (operation.lookup == "before_create" or needs_id):
            record_id = await self._find(write, operation, find, context)
        context["record_id"] = record_id
        call_id: str | None = None
        update = operation.update
        if record_id is not None and update is not None:
            verdict = await self._step(write, "update", update, context, missing_ok=remembered is not None)
            if verdict is None:
                # The remembered record is gone (deleted or merged in the CRM): find it afresh, once.
                self._record_ids.drop(memo_key)
                assert find is not None
                record_id = await self._find(write, operation, find, context)
                context["record_id"] = record_id
                if record_id is not None:
                    await self._step(write, "update", update, context)
        if record_id is None or update is None:
            if needs_id and record_id is None:
                raise PermanentError(
                    f"{write.op.value}: the CRM has no record for this identity (find found none), "
                    "and the operation needs its id"
                )
            verdict = await self._step(write, "call", operation, context)
            assert verdict is not None
            if verdict.kind is VerdictKind.DUPLICATE and find is not None and update is not None:
                # Already exists (e.g. created by a request whose answer was lost): converge on it.
                record_id = await self._find(write, operation, find, context)
                if record_id is None:
                    raise RetryableError(f"{verdict.message}, but find does not show the record yet")
                context["record_id"] = record_id
                await self._step(write, "update", update, context)
            elif verdict.ok:
                call_id = self._id_of(operation, context, "call")
                if record_id is None and write.kind.mergeable:
                    record_id = call_id
        for i, step in enumerate(operation.then):
            await self._step(write, f"then{i}", step, context)
        ids: dict[str, str] = {}
        if record_id is not None:
            ids["record" if not write.kind.mergeable else write.kind.value] = record_id
            if find is not None:
                self._record_ids.put(memo_key, ContactState(id=record_id, partition=partition))
        if call_id is not None and not write.kind.mergeable:
            ids[write.kind.value] = call_id
        return ids

    async def _find(
        self, write: Write, operation: GenericOperation, find: GenericRequest, context: dict[str, Any]
    ) -> str | None:
        verdict = await self._step(write, "find", find, context, missing=frozenset(operation.not_found_codes))
        if verdict is None:
            return None
        return self._id_of(find, context, "find")

    @staticmethod
    def _id_of(call: _Call, context: Mapping[str, Any], step: str) -> str | None:
        if call.id_field is None:
            return None
        # The effect is applied whether or not the answer names the record: a missing id is not an error.
        found = _search(call.id_field, context["steps"].get(step))
        if found is None or isinstance(found, dict | list | bool):
            return None
        return str(found)

    async def _step(
        self,
        write: Write,
        step: str,
        call: _Call,
        context: dict[str, Any],
        *,
        missing: frozenset[int] = frozenset(),
        missing_ok: bool = False,
    ) -> Verdict | None:
        """Send one call; its JSON answer goes to `steps.<step>`. None: the answer said "not found"."""
        path = render(call.path, context, url=True)
        query = {k: _text(render(v, context)) for k, v in call.query.items()}
        body = None if call.body is None else orjson.dumps(render(call.body, context))
        extra = {}
        if self.options.idempotency_header and call.method != "GET":
            key = write.key if step == "call" else f"{write.key}.{step}"
            extra[self.options.idempotency_header] = key
        build = self.request(call.method, f"{self._base}{path}", body, params=query or None, headers=extra)
        success = frozenset(call.success_codes)
        op = write.op.value if step == "call" else f"{write.op.value}.{step.rstrip('0123456789')}"
        response, verdict = await self.runtime.call(
            build, op=op, classify=lambda r: classify_generic(r, success, self.options.responses)
        )
        if (verdict.status in missing or (missing_ok and verdict.status == 404)) and not verdict.ok:
            return None
        if not verdict.ok and verdict.kind is not VerdictKind.DUPLICATE:
            raise verdict.error()
        context["steps"][step] = json_body(response)
        return verdict


def _map_values(operation: GenericOperation, context: dict[str, Any]) -> None:
    """Replace command values by the CRM's (e.g. tag names by tag ids) as the operation's maps say."""
    for key, table in operation.value_maps.items():
        if key == "tags":
            context["tags"] = [v for tag in context["tags"] for v in _mapped(key, table, tag, operation)]
            continue
        name = key.removeprefix("fields.")
        fields = context["fields"]
        if fields.get(name) is not None:
            mapped = _mapped(key, table, property_text(fields[name]), operation)
            if mapped:
                fields[name] = mapped[0]
            else:
                del fields[name]


def _mapped(
    key: str, table: Mapping[str, JsonValue], value: str, operation: GenericOperation
) -> list[JsonValue]:
    if value in table:
        return [table[value]]
    if operation.unmapped == "drop":
        return []
    if operation.unmapped == "keep":
        return [value]
    raise PermanentError(f"value_maps.{key} has no entry for {value!r} (known: {sorted(table)})")
