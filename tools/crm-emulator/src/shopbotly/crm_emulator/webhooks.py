"""Outbound HubSpot-style webhooks: events are batched (a JSON array), signed (v3 and v1) and retried.

Like HubSpot, batches are delivered concurrently and each is retried on its own (non-2xx, timeout or
connection error) with growing delays and an incremented `attemptNumber`, up to `max_attempts`; so a
receiver sees duplicates and out-of-order batches, as it would in production. Like HubSpot's, an `eventId`
is never used twice, not even after a restart or an admin reset: receivers drop a repeated id.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import httpx

from shopbotly.common.logging import get_logger
from shopbotly.common.signatures import hubspot_v3_headers
from shopbotly.crm_emulator import metrics
from shopbotly.crm_emulator.domain import (
    PropertyChange,
    Subscription,
    event_payload,
    retry_delay_s,
    subscription_for,
    webhook_should_retry,
)
from shopbotly.crm_emulator.settings import WebhookSettings, reveal
from shopbotly.crm_emulator.signatures import hubspot_signature_v1
from shopbotly.crm_emulator.store import Store

__all__ = ["DeliveryAttempt", "WebhookDispatcher"]

log = get_logger(__name__)

ChangeSource = Literal["INTEGRATION", "CRM_UI"]

# Event ids are reserved from the store this many at a time, so a batch upsert of 100 contacts does not
# cost 100 SQLite commits on the event loop. A restart skips what was left of a block; ids need not be dense.
EVENT_ID_BLOCK = 1000


@dataclass(frozen=True)
class DeliveryAttempt:
    batch_id: int
    attempt_number: int
    event_ids: list[int]
    status: int | None
    error: str | None
    at_ms: int
    outcome: Literal["delivered", "retry", "exhausted"]


class WebhookDispatcher:
    def __init__(
        self,
        config: WebhookSettings,
        portal_id: int,
        store: Store,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.portal_id = portal_id
        self._store = store
        self._clock = clock
        self._event_ids = range(0)  # reserved in the store, not handed out yet
        self._transport = transport
        self._pending: deque[dict[str, Any]] = deque()
        self._batch_ids = itertools.count(1)
        self._client: httpx.AsyncClient | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._wakeup: asyncio.Event | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self.attempts: deque[DeliveryAttempt] = deque(maxlen=2000)
        self.stats = {
            "events_emitted": 0,
            "events_dropped": 0,
            "batches_delivered": 0,
            "batches_exhausted": 0,
        }

    # ---------------------------------------------------------------------------------------------
    # Configuration and events

    def configure(self, config: WebhookSettings) -> None:
        if self._semaphore is not None and config.max_concurrency != self.config.max_concurrency:
            self._semaphore = asyncio.Semaphore(config.max_concurrency)
        self.config = config

    def subscriptions(self) -> list[Subscription]:
        return [Subscription(i + 1, kind, prop) for i, (kind, prop) in enumerate(self.config.subscriptions)]

    def _event(self, sub: Subscription, object_id: str, source: ChangeSource, now_ms: int) -> dict[str, Any]:
        return {
            "subscriptionId": sub.id,
            "portalId": self.portal_id,
            "appId": self.config.app_id,
            "occurredAt": now_ms,
            "subscriptionType": sub.subscription_type,
            "objectId": int(object_id) if object_id.isdigit() else object_id,
            "changeSource": source,
            "sourceId": f"userId:{self.portal_id}" if source == "CRM_UI" else str(self.config.app_id),
        }

    def emit(
        self,
        object_type: str,
        object_id: str,
        *,
        created: bool = False,
        changes: Iterable[PropertyChange] = (),
        source: ChangeSource = "INTEGRATION",
    ) -> list[int]:
        """Queue the events a record change produces under the current subscriptions; their ids."""
        now_ms = int(self._clock() * 1000)
        subs = self.subscriptions()
        events: list[dict[str, Any]] = []
        if created and (sub := subscription_for(subs, object_type, "creation")) is not None:
            events.append({**self._event(sub, object_id, source, now_ms), "changeFlag": "NEW"})
        for change in changes:
            sub = subscription_for(subs, object_type, "propertyChange", change.name)
            if sub is not None:
                event = self._event(sub, object_id, source, now_ms)
                events.append({**event, "propertyName": change.name, "propertyValue": change.new or ""})
        if not events:
            return []
        if self.config.url is None:
            self.stats["events_dropped"] += len(events)
            metrics.WEBHOOK_EVENTS.labels("dropped").inc(len(events))
            return []
        ids = self._reserve_event_ids(len(events))
        events = [{"eventId": event_id, **event} for event_id, event in zip(ids, events, strict=True)]
        self.stats["events_emitted"] += len(events)
        metrics.WEBHOOK_EVENTS.labels("emitted").inc(len(events))
        self._pending.extend(events)
        self._ensure_started()
        assert self._wakeup is not None
        self._wakeup.set()
        return [e["eventId"] for e in events]

    def _reserve_event_ids(self, count: int) -> range:
        # Reserved in the store (committed before use), so a restarted emulator, even one that was killed,
        # goes on after every id it may have sent; and never below the clock in microseconds, so a fresh or
        # in-memory store does not start over at an id receivers saw before either (unless more than a
        # million ids a second were sent, or the clock went back).
        if len(self._event_ids) < count:
            floor = int(self._clock() * 1_000_000)
            self._event_ids = self._store.reserve_event_ids(max(count, EVENT_ID_BLOCK), floor=floor)
        ids, self._event_ids = self._event_ids[:count], self._event_ids[count:]
        return ids

    # ---------------------------------------------------------------------------------------------
    # Lifecycle

    def _ensure_started(self) -> None:
        # Started by the app's lifespan; also lazily, for apps driven without one (ASGITransport).
        if self._flusher is not None and not self._flusher.done():
            return
        self._wakeup = asyncio.Event()
        self._semaphore = asyncio.Semaphore(self.config.max_concurrency)
        self._client = httpx.AsyncClient(transport=self._transport, follow_redirects=False)
        self._flusher = asyncio.create_task(self._run(), name="crm-emulator-webhooks")

    async def start(self) -> None:
        self._ensure_started()

    async def aclose(self) -> None:
        tasks = [t for t in (self._flusher, *self._deliveries) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flusher = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def clear(self) -> None:
        """Forget queued events and the attempt log (the admin reset); deliveries in flight finish."""
        self._pending.clear()
        self.attempts.clear()
        for key in self.stats:
            self.stats[key] = 0

    @property
    def idle(self) -> bool:
        return not self._pending and not self._deliveries

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every queued event was delivered or given up on; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not self.idle:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def view(self) -> dict[str, Any]:
        config = self.config.model_dump()
        config["client_secret"] = "***"  # noqa: S105 - a mask, not a secret
        return {
            "config": config,
            "pending_events": len(self._pending),
            "deliveries_in_flight": len(self._deliveries),
            "stats": dict(self.stats),
            "attempts": [asdict(a) for a in self.attempts],
        }

    # ---------------------------------------------------------------------------------------------
    # Delivery

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            # HubSpot groups events that happen close together into one request.
            if self.config.batch_window_ms:
                await asyncio.sleep(self.config.batch_window_ms / 1000)
            while self._pending:
                size = self.config.max_batch_size
                batch = [self._pending.popleft() for _ in range(min(size, len(self._pending)))]
                task = asyncio.create_task(self._deliver(next(self._batch_ids), batch))
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, batch_id: int, events: list[dict[str, Any]]) -> None:
        assert self._semaphore is not None and self._client is not None
        async with self._semaphore:
            attempt = 0
            while True:
                config = self.config
                status, error = await self._attempt(config, events, attempt)
                retry = webhook_should_retry(status, attempt, config.max_attempts)
                delivered = status is not None and 200 <= status < 300
                outcome: Literal["delivered", "retry", "exhausted"] = (
                    "delivered" if delivered else "retry" if retry else "exhausted"
                )
                self.attempts.append(
                    DeliveryAttempt(
                        batch_id,
                        attempt,
                        [e["eventId"] for e in events],
                        status,
                        error,
                        int(self._clock() * 1000),
                        outcome,
                    )
                )
                metrics.WEBHOOK_ATTEMPTS.labels(outcome).inc()
                if delivered:
                    self.stats["batches_delivered"] += 1
                    return
                if not retry:
                    self.stats["batches_exhausted"] += 1
                    log.warning(
                        "webhook_batch_exhausted",
                        batch_id=batch_id,
                        attempts=attempt + 1,
                        status=status,
                        error=error,
                    )
                    return
                await asyncio.sleep(retry_delay_s(attempt, config.retry_initial_ms, config.retry_max_ms))
                attempt += 1

    async def _attempt(
        self, config: WebhookSettings, events: list[dict[str, Any]], attempt: int
    ) -> tuple[int | None, str | None]:
        assert self._client is not None
        if config.url is None:
            return None, "no target URL configured"
        body = json.dumps([event_payload(e, attempt) for e in events], separators=(",", ":")).encode()
        timestamp_ms = int(self._clock() * 1000)
        secret = reveal(config.client_secret)
        # Signed per attempt: the body (attemptNumber) and the timestamp change on every retry.
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/) - crm-emulator",
            **hubspot_v3_headers(secret, method="POST", uri=config.url, body=body, timestamp_ms=timestamp_ms),
            "X-HubSpot-Signature": hubspot_signature_v1(secret, body),
            "X-HubSpot-Signature-Version": "v1",
        }
        try:
            response = await self._client.post(
                config.url, content=body, headers=headers, timeout=config.timeout_ms / 1000
            )
        except httpx.TimeoutException:
            return None, "timeout"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return response.status_code, None
