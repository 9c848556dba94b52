"""The front door of every CRM API request: outage, latency, auth, rate limits, injected errors, headers.

An ASGI middleware rather than per-route dependencies because it must answer before routing (401, 429,
503), add quota headers to every answer, and — for "after" faults — let the effect happen and then
replace the answer. The admin API and probes pass through untouched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Literal

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shopbotly.crm_emulator import generic_noupsert, metrics, shapes
from shopbotly.crm_emulator.domain import RateDecision, System, TokenStatus, decide_fault, fault_delay
from shopbotly.crm_emulator.runtime import Runtime

__all__ = ["Gate", "classify"]

Kind = Literal["api", "oauth"]


def classify(path: str) -> tuple[System, Kind] | None:
    """Which emulated CRM a path belongs to, and whether it is its token endpoint (no bearer needed)."""
    if path.startswith(("/crm/v3/", "/crm/v4/", "/crm/objects/", "/crm/properties/")):
        return System.HUBSPOT, "api"
    if path.startswith("/services/oauth2/"):
        return System.SALESFORCE, "oauth"
    if path.startswith("/services/data"):
        return System.SALESFORCE, "api"
    if path.startswith("/api/v1/oauth/"):
        return System.GENERIC, "oauth"
    if path.startswith(("/api/v1/", generic_noupsert.PREFIX)):
        return System.GENERIC, "api"
    return None


def _bearer(headers: Headers) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def rate_headers(system: System, decision: RateDecision) -> dict[str, str]:
    """The quota headers each CRM puts on its answers."""
    if system is System.HUBSPOT:
        out: dict[str, str] = {}
        if decision.window_limit is not None:
            out["X-HubSpot-RateLimit-Max"] = str(decision.window_limit)
            out["X-HubSpot-RateLimit-Remaining"] = str(decision.window_remaining)
            out["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(decision.interval_ms)
        if decision.daily_limit is not None:
            out["X-HubSpot-RateLimit-Daily"] = str(decision.daily_limit)
            out["X-HubSpot-RateLimit-Daily-Remaining"] = str(decision.daily_remaining)
        return out
    if system is System.SALESFORCE:
        used = (decision.daily_limit or 0) - (decision.daily_remaining or 0)
        return {"Sforce-Limit-Info": f"api-usage={used}/{decision.daily_limit}"}
    if decision.window_limit is None:
        return {}
    # IETF RateLimit header fields (draft), as many self-hosted APIs send them.
    reset = max(1, round(decision.interval_ms / 1000))
    return {
        "RateLimit-Limit": str(decision.window_limit),
        "RateLimit-Remaining": str(decision.window_remaining),
        "RateLimit-Reset": str(reset),
    }


class Gate:
    def __init__(self, app: ASGIApp, runtime: Runtime, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.runtime = runtime
        self.routes = routes

    def _endpoint(self, scope: Scope) -> str:
        """`METHOD /path/{template}` of the route a request is for, even when the gate answered it."""
        template = _match(self.routes, scope)
        return f"{scope['method']} {template or scope['path']}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = classify(scope["path"]) if scope["type"] == "http" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        system, kind = target
        started = time.perf_counter()
        arrived_at = self.runtime.clock()
        status_box: list[int] = [500]

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        try:
            await self._handle(system, kind, scope, receive, counted)
        finally:
            status = status_box[0]
            self.runtime.counters.answered(system, self._endpoint(scope), status, arrived_at=arrived_at)
            metrics.REQUESTS.labels(system.value, str(status)).inc()
            metrics.REQUEST_SECONDS.labels(system.value).observe(time.perf_counter() - started)

    async def _reply(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        await JSONResponse(body, status, headers=headers)(scope, receive, send)

    async def _handle(self, system: System, kind: Kind, scope: Scope, receive: Receive, send: Send) -> None:
        rt = self.runtime
        plan = rt.faults[system]
        if plan.outage:
            rt.counters.outage_rejections[system] += 1
            retry = (
                {"Retry-After": str(round(plan.retry_after_s))} if plan.retry_after_s is not None else None
            )
            await self._reply(scope, receive, send, 503, shapes.outage_error(system), retry)
            return
        delay = fault_delay(plan, rt.rng.random())
        # With `error_phase: after`, latency too comes after the effect: a client that times out has still
        # written (the retry must converge on what its lost request did).
        late = delay if plan.error_phase == "after" and kind == "api" else 0.0
        if delay > 0 and not late:
            await asyncio.sleep(delay)
        if kind == "oauth":
            # Token endpoints are not rate limited and not failed at random: token managers are tested
            # against expiry and revocation instead.
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not self._authorized(system, headers):
            rt.counters.auth_failures[system] += 1
            extra = None
            if system is System.GENERIC:
                extra = {"WWW-Authenticate": 'Bearer realm="crm-emulator", error="invalid_token"'}
            presented = _bearer(headers) is not None or "x-api-key" in headers
            if scope["path"].startswith(generic_noupsert.PREFIX) and not scope["path"].startswith("/api/v1/"):
                await self._reply(scope, receive, send, 403, generic_noupsert.forbidden(presented))
                return
            await self._reply(scope, receive, send, 401, shapes.unauthorized_error(system, presented), extra)
            return
        rate = rt.limiters[system].acquire(rt.clock())
        quota_headers = rate_headers(system, rate)
        if not rate.allowed:
            await self._refuse_rate(system, rate, quota_headers, scope, receive, send)
            return
        # Decided only now, so a queued failure hits a request that would otherwise have succeeded.
        decision, rt.fail_next[system] = decide_fault(plan, rt.fail_next[system], rt.rng.random())
        if decision.status is not None:
            rt.counters.injected[f"{system}:{decision.status}"] += 1
            metrics.INJECTED_FAULTS.labels(system.value, str(decision.status)).inc()
            body = shapes.injected_error(system, decision.status, rt.settings.hubspot_portal_id)
            fault_headers = dict(quota_headers)
            if plan.retry_after_s is not None and decision.status in (429, 503):
                fault_headers["Retry-After"] = str(round(plan.retry_after_s))
            if decision.phase == "after":
                await self.app(scope, receive, _discard)
            await self._reply(scope, receive, send, decision.status, body, fault_headers)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                if late:
                    await asyncio.sleep(late)
                mutable = MutableHeaders(scope=message)
                for name, value in quota_headers.items():
                    mutable[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)

    def _authorized(self, system: System, headers: Headers) -> bool:
        rt = self.runtime
        token = _bearer(headers)
        now = rt.clock()
        if system is System.HUBSPOT:
            return token is not None and rt.static_tokens_valid and token in rt.hubspot_tokens
        if system is System.SALESFORCE:
            return token is not None and rt.tokens.check(System.SALESFORCE, token, now) is TokenStatus.VALID
        api_key = headers.get("x-api-key")
        if api_key is not None:
            return rt.static_tokens_valid and api_key in rt.generic_api_keys
        if token is None:
            return False
        if token in rt.generic_tokens:
            return rt.static_tokens_valid
        return rt.tokens.check(System.GENERIC, token, now) is TokenStatus.VALID

    async def _refuse_rate(
        self,
        system: System,
        rate: RateDecision,
        headers: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        rt = self.runtime
        retry_after = str(max(1, round(rate.retry_after_s + 0.499)))
        if system is System.HUBSPOT:
            policy: Literal["TEN_SECONDLY_ROLLING", "DAILY"] = (
                "DAILY" if rate.exceeded == "daily" else "TEN_SECONDLY_ROLLING"
            )
            rt.counters.rate_limited[f"{system}:{policy}"] += 1
            metrics.RATE_LIMITED.labels(system.value, policy).inc()
            body: Any = shapes.hubspot_rate_limited(policy, rt.settings.hubspot_portal_id)
            await self._reply(scope, receive, send, 429, body, headers)
        elif system is System.SALESFORCE:
            rt.counters.rate_limited[f"{system}:DAILY"] += 1
            metrics.RATE_LIMITED.labels(system.value, "DAILY").inc()
            body = shapes.salesforce_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            await self._reply(scope, receive, send, 403, body, headers)
        else:
            rt.counters.rate_limited[f"{system}:WINDOW"] += 1
            metrics.RATE_LIMITED.labels(system.value, "WINDOW").inc()
            body = shapes.generic_error("rate_limited", f"Too many requests; retry after {retry_after} s.")
            await self._reply(scope, receive, send, 429, body, {**headers, "Retry-After": retry_after})


def _match(routes: Sequence[BaseRoute], scope: Scope) -> str | None:
    for route in routes:
        # FastAPI keeps included routers as wrappers; their routes carry the full path.
        included = getattr(route, "original_router", None)
        if included is not None:
            found = _match(included.routes, scope)
            if found is not None:
                return found
            continue
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", scope["path"]))
    return None


async def _discard(message: Message) -> None:
    """The answer of an "after" fault: the effect happened, the client never hears of it."""
