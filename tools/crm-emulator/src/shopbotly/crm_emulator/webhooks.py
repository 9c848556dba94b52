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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from shopbotly.common.logging import get_logger
from shopbotly.common.signatures import hubspot_v3_headers
from shopbotly.crm_emulator import metrics
from shopbotly.crm_emulator.domain import (
    PropertyChange,
    Subscription,
    event_payload,
    subscription_for,
    webhook_should_retry,
)
from shopbotly.crm_emulator.sender import BackgroundSender, Outcome
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


class WebhookDispatcher(BackgroundSender[dict[str, Any], DeliveryAttempt]):
    name = "crm-emulator-webhooks"

    def __init__(
        self,
        config: WebhookSettings,
        portal_id: int,
        store: Store,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        stats = {"events_emitted": 0, "events_dropped": 0, "batches_delivered": 0, "batches_exhausted": 0}
        super().__init__(stats, clock, transport)
        self.config = config
        self.portal_id = portal_id
        self._store = store
        self._event_ids = range(0)  # reserved in the store, not handed out yet
        self._batch_ids = itertools.count(1)
        self._semaphore: asyncio.Semaphore | None = None

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
        self._enqueue(events)
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

    def _on_start(self) -> None:
        self._semaphore = asyncio.Semaphore(self.config.max_concurrency)

    def view(self) -> dict[str, Any]:
        config = self.config.model_dump()
        config["client_secret"] = "***"  # noqa: S105 - a mask, not a secret
        return self._view(config, "pending_events", "deliveries_in_flight")

    # ---------------------------------------------------------------------------------------------
    # Delivery

    def _batch_window_s(self) -> float:
        return self.config.batch_window_ms / 1000

    def _dispatch(self) -> None:
        while self._pending:
            size = self.config.max_batch_size
            batch = [self._pending.popleft() for _ in range(min(size, len(self._pending)))]
            self._spawn(self._deliver(next(self._batch_ids), batch))

    async def _deliver(self, batch_id: int, events: list[dict[str, Any]]) -> None:
        assert self._semaphore is not None
        ids = [e["eventId"] for e in events]
        names: dict[Outcome, Literal["delivered", "retry", "exhausted"]] = {
            "ok": "delivered",
            "retry": "retry",
            "gave_up": "exhausted",
        }

        async def attempt_once(attempt: int) -> tuple[int | None, str | None, bool]:
            status, error = await self._attempt(self.config, events, attempt)
            return status, error, status is not None and 200 <= status < 300

        def record(attempt: int, status: int | None, error: str | None, outcome: Outcome) -> None:
            at_ms = int(self._clock() * 1000)
            self.attempts.append(
                DeliveryAttempt(batch_id, attempt, ids, status, error, at_ms, names[outcome])
            )
            metrics.WEBHOOK_ATTEMPTS.labels(names[outcome]).inc()
            if outcome == "gave_up":
                log.warning(
                    "webhook_batch_exhausted",
                    batch_id=batch_id,
                    attempts=attempt + 1,
                    status=status,
                    error=error,
                )

        async with self._semaphore:
            delivered = await self._until_accepted(
                attempt_once,
                may_retry=lambda attempt: webhook_should_retry(None, attempt, self.config.max_attempts),
                pace_ms=lambda: (self.config.retry_initial_ms, self.config.retry_max_ms),
                record=record,
            )
        self.stats["batches_delivered" if delivered else "batches_exhausted"] += 1

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
        status, _, error = await self._post(config.url, body, headers, config.timeout_ms / 1000)
        return status, error
