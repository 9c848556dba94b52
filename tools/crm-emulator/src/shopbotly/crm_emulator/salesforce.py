"""Salesforce routes: the OAuth 2.0 token endpoint, sObject describe, sObject Collections upsert,
single-record upsert, create and read, and the limits resource."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from shopbotly.crm_emulator import salesforce_rules as sf
from shopbotly.crm_emulator.deps import RuntimeDep, read_json
from shopbotly.crm_emulator.domain import (
    SALESFORCE_ORG_ID,
    StoredObject,
    System,
    is_valid_salesforce_id,
    salesforce_id,
    salesforce_id_suffix,
)
from shopbotly.crm_emulator.oauth import (
    JWT_BEARER,
    ClientSpec,
    OAuthError,
    authenticate_client,
    check_jwt_assertion,
    parse_form,
)
from shopbotly.crm_emulator.runtime import Runtime
from shopbotly.crm_emulator.salesforce_describe import describe_sobject, standard_fields
from shopbotly.crm_emulator.settings import reveal
from shopbotly.crm_emulator.shapes import salesforce_error, salesforce_item_error

__all__ = ["ORG_ID", "router"]

router = APIRouter(tags=["salesforce"])

ORG_ID = SALESFORCE_ORG_ID
_NOT_FOUND = salesforce_error("NOT_FOUND", "The requested resource does not exist")


def clients(rt: Runtime) -> list[ClientSpec]:
    return [
        ClientSpec(
            c.client_id,
            reveal(c.client_secret) if c.client_secret is not None else None,
            reveal(c.jwt_public_key) if c.jwt_public_key is not None else None,
            frozenset(c.usernames) if c.usernames is not None else None,
        )
        for c in rt.settings.salesforce_clients
    ]


@router.post("/services/oauth2/token")
async def token(request: Request, rt: RuntimeDep) -> JSONResponse:
    form = parse_form(await request.body())
    grant = form.get("grant_type")
    now = rt.clock()
    base = str(request.base_url).rstrip("/")
    try:
        if grant == "client_credentials":
            unknown = OAuthError("invalid_client_id", "client identifier invalid")
            client = authenticate_client(
                clients(rt),
                form,
                request.headers.get("authorization"),
                unknown_client=unknown,
                bad_secret=OAuthError("invalid_client", "invalid client credentials"),
            )
            subject = f"integration@{client.client_id}"
        elif grant == JWT_BEARER:
            assertion = form.get("assertion")
            if not assertion:
                raise OAuthError("invalid_grant", "invalid assertion")
            audiences = [*rt.settings.salesforce_audiences, base]
            client, subject = check_jwt_assertion(assertion, clients(rt), audiences, now)
        else:
            raise OAuthError("unsupported_grant_type", "grant type not supported")
    except OAuthError as exc:
        return JSONResponse(exc.body(), exc.status)
    issued = rt.tokens.issue(
        System.SALESFORCE,
        client.client_id,
        subject,
        now,
        rt.settings.salesforce_token_lifetime_s,
        prefix=f"{ORG_ID[:15]}!",
    )
    user_id = salesforce_id("005", int(hashlib.sha256(subject.encode()).hexdigest()[:8], 16))
    identity_url = f"{base}/id/{ORG_ID}/{user_id}"
    issued_at = str(int(now * 1000))
    key = (client.client_secret or client.client_id).encode()
    signature = base64.b64encode(
        hmac.new(key, (identity_url + issued_at).encode(), hashlib.sha256).digest()
    ).decode()
    # No expires_in: Salesforce does not say when a session ends; clients learn it from a 401.
    return JSONResponse(
        {
            "access_token": issued.token,
            "signature": signature,
            "scope": "api",
            "instance_url": base,
            "id": identity_url,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }
    )


def _version(segment: str, minimum: float = 20.0) -> str:
    version = sf.parse_version(segment)
    if version is None or version < minimum:
        raise sf.SalesforceRejected(404, _NOT_FOUND)
    return segment


def _spec(name: str) -> sf.SObjectSpec:
    spec = sf.SOBJECTS.get(name)
    if spec is None:
        raise sf.SalesforceRejected(
            404, salesforce_error("NOT_FOUND", f"The requested resource does not exist: {name}")
        )
    return spec


async def _body(request: Request) -> Any:
    body, error = await read_json(request)
    if error is not None:
        raise sf.SalesforceRejected(400, salesforce_error("JSON_PARSER_ERROR", error))
    return body


def _as_request_errors(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-item errors ({statusCode}) as a request-level body ({errorCode}), for single-record calls."""
    return [{"message": e["message"], "errorCode": e["statusCode"], "fields": e["fields"]} for e in items]


@router.get("/services/data/{version}/limits")
async def limits(version: str, rt: RuntimeDep) -> JSONResponse:
    _version(version)
    decision = rt.limiters[System.SALESFORCE].peek(rt.clock())
    return JSONResponse(
        {"DailyApiRequests": {"Max": decision.daily_limit, "Remaining": decision.daily_remaining}}
    )


@router.patch("/services/data/{version}/composite/sobjects/{sobject}/{ext_field}")
async def collection_upsert(
    version: str, sobject: str, ext_field: str, request: Request, rt: RuntimeDep
) -> JSONResponse:
    _version(version, sf.MIN_COLLECTIONS_VERSION)
    spec = _spec(sobject)
    field = sf.external_id_field(spec, ext_field, rt.salesforce_fields.external_ids(spec.name))
    body = await _body(request)
    all_or_none, records, errors = sf.parse_collection_upsert(
        body, spec, field, rt.settings.salesforce_batch_limit, rt.salesforce_fields.names(spec.name)
    )
    if spec.references:
        dangling = await run_in_threadpool(lambda: {r.index: _dangling(rt, spec, r.fields) for r in records})
        errors = {**errors, **{i: e for i, e in dangling.items() if e}}
        records = [r for r in records if r.index not in errors]
    unique = sorted(rt.salesforce_fields.unique(spec.name))
    results = await run_in_threadpool(
        rt.store.salesforce_upsert, spec, field, all_or_none, records, errors, unique, rt.clock()
    )
    return JSONResponse(results)


@router.patch("/services/data/{version}/sobjects/{sobject}/{ext_field}/{value}")
async def single_upsert(
    version: str, sobject: str, ext_field: str, value: str, request: Request, rt: RuntimeDep
) -> JSONResponse:
    _version(version)
    spec = _spec(sobject)
    field = sf.external_id_field(spec, ext_field, rt.salesforce_fields.external_ids(spec.name))
    body = await _body(request)
    if not isinstance(body, dict):
        raise sf.SalesforceRejected(400, salesforce_error("JSON_PARSER_ERROR", "Expected a JSON object"))
    fields = sf.canonical_fields(spec, body, rt.salesforce_fields.names(spec.name))
    problems = sf.field_problems(spec, {**fields, field: value})
    if not problems:
        problems = await run_in_threadpool(_dangling, rt, spec, fields)
    if problems:
        return JSONResponse(_as_request_errors(problems), 400)
    outcome, result = await run_in_threadpool(
        rt.store.salesforce_upsert_one, spec, field, value, fields, rt.clock()
    )
    if outcome == "multiple":
        # 300 Multiple Choices: the URLs of every record the external id matched.
        return JSONResponse([f"/services/data/{version}/sobjects/{spec.name}/{i}" for i in result], 300)
    if outcome == "invalid":
        return JSONResponse(_as_request_errors([result]), 400)
    created = outcome == "created"
    return JSONResponse(sf.upsert_success(result.object_id, created), 201 if created else 200)


def _full_id(record_id: str) -> str:
    """15-character ids are accepted everywhere an 18-character one is."""
    if len(record_id) == 15 and is_valid_salesforce_id(record_id):
        return record_id + salesforce_id_suffix(record_id)
    return record_id


def _find_by_id(rt: Runtime, record_id: str) -> StoredObject | None:
    for spec in sf.SOBJECTS.values():
        if record_id.startswith(spec.key_prefix):
            return rt.store.get(System.SALESFORCE, spec.name, _full_id(record_id))
    return None


def _dangling(rt: Runtime, spec: sf.SObjectSpec, fields: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """References (WhoId, ParentId, ContactId, ...) to records that do not exist."""
    return [
        salesforce_item_error("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {parent}")
        for parent in sf.references_of(spec, fields)
        if _find_by_id(rt, parent) is None
    ]


def _wanted(rt: Runtime, spec: sf.SObjectSpec, fields: str | None) -> set[str] | None:
    """`?fields=A,B` as lowercased names (None: every field); a field the sObject lacks → 400
    INVALID_FIELD, as Salesforce answers before looking the record up."""
    if not fields:
        return None
    named = [f.strip() for f in fields.split(",") if f.strip()]
    described = [*standard_fields()[spec.name], *rt.salesforce_fields.fields(spec.name)]
    known = {str(f["name"]).lower() for f in described}
    unknown = [name for name in named if name.lower() not in known]
    if unknown:
        message = f"No such column '{unknown[0]}' on entity '{spec.name}'"
        raise sf.SalesforceRejected(400, salesforce_error("INVALID_FIELD", message, []))
    return {name.lower() for name in named}


def _select(record: dict[str, Any], wanted: set[str] | None) -> dict[str, Any]:
    """The attributes, the Id and the wanted fields only."""
    if wanted is None:
        return record
    return {k: v for k, v in record.items() if k in ("attributes", "Id") or k.lower() in wanted}


# Before the record routes: `describe` is not a record id.
@router.get("/services/data/{version}/sobjects/{sobject}/describe")
async def describe(version: str, sobject: str, rt: RuntimeDep) -> JSONResponse:
    _version(version)
    spec = _spec(sobject)
    custom = rt.salesforce_fields.fields(spec.name)
    return JSONResponse(describe_sobject(spec.name, spec.key_prefix, custom, version))


@router.get("/services/data/{version}/sobjects/{sobject}/{record_id}")
async def get_record(
    version: str, sobject: str, record_id: str, rt: RuntimeDep, fields: str | None = None
) -> JSONResponse:
    _version(version)
    spec = _spec(sobject)
    wanted = _wanted(rt, spec, fields)
    obj = await run_in_threadpool(rt.store.get, System.SALESFORCE, spec.name, _full_id(record_id))
    if obj is None:
        if not is_valid_salesforce_id(record_id):
            return JSONResponse(
                salesforce_error("MALFORMED_ID", f"{spec.name} ID: id value of incorrect type: {record_id}"),
                400,
            )
        return JSONResponse(_NOT_FOUND, 404)
    return JSONResponse(_select(sf.record_json(obj, version), wanted))


@router.get("/services/data/{version}/sobjects/{sobject}/{ext_field}/{value}")
async def get_by_external_id(
    version: str, sobject: str, ext_field: str, value: str, rt: RuntimeDep, fields: str | None = None
) -> JSONResponse:
    _version(version)
    spec = _spec(sobject)
    field = sf.external_id_field(spec, ext_field, rt.salesforce_fields.external_ids(spec.name))
    wanted = _wanted(rt, spec, fields)
    matches = await run_in_threadpool(rt.store.by_field, spec.name, field, value)
    if not matches:
        return JSONResponse(_NOT_FOUND, 404)
    if len(matches) > 1:
        return JSONResponse(
            [f"/services/data/{version}/sobjects/{spec.name}/{m.object_id}" for m in matches], 300
        )
    return JSONResponse(_select(sf.record_json(matches[0], version), wanted))


@router.post("/services/data/{version}/sobjects/{sobject}", status_code=201)
async def create_record(version: str, sobject: str, request: Request, rt: RuntimeDep) -> JSONResponse:
    _version(version)
    spec = _spec(sobject)
    body = await _body(request)
    if not isinstance(body, dict):
        raise sf.SalesforceRejected(400, salesforce_error("JSON_PARSER_ERROR", "Expected a JSON object"))
    fields = sf.canonical_fields(spec, body, rt.salesforce_fields.names(spec.name))
    problems = sf.field_problems(spec, fields)
    missing = sf.required_missing(spec, {k: v for k, v in fields.items() if v})
    if missing is not None:
        problems.append(missing)
    if not problems:
        problems = await run_in_threadpool(_dangling, rt, spec, fields)
    if problems:
        return JSONResponse(_as_request_errors(problems), 400)
    email = fields.get("Email")
    identity = email.strip().lower() if email and spec.person else None
    parents = sf.references_of(spec, fields)
    obj = await run_in_threadpool(rt.store.salesforce_insert, spec, fields, identity, rt.clock(), parents)
    return JSONResponse({"id": obj.object_id, "success": True, "errors": []}, 201)
