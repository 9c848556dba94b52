"""Generic REST CRM routes: lead upsert by e-mail with `Idempotency-Key`, lead read, notes, and an
RFC 6749 token endpoint (client credentials and refresh token)."""

from __future__ import annotations

import sqlite3
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from shopbotly.crm_emulator.deps import RuntimeDep, read_json
from shopbotly.crm_emulator.domain import IdempotencyOutcome, System, normalize_email, request_fingerprint
from shopbotly.crm_emulator.generic_rules import GenericRejected, lead_json, note_json, parse_lead, parse_note
from shopbotly.crm_emulator.oauth import ClientSpec, OAuthError, authenticate_client, parse_form
from shopbotly.crm_emulator.runtime import Runtime
from shopbotly.crm_emulator.settings import reveal
from shopbotly.crm_emulator.shapes import generic_error

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["generic"])

_MAX_KEY = 255


async def _body(request: Request) -> tuple[bytes, Any]:
    body, error = await read_json(request)
    if error is not None:
        raise GenericRejected(400, generic_error("invalid_json", f"The body is not valid JSON: {error}"))
    return await request.body(), body


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and (not key.strip() or len(key) > _MAX_KEY):
        raise GenericRejected(
            400,
            generic_error("invalid_idempotency_key", f"Idempotency-Key must be 1 to {_MAX_KEY} characters."),
        )
    return key


async def _once(rt: Runtime, request: Request, raw: bytes, apply: Any) -> JSONResponse:
    """Apply at most once per Idempotency-Key; a repeat answers what the first request got."""
    key = _idempotency_key(request)
    fingerprint = request_fingerprint(request.method, request.url.path, raw)
    answer = await run_in_threadpool(rt.store.idempotent, System.GENERIC, key, fingerprint, rt.clock(), apply)
    if answer.outcome is IdempotencyOutcome.MISMATCH:
        return JSONResponse(
            generic_error(
                "idempotency_key_reused", "This Idempotency-Key was already used with a different request."
            ),
            422,
        )
    headers = {"Idempotency-Key": key} if key is not None else {}
    if answer.outcome is IdempotencyOutcome.REPLAY:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(answer.body, answer.status, headers=headers)


@router.post("/leads")
async def upsert_lead(request: Request, rt: RuntimeDep) -> JSONResponse:
    raw, body = await _body(request)
    identity, fields = parse_lead(body)
    now = rt.clock()

    def apply(conn: sqlite3.Connection) -> tuple[int, dict[str, Any]]:
        obj, created = rt.store.generic_upsert_lead(conn, identity, fields, now)
        return (201 if created else 200), lead_json(obj, created)

    return await _once(rt, request, raw, apply)


@router.get("/leads/{email}")
async def get_lead(email: str, rt: RuntimeDep) -> JSONResponse:
    found = await run_in_threadpool(rt.store.by_identity, System.GENERIC, "leads", normalize_email(email))
    if not found:
        return JSONResponse(generic_error("not_found", "No lead with this e-mail."), 404)
    return JSONResponse(lead_json(found[0], False))


@router.post("/leads/{email}/notes")
async def add_note(email: str, request: Request, rt: RuntimeDep) -> JSONResponse:
    raw, body = await _body(request)
    text = parse_note(body)
    identity = normalize_email(email)
    now = rt.clock()

    def apply(conn: sqlite3.Connection) -> tuple[int, dict[str, Any]]:
        note = rt.store.generic_add_note(conn, identity, text, now)
        if note is None:
            return 404, generic_error("not_found", "No lead with this e-mail.")
        return 201, note_json(note)

    return await _once(rt, request, raw, apply)


def _clients(rt: Runtime) -> list[ClientSpec]:
    return [
        ClientSpec(c.client_id, reveal(c.client_secret) if c.client_secret is not None else None, None, None)
        for c in rt.settings.generic_clients
    ]


@router.post("/oauth/token")
async def token(request: Request, rt: RuntimeDep) -> JSONResponse:
    form = parse_form(await request.body())
    grant = form.get("grant_type")
    refused = OAuthError("invalid_client", "client authentication failed", 401)
    try:
        client = authenticate_client(
            _clients(rt),
            form,
            request.headers.get("authorization"),
            unknown_client=refused,
            bad_secret=refused,
        )
        if grant == "client_credentials":
            refresh = rt.tokens.issue_refresh(System.GENERIC, client.client_id)
        elif grant == "refresh_token":
            refresh = form.get("refresh_token", "")
            if rt.tokens.refresh_owner(refresh) != (System.GENERIC, client.client_id):
                raise OAuthError(
                    "invalid_grant", "The refresh token is invalid or was issued to another client."
                )
        else:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")
    except OAuthError as exc:
        headers = {"WWW-Authenticate": 'Basic realm="crm-emulator"'} if exc.status == 401 else None
        return JSONResponse(exc.body(), exc.status, headers=headers)
    lifetime = rt.settings.generic_token_lifetime_s
    issued = rt.tokens.issue(System.GENERIC, client.client_id, None, rt.clock(), lifetime)
    return JSONResponse(
        {
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": int(lifetime),
            "refresh_token": refresh,
        },
        headers={"Cache-Control": "no-store"},
    )
