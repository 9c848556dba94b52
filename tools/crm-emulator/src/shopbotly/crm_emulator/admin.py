"""The admin API (`/_emulator/*`) for tests and the demo: state, faults, reset, agent actions, webhooks.

Never faulted, rate limited or counted: it observes and steers the emulated CRMs from outside.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
from hashlib import sha256
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from shopbotly.common.logging import get_logger
from shopbotly.crm_emulator import salesforce_rules as sf
from shopbotly.crm_emulator.deps import RuntimeDep
from shopbotly.crm_emulator.domain import (
    FaultPlan,
    RateLimitPolicy,
    StoredObject,
    System,
    iso_ms,
    salesforce_id,
)
from shopbotly.crm_emulator.hubspot_rules import object_json, parse_contact_create, parse_ticket_update
from shopbotly.crm_emulator.runtime import Runtime
from shopbotly.crm_emulator.settings import reveal

__all__ = ["router"]

log = get_logger(__name__)


def _admin_auth(rt: RuntimeDep, authorization: Annotated[str | None, Header()] = None) -> None:
    if rt.settings.admin_token is None:
        return
    expected = f"Bearer {reveal(rt.settings.admin_token)}"
    if authorization is None or not hmac.compare_digest(authorization, expected):
        raise HTTPException(
            401, "the admin API wants 'Authorization: Bearer <SHOPBOTLY_EMULATOR_ADMIN_TOKEN>'"
        )


router = APIRouter(prefix="/_emulator", tags=["admin"], dependencies=[Depends(_admin_auth)])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimitUpdate(_Strict):
    max_requests: int | None = Field(default=None, ge=1)
    interval_ms: int | None = Field(default=None, ge=1)
    daily_limit: int | None = Field(default=None, ge=1)


class FaultUpdate(_Strict):
    """Only the fields sent change; `systems` says which CRMs (default: all three)."""

    systems: list[System] = Field(default_factory=lambda: list(System))
    clear: bool = False
    latency_ms: int | None = Field(default=None, ge=0, le=600_000)
    latency_jitter_ms: int | None = Field(default=None, ge=0, le=600_000)
    error_rates: dict[int, float] | None = None
    error_phase: Literal["before", "after"] | None = None
    outage: bool | None = None
    retry_after_s: float | None = Field(default=None, ge=0)
    fail_next: list[Annotated[int, Field(ge=400, le=599)]] | None = None
    rate_limit: RateLimitUpdate | None = None
    invalidate_tokens: bool = False
    static_tokens_valid: bool | None = None


def faults_view(rt: Runtime) -> dict[str, Any]:
    systems = {}
    for system in System:
        plan = rt.faults[system]
        policy = rt.limiters[system].policy
        systems[system.value] = {
            **dataclasses.asdict(plan),
            "error_rates": {str(k): v for k, v in plan.error_rates.items()},
            "fail_next": list(rt.fail_next[system]),
            "rate_limit": dataclasses.asdict(policy),
        }
    return {"systems": systems, "static_tokens_valid": rt.static_tokens_valid, "token_epoch": rt.tokens.epoch}


@router.get("/faults")
async def get_faults(rt: RuntimeDep) -> dict[str, Any]:
    return faults_view(rt)


@router.post("/faults")
async def set_faults(update: FaultUpdate, rt: RuntimeDep) -> JSONResponse:
    plan_fields = {"latency_ms", "latency_jitter_ms", "error_rates", "error_phase", "outage", "retry_after_s"}
    changes = {name: getattr(update, name) for name in update.model_fields_set & plan_fields}
    if update.systems == [System.SALESFORCE] and update.rate_limit and update.rate_limit.max_requests:
        return JSONResponse(
            {"detail": "Salesforce has no short-term request window; set rate_limit.daily_limit only"}, 422
        )
    try:
        for system in update.systems:
            base = FaultPlan() if update.clear else rt.faults[system]
            rt.faults[system] = dataclasses.replace(base, **changes)
            if update.clear:
                rt.fail_next[system] = ()
            if update.fail_next is not None:
                rt.fail_next[system] = tuple(update.fail_next)
            if update.rate_limit is not None:
                limiter = rt.limiters[system]
                fields = update.rate_limit.model_dump(exclude_unset=True)
                if system is System.SALESFORCE:
                    # Salesforce only has the daily allocation; window settings are for the others.
                    fields = {k: v for k, v in fields.items() if k == "daily_limit"}
                policy: RateLimitPolicy = dataclasses.replace(limiter.policy, **fields)
                limiter.reconfigure(policy, rt.clock())
    except ValueError as exc:
        return JSONResponse({"detail": str(exc)}, 422)
    if update.invalidate_tokens:
        rt.tokens.revoke_all()
    if update.static_tokens_valid is not None:
        rt.static_tokens_valid = update.static_tokens_valid
    log.info(
        "faults_changed", systems=[s.value for s in update.systems], fields=sorted(update.model_fields_set)
    )
    return JSONResponse(faults_view(rt))


class ResetRequest(_Strict):
    faults: bool = True
    tokens: bool = False
    webhooks: bool = False
    # Also forget the properties/fields created through the APIs: a fresh portal/org again.
    properties: bool = False


@router.post("/reset")
async def reset(rt: RuntimeDep, body: ResetRequest | None = None) -> dict[str, Any]:
    """Forget every record, counter and queued webhook; faults too unless told otherwise. The schema created
    through the APIs (HubSpot properties, Salesforce custom fields) stays unless `properties` is true."""
    request = body or ResetRequest()
    await run_in_threadpool(functools.partial(rt.store.reset, schema=request.properties))
    if request.properties:
        await run_in_threadpool(rt.reload_schema)
    rt.counters = type(rt.counters)()
    rt.reset_limits()
    rt.webhooks.clear()
    rt.outbound.clear()
    if request.faults:
        rt.reset_faults()
    if request.tokens:
        rt.tokens.revoke_all()
    if request.webhooks:
        rt.webhooks.configure(rt.settings.webhooks)
    return {"status": "reset", **request.model_dump()}


@router.get("/state")
async def state(
    rt: RuntimeDep,
    system: System | None = None,
    history: Annotated[bool, Query(description="include every write per identity, in order")] = False,
) -> dict[str, Any]:
    tag_fields = {
        System.HUBSPOT: rt.settings.hubspot_tag_property,
        System.SALESFORCE: rt.settings.salesforce_tag_field,
        System.GENERIC: "tags",
    }
    view = await run_in_threadpool(rt.store.state, system, history, tag_fields)
    totals = await run_in_threadpool(rt.store.totals)
    counters = rt.counters.view()
    counters["creates"] = sum(t["creates"] for t in totals.values())
    counters["updates"] = sum(t["updates"] for t in totals.values())
    counters["writes_by_system"] = totals
    # Notes and tickets have no identity of their own: their creates/updates are counted per object type.
    counters["records_by_type"] = await run_in_threadpool(rt.store.record_totals)
    # The most requests accepted in one rolling window (HubSpot's 10 s), per system with a short window.
    peaks = {system.value: limiter.window_peak for system, limiter in rt.limiters.items()}
    counters["rate_window_peak"] = {system: peak for system, peak in peaks.items() if peak is not None}
    return {**view, "counters": counters, "webhooks": dict(rt.webhooks.stats)}


@router.get("/requests")
async def requests_log(rt: RuntimeDep, system: System | None = None) -> dict[str, Any]:
    """Every CRM API request in arrival order (the last `REQUEST_LOG_SIZE`): `[arrived_at, status]` pairs, so
    a test can count what clients sent in any window, the requests the rate limiter refused included."""
    log = [(r.at, r.status) for r in rt.counters.log if system is None or r.system is system]
    return {"size": rt.counters.log.maxlen, "requests": log}


class Reply(_Strict):
    text: str = Field(min_length=1)
    author: str = "agent@crm-emulator.local"


class TicketChange(_Strict):
    hs_pipeline_stage: str | None = None
    properties: dict[str, str | None] = Field(default_factory=dict)
    reply: Reply | None = None


@router.post("/tickets/{ticket_id}")
async def change_ticket(ticket_id: str, change: TicketChange, rt: RuntimeDep) -> JSONResponse:
    """An agent acts on a HubSpot ticket in the CRM UI: stage change, property edits, a reply."""
    current = await run_in_threadpool(rt.store.get, System.HUBSPOT, "tickets", ticket_id)
    if current is None:
        return JSONResponse({"detail": f"no HubSpot ticket {ticket_id}"}, 404)
    now = rt.clock()
    incoming: dict[str, str | None] = dict(change.properties)
    if change.hs_pipeline_stage is not None:
        incoming["hs_pipeline_stage"] = change.hs_pipeline_stage
    reply = None
    if change.reply is not None:
        incoming[rt.settings.hubspot_reply_property] = change.reply.text
        incoming["last_reply_date"] = str(int(now * 1000))
        reply = {"text": change.reply.text, "author": change.reply.author, "at": iso_ms(now)}
    incoming = parse_ticket_update(
        {"properties": incoming}, current.properties, [rt.settings.hubspot_reply_property]
    )
    result = await run_in_threadpool(
        rt.store.update_object, System.HUBSPOT, "tickets", ticket_id, incoming, now, reply
    )
    if result is None:
        return JSONResponse({"detail": f"no HubSpot ticket {ticket_id}"}, 404)
    updated, changes = result
    event_ids = rt.webhooks.emit("ticket", ticket_id, changes=changes, source="CRM_UI")
    return JSONResponse({"ticket": object_json(updated), "event_ids": event_ids})


class ContactChange(_Strict):
    properties: dict[str, str | None]


@router.post("/contacts/{email}")
async def change_contact(email: str, change: ContactChange, rt: RuntimeDep) -> JSONResponse:
    """An agent edits a HubSpot contact in the CRM UI (emits contact.propertyChange)."""
    incoming = parse_contact_create({"properties": change.properties}, rt.hubspot_schema)
    found = await run_in_threadpool(rt.store.by_identity, System.HUBSPOT, "contacts", email.strip().lower())
    if not found:
        return JSONResponse({"detail": "no HubSpot contact with this e-mail"}, 404)
    incoming.pop("email", None)
    result = await run_in_threadpool(
        rt.store.update_object, System.HUBSPOT, "contacts", found[0].object_id, incoming, rt.clock()
    )
    assert result is not None
    updated, changes = result
    event_ids = rt.webhooks.emit("contact", updated.object_id, changes=changes, source="CRM_UI")
    return JSONResponse({"contact": object_json(updated), "event_ids": event_ids})


class WebhookUpdate(_Strict):
    url: str | None = None
    client_secret: str | None = None
    batch_window_ms: int | None = None
    max_batch_size: int | None = None
    max_attempts: int | None = None
    retry_initial_ms: int | None = None
    retry_max_ms: int | None = None
    timeout_ms: int | None = None
    max_concurrency: int | None = None
    app_id: int | None = None
    subscriptions: list[tuple[str, str | None]] | None = None


@router.get("/webhooks")
async def get_webhooks(rt: RuntimeDep) -> dict[str, Any]:
    return rt.webhooks.view()


Config = TypeVar("Config", bound=BaseModel)


def _updated(current: Config, update: BaseModel) -> Config:
    """`current` with the fields `update` sets; ValueError when the result is invalid."""
    return type(current).model_validate({**current.model_dump(), **update.model_dump(exclude_unset=True)})


@router.post("/webhooks")
async def set_webhooks(update: WebhookUpdate, rt: RuntimeDep) -> JSONResponse:
    try:
        rt.webhooks.configure(_updated(rt.webhooks.config, update))
    except ValueError as exc:
        return JSONResponse({"detail": str(exc)}, 422)
    return JSONResponse(rt.webhooks.view())


@router.post("/webhooks/flush")
async def flush_webhooks(
    rt: RuntimeDep, timeout_s: Annotated[float, Query(gt=0, le=300)] = 10.0
) -> dict[str, Any]:
    """Wait until every queued event was delivered or given up on (tests and the demo use it)."""
    drained = await rt.webhooks.drain(timeout_s)
    return {"drained": drained, **rt.webhooks.view()}


class SeedRecord(_Strict):
    fields: dict[str, str | None]
    identity: str | None = None


@router.post("/salesforce/{sobject}", status_code=201)
async def seed_salesforce(sobject: str, seed: SeedRecord, rt: RuntimeDep) -> JSONResponse:
    """Insert a record as-is (duplicates allowed), e.g. two Leads with one external id → 300 on upsert."""
    spec = sf.SOBJECTS.get(sobject)
    if spec is None:
        return JSONResponse({"detail": f"unknown sObject {sobject}; known: {sorted(sf.SOBJECTS)}"}, 404)
    try:
        fields = sf.canonical_fields(spec, seed.fields, rt.salesforce_fields.names(spec.name))
    except sf.SalesforceRejected as exc:
        return JSONResponse({"detail": exc.body}, 422)
    identity = seed.identity.strip().lower() if seed.identity else None
    obj = await run_in_threadpool(rt.store.salesforce_insert, spec, fields, identity, rt.clock())
    return JSONResponse({"id": obj.object_id}, 201)


# --- Salesforce: an agent works a Case; outbound messages -------------------------------------------


class CaseChange(_Strict):
    fields: dict[str, str | None] = Field(default_factory=dict)
    reply: Reply | None = None


def _case_record(rt: Runtime, case: StoredObject) -> dict[str, Any]:
    """A Case's fields as an outbound message reads them, formula fields (IsClosed, ContactEmail) included."""
    record = {k: v for k, v in sf.record_json(case, "v62.0").items() if k != "attributes"}
    record["IsClosed"] = "true" if record.get("Status") == "Closed" else "false"
    contact_id = record.get("ContactId")
    contact = rt.store.get(System.SALESFORCE, "Contact", contact_id) if contact_id else None
    record["ContactEmail"] = contact.properties.get("Email") if contact is not None else None
    return record


@router.post("/salesforce/cases/{case_id}")
async def change_case(case_id: str, change: CaseChange, rt: RuntimeDep) -> JSONResponse:
    """An agent works a Salesforce Case: field edits (Status, Priority, ...) and a public comment. The
    org's flows send an outbound message for the Case when its fields changed and one for the comment."""
    spec = sf.SOBJECTS["Case"]
    try:
        incoming = sf.canonical_fields(spec, change.fields)
    except sf.SalesforceRejected as exc:
        return JSONResponse({"detail": exc.body}, 422)
    now = rt.clock()
    reply = None
    if change.reply is not None:
        reply = {"text": change.reply.text, "author": change.reply.author, "at": iso_ms(now)}
    result = await run_in_threadpool(
        rt.store.update_object, System.SALESFORCE, "Case", case_id, incoming, now, reply
    )
    if result is None:
        return JSONResponse({"detail": f"no Salesforce Case {case_id}"}, 404)
    case, changes = result
    record = await run_in_threadpool(_case_record, rt, case)
    notification_ids = []
    if changes and (sent := rt.outbound.notify("Case", record)) is not None:
        notification_ids.append(sent)
    if change.reply is not None:
        comment = {
            # CaseComment ids: one per reply of this Case, the same on every emulator run.
            "Id": salesforce_id(
                "00a",
                int(sha256(f"{case.object_id}:{len(case.extra['replies'])}".encode()).hexdigest()[:12], 16),
            ),
            "ParentId": case.object_id,
            "IsPublished": "true",
            "CommentBody": change.reply.text,
            "CreatedDate": sf.sf_datetime(now),
        }
        if (sent := rt.outbound.notify("CaseComment", comment)) is not None:
            notification_ids.append(sent)
    return JSONResponse({"case": record, "notification_ids": notification_ids})


class OutboundUpdate(_Strict):
    url: str | None = None
    action_id: str | None = None
    fields: dict[str, list[str]] | None = None
    batch_window_ms: int | None = None
    max_batch_size: int | None = None
    max_attempts: int | None = None
    max_age_s: float | None = None
    retry_initial_ms: int | None = None
    retry_max_ms: int | None = None
    timeout_ms: int | None = None


@router.get("/outbound-messages")
async def get_outbound(rt: RuntimeDep) -> dict[str, Any]:
    return rt.outbound.view()


@router.post("/outbound-messages")
async def set_outbound(update: OutboundUpdate, rt: RuntimeDep) -> JSONResponse:
    """Set up the org's outbound messages (endpoint URL with its token, fields, retry pace)."""
    try:
        rt.outbound.configure(_updated(rt.outbound.config, update))
    except ValueError as exc:
        return JSONResponse({"detail": str(exc)}, 422)
    return JSONResponse(rt.outbound.view())
