"""Salesforce Outbound Messages: record changes sent as SOAP `notifications`, like an org's flow does.

Like Salesforce ("Understanding Notifications", SOAP API guide): notifications are queued and sent by a
background sender, up to 100 a message; a message counts as delivered only when the listener answers 200
with `<Ack>true</Ack>`, and is re-sent otherwise with growing delays (Salesforce caps them at two hours and
drops a message after 24 hours) and independently of other messages, so a listener sees repeats and
out-of-order deliveries. A notification's id stays the same across re-sends. Each message carries the
record's current fields (`fields` per sObject type), never the change.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import httpx

from shopbotly.common.logging import get_logger
from shopbotly.common.sources.salesforce import Notification, outbound_message
from shopbotly.crm_emulator import metrics
from shopbotly.crm_emulator.domain import retry_delay_s, salesforce_id
from shopbotly.crm_emulator.settings import OutboundMessageSettings
from shopbotly.crm_emulator.store import Store

__all__ = ["OutboundAttempt", "OutboundMessenger", "acknowledged"]

log = get_logger(__name__)

_ACK = re.compile(rb"<(?:\w+:)?Ack>\s*true\s*</(?:\w+:)?Ack>")
# Notification ids are reserved from the store this many at a time (shared with HubSpot's event ids).
_ID_BLOCK = 1000


def acknowledged(status: int | None, body: bytes) -> bool:
    """Salesforce's test of a delivery: HTTP 200 and a notificationsResponse with Ack true."""
    return status == 200 and _ACK.search(body) is not None


@dataclass(frozen=True)
class OutboundAttempt:
    message_id: int
    attempt_number: int
    notification_ids: list[str]
    status: int | None
    error: str | None
    at_ms: int
    outcome: Literal["acknowledged", "retry", "dropped"]


class OutboundMessenger:
    def __init__(
        self,
        config: OutboundMessageSettings,
        organization_id: str,
        store: Store,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.organization_id = organization_id
        self._store = store
        self._clock = clock
        self._transport = transport
        self._ids = range(0)
        self._pending: deque[Notification] = deque()
        self._message_ids = itertools.count(1)
        self._client: httpx.AsyncClient | None = None
        self._sender: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._wakeup: asyncio.Event | None = None
        self.attempts: deque[OutboundAttempt] = deque(maxlen=2000)
        self.stats = {"notifications": 0, "messages_acknowledged": 0, "messages_dropped": 0}

    def configure(self, config: OutboundMessageSettings) -> None:
        self.config = config

    def notify(self, sobject_type: str, record: Mapping[str, Any]) -> str | None:
        """Queue a notification of the record's current fields (those the message is set up with);
        its id, or None when no outbound message is set up for this sObject type."""
        wanted = self.config.fields.get(sobject_type)
        if self.config.url is None or wanted is None:
            return None
        note = Notification(self._next_id(), sobject_type, {f: record.get(f) for f in ("Id", *wanted)})
        self._pending.append(note)
        self.stats["notifications"] += 1
        metrics.WEBHOOK_EVENTS.labels("emitted").inc()
        self._ensure_started()
        assert self._wakeup is not None
        self._wakeup.set()
        return note.id

    def _next_id(self) -> str:
        if not self._ids:
            self._ids = self._store.reserve_event_ids(_ID_BLOCK, floor=int(self._clock() * 1000))
        number, self._ids = self._ids[0], self._ids[1:]
        return salesforce_id("04l", number)

    # --- lifecycle -------------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._sender is not None and not self._sender.done():
            return
        self._wakeup = asyncio.Event()
        self._client = httpx.AsyncClient(transport=self._transport, follow_redirects=False)
        self._sender = asyncio.create_task(self._run(), name="crm-emulator-outbound-messages")

    async def start(self) -> None:
        self._ensure_started()

    async def aclose(self) -> None:
        tasks = [t for t in (self._sender, *self._deliveries) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sender = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def clear(self) -> None:
        self._pending.clear()
        self.attempts.clear()
        for key in self.stats:
            self.stats[key] = 0

    @property
    def idle(self) -> bool:
        return not self._pending and not self._deliveries

    def view(self) -> dict[str, Any]:
        config = self.config.model_dump()
        if config.get("url"):
            config["url"] = re.sub(r"([?&]token=)[^&]*", r"\1***", config["url"])
        return {
            "config": config,
            "organization_id": self.organization_id,
            "pending_notifications": len(self._pending),
            "messages_in_flight": len(self._deliveries),
            "stats": dict(self.stats),
            "attempts": [asdict(a) for a in self.attempts],
        }

    # --- sending ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self.config.batch_window_ms:
                await asyncio.sleep(self.config.batch_window_ms / 1000)
            # One message per sObject type (each is its own outbound message action), up to 100 each.
            by_type: dict[str, list[Notification]] = {}
            while self._pending:
                note = self._pending.popleft()
                by_type.setdefault(note.sobject_type, []).append(note)
            for notes in by_type.values():
                for start in range(0, len(notes), self.config.max_batch_size):
                    batch = notes[start : start + self.config.max_batch_size]
                    task = asyncio.create_task(self._deliver(next(self._message_ids), batch))
                    self._deliveries.add(task)
                    task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, message_id: int, notes: list[Notification]) -> None:
        first_at = self._clock()
        attempt = 0
        while True:
            config = self.config
            status, error = await self._attempt(config, notes)
            done = error is None and status == 200
            expired = self._clock() - first_at >= config.max_age_s or attempt + 1 >= config.max_attempts
            outcome: Literal["acknowledged", "retry", "dropped"] = (
                "acknowledged" if done else "dropped" if expired else "retry"
            )
            self.attempts.append(
                OutboundAttempt(
                    message_id,
                    attempt,
                    [n.id for n in notes],
                    status,
                    error,
                    int(self._clock() * 1000),
                    outcome,
                )
            )
            metrics.WEBHOOK_ATTEMPTS.labels(outcome).inc()
            if done:
                self.stats["messages_acknowledged"] += 1
                return
            if expired:
                self.stats["messages_dropped"] += 1
                log.warning(
                    "outbound_message_dropped", message_id=message_id, attempts=attempt + 1, status=status
                )
                return
            await asyncio.sleep(retry_delay_s(attempt, config.retry_initial_ms, config.retry_max_ms))
            attempt += 1

    async def _attempt(
        self, config: OutboundMessageSettings, notes: list[Notification]
    ) -> tuple[int | None, str | None]:
        assert self._client is not None
        if config.url is None:
            return None, "no endpoint URL configured"
        body = outbound_message(
            organization_id=self.organization_id,
            action_id=config.action_id,
            notifications=notes,
            enterprise_url=f"{config.instance_url}/services/Soap/c/62.0/{self.organization_id[:15]}",
            partner_url=f"{config.instance_url}/services/Soap/u/62.0/{self.organization_id[:15]}",
        )
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""', "User-Agent": "Axis/1.4"}
        try:
            response = await self._client.post(
                config.url, content=body, headers=headers, timeout=config.timeout_ms / 1000
            )
        except httpx.TimeoutException:
            return None, "timeout"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if not acknowledged(response.status_code, response.content):
            return response.status_code, "no <Ack>true</Ack> in the answer"
        return response.status_code, None
