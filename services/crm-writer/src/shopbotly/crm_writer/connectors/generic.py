"""Generic REST: a self-hosted CRM targeted by configuration alone (`POST /api/v1/leads` style).

Per op: method, path template, JSON body template, success codes and where the record id is in the
answer; an idempotency header carries the write's key (the command id, or a digest of merged ids) so
the CRM can deduplicate replays. Auth is whatever the connection's `auth` says (API key header, Bearer,
OAuth 2.0 client credentials or refresh token).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Hashable, Mapping

import httpx
import orjson
from pydantic import JsonValue

from shopbotly.common.config._connections import GenericOperation
from shopbotly.common.errors import ErrorClass, PermanentError, classify_http_status
from shopbotly.common.events import CommandOp
from shopbotly.crm_writer.connectors.base import Connector, json_body
from shopbotly.crm_writer.domain import Write, WriteKind
from shopbotly.crm_writer.runtime import ConnectionRuntime
from shopbotly.crm_writer.verdict import Quota, Verdict, VerdictKind, int_header, parse_retry_after

__all__ = ["GenericConnector", "classify_generic", "render", "template_context"]

_KINDS = {
    CommandOp.UPSERT_CONTACT: WriteKind.CONTACT,
    CommandOp.ADD_TAGS: WriteKind.CONTACT,
    CommandOp.UPSERT_LEAD: WriteKind.LEAD,
    CommandOp.ADD_NOTE: WriteKind.NOTE,
    CommandOp.ATTACH_ORDER: WriteKind.ORDER,
    CommandOp.CREATE_TICKET: WriteKind.TICKET,
    CommandOp.NOTIFY_BOT: WriteKind.NOTIFY,
}
_WHOLE = re.compile(r"^\{([a-z_][a-z0-9_.]*)\}$")
_PART = re.compile(r"\{([a-z_][a-z0-9_.]*)\}")


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
    }


def _lookup(context: Mapping[str, JsonValue], path: str) -> JsonValue:
    value: JsonValue = dict(context)
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def render(template: JsonValue, context: Mapping[str, JsonValue], *, url: bool = False) -> JsonValue:
    """Fill a template: `"{name}"` alone takes the value with its type; inside text, its text.

    Unknown names render as null (alone) or empty text, so a command without an optional field still
    produces a well-formed body.
    """
    if isinstance(template, str):
        whole = _WHOLE.match(template)
        if whole and not url:
            return _lookup(context, whole.group(1))

        def text(m: re.Match[str]) -> str:
            value = _lookup(context, m.group(1))
            if value is None:
                return ""
            if isinstance(value, str):
                return value
            return orjson.dumps(value).decode()

        if url:
            return _PART.sub(lambda m: urllib.parse.quote(text(m), safe=""), template)
        return _PART.sub(text, template)
    if isinstance(template, list):
        return [render(v, context) for v in template]
    if isinstance(template, dict):
        return {k: render(v, context) for k, v in template.items()}
    return template


def classify_generic(response: httpx.Response, success_codes: frozenset[int]) -> Verdict:
    status = response.status_code
    headers = response.headers
    remaining = int_header(headers, "ratelimit-remaining")
    if remaining is None:
        remaining = int_header(headers, "x-ratelimit-remaining")
    quota = Quota(remaining=remaining) if remaining is not None else None
    if status in success_codes:
        return Verdict(VerdictKind.OK, status, quota=quota)
    retry_after = parse_retry_after(headers)
    body = json_body(response)
    detail = ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):  # {"error": {"code": ..., "message": ...}}
            detail = ": ".join(str(err[k]) for k in ("code", "message") if err.get(k))
        else:
            detail = str(body.get("message") or err or body.get("detail") or "")
    message = f"CRM answered {status}" + (f": {detail}" if detail else "")
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


class GenericConnector(Connector):
    def __init__(self, runtime: ConnectionRuntime) -> None:
        super().__init__(runtime)
        cfg = runtime.config
        self.options = cfg.generic_options()
        assert cfg.base_url is not None
        self._base = cfg.base_url.rstrip("/")
        self.max_merge = 1_000_000 if self.options.coalesce else 1

    def _operation(self, op: CommandOp) -> GenericOperation | None:
        ops = self.options.operations
        return ops.get(op.value) or ops.get("default")

    def kind_of(self, op: CommandOp) -> WriteKind:
        if self._operation(op) is None:
            raise PermanentError(f"generic connection has no operation for {op.value} (and no default)")
        return _KINDS[op]

    def group_of(self, op: CommandOp) -> Hashable:
        # Ops sent to different endpoints must not merge, even when both are contact upserts.
        return (_KINDS[op], id(self._operation(op)))

    async def apply(self, write: Write, *, partition: int) -> dict[str, str]:
        operation = self._operation(write.op)
        if operation is None:
            raise PermanentError(f"generic connection has no operation for {write.op.value}")
        context = template_context(write)
        path = render(operation.path, context, url=True)
        body = orjson.dumps(render(operation.body, context))
        url = f"{self._base}{path}"
        success = frozenset(operation.success_codes)
        extra = {}
        if self.options.idempotency_header:
            extra[self.options.idempotency_header] = write.key
        build = self.request(operation.method, url, body, headers=extra)

        response, verdict = await self.runtime.call(
            build, op=write.op.value, classify=lambda r: classify_generic(r, success)
        )
        if not verdict.ok:
            raise verdict.error()
        ids: dict[str, str] = {}
        if operation.id_field:
            # The effect is applied whether or not the answer names the record: a missing id is not an error.
            record_id = _lookup({"root": json_body(response)}, f"root.{operation.id_field}")
            if record_id is not None and not isinstance(record_id, dict | list):
                ids[write.kind.value] = str(record_id)
        return ids
